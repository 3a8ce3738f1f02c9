"""ingest.staging: a batch's files are written once; a lost race commits the same files again.

The add actions come from delta-rs' own commit of a staging table, so their statistics must be
exactly those ``write_deltalake`` records for the same rows (data skipping trusts them).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from ingest.delta import ensure_table, is_commit_conflict, write_batch
from ingest.lake import Lake
from ingest.staging import STAGING_DIR, commit_staged, discard_staged, stage_files

APP = "writer:silver.t"


def _data(start: int = 0, n: int = 50) -> pa.Table:
    ts = datetime(2026, 12, 2, 16, 38, 32, 495871, tzinfo=UTC)
    return pa.table(
        {
            "id": pa.array(range(start, start + n), pa.int64()),
            "name": pa.array([None if i % 7 == 0 else f"name-{i:04d}-{'x' * 40}" for i in range(start, start + n)]),
            "at": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
            "score": pa.array([i / 3 for i in range(start, start + n)], pa.float64()),
            "blob": pa.array([bytes([i % 256]) * 100 for i in range(start, start + n)], pa.binary()),
        }
    )


def _table(lake: Lake, name: str = "silver.t"):
    ensure_table(lake, name, _data().schema)
    return lake.delta_table(name)


def _adds(lake: Lake, table: str) -> list[dict]:
    from ingest.delta import commit_actions

    dt = lake.delta_table(table)
    return [e["add"] for v in range(dt.version() + 1) for e in commit_actions(lake, table, v) if "add" in e]


def _staged_folder_exists(lake: Lake, table: str, folder: str) -> bool:
    import pyarrow.fs as pafs

    path = lake.fs_path(f"{lake.table_uri(table)}/{folder}")
    return lake.pyarrow_filesystem().get_file_info(path).type != pafs.FileType.NotFound


def _check_stage_and_commit(lake: Lake) -> None:
    dt = _table(lake)
    staged = stage_files(lake, "silver.t", _data(), snapshot=dt)
    assert dt.version() == 0 and staged.rows == 50 and staged.folder.startswith(f"{STAGING_DIR}/")
    assert not _staged_folder_exists(lake, "silver.t", f"{staged.folder}/_delta_log")  # no staging log left
    res = commit_staged(lake, staged, snapshot=dt, app_id=APP, batch_version=1, metadata={"run_id": "r1"})
    assert (res.version, res.rows, res.skipped) == (1, 50, False)
    assert lake.delta_table("silver.t").to_pyarrow_table().sort_by("id").equals(_data())
    assert lake.delta_table("silver.t").transaction_version(APP) == 1
    # the statistics are delta-rs' own: the same as write_deltalake records for the same rows
    write_batch(lake, "silver.plain", _data())
    [ours], [theirs] = _adds(lake, "silver.t"), _adds(lake, "silver.plain")
    assert ours["path"].startswith(f"{staged.folder}/")
    assert json.loads(ours["stats"]) == json.loads(theirs["stats"])
    assert ours["dataChange"] is True
    # exactly once: the same batch again commits nothing
    again = commit_staged(lake, staged, snapshot=lake.delta_table("silver.t"), app_id=APP, batch_version=1)
    assert again.skipped and lake.delta_table("silver.t").version() == 1


def test_staged_files_carry_delta_rs_statistics_and_commit_once(local_lake: Lake) -> None:
    _check_stage_and_commit(local_lake)


@pytest.mark.integration
@pytest.mark.s3
def test_staged_files_on_s3(s3_lake: Lake) -> None:
    _check_stage_and_commit(s3_lake)
    staged = stage_files(s3_lake, "silver.t", _data(100), snapshot=s3_lake.delta_table("silver.t"))
    assert _staged_folder_exists(s3_lake, "silver.t", staged.folder)
    discard_staged(s3_lake, staged)
    assert not _staged_folder_exists(s3_lake, "silver.t", staged.folder)


def test_a_lost_race_commits_the_same_files_under_the_next_number(local_lake: Lake) -> None:
    dt = _table(local_lake)
    staged = stage_files(local_lake, "silver.t", _data(), snapshot=dt)
    # another writer takes batch 1 after our snapshot
    write_batch(local_lake, "silver.t", _data(1000, 5), app_id=APP, batch_version=1)
    with pytest.raises(Exception) as lost:
        commit_staged(local_lake, staged, snapshot=dt, app_id=APP, batch_version=1)
    assert is_commit_conflict(lost.value)
    dt.update_incremental()
    res = commit_staged(local_lake, staged, snapshot=dt, app_id=APP, batch_version=2)
    assert (res.version, res.rows) == (2, 50)
    assert [a["path"] for a in _adds(local_lake, "silver.t")][-1] == staged.actions[0].path
    assert local_lake.delta_table("silver.t").to_pyarrow_table().num_rows == 55


def test_the_version_reported_is_our_commit_when_others_follow_at_once(local_lake: Lake) -> None:
    """``create_write_transaction`` leaves the snapshot where it was; a writer that commits right
    after us must not be taken for our commit (the key index records which version holds what)."""
    dt = _table(local_lake)
    staged = stage_files(local_lake, "silver.t", _data(), snapshot=dt)
    commit = dt.create_write_transaction

    def then_another_writer(*args, **kwargs):
        commit(*args, **kwargs)
        write_batch(local_lake, "silver.t", _data(1000, 5), app_id="other", batch_version=1)

    dt.create_write_transaction = then_another_writer
    res = commit_staged(local_lake, staged, snapshot=dt, app_id=APP, batch_version=1)
    assert res.version == 1 and dt.version() == 2
    assert local_lake.delta_table("silver.t", version=1).transaction_version(APP) == 1


def test_discarded_files_are_deleted_and_new_columns_are_refused(local_lake: Lake) -> None:
    dt = _table(local_lake)
    staged = stage_files(local_lake, "silver.t", _data(), snapshot=dt)
    assert _staged_folder_exists(local_lake, "silver.t", staged.folder)
    discard_staged(local_lake, staged)
    assert not _staged_folder_exists(local_lake, "silver.t", staged.folder)
    discard_staged(local_lake, staged)  # gone already: nothing to do
    with pytest.raises(ValueError, match=r"no column\(s\) \['extra'\].*write_batch"):
        stage_files(local_lake, "silver.t", _data().append_column("extra", pa.array([1] * 50)), snapshot=dt)


def test_tables_with_rules_a_staged_append_would_bypass_are_refused(local_lake: Lake, tmp_path) -> None:
    """CHECK constraints and column mapping live in delta-rs' writer for the target table, which
    the staging table does not have: such tables take their rows through write_batch."""
    from deltalake import write_deltalake

    from ingest.staging import not_stageable

    dt = _table(local_lake)
    assert not_stageable(dt) is None
    dt.alter.add_constraint({"id_small": "id < 1000"})
    dt = local_lake.delta_table("silver.t")
    assert not_stageable(dt) == "CHECK constraints ['delta.constraints.id_small']"
    with pytest.raises(ValueError, match=r"cannot take staged files \(CHECK constraints .*write_batch"):
        stage_files(local_lake, "silver.t", _data(), snapshot=dt)
    write_deltalake(local_lake.table_uri("silver.mapped"), _data(), configuration={"delta.columnMapping.mode": "name"})
    assert "column mapping" in (not_stageable(local_lake.delta_table("silver.mapped")) or "")


def test_vacuum_deletes_files_no_commit_named_once_a_day_old_never_a_running_writers(local_lake: Lake) -> None:
    """A writer killed between staging and committing leaves files no commit names; vacuum takes
    them when a day old (``ORPHAN_MIN_HOURS``), even under ``--retain-hours 0 --force``, and never
    younger ones: a running writer's staged files still commit and read back."""
    import os
    import time
    from pathlib import Path

    from ingest.vacuum import ORPHAN_MIN_HOURS, vacuum

    _table(local_lake)
    write_batch(local_lake, "silver.t", _data())
    killed = stage_files(local_lake, "silver.t", _data(100), snapshot=local_lake.delta_table("silver.t"))
    running = stage_files(local_lake, "silver.t", _data(200), snapshot=local_lake.delta_table("silver.t"))
    root = Path(local_lake.table_uri("silver.t"))
    old = time.time() - (ORPHAN_MIN_HOURS + 1) * 3600
    for f in (root / killed.folder).rglob("*.parquet"):
        os.utime(f, (old, old))
    out = vacuum(local_lake, retain_hours=0, force=True, tables=["silver.t"])
    (t,) = out.tables
    assert t.deleted and all(p.startswith(f"{killed.folder}/") for p in t.deleted)
    assert not (root / killed.folder).exists()  # its emptied folder too
    assert list((root / running.folder).rglob("*.parquet"))  # younger than the floor: kept
    res = commit_staged(local_lake, running, snapshot=local_lake.delta_table("silver.t"), app_id=APP, batch_version=1)
    assert res.rows == 50
    ids = local_lake.delta_table("silver.t").to_pyarrow_table().column("id").to_pylist()
    assert sorted(ids) == list(range(50)) + list(range(200, 250))  # the committed rows, each once
