"""Each log file's content is a Delta app id of the bronze table: the table forgets them after
``delta.setTransactionRetentionDuration`` (delta-rs drops expired transactions from snapshots and
checkpoints), and ``_meta.log_streams`` still says where every stream stands, so a file whose
transaction expired is not loaded again, and lines appended to it (or to a rotated copy) load once."""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from ingest.lake import Lake
from ingest.sources.logs import ingest_logs
from ingest.sources.logstate import DEFAULT_TXN_RETENTION, STREAMS_TABLE, TXN_RETENTION
from tests.sources.conftest import read
from tests.sources.test_log_rotation import _app, assert_every_line_once

TABLES = ("bronze.events", "bronze.events_quarantine")


def _files(d: Path, n: int) -> None:
    """``n`` small JSON-lines files, one bad line in the first."""
    for i in range(n):
        lines = [json.dumps({"event_id": f"f{i}-{k}", "file": i}) for k in range(3)]
        if i == 0:
            lines.insert(1, "{not json")
        (d / f"old-{i:03}.log").write_text("\n".join(lines) + "\n")


def _log_app_ids(lake: Lake) -> list[str]:
    return [a for a in read(lake, str(STREAMS_TABLE), ["app_id"]) for a in [a["app_id"]]]


def _expire_now(lake: Lake) -> None:
    """What a retention shorter than the time since the last run does: every transaction expires
    (set as a user would, ALTER TABLE … SET TBLPROPERTIES), then a checkpoint."""
    for t in TABLES:
        dt = lake.delta_table(t)
        dt.alter.set_table_properties({TXN_RETENTION: "interval 0 seconds"})
        dt.create_checkpoint()


def _txns_in_checkpoints(lake: Lake, table: str) -> list[dict]:
    root = lake.table_uri(table)
    out = []
    for f in glob.glob(f"{root}/_delta_log/*.checkpoint*.parquet"):
        t = pq.read_table(f, columns=["txn"])
        out += [r for r in t.column("txn").to_pylist() if r]
    return out


def test_expired_transactions_load_nothing_twice(tmp_path: Path) -> None:
    app, lake = _app(tmp_path, "create\n  compress\n  delaycompress")
    _files(app.dir, 12)
    app.write(120)
    first = ingest_logs(lake, str(app.dir))
    assert (first.rows_written, first.rows_quarantined) == (12 * 3 + 120, 1)
    for t in TABLES:  # the ingest gave both tables a retention
        assert lake.delta_table(t).metadata().configuration[TXN_RETENTION] == DEFAULT_TXN_RETENTION
    app_ids = _log_app_ids(lake)
    assert len(set(app_ids)) == 13  # every file's stream is recorded

    _expire_now(lake)
    for t in TABLES:
        dt = lake.delta_table(t)
        assert all(dt.transaction_version(a) is None for a in app_ids), "transactions did not expire"
        assert _txns_in_checkpoints(lake, t) == []  # the checkpoint no longer carries them

    again = ingest_logs(lake, str(app.dir))
    assert (again.rows_written, again.rows_quarantined, again.skipped) == (0, 0, 13)

    app.write(30)  # appended to a file whose transaction expired: read from where it stood
    app.rotate()  # renamed to app.log.1: still the same stream, not a new file
    app.write(5)
    third = ingest_logs(lake, str(app.dir))
    assert (third.rows_written, third.rows_quarantined) == (35, 0)
    app.rotate()  # app.log.1 gzipped (expired stream, found by its record), app.log renamed
    _expire_now(lake)
    assert ingest_logs(lake, str(app.dir)).rows_written == 0
    rows = [r for r in read(lake, "bronze.events") if r["_source_file"].rsplit("/", 1)[1].startswith("app.log")]
    assert len(rows) == len(app.written) == 155
    old = [r["event_id"] for r in read(lake, "bronze.events", ["event_id"]) if r["event_id"].startswith("f")]
    assert sorted(old) == sorted(f"f{i}-{k}" for i in range(12) for k in range(3))
    assert len(read(lake, "bronze.events_quarantine")) == 1


def test_a_run_killed_before_recording_is_recorded_by_the_next(tmp_path: Path) -> None:
    """The streams' record is written after their commits: a run killed in between leaves only
    the transactions, and the next run (within the retention) records them from there."""
    app, lake = _app(tmp_path, "create")
    app.write(50)
    assert ingest_logs(lake, str(app.dir)).rows_written == 50
    shutil.rmtree(lake.table_uri(str(STREAMS_TABLE)))  # as if killed before the record was written
    assert ingest_logs(lake, str(app.dir)).rows_written == 0
    assert len(_log_app_ids(lake)) == 1  # recorded from the transaction
    app.write(10)
    _expire_now(lake)
    assert ingest_logs(lake, str(app.dir)).rows_written == 10
    assert_every_line_once(lake, app)
