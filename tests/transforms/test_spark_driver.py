"""The driver's near-duplicate search (``transforms.spark.driver``) against brute force."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from transforms.spark.driver import hex_hashes, near_pair_indices


def _brute(a: np.ndarray, b: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    return {(i, j) for i in range(len(a)) for j in range(len(b)) if (int(a[i]) ^ int(b[j])).bit_count() <= threshold}


@pytest.mark.parametrize("threshold", [0, 1, 6, 10, 31, 40])
def test_near_pairs_are_exactly_the_pairs_within_the_threshold(threshold: int) -> None:
    rng = np.random.default_rng(threshold)
    a = rng.integers(0, 2**64, 200, dtype=np.uint64)
    near = a.copy()
    for i in range(len(near)):  # 0 .. threshold+1 flipped bits: just inside and just outside
        for bit in rng.choice(64, rng.integers(0, threshold + 2), replace=False):
            near[i] ^= np.uint64(1) << np.uint64(int(bit))
    b = np.concatenate([near, rng.integers(0, 2**64, 1000, dtype=np.uint64), a[:5]])
    ai, bj = near_pair_indices(a, b, threshold=threshold)
    got = list(zip(ai.tolist(), bj.tolist(), strict=True))
    assert len(got) == len(set(got))  # each pair once, though several blocks may find it
    assert set(got) == _brute(a, b, threshold)
    assert len(got) > 50  # many copies fall inside: the comparison is not vacuous


def test_near_pairs_of_nothing() -> None:
    some = np.array([1, 2], dtype=np.uint64)
    for a, b in ((some[:0], some), (some, some[:0])):
        ai, bj = near_pair_indices(a, b, threshold=6)
        assert len(ai) == len(bj) == 0


def test_hex_hashes_reads_the_stored_phash_column() -> None:
    values = [0, 1, 2**63, 2**64 - 1, 0x0123456789ABCDEF]
    text = pa.array(["x"] + [f"{v:016x}" for v in values]).slice(1)  # an offset into the buffer
    assert hex_hashes(text).tolist() == values
    assert hex_hashes(pa.chunked_array([text.slice(0, 2), text.slice(2)])).tolist() == values
    assert hex_hashes(pa.array(["ABCDEF0123456789"])).tolist() == [0xABCDEF0123456789]
    for bad in (["12"], ["0123456789abcdeg"], [None]):
        with pytest.raises(ValueError, match="16 hex digits"):
            hex_hashes(pa.array(bad, pa.string()))
