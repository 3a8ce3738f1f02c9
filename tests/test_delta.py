"""ingest.delta: writers that race to create the same table leave exactly one copy of the rows.

delta-rs rebases a losing creation commit as a plain add, so two overwrites of a table that did
not exist yet both landed (CI caught 9000 rows for 3000 when three snapshot ingests raced).
The racers here start together from a barrier, in separate processes as real runs would (tests/procs.py).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.delta import write_batch
from ingest.lake import Lake
from tests.procs import race

RACERS = 3


def _overwrite(root: str, barrier) -> None:
    lake, data = Lake(root), pa.table({"id": list(range(1000))})
    lake.table_exists("silver.m")  # warm imports so the racers meet at the commit
    barrier.wait()
    try:
        write_batch(lake, "silver.m", data, mode="overwrite")
    except Exception as exc:  # noqa: BLE001 - a conflicting overwrite may fail; duplicates may not
        if "concurrent" not in str(exc).lower():
            raise


def _snapshot(root: str, db: str, barrier) -> None:
    """Meet the other racers right before the first Delta write, after each has seen no table:
    the losing-creation case every time, not only when the timing happens to line up."""
    import deltalake

    from ingest.sources.tables import ingest_table

    real, met = deltalake.write_deltalake, []

    def write_after_barrier(*args, **kwargs):
        if not met:
            met.append(True)
            barrier.wait(timeout=120)
        return real(*args, **kwargs)

    deltalake.write_deltalake = write_after_barrier
    lake = Lake(root)
    ingest_table(lake, f"sqlite:///{db}", source_table="t", table="bronze.t")


@pytest.mark.parametrize("round_", range(3))
def test_racing_overwrites_of_a_new_table_keep_one_copy(tmp_path: Path, round_: int) -> None:
    root = str(tmp_path / "lake")
    codes = race(_overwrite, [(root,)] * RACERS)
    assert codes.count(0) >= 1, codes
    ids = Lake(root).delta_table("silver.m").to_pyarrow_table()["id"].to_pylist()
    assert sorted(ids) == list(range(1000))


# delta-rs rebases a lost creation only some of the time (otherwise it reports a metadata
# conflict, which the ingest retried correctly even before the fix), so one round catches the
# old bug about half the time; the overwrite test above catches it every round
@pytest.mark.parametrize("round_", range(6))
def test_racing_snapshot_ingests_of_a_new_table_keep_one_copy(tmp_path: Path, round_: int) -> None:
    db = tmp_path / "src.db"
    con = sqlite3.connect(db)
    con.execute("create table t (id integer primary key, v text)")
    con.executemany("insert into t values (?, ?)", [(i, f"v{i}") for i in range(500)])
    con.commit()
    con.close()
    root = str(tmp_path / "lake")
    assert race(_snapshot, [(root, str(db))] * RACERS) == [0] * RACERS
    ids = Lake(root).delta_table("bronze.t").to_pyarrow_table()["id"].to_pylist()
    assert sorted(ids) == list(range(500))


def test_the_same_batch_written_twice_is_stored_once(tmp_path: Path) -> None:
    """Exactly once per (app_id, batch_version): a retried batch (a new process, a new Lake) is a no-op."""
    root = str(tmp_path / "lake")
    batch = pa.table({"id": [1, 2, 3]})
    first = write_batch(Lake(root), "bronze.b", batch, app_id="src-a", batch_version=1)
    assert (first.skipped, first.rows) == (False, 3)
    again = write_batch(Lake(root), "bronze.b", batch, app_id="src-a", batch_version=1)
    assert again.skipped and again.rows == 0 and again.version == first.version
    older = write_batch(Lake(root), "bronze.b", pa.table({"id": [0]}), app_id="src-a", batch_version=0)
    assert older.skipped, "a batch older than the last committed one is done too"
    lake = Lake(root)
    assert lake.delta_table("bronze.b").version() == first.version
    assert sorted(lake.delta_table("bronze.b").to_pyarrow_table()["id"].to_pylist()) == [1, 2, 3]
    # the next batch, and the same number from another app id, are new
    write_batch(lake, "bronze.b", pa.table({"id": [4]}), app_id="src-a", batch_version=2)
    write_batch(lake, "bronze.b", pa.table({"id": [5]}), app_id="src-b", batch_version=1)
    assert sorted(lake.delta_table("bronze.b").to_pyarrow_table()["id"].to_pylist()) == [1, 2, 3, 4, 5]
    assert lake.delta_table("bronze.b").transaction_version("src-a") == 2


def test_appended_files_are_the_new_rows_only_while_the_table_is_append_only(local_lake: Lake) -> None:
    """What an incremental Spark model reads: the files appends added since a version; None as
    soon as a commit did more than append (then only a full rebuild is right)."""
    from deltalake import DeltaTable

    from ingest.delta import appended_files, delete_rows

    for i in range(3):
        write_batch(local_lake, "bronze.events", pa.table({"event_id": [f"e{i}"], "n": [i]}))
    uri = local_lake.table_uri("bronze.events")
    files = [f.rsplit("/", 1)[-1] for f in DeltaTable(uri).file_uris()]
    assert appended_files(local_lake, "bronze.events", since=2, until=2) == []
    (one,) = appended_files(local_lake, "bronze.events", since=1, until=2)
    assert one in files and one not in [f.rsplit("/", 1)[-1] for f in DeltaTable(uri, version=1).file_uris()]
    assert len(appended_files(local_lake, "bronze.events", since=0, until=2)) == 2
    # compaction moves rows without changing them: nothing new, unless it moved new rows
    DeltaTable(uri).optimize.compact()
    assert appended_files(local_lake, "bronze.events", since=2, until=3) == []
    assert appended_files(local_lake, "bronze.events", since=1, until=3) is None
    write_batch(local_lake, "bronze.events", pa.table({"event_id": ["e9"], "n": [9]}))
    assert len(appended_files(local_lake, "bronze.events", since=3, until=4)) == 1
    delete_rows(local_lake, "bronze.events", "n = 9")
    assert appended_files(local_lake, "bronze.events", since=3, until=5) is None
    # a new column (schema merge) is a metadata change: rebuild
    write_batch(local_lake, "bronze.events", pa.table({"event_id": ["e10"], "n": [10], "extra": ["x"]}))
    assert appended_files(local_lake, "bronze.events", since=5, until=6) is None


def test_a_commit_race_is_recognised_by_its_type_not_its_message() -> None:
    """The retry loop re-runs a step only for a typed conflict; a Delta error whose text merely
    mentions a concurrent writer or an existing version is a real failure, raised at once."""
    from deltalake.exceptions import CommitFailedError, DeltaError

    from ingest.delta import BatchTaken, CommitConflict, is_commit_conflict, with_commit_retry

    assert is_commit_conflict(CommitFailedError("version 3 already exists"))
    assert is_commit_conflict(BatchTaken("tables:bronze.t")) and is_commit_conflict(CommitConflict("created first"))
    assert not is_commit_conflict(DeltaError("concurrent writer: version 3 already exists"))

    class CommitFailedErrorLookalike(Exception):
        pass

    assert not is_commit_conflict(CommitFailedErrorLookalike("version 3 already exists"))
    calls: list[int] = []

    def step() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise CommitFailedError("a concurrent append won")
        return len(calls)

    assert with_commit_retry(step) == 3

    def broken() -> None:
        calls.append(1)
        raise DeltaError("schema mismatch with a concurrent writer")

    with pytest.raises(DeltaError, match="schema"):
        with_commit_retry(broken)
    assert len(calls) == 4, "a real failure is not retried"


def test_a_stream_that_loses_the_creation_race_asks_for_a_retry(local_lake: Lake, monkeypatch) -> None:
    """A RecordBatchReader cannot be read twice: when another writer creates the table first, the
    write raises a typed conflict (the caller reads its source again) and adds nothing."""
    import deltalake

    from ingest.delta import CommitConflict

    real = deltalake.write_deltalake

    def other_writer_first(target, data, **kwargs):
        real(local_lake.table_uri("bronze.s"), pa.table({"id": [99]}))  # the winner
        return real(target, data, **kwargs)  # mode="error": the table exists now

    monkeypatch.setattr(deltalake, "write_deltalake", other_writer_first)
    reader = pa.RecordBatchReader.from_batches(pa.schema([("id", pa.int64())]), iter([pa.record_batch({"id": [1, 2]})]))
    with pytest.raises(CommitConflict, match="bronze.s"):
        write_batch(local_lake, "bronze.s", reader, mode="overwrite", app_id="tables:bronze.s", batch_version=1)
    monkeypatch.undo()
    assert local_lake.delta_table("bronze.s").to_pyarrow_table()["id"].to_pylist() == [99]
    with pytest.raises(ValueError, match="overwrite mode only"):
        write_batch(local_lake, "bronze.s", reader, mode="append")


def test_a_type_swap_after_a_merge_is_not_new_rows(local_lake: Lake) -> None:
    """``plain_files`` swaps a merge's string_view file for a plain copy in a commit that says its
    files changed (so delta-rs checks a concurrent compaction against it): readers of the log
    still know it moved rows only."""
    from ingest.delta import SWAP_MARK, appended_files, merge_batch

    write_batch(local_lake, "silver.m", pa.table({"id": pa.array([1, 2, 3], pa.int64()), "s": ["a", "b", "c"]}))
    merge_batch(local_lake, "silver.m", pa.table({"id": pa.array([2], pa.int64()), "s": ["B"]}), keys=["id"])
    swap, merge = local_lake.delta_table("silver.m").history(2)
    assert merge["operation"] == "MERGE" and all(swap.get(k) == v for k, v in SWAP_MARK.items())
    v = swap["version"]
    assert appended_files(local_lake, "silver.m", since=v - 1, until=v) == []  # the swap: nothing new
    assert appended_files(local_lake, "silver.m", since=v - 2, until=v) is None  # the merge rewrote rows
