"""ingest tables: snapshot, merge, cursor with lag, quoting, drift, exactly-once - on real PostgreSQL."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ingest.errors import SourceError
from ingest.lake import Lake, TableId
from ingest.sources.tables import build_query, ingest_table, parse_source
from tests.procs import assert_runs_overlapped, race_cli
from tests.sources.conftest import (
    commits, data_files, kill_after_commits, kill_when, read, run_cli, run_json, sorted_rows, spawn_cli,
)

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _pg(url: str):
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def _name() -> str:
    return "t_" + uuid.uuid4().hex[:8]


def _make_events(url: str, name: str, n: int) -> None:
    with _pg(url) as con:
        con.execute(f'create table "{name}" (id bigint primary key, v text, n integer, updated_at timestamptz not null)')
        with con.cursor() as cur:
            with cur.copy(f'copy "{name}" (id, v, n, updated_at) from stdin') as cp:
                for i in range(n):
                    cp.write_row((i, f"v{i}", i % 100, T0 + timedelta(seconds=i)))


def test_quoting_never_splices_names() -> None:
    src = parse_source("postgresql://u:p@h/db", 'My Schema.we"ird; drop table x')
    sql = build_query(src, cursor="select", low="it's")
    assert sql.split("\n")[1].strip() == 'FROM "My Schema"."we""ird; drop table x" '.strip()
    assert "WHERE \"select\" >= 'it''s'" in sql
    assert parse_source("sqlite:///x.db", "photos").label.endswith("#photos")
    assert "p@h" not in parse_source("postgresql://u:p@h/db", "t").label  # password hidden


@pytest.mark.integration
@pytest.mark.postgres
def test_snapshot_replaces_atomically(local_lake: Lake, postgres_url: str) -> None:
    name = _name()
    _make_events(postgres_url, name, 500)
    r1 = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.snap")
    assert (r1.rows_written, r1.version) == (500, 0)
    with _pg(postgres_url) as con:
        con.execute(f'delete from "{name}" where id < 10')
        con.execute(f'insert into "{name}" values (1000, \'new\', 1, now())')
    r2 = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.snap")
    assert r2.version == 1  # one commit: readers see the old or the new snapshot, never a mix
    ids = sorted(r["id"] for r in read(local_lake, "bronze.snap", ["id"]))
    assert ids == list(range(10, 500)) + [1000]
    ts = read(local_lake, "bronze.snap", ["updated_at"])[0]["updated_at"]
    assert str(ts.tzinfo) == "UTC"


@pytest.mark.integration
@pytest.mark.postgres
def test_primary_key_merge_replaces_updates(local_lake: Lake, postgres_url: str) -> None:
    name = _name()
    _make_events(postgres_url, name, 200)
    ingest_table(local_lake, postgres_url, source_table=name, table="bronze.m", primary_key=("id",))
    with _pg(postgres_url) as con:
        con.execute(f"update \"{name}\" set v = 'changed' where id in (3, 4)")
        con.execute(f"insert into \"{name}\" values (500, 'x', 1, now())")
    r = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.m", primary_key=("id",))
    assert (r.rows_written, r.skipped) == (3, 198)  # unchanged rows are not rewritten
    rows = read(local_lake, "bronze.m", ["id", "v"])
    assert len(rows) == 201 == len({x["id"] for x in rows})
    assert {x["id"]: x["v"] for x in rows}[3] == "changed"
    again = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.m", primary_key=("id",))
    assert (again.rows_written, again.skipped) == (0, 201)


@pytest.mark.integration
@pytest.mark.postgres
def test_cursor_with_lag_picks_up_late_rows(local_lake: Lake, postgres_url: str) -> None:
    name = _name()
    _make_events(postgres_url, name, 100)  # updated_at = T0 + 0..99 s
    r1 = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.inc", cursor="updated_at", cursor_lag=30)
    assert r1.rows_written == 100
    with _pg(postgres_url) as con:  # committed late with older cursor values
        con.execute(f"insert into \"{name}\" values (1001, 'late', 1, %s)", (T0 + timedelta(seconds=80),))
        con.execute(f"insert into \"{name}\" values (1002, 'too late', 1, %s)", (T0 + timedelta(seconds=5),))
        con.execute(f"insert into \"{name}\" values (1003, 'new', 1, %s)", (T0 + timedelta(seconds=500),))
    r2 = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.inc", cursor="updated_at", cursor_lag=30)
    assert r2.rows_written == 2  # the late row inside the lag window and the new one
    assert r2.skipped == 31  # rows 69..99 re-read inside the window, already stored
    ids = sorted(x["id"] for x in read(local_lake, "bronze.inc", ["id"]))
    assert ids == list(range(100)) + [1001, 1003]
    r3 = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.inc", cursor="updated_at", cursor_lag=30)
    assert r3.rows_written == 0


@pytest.mark.integration
@pytest.mark.postgres
def test_odd_identifiers_are_quoted(local_lake: Lake, postgres_url: str) -> None:
    schema, table = "My Schema", 'we"ird; drop table victim; --'
    with _pg(postgres_url) as con:
        con.execute("create table victim (x int)")
        con.execute('create schema "My Schema"')
        con.execute('create table "My Schema"."we""ird; drop table victim; --" ("select" int primary key, "Order" text)')
        con.execute('insert into "My Schema"."we""ird; drop table victim; --" values (1, \'a\'), (2, \'b\')')
    res = ingest_table(local_lake, postgres_url, source_table=f"{schema}.{table}", table="bronze.odd",
                       primary_key=("select",), cursor="select")
    assert res.rows_written == 2
    with _pg(postgres_url) as con:
        assert con.execute("select count(*) from victim").fetchone() == (0,)


@pytest.mark.integration
@pytest.mark.postgres
def test_schema_drift_adds_columns_and_quarantines_narrowing(local_lake: Lake, postgres_url: str) -> None:
    name = _name()
    with _pg(postgres_url) as con:
        con.execute(f'create table "{name}" (id int primary key, qty integer)')
        con.execute(f'insert into "{name}" values (1, 10), (2, 20)')
    ingest_table(local_lake, postgres_url, source_table=name, table="bronze.drift", primary_key=("id",))
    with _pg(postgres_url) as con:
        con.execute(f'alter table "{name}" add column note text')
        con.execute(f'alter table "{name}" alter column qty type text')
        con.execute(f"insert into \"{name}\" values (3, '30', 'fits'), (4, 'many', 'not a number')")
    r = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.drift", primary_key=("id",))
    assert (r.rows_written, r.rows_quarantined) == (1, 1)
    rows = {x["id"]: x for x in read(local_lake, "bronze.drift")}
    assert sorted(rows) == [1, 2, 3] and rows[3]["note"] == "fits" and rows[3]["qty"] == 30
    import pyarrow as pa

    assert pa.schema(local_lake.delta_table("bronze.drift").schema().to_arrow()).field("qty").type == pa.int32()  # integer stays integer
    q = read(local_lake, "bronze.drift_quarantine")
    assert len(q) == 1 and "qty" in q[0]["reason"] and b"many" in q[0]["raw"]
    again = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.drift", primary_key=("id",))
    assert (again.rows_written, again.rows_quarantined) == (0, 0)  # the bad row is quarantined once


@pytest.mark.integration
@pytest.mark.postgres
@pytest.mark.parametrize("kill_at", [2, 6])
@pytest.mark.parametrize("mode", [["--cursor", "updated_at"], ["--primary-key", "id"]], ids=["cursor", "merge"])
def test_killed_incremental_run_then_rerun_equals_clean_run(
    postgres_url: str, new_lake, mode: list[str], kill_at: int
) -> None:
    name = _name()
    _make_events(postgres_url, name, 12000)
    args = ["tables", postgres_url, "--source-table", name, "--table", "bronze.inc", *mode]
    clean = new_lake("clean")
    run_json(clean, *args)
    lake = new_lake("killed")
    proc = spawn_cli(lake, *args, INGEST_TABLE_BATCH_ROWS="500")
    assert kill_after_commits(proc, lake, "bronze.inc", kill_at), "the run finished before it could be killed"
    assert len(read(lake, "bronze.inc", ["id"])) < 12000
    run_json(lake, *args, INGEST_TABLE_BATCH_ROWS="500")
    cols = ["id", "v", "n", "updated_at"]
    assert sorted_rows(lake, "bronze.inc", cols) == sorted_rows(clean, "bronze.inc", cols)
    assert len(read(lake, "bronze.inc", ["id"])) == 12000


@pytest.mark.integration
@pytest.mark.postgres
def test_killed_snapshot_run_keeps_the_old_snapshot_then_rerun_equals_clean_run(postgres_url: str, new_lake) -> None:
    name = _name()
    _make_events(postgres_url, name, 20000)
    with _pg(postgres_url) as con:  # a source that streams slowly, so the kill lands while files are written
        con.execute(f'create view "{name}_slow" as select * from "{name}" '
                    "where (case when id % 25 = 0 then pg_sleep(0.001)::text else '' end || id::text) is not null")
    args = ["tables", postgres_url, "--source-table", f"{name}_slow", "--table", "bronze.snap"]
    lake = new_lake("killed")
    run_json(lake, *args)
    cols = ["id", "v", "n", "updated_at"]
    old = sorted_rows(lake, "bronze.snap", cols)
    with _pg(postgres_url) as con:  # every row changes, some go, new ones come
        con.execute(f"update \"{name}\" set v = 'new ' || id, n = n + 1")
        con.execute(f'delete from "{name}" where id % 10 = 0')
        con.execute(f"insert into \"{name}\" select i, 'added', 1, now() from generate_series(100000, 102999) i")
    clean = new_lake("clean")
    run_json(clean, *args)
    before = commits(lake, "bronze.snap"), data_files(lake, "bronze.snap")
    # small files: the writer closes one per ~8192 rows (its batch size) well before its one commit
    knobs = {"INGEST_TABLE_BATCH_ROWS": "500", "INGEST_TABLE_FILE_BYTES": "4096", "INGEST_TABLE_ROW_GROUP": "500"}
    proc = spawn_cli(lake, *args, **knobs)
    assert kill_when(proc, lambda: data_files(lake, "bronze.snap") > before[1], "no data files were written")
    last = lake.delta_table("bronze.snap").history(1)[0]
    assert commits(lake, "bronze.snap") == before[0] or last.get("mode") != "snapshot", "the kill landed after the commit"
    assert sorted_rows(lake, "bronze.snap", cols) == old  # readers still see the whole old snapshot
    run_json(lake, *args, **knobs)
    assert sorted_rows(lake, "bronze.snap", cols) == sorted_rows(clean, "bronze.snap", cols)
    assert len(read(lake, "bronze.snap", ["id"])) == 18000 + 3000


@pytest.mark.integration
@pytest.mark.postgres
@pytest.mark.parametrize("mode", [["--cursor", "updated_at"], ["--primary-key", "id"], []])
def test_concurrent_ingests_no_loss_no_duplicates(tmp_path: Path, postgres_url: str, mode: list[str]) -> None:
    name = _name()
    _make_events(postgres_url, name, 3000)
    lake = Lake(str(tmp_path / "lake"))
    args = ["tables", postgres_url, "--source-table", name, "--table", "bronze.conc", *mode]
    results = race_cli(lake, [args] * 3, tmp_path, INGEST_TABLE_BATCH_ROWS="300")
    assert [code for code, _, _ in results] == [0] * 3, [err for _, _, err in results]
    ids = [r["id"] for r in read(lake, "bronze.conc", ["id"])]
    assert len(ids) == len(set(ids)) == 3000
    # the runs overlapped (the commits need not alternate: the run that takes a batch number
    # first usually takes the rest too, the others find those rows stored)
    assert_runs_overlapped(lake, "tables")


@pytest.mark.integration
@pytest.mark.postgres
def test_bad_password_is_one_line_without_secret(local_lake: Lake, postgres_url: str) -> None:
    user_pw = postgres_url.split("//", 1)[1].split("@", 1)[0]
    bad = postgres_url.replace(user_pw, user_pw.split(":")[0] + ":wrong-pw-123")
    proc = run_cli(local_lake, "tables", bad, "--source-table", "x", "--table", "bronze.x", check=False)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read") and "wrong-pw-123" not in proc.stderr
    runs = read(local_lake, "_meta.runs")
    assert runs[0]["status"] == "failed" and "wrong-pw-123" not in runs[0]["error"]


@pytest.mark.integration
@pytest.mark.postgres
@pytest.mark.s3
def test_postgres_into_s3_lake(s3_lake: Lake, postgres_url: str) -> None:
    name = _name()
    _make_events(postgres_url, name, 300)
    r = ingest_table(s3_lake, postgres_url, source_table=name, table="bronze.pg", cursor="id")
    assert r.rows_written == 300
    assert ingest_table(s3_lake, postgres_url, source_table=name, table="bronze.pg", cursor="id").rows_written == 0
    run = read(s3_lake, "_meta.runs")
    assert {x["status"] for x in run} == {"success"} and all(x["target"] == "bronze.pg" for x in run)


def test_narrowing_is_quarantined_not_cast() -> None:
    import pyarrow as pa

    from ingest.conform import conform

    batch = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "qty": pa.array([10, 2**40, 30], pa.int64())})
    good, bad = conform(batch, pa.schema([("id", pa.int64()), ("qty", pa.int32())]), policy="quarantine")
    assert good.schema.field("qty").type == pa.int32()
    assert good.to_pylist() == [{"id": 1, "qty": 10}, {"id": 3, "qty": 30}]
    assert [i for i, _ in bad] == [1] and "does not fit int32" in bad[0][1]


def test_sqlite_sample_and_run_log(local_lake: Lake, sample) -> None:
    out = run_json(local_lake, "tables", sample.db_url, "--source-table", "photos", "--table", "bronze.photos",
                   "--primary-key", "photo_id")
    assert {"table", "version", "rows_written", "rows_quarantined", "skipped"} <= set(out)
    assert (out["table"], out["rows_written"], out["rows_quarantined"]) == ("bronze.photos", 40, 0)
    cols = set(local_lake.delta_table("bronze.photos").schema().to_arrow().names)  # type: ignore[attr-defined]
    assert {"photo_id", "user_id", "title", "place", "uploaded_at", "image_file", "updated_at", "_run_id", "_ingested_at"} <= cols
    run = read(local_lake, "_meta.runs")[0]
    assert (run["command"], run["target"], run["status"], run["rows_written"]) == ("tables", "bronze.photos", "success", 40)
    assert run["version_before"] is None and run["duration_s"] > 0
    assert run["version_after"] == local_lake.delta_table("bronze.photos").version() == out["version"]


def test_sqlite_values_that_do_not_fit_are_quarantined(local_lake: Lake, tmp_path: Path) -> None:
    db = tmp_path / "mixed.db"
    con = sqlite3.connect(db)
    con.execute("create table t (id integer primary key, qty integer)")
    con.executemany("insert into t values (?, ?)", [(1, 5), (2, "lots"), (3, 7)])  # SQLite allows this
    con.commit()
    con.close()
    r = ingest_table(local_lake, f"sqlite:///{db}", source_table="t", table="bronze.mixed", primary_key=("id",))
    assert (r.rows_written, r.rows_quarantined) == (2, 1)
    q = read(local_lake, "bronze.mixed_quarantine")
    assert b"lots" in q[0]["raw"] and "qty" in q[0]["reason"]


@pytest.mark.parametrize("kind", ["int", "timestamp", "string"])
def test_high_water_mark_reads_only_the_files_that_can_hold_it(local_lake: Lake, kind: str) -> None:
    """An incremental run's start costs the files near the maximum, not the whole cursor column:
    the two older files are removed from disk (a full scan would fail on them)."""
    import os

    import pyarrow as pa

    from ingest.delta import write_batch
    from ingest.sources.tables import high_water_mark

    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    value = {
        "int": lambda i: i,
        "timestamp": lambda i: base + timedelta(seconds=i, microseconds=123_457),  # stats keep ms only
        "string": lambda i: f"{'k' * 40}-{i:06d}",  # longer than delta-rs's string statistics keep
    }[kind]
    for lo in (0, 100, 200):
        write_batch(local_lake, "bronze.t", pa.table({"id": list(range(lo, lo + 100)), "c": [value(i) for i in range(lo, lo + 100)]}))
    want = value(299)
    files = sorted(local_lake.delta_table("bronze.t").file_uris(), key=os.path.getmtime)
    assert high_water_mark(local_lake, TableId.parse("bronze.t"), "c") == want
    for f in files[:2]:
        os.remove(f)
    assert high_water_mark(local_lake, TableId.parse("bronze.t"), "c") == want


def test_bad_rows_of_every_batch_are_quarantined(local_lake: Lake, tmp_path: Path, monkeypatch) -> None:
    """A batch of only bad rows commits to the quarantine alone; the next batch's bad rows must
    not reuse its batch number there (they were dropped as already committed)."""
    db = tmp_path / "mixed.db"
    con = sqlite3.connect(db)
    con.execute("create table t (id integer primary key, qty integer)")
    rows = [(1, 5), (2, 6), (3, "lots"), (4, "many"), (5, 7), (6, "heaps")]  # batches of 2: good, bad, mixed
    con.executemany("insert into t values (?, ?)", rows)
    con.commit()
    con.close()
    monkeypatch.setenv("INGEST_TABLE_BATCH_ROWS", "2")
    r = ingest_table(local_lake, f"sqlite:///{db}", source_table="t", table="bronze.mixed", cursor="id")
    assert (r.rows_written, r.rows_quarantined) == (3, 3)
    q = read(local_lake, "bronze.mixed_quarantine")
    expected = [f'{{"id": {i}, "qty": "{v}"}}'.encode() for i, v in rows if isinstance(v, str)]
    assert sorted(row["raw"] for row in q) == sorted(expected)


def test_rows_another_run_commits_after_our_lookup_are_stored_once(
    local_lake: Lake, tmp_path: Path, monkeypatch
) -> None:
    """Another run commits the same rows between our lookup of the stored rows and our commit,
    under a smaller batch number (it read the counter before it moved: the table and its
    quarantine share it).  Our commit is made against the snapshot the lookup read, so it
    conflicts and the batch is looked up again: each row once."""
    import ingest.sources.tables as tables
    from ingest.delta import write_batch
    from ingest.sources.quarantine import Bad, write_quarantine
    from ingest.sources.util import utcnow

    db = tmp_path / "t.db"
    con = sqlite3.connect(db)
    con.execute("create table t (id integer primary key, v text)")
    con.executemany("insert into t values (?, ?)", [(i, f"v{i}") for i in range(5)])
    con.commit()
    con.close()
    # a batch of only bad rows took numbers up to 5 in the quarantine: ours will be 6
    earlier = [Bad("earlier", "1", "does not fit", b"{}")]
    write_quarantine(local_lake, "bronze.t", earlier, run_id="earlier", app_id="tables:bronze.t", batch_version=5)
    lookups: list[int] = []
    lookup = tables._rows_already_stored

    def another_run_commits_after_the_lookup(batch, *, snapshot, **kw):
        fresh = lookup(batch, snapshot=snapshot, **kw)
        lookups.append(fresh.num_rows)
        if len(lookups) == 1:
            theirs = tables._with_meta(batch, "other", utcnow())
            write_batch(local_lake, "bronze.t", theirs, app_id="tables:bronze.t", batch_version=3)
        return fresh

    monkeypatch.setattr(tables, "_rows_already_stored", another_run_commits_after_the_lookup)
    r = ingest_table(local_lake, f"sqlite:///{db}", source_table="t", table="bronze.t", cursor="id")
    ids = sorted(row["id"] for row in read(local_lake, "bronze.t", ["id"]))
    assert ids == [0, 1, 2, 3, 4]
    assert lookups == [5, 0]  # looked up again after the conflict: all stored by then
    assert r.rows_written == 0


def test_snapshot_bad_rows_are_kept_when_a_concurrent_snapshot_quarantined_past_their_number(
    local_lake: Lake, tmp_path: Path, monkeypatch
) -> None:
    """Two full-snapshot runs of one table at once: the other one, which read the source later,
    quarantines its own bad row under a higher batch number just before ours.  Ours was skipped
    as committed (its number was passed) and lost; now it is looked up and numbered again."""
    import ingest.sources.tables as tables
    from ingest.sources.quarantine import Bad, write_quarantine

    db = tmp_path / "t.db"
    con = sqlite3.connect(db)
    con.execute("create table t (id integer, qty integer)")
    con.executemany("insert into t values (?, ?)", [(1, 5), (2, "heaps")])
    con.commit()
    con.close()
    lookups: list[int] = []
    new_bad = tables._new_bad

    def another_snapshot_quarantines_first(lake, tid, bad, *, snapshot=None):
        if not lookups:
            theirs = [Bad(bad[0].source, "row 2", "column 'qty' (int64): not an integer", b'{"id": 2, "qty": "heap"}')]
            write_quarantine(lake, tid, theirs, run_id="other", app_id="tables:bronze.t", batch_version=5)
        fresh = new_bad(lake, tid, bad, snapshot=snapshot)
        lookups.append(len(fresh))
        return fresh

    monkeypatch.setattr(tables, "_new_bad", another_snapshot_quarantines_first)
    res = ingest_table(local_lake, f"sqlite:///{db}", source_table="t", table="bronze.t")
    assert [r["id"] for r in read(local_lake, "bronze.t")] == [1]
    raws = sorted(r["raw"] for r in read(local_lake, "bronze.t_quarantine"))
    assert raws == [b'{"id": 2, "qty": "heap"}', b'{"id": 2, "qty": "heaps"}']
    assert res.rows_quarantined == 1
    assert lookups == [1, 1]  # looked up again after its commit conflicted with theirs


def test_bad_rows_another_run_quarantines_after_our_lookup_are_quarantined_once(
    local_lake: Lake, tmp_path: Path, monkeypatch
) -> None:
    """The same for the quarantine: another run records the same bad row between our lookup of
    the quarantine and our commit, under a smaller batch number (free there: the table took it).
    Ours is committed against the quarantine the lookup read, so it conflicts and the batch is
    looked up again."""
    import ingest.sources.tables as tables

    db = tmp_path / "t.db"
    con = sqlite3.connect(db)
    con.execute("create table t (id integer primary key, qty integer)")
    con.executemany("insert into t values (?, ?)", [(1, 5), (2, 6)])
    con.commit()
    con.close()
    ingest_table(local_lake, f"sqlite:///{db}", source_table="t", table="bronze.t", cursor="id")  # counter: 1
    con = sqlite3.connect(db)
    con.execute("insert into t values (3, 'heaps')")  # SQLite allows this: our batch 2 quarantines it
    con.commit()
    con.close()
    lookups: list[int] = []
    new_bad = tables._new_bad

    def another_run_quarantines_after_the_lookup(lake, tid, bad, *, snapshot=None):
        fresh = new_bad(lake, tid, bad, snapshot=snapshot)
        lookups.append(len(fresh))
        if len(lookups) == 1:
            from ingest.sources.quarantine import write_quarantine

            theirs = [b for b in bad if b"heaps" in b.raw]
            write_quarantine(lake, tid, theirs, run_id="other", app_id="tables:bronze.t", batch_version=1)
        return fresh

    monkeypatch.setattr(tables, "_new_bad", another_run_quarantines_after_the_lookup)
    ingest_table(local_lake, f"sqlite:///{db}", source_table="t", table="bronze.t", cursor="id")
    raws = [r["raw"] for r in read(local_lake, "bronze.t_quarantine")]
    assert raws == [b'{"id": 3, "qty": "heaps"}']  # once
    assert lookups == [1, 0]  # looked up again after the conflict: recorded by then
