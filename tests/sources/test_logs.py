"""ingest logs: JSON lines and regex text, gzip, resume by offset, quarantine, drift, exactly-once."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path

import pytest

from ingest.lake import Lake
from ingest.sources.logs import ingest_logs
from tests.procs import assert_runs_overlapped, race_cli, writer_blocks
from tests.sources.conftest import kill_after_commits, read, run_cli, run_json, sorted_rows, spawn_cli

KEY = ["event_id", "_source_file", "_source_line"]


def _events(n: int, start: int = 0) -> str:
    return "".join(
        json.dumps({"event_id": f"e{i}", "ts": "2026-11-01T10:00:00Z", "user_id": i % 7, "event_type": "view", "photo_id": i})
        + "\n"
        for i in range(start, start + n)
    )


def test_sample_logs_load_once(local_lake: Lake, sample) -> None:
    first = ingest_logs(local_lake, str(sample.logs))
    assert first.rows_written > 100
    assert first.rows_quarantined == 1  # the malformed line
    assert first.skipped == 0
    again = ingest_logs(local_lake, str(sample.logs))
    assert (again.rows_written, again.rows_quarantined, again.skipped) == (0, 0, 3)
    assert again.bytes_read == 0  # files already loaded are not read again
    rows = read(local_lake, "bronze.events")
    assert len(rows) == first.rows_written == len({r["event_id"] for r in rows})
    # the .gz file was read too; timestamps are UTC
    assert any(r["_source_file"].endswith(".jsonl.gz") for r in rows)
    assert str(rows[0]["ts"].tzinfo) == "UTC"
    q = read(local_lake, "bronze.events_quarantine")
    assert len(q) == 1 and q[0]["source_ref"] == "line 6" and q[0]["raw"].startswith(b'{"event_id": "broken"')
    assert "malformed JSON" in q[0]["reason"]


def test_grown_file_is_read_from_last_offset(local_lake: Lake, tmp_path: Path) -> None:
    f = tmp_path / "logs" / "app.jsonl"
    f.parent.mkdir()
    f.write_text(_events(10) + '{"event_id": "e10", "ts"')  # last line still being written
    r1 = ingest_logs(local_lake, str(f.parent))
    assert r1.rows_written == 10 and r1.rows_quarantined == 0
    with f.open("a") as fh:
        fh.write(': "2026-11-01T11:00:00Z", "user_id": 1, "event_type": "like", "photo_id": 3}\n' + _events(5, 11))
    r2 = ingest_logs(local_lake, str(f.parent))
    assert r2.rows_written == 6 and r2.skipped == 0
    assert r2.bytes_read == f.stat().st_size - (len(_events(10).encode()))  # only the new bytes
    rows = sorted(read(local_lake, "bronze.events", ["event_id", "_source_line"]), key=lambda r: r["_source_line"])
    assert [r["_source_line"] for r in rows] == list(range(1, 17))
    assert [r["event_id"] for r in rows] == [f"e{i}" for i in range(16)]


def test_gzip_and_text_pattern(local_lake: Lake, tmp_path: Path) -> None:
    d = tmp_path / "txt"
    d.mkdir()
    lines = "2026-11-01T10:00:00Z INFO started\n2026-11-01T10:00:01Z WARN slow disk\ngarbage line\n"
    with gzip.open(d / "app.log.gz", "wt") as fh:
        fh.write(lines)
    pattern = r"^(?P<ts>\S+) (?P<level>[A-Z]+) (?P<message>.*)$"
    res = ingest_logs(local_lake, str(d), table="bronze.applog", format="text", pattern=pattern)
    assert (res.rows_written, res.rows_quarantined) == (2, 1)
    rows = sorted(read(local_lake, "bronze.applog", ["level", "message"]), key=lambda r: r["level"])
    assert rows == [{"level": "INFO", "message": "started"}, {"level": "WARN", "message": "slow disk"}]
    q = read(local_lake, "bronze.applog_quarantine")
    assert q[0]["raw"] == b"garbage line" and q[0]["source_ref"] == "line 3"
    again = ingest_logs(local_lake, str(d), table="bronze.applog", format="text", pattern=pattern)
    assert (again.rows_written, again.rows_quarantined, again.skipped) == (0, 0, 1)


def test_schema_drift_adds_columns_and_quarantines_type_changes(local_lake: Lake, tmp_path: Path) -> None:
    d = tmp_path / "drift"
    d.mkdir()
    (d / "a.jsonl").write_text(_events(3))
    ingest_logs(local_lake, str(d))
    (d / "b.jsonl").write_text(
        json.dumps({"event_id": "n1", "user_id": 1, "device": "ios"}) + "\n"  # new column
        + json.dumps({"event_id": "n2", "user_id": "not-a-number"}) + "\n"  # type change
        + json.dumps({"event_id": "n3", "user_id": 2**40}) + "\n"  # still fits int64
    )
    res = ingest_logs(local_lake, str(d))
    assert (res.rows_written, res.rows_quarantined, res.skipped) == (2, 1, 1)
    dt = local_lake.delta_table("bronze.events")
    import pyarrow as pa

    schema = pa.schema(dt.schema().to_arrow())
    assert "device" in schema.names
    assert str(schema.field("user_id").type) == "int64"
    by_id = {r["event_id"]: r for r in read(local_lake, "bronze.events")}
    assert by_id["n1"]["device"] == "ios" and by_id["e0"]["device"] is None
    assert by_id["n3"]["user_id"] == 2**40
    q = read(local_lake, "bronze.events_quarantine")
    assert len(q) == 1 and "user_id" in q[0]["reason"] and b"not-a-number" in q[0]["raw"]


def _source_rows(src: Path) -> list[tuple]:
    """Every row the lake must hold for the JSON-lines files in ``src``, as (file, line, event fields)."""
    rows = []
    for f in sorted(src.iterdir()):
        text = gzip.decompress(f.read_bytes()).decode() if f.suffix == ".gz" else f.read_text()
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.startswith("{broken"):
                e = json.loads(line)
                ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
                rows.append((e["event_id"], ts, e["user_id"], e["event_type"], e["photo_id"], f.name, n))
    return sorted(rows)


@pytest.mark.integration
@pytest.mark.parametrize("kill_at", [2, 7])
def test_killed_run_then_rerun_equals_one_clean_run(tmp_path: Path, new_lake, kill_at: int) -> None:
    src = tmp_path / "logs"
    src.mkdir()
    (src / "a.jsonl").write_text(_events(400) + "{broken\n" + _events(100, 400))
    with gzip.open(src / "b.jsonl.gz", "wt") as fh:
        fh.write(_events(300, 1000))
    clean = new_lake("clean")
    run_json(clean, "logs", str(src))
    lake = new_lake("killed")
    proc = spawn_cli(lake, "logs", str(src), INGEST_LOG_BATCH_LINES="25")
    assert kill_after_commits(proc, lake, "bronze.events", kill_at), "the run finished before it could be killed"
    assert len(read(lake, "bronze.events", ["event_id"])) < 800
    out = run_json(lake, "logs", str(src), INGEST_LOG_BATCH_LINES="25")
    assert out["rows_written"] > 0
    # every column but the per-run ones, against a clean run and against the source itself
    per_run = {"_run_id", "_ingested_at"}
    cols = [c for c in lake.delta_table("bronze.events").schema().to_arrow().names if c not in per_run]
    assert sorted(cols) == sorted(KEY + ["ts", "user_id", "event_type", "photo_id"])
    assert sorted_rows(lake, "bronze.events", cols) == sorted_rows(clean, "bronze.events", cols)
    fields = ["event_id", "ts", "user_id", "event_type", "photo_id", "_source_file", "_source_line"]
    got = [(*r[:5], r[5].rsplit("/", 1)[-1], r[6]) for r in sorted_rows(lake, "bronze.events", fields)]
    assert sorted(got) == _source_rows(src)
    assert all(r["_run_id"] and r["_ingested_at"] for r in read(lake, "bronze.events", sorted(per_run)))
    qcols = ["source", "source_ref", "reason", "raw"]
    assert sorted_rows(lake, "bronze.events_quarantine", qcols) == sorted_rows(clean, "bronze.events_quarantine", qcols)
    assert len(read(lake, "bronze.events_quarantine")) == 1
    again = run_json(lake, "logs", str(src))
    assert (again["rows_written"], again["rows_quarantined"], again["skipped"]) == (0, 0, 2)


@pytest.mark.integration
def test_concurrent_ingests_into_one_table(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x.jsonl").write_text(_events(600))
    (b / "y.jsonl").write_text(_events(600, 600))
    lake = Lake(str(tmp_path / "lake"))
    runs = [["logs", str(p)] for p in (a, b, a, b)]  # same sources twice, released together
    # 60 commits a file: a window wide enough for the runs to meet on a loaded machine
    results = race_cli(lake, runs, tmp_path, INGEST_LOG_BATCH_LINES="10")
    assert [code for code, _, _ in results] == [0] * len(runs), [err for _, _, err in results]
    rows = read(lake, "bronze.events", ["event_id"])
    assert len(rows) == 1200 and len({r["event_id"] for r in rows}) == 1200
    # the runs raced (under way at once) and more than one landed commits; whether their commits
    # alternate is timing: a racer that loses a commit backs off while the winner runs ahead
    assert_runs_overlapped(lake, "logs")
    assert len(set(writer_blocks(lake, "bronze.events"))) >= 2


@pytest.mark.integration
@pytest.mark.s3
def test_logs_from_s3_into_s3_lake(s3_server, s3_lake: Lake, sample) -> None:
    bucket = s3_lake.location.bucket  # sources beside the lake: fewer SeaweedFS collections
    client = s3_server.client()
    for p in sorted(sample.logs.iterdir()):
        client.upload_file(str(p), bucket, f"raw/logs/{p.name}")
    res = ingest_logs(s3_lake, f"s3://{bucket}/raw/logs")
    assert res.rows_written > 100 and res.rows_quarantined == 1
    local = Lake(str(sample.root / "lake-local"))
    ref = ingest_logs(local, str(sample.logs))
    assert res.rows_written == ref.rows_written
    again = ingest_logs(s3_lake, f"s3://{bucket}/raw/logs")
    assert (again.rows_written, again.skipped) == (0, 3)
    # a file that grew on S3 is read from the last offset
    key = "raw/logs/events-2026-11-01.jsonl"
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body + _events(4, 9000).encode())
    grown = ingest_logs(s3_lake, f"s3://{bucket}/raw/logs")
    assert (grown.rows_written, grown.skipped, grown.bytes_read) == (4, 2, len(_events(4, 9000).encode()))


@pytest.mark.parametrize("batch_lines", [None, "3"])
def test_line_numbers_continue_after_a_run_that_ended_on_blank_lines(
    local_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_lines: str | None
) -> None:
    """Blank lines leave no row but count as lines: across runs (the stored line count) and
    across the batches of one run (``batch_lines`` 3 cuts batches between and after them)."""
    if batch_lines:
        monkeypatch.setenv("INGEST_LOG_BATCH_LINES", batch_lines)
    f = tmp_path / "logs" / "app.jsonl"
    f.parent.mkdir()
    f.write_text(_events(2) + "\n  \n")  # lines 3 and 4 are blank: no row, but they are lines
    assert ingest_logs(local_lake, str(f.parent)).rows_written == 2
    with f.open("a") as fh:
        fh.write(_events(2, 2) + "\n")
    assert ingest_logs(local_lake, str(f.parent)).rows_written == 2
    with f.open("a") as fh:
        fh.write(_events(1, 4))
    assert ingest_logs(local_lake, str(f.parent)).rows_written == 1
    with f.open("a") as fh:  # one run, several batches, blank lines inside them
        fh.write("\n" + _events(1, 5) + "\n\n\n" + _events(2, 6))
    assert ingest_logs(local_lake, str(f.parent)).rows_written == 3
    rows = read(local_lake, "bronze.events", ["event_id", "_source_line"])
    assert sorted((r["_source_line"], r["event_id"]) for r in rows) == [
        (1, "e0"), (2, "e1"), (5, "e2"), (6, "e3"), (8, "e4"), (10, "e5"), (14, "e6"), (15, "e7")
    ]


def test_partial_last_line_is_reported_and_loaded_once_complete(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    (d / "app.jsonl").write_text(_events(3) + '{"event_id": "e3"')
    (d / "new.jsonl").write_text('{"event_id": "n0"')  # not even one complete line yet
    lake = Lake(str(tmp_path / "lake"))
    human = run_cli(lake, "logs", str(d))
    assert "3 rows written" in human.stdout
    assert "1 partial line waiting in app.jsonl" in human.stdout
    assert "1 partial line waiting in new.jsonl" in human.stdout
    out = run_json(lake, "logs", str(d))
    assert out["rows_written"] == 0
    assert sorted(out["notes"]) == ["1 partial line waiting in app.jsonl", "1 partial line waiting in new.jsonl"]
    with (d / "app.jsonl").open("a") as fh:
        fh.write("}\n")
    out = run_json(lake, "logs", str(d))
    assert out["rows_written"] == 1 and out["notes"] == ["1 partial line waiting in new.jsonl"]
    assert sorted(r["event_id"] for r in read(lake, "bronze.events", ["event_id"])) == ["e0", "e1", "e2", "e3"]


def _drifting_logs(d: Path) -> None:
    """Files whose schema moves from batch to batch and file to file: new columns, a column
    whose type changes, bad and blank lines, and a grown copy of an earlier file."""
    d.mkdir()
    rows = [
        {"event_id": "a0", "n": 1},
        {"event_id": "a1", "n": 2, "ts": "2026-11-01T10:00:00Z"},  # a new column, as timestamps
        {"event_id": "a2", "n": 2.5},  # an int column meets a float: quarantined
        {"event_id": "a3", "n": 3, "tag": "x"},
    ]
    (d / "f1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n\n")
    # f1 grown (one stream): read ahead from where f1 stood before its last commit, then from its end
    (d / "f2.jsonl").write_text((d / "f1.jsonl").read_text() + '{"event_id": "a4"}\n{"event_id": "a5", "n": 5}\n')
    (d / "f3.jsonl").write_text(
        "".join(json.dumps({"event_id": f"b{i}", "tag": i if i % 2 else "y", "extra": [i]}) + "\n" for i in range(5))
    )
    (d / "f4.jsonl").write_text("".join(json.dumps({"event_id": f"c{i}", "ts": "not a time"}) + "\n" for i in range(3)))


def test_batches_parsed_ahead_store_what_batches_parsed_at_their_commit_store(
    tmp_path: Path, monkeypatch
) -> None:
    """A batch is parsed while the one before it commits (the next file's first, after a file's
    last), with the schema that commit leaves.  Whatever that commit or the next file's stream
    turns out to be, the lake must hold what parsing each batch at its own commit gives."""
    import pyarrow as pa

    import ingest.sources.logs as logs
    from ingest.delta import write_batch

    src = tmp_path / "src"
    _drifting_logs(src)
    monkeypatch.setenv("INGEST_LOG_BATCH_LINES", "2")

    def stored(lake: Lake) -> tuple[list, list]:
        rows = [
            {k: v for k, v in r.items() if k not in ("_run_id", "_ingested_at")} for r in read(lake, "bronze.events")
        ]
        bad = [(r["source"], r["source_ref"], r["reason"], r["raw"]) for r in read(lake, "bronze.events_quarantine")]
        return sorted(rows, key=lambda r: json.dumps(r, default=str)), sorted(bad)

    write = logs._FileLoader._write
    calls: list[int] = []

    def another_writer_adds_a_column(self, lines, line_no, *args, **kwargs):
        calls.append(line_no)
        if len(calls) == 5:  # f3's first batch, parsed ahead with the schema before this commit
            other = pa.table({"event_id": ["other"], "extra": pa.array([1], pa.int64())})  # f3's column, as ints
            write_batch(self.lake, "bronze.events", other)
        return write(self, lines, line_no, *args, **kwargs)

    monkeypatch.setattr(logs._FileLoader, "_write", another_writer_adds_a_column)
    used: list[bool] = []
    same = logs._same_schema

    def counted(a, b) -> bool:
        used.append(same(a, b))
        return used[-1]

    monkeypatch.setattr(logs, "_same_schema", counted)
    opened: list[str] = []
    open_ = logs._FileLoader._open
    monkeypatch.setattr(logs._FileLoader, "_open", lambda self, st: opened.append(self.f.name) or open_(self, st))
    ahead = Lake(str(tmp_path / "ahead"))
    res = ingest_logs(ahead, str(src))
    assert True in used and False in used  # parses made ahead were taken, and one made again
    assert opened == ["f1.jsonl", "f2.jsonl", "f2.jsonl", "f3.jsonl", "f4.jsonl"]  # f2 read ahead in vain
    monkeypatch.setattr(logs, "_same_schema", lambda a, b: False)  # every batch parsed at its commit
    calls.clear()
    reference = Lake(str(tmp_path / "reference"))
    ref = ingest_logs(reference, str(src))
    assert stored(ahead) == stored(reference)
    assert (res.rows_written, res.rows_quarantined, res.skipped) == (ref.rows_written, ref.rows_quarantined, 0)
    assert ahead.delta_table("bronze.events").schema() == reference.delta_table("bronze.events").schema()


def test_reading_the_next_file_ahead_does_not_move_the_snapshot_a_commit_was_checked_on(
    local_lake: Lake, tmp_path: Path, monkeypatch
) -> None:
    """The next file's stream is looked up while this file's last batch commits.  That lookup
    must not bring the table forward under the commit: another writer's incompatible column
    would then fail the run, where a commit against the snapshot it was checked on conflicts,
    is retried, and quarantines what no longer fits."""
    import pyarrow as pa

    import ingest.sources.logs as logs
    from ingest.delta import write_batch

    (tmp_path / "first").mkdir()
    (tmp_path / "first" / "g0.jsonl").write_text('{"event_id": "x"}\n')
    ingest_logs(local_lake, str(tmp_path / "first"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "g1.jsonl").write_text('{"event_id": "g1", "k": "text"}\n')
    (src / "g2.jsonl").write_text('{"event_id": "g2"}\n')
    find = logs._FileLoader._find
    looked: list[str] = []

    def another_writer_commits_meanwhile(self, *args, **kwargs):
        looked.append(self.f.name)
        if looked == ["g1.jsonl", "g2.jsonl"]:  # g2 read ahead, while g1's batch waits to commit
            write_batch(local_lake, "bronze.events", pa.table({"event_id": ["other"], "k": pa.array([1], pa.int64())}))
        return find(self, *args, **kwargs)

    monkeypatch.setattr(logs._FileLoader, "_find", another_writer_commits_meanwhile)
    res = ingest_logs(local_lake, str(src))
    assert (res.rows_written, res.rows_quarantined) == (1, 1)  # g1 no longer fits: quarantined, not a failure
    (bad,) = read(local_lake, "bronze.events_quarantine")
    assert bad["source_ref"] == "line 1" and "k" in bad["reason"]
