"""A run's index of the content hashes a table holds, so a batch's lookup does not read them again.

A batch of random sha256 keys falls into every data file that is not ordered by hash, so
searching the files reads every stored hash once per batch.  ``PrefixIndex`` keeps the first 64
bits of each stored hash (and the file that holds it) in sorted arrays, 12 bytes a row, read
once per run: a lookup is a binary search per key, and only a key whose prefix is there (a
duplicate, or a 1-in-2^64 collision) sends its file to the exact search.  The index proposes
candidates; the exact ``column IN (keys)`` search decides, so a collision costs a read, never a row.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import numpy as np

HEX_DIGITS = 64  # a sha256 hexdigest
_PREFIX_DIGITS = 16  # 64 bits
_MERGE_PARTS = 8  # sorted runs kept apart before they are merged into one
_HEX_KEY = re.compile(f"[0-9a-fA-F]{{{HEX_DIGITS}}}")


def _hex_table() -> np.ndarray:
    import numpy as np

    table = np.full(256, 255, np.uint8)
    for i, c in enumerate(b"0123456789abcdef"):
        table[c] = i
    for i, c in enumerate(b"ABCDEF"):
        table[c] = 10 + i
    return table


def key_prefix(key: str) -> int | None:
    """The first 64 bits of a hex digest key; None for any other key."""
    if not _HEX_KEY.fullmatch(key):  # (int(key, 16) takes signs, spaces and underscores too)
        return None
    return int(key[:_PREFIX_DIGITS], 16)


def digest_prefixes(values: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """The first 64 bits of every value as uint64 (no Python object per row); None when a value
    is null, not 64 characters long or does not start with 16 hex digits.  (Only the prefix is
    read: a lookup key is a whole digest, and equal strings have equal prefixes.)"""
    import numpy as np

    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.large_string())
    if len(arr) == 0:
        return np.empty(0, np.uint64)
    lengths = pc.min_max(pc.binary_length(arr)).as_py()
    if arr.null_count or lengths != {"min": HEX_DIGITS, "max": HEX_DIGITS}:
        return None
    offsets = np.frombuffer(arr.buffers()[1], np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    nibbles = _hex_table()[data.reshape(-1, HEX_DIGITS)[:, :_PREFIX_DIGITS]]  # 16 bytes a row
    if (nibbles == 255).any():
        return None
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]  # the prefix's 8 bytes, big-endian
    out: np.ndarray = np.ascontiguousarray(packed).view(">u8").ravel().astype(np.uint64)
    return out


class PrefixIndex:
    """Sorted 64-bit key prefixes of the files added so far, with the file of each."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._parts: list[tuple[Any, Any]] = []  # (sorted prefixes, file number of each)
        self._pending: list[tuple[Any, Any]] = []

    def add(self, path: str, prefixes: np.ndarray) -> None:
        import numpy as np

        self._pending.append((prefixes, np.full(len(prefixes), len(self.paths), np.uint32)))
        self.paths.append(path)

    def files_holding(self, prefixes: list[int]) -> dict[str, set[int]]:
        """For each file that holds one of ``prefixes``: which of them (by position)."""
        import numpy as np

        self._settle()
        wanted = np.array(prefixes, np.uint64)
        out: dict[str, set[int]] = {}
        for keys, files in self._parts:
            lo, hi = np.searchsorted(keys, wanted, "left"), np.searchsorted(keys, wanted, "right")
            for i in np.nonzero(hi > lo)[0]:
                for f in set(files[lo[i] : hi[i]].tolist()):
                    out.setdefault(self.paths[f], set()).add(int(i))
        return out

    def _settle(self) -> None:
        import numpy as np

        if self._pending:
            self._parts.append(
                _sorted_run(
                    np.concatenate([k for k, _ in self._pending]), np.concatenate([f for _, f in self._pending])
                )
            )
            self._pending = []
        if len(self._parts) > _MERGE_PARTS:
            self._parts = [
                _sorted_run(np.concatenate([k for k, _ in self._parts]), np.concatenate([f for _, f in self._parts]))
            ]


def _sorted_run(keys: np.ndarray, files: np.ndarray) -> tuple[Any, Any]:
    order = keys.argsort(kind="stable")
    return keys[order], files[order]
