"""The run's hash-prefix index behind image dedup: it only proposes files, the exact search decides."""

from __future__ import annotations

import hashlib
from pathlib import Path

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


def test_keys_sharing_one_prefix_name_each_file_that_holds_it() -> None:
    """Zero-padded numbers are hex digests with one shared prefix: every file holding the prefix
    is named for every key (the exact search decides), each run of equal prefixes read once."""
    index = PrefixIndex()
    padded = [f"{i:064d}" for i in range(30_000)]
    index.add("low", digest_prefixes(pa.array(padded[:20_000])))
    index.add("high", digest_prefixes(pa.array(padded[20_000:])))
    index.add("other", digest_prefixes(pa.array([_h(1)])))
    asked = [key_prefix(k) for k in padded[::10]] + [key_prefix(_h(2))]
    assert index.files_holding(asked) == {"low": set(range(3_000)), "high": set(range(3_000))}


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


def test_rows_come_from_the_files_that_hold_the_keys_in_the_tables_types(local_lake: Lake) -> None:
    """``rows`` returns the asked columns of the rows with those keys, as of a snapshot: a column a
    later append added is null in the older file's rows, unknown keys give no row, and a file
    committed after the snapshot is neither read nor searched."""
    write_batch(local_lake, "bronze.keys", pa.table({"sha256": [_h(1), _h(2)], "n": [1, 2]}))
    write_batch(local_lake, "bronze.keys", pa.table({"sha256": [_h(3)], "n": [3], "tag": ["new"]}))
    snapshot = local_lake.delta_table("bronze.keys")
    write_batch(local_lake, "bronze.keys", pa.table({"sha256": [_h(4)], "n": [4], "tag": ["later"]}))
    keys = StoredKeys(local_lake, "bronze.keys", "sha256", app_id="")
    got = keys.rows([_h(3), _h(1), _h(4), _h(99)], columns=["sha256", "tag"], snapshot=snapshot)
    assert got.schema == pa.schema([("sha256", pa.string()), ("tag", pa.string())])
    assert sorted(got.to_pylist(), key=lambda r: r["sha256"]) == sorted(
        [{"sha256": _h(1), "tag": None}, {"sha256": _h(3), "tag": "new"}], key=lambda r: r["sha256"])
    assert len(keys._fragments) == 2  # the snapshot's two files, not the later one
    none = StoredKeys(local_lake, "bronze.keys", "sha256", app_id="").rows([_h(99)], columns=["n"])
    assert none.num_rows == 0 and none.schema == pa.schema([("n", pa.int64())])


def test_saved_prefixes_load_live_files_merge_and_skip_a_damaged_file(tmp_path) -> None:
    """Saved entries come back sorted, for live files only; past the limit a save merges the
    live ones into one file (each data file once); a damaged or vanished file is skipped (its
    data files are then read instead)."""
    import numpy as np
    import pyarrow.fs as pafs

    from ingest.sources.keyindex import _MAX_SEGMENTS, SavedPrefixes

    saved = SavedPrefixes(pafs.LocalFileSystem(), str(tmp_path / "t"), "sha256")
    arr = lambda *v: np.array(v, np.uint64)  # noqa: E731

    def entries(live: set[str]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for paths, keys, files in saved.load(live):
            assert keys.tolist() == sorted(keys.tolist())
            for key, f in zip(keys.tolist(), files.tolist(), strict=True):
                out.setdefault(paths[f], []).append(key)
        return out

    saved.save({"a.parquet": arr(3, 1), "b.parquet": arr(2**64 - 1, 2)}, live={"a.parquet", "b.parquet"})
    assert entries({"a.parquet", "gone.parquet"}) == {"a.parquet": [1, 3]}
    assert entries({"a.parquet", "b.parquet"}) == {"a.parquet": [1, 3], "b.parquet": [2, 2**64 - 1]}
    saved.save({"a.parquet": arr(3, 1)}, live={"a.parquet"})  # saved twice (a concurrent run)
    for i in range(_MAX_SEGMENTS - 2):
        saved.save({f"f{i}.parquet": arr(i)}, live={"a.parquet", *(f"f{j}.parquet" for j in range(i + 1))})
    assert len(saved._segments()) == _MAX_SEGMENTS
    import os
    import time

    stale, fresh = Path(saved.dir) / ".killed.tmp", Path(saved.dir) / ".writing.tmp"  # saves cut short
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    live = {"a.parquet", "new.parquet", *(f"f{j}.parquet" for j in range(_MAX_SEGMENTS - 2))}
    saved.save({"new.parquet": arr(7, 8)}, live=live)  # merged: b.parquet is no longer live
    (only,) = saved._segments()
    assert not stale.exists() and fresh.exists()  # an hour old: abandoned; newer: maybe still being written
    (paths, _, _), = saved.load(live | {"b.parquet"})
    assert sorted(paths) == sorted(live)  # each once, b.parquet dropped
    assert entries(live) == {"a.parquet": [1, 3], "new.parquet": [7, 8], **{f"f{j}.parquet": [j] for j in range(_MAX_SEGMENTS - 2)}}
    import pyarrow.parquet as pq

    unsorted = pq.read_table(only)
    pq.write_table(unsorted.take([1, 0, *range(2, unsorted.num_rows)]), only)
    assert saved.load(live) == []  # out of order: a binary search could miss a key
    Path(only).write_bytes(b"PAR1 not really")
    assert saved.load(live) == []
    Path(only).unlink()
    assert saved.load(live) == []


def test_a_later_run_takes_stored_hashes_from_the_saved_index_not_the_data_files(local_lake: Lake, monkeypatch) -> None:
    """The first run reads every data file's hashes once and saves their prefixes; a later run
    opens only the file that holds a key it looks up (found exactly), and none for new keys."""
    _stored(local_lake, [_h(i) for i in range(0, 10)])
    _stored(local_lake, [_h(i) for i in range(10, 20)])
    first = StoredKeys(local_lake, "bronze.keys", "sha256", app_id=APP)
    assert first.held([_h(99)]) == set() and len(first._fragments) == 2  # read both files
    first.save()
    assert (Path(local_lake.table_uri("bronze.keys")) / "_ingest_keyindex").is_dir()
    _stored(local_lake, [_h(i) for i in range(20, 30)])  # a file the saved index does not cover
    later = StoredKeys(local_lake, "bronze.keys", "sha256", app_id=APP)
    assert later.held([_h(98), _h(97)]) == set()
    assert len(later._fragments) == 1  # only the file added since the save was read
    assert later.held([_h(5), _h(25), _h(96)]) == {_h(5), _h(25)}  # exact: the holding files are searched
    assert len(later._fragments) == 2
    later.save()  # now the third file is saved too
    third = StoredKeys(local_lake, "bronze.keys", "sha256", app_id=APP)
    assert third.held([_h(95)]) == set() and third._fragments == {}
    assert third.held([_h(i) for i in range(30)]) == {_h(i) for i in range(30)}


def test_images_run_saves_what_it_commits_so_the_next_run_reads_no_stored_hashes(
    local_lake: Lake, tmp_path: Path, monkeypatch
) -> None:
    """A load saves the prefixes of the files it committed: the next run of new images opens
    no stored data file, and copies of stored images are still found (and skipped) exactly."""
    import io
    import shutil

    from PIL import Image

    from ingest.sources.images import ingest_images

    def images(d: Path, start: int, n: int) -> None:
        d.mkdir(parents=True)
        for i in range(start, start + n):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (i % 256, i // 256, 9)).save(buf, format="PNG")
            (d / f"img_{i:04d}.png").write_bytes(buf.getvalue())

    monkeypatch.setenv("INGEST_IMAGE_BATCH_FILES", "10")
    images(tmp_path / "a", 0, 30)
    assert ingest_images(local_lake, str(tmp_path / "a")).rows_written == 30
    opened: list[str] = []
    real = StoredKeys._fragment
    monkeypatch.setattr(StoredKeys, "_fragment", lambda self, p: opened.append(p) or real(self, p))
    images(tmp_path / "b", 100, 25)
    assert ingest_images(local_lake, str(tmp_path / "b")).rows_written == 25
    assert opened == []  # no stored file was read: every lookup was answered by the saved index
    (tmp_path / "c").mkdir()
    for name in ("img_0003.png", "img_0017.png"):
        shutil.copy(tmp_path / "a" / name, tmp_path / "c" / f"copy_{name}")
    shutil.copy(tmp_path / "b" / "img_0110.png", tmp_path / "c" / "copy_b.png")
    images(tmp_path / "c" / "new", 200, 3)
    res = ingest_images(local_lake, str(tmp_path / "c"))
    assert (res.rows_written, res.skipped) == (3, 3)
    assert 1 <= len(opened) <= 3  # only the files holding the copies' hashes
    shas = [r["sha256"] for r in local_lake.dataset("bronze.images").to_table(columns=["sha256"]).to_pylist()]
    assert len(shas) == len(set(shas)) == 58
