"""The run's hash-prefix index behind image dedup: it only proposes files, the exact search decides."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from ingest.delta import write_batch
from ingest.lake import Lake
from ingest.sources.keyindex import PrefixIndex, digest_prefixes, key_prefix
from ingest.sources.seen import StoredKeys

APP = "images:bronze.keys"


def _h(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_prefixes_are_the_first_64_bits_of_each_digest() -> None:
    hashes = [_h(i) for i in range(50)] + [_h(1).upper()]
    arr = pa.array(["x", *hashes], pa.string()).slice(1)  # an offset into the buffers
    got = digest_prefixes(pa.chunked_array([arr[:20], arr[20:]]))
    assert got is not None and got.tolist() == [int(h[:16], 16) for h in hashes]
    assert [key_prefix(h) for h in hashes] == got.tolist()
    for bad in (["g" * 64], ["a" * 63], [None], ["-" + _h(1)[1:]]):
        assert digest_prefixes(pa.array([_h(2), *bad], pa.string())) is None
        assert bad[0] is None or key_prefix(bad[0]) is None
    tail = _h(1)[:-1] + "-"  # stored, it has a prefix; as a lookup key it is no digest
    assert digest_prefixes(pa.array([tail])).tolist() == [key_prefix(_h(1))]
    assert key_prefix(tail) is None


def test_index_names_every_file_holding_a_prefix() -> None:
    index = PrefixIndex()
    index.add("a", digest_prefixes(pa.array([_h(1), _h(2)])))
    index.add("b", digest_prefixes(pa.array([_h(2), _h(3)])))
    for i in range(4, 14):  # more sorted runs than are kept apart: merged, nothing lost
        index.add(f"f{i}", digest_prefixes(pa.array([_h(i)])))
        assert index.files_holding([key_prefix(_h(i))]) == {f"f{i}": {0}}
    wanted = [key_prefix(h) for h in (_h(0), _h(2), _h(3), _h(13))]
    assert index.files_holding(wanted) == {"a": {1}, "b": {1, 2}, "f13": {3}}


def _stored(lake: Lake, keys: list[str | None]) -> None:
    write_batch(lake, "bronze.keys", pa.table({"sha256": pa.array(keys, pa.string())}))


def test_lookup_is_exact_across_shared_prefixes_and_unindexed_files(local_lake: Lake) -> None:
    """A new hash that shares its first 64 bits with a stored one is new (the exact search
    decides); a file with a key that is no digest is searched as before; stored hashes in
    any of several files are found, including files added after the index was built."""
    twin = _h(5)[:16] + "0" * 48  # same prefix as a stored hash, another hash
    _stored(local_lake, [_h(i) for i in range(0, 10)])
    _stored(local_lake, [_h(i) for i in range(10, 20)])
    keys = StoredKeys(local_lake, "bronze.keys", "sha256", app_id=APP)
    assert keys.held([_h(5), _h(15), twin, _h(99)]) == {_h(5), _h(15)}
    assert len(keys._indexed) == 2 and not keys._unindexed
    _stored(local_lake, ["not-a-digest", _h(30), None])
    _stored(local_lake, [_h(40), twin])
    assert keys.held([_h(30), _h(40), twin, _h(3), _h(98)]) == {_h(30), _h(40), twin, _h(3)}
    assert len(keys._indexed) == 3 and len(keys._unindexed) == 1
    assert keys.held(["not-a-digest", _h(97)]) == {"not-a-digest"}  # a key that is no digest: every file
