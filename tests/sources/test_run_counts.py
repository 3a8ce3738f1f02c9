"""rows_written in `_meta.runs` and `--json` is what the run itself committed: under concurrency
(a run that lost a commit race used to forget the batches it had committed before it; 60,000
reported for 80,000 landed) and when a run fails after committing some batches (it recorded 0).

The racers are `ingest` CLI processes released together by a barrier (tests/procs.py).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ingest.lake import Lake
from tests.procs import assert_runs_overlapped, race_cli, writer_blocks
from tests.sources.conftest import INGEST, cli_env, read

RACERS = 3


def _events(n: int, start: int = 0) -> str:
    return "".join(json.dumps({"event_id": f"e{i}", "user_id": i % 7, "n": i}) + "\n" for i in range(start, start + n))


@pytest.mark.integration
def test_concurrent_log_ingests_report_every_row_they_committed(tmp_path: Path) -> None:
    src = tmp_path / "logs"
    src.mkdir()
    for i in range(8):  # many streams: a racer that lost a commit and backed off meets the others again
        (src / f"f{i}.jsonl").write_text(_events(200, 1000 * i))
    # the runs must race (under way at once) and more than one must land commits, or the counts
    # below prove nothing.  Which racers land commits is timing: one that loses a commit backs off
    # while the winner runs ahead, and on a loaded machine one racer once took all 80 batches.
    # Then the race is run again on a fresh lake (each commit names its run).
    for attempt in range(4):
        lake = Lake(str(tmp_path / f"lake{attempt}"))
        results = race_cli(lake, [["logs", str(src)]] * RACERS, tmp_path, INGEST_LOG_BATCH_LINES="20")
        assert [code for code, _, _ in results] == [0] * RACERS, [err for _, _, err in results]
        rows = read(lake, "bronze.events", ["event_id"])
        assert len(rows) == len({r["event_id"] for r in rows}) == 1600  # exactly once
        assert_runs_overlapped(lake, "logs")
        if len(set(writer_blocks(lake, "bronze.events"))) >= 2:
            break
    else:
        pytest.fail("in 4 races one racer landed every commit: the counts were not tested under a race")
    reported = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    # every landed row is reported once: in --json and in the run log
    assert sum(r["rows_written"] for r in reported) == 1600
    runs = {r["run_id"]: r for r in read(lake, "_meta.runs") if r["command"] == "logs"}
    assert sorted(runs) == sorted(r["run_id"] for r in reported)
    assert sum(r["rows_written"] for r in runs.values()) == 1600
    for r in runs.values():  # and per file in the run's details
        files = json.loads(r["details"])["files"]
        assert sum(f.get("rows", 0) for f in files) == r["rows_written"], files
    for r in reported:
        committed = sum(
            c["operationMetrics"]["num_added_rows"]
            for c in lake.delta_table("bronze.events").history()
            if c.get("run_id") == r["run_id"]
        )
        assert r["rows_written"] == runs[r["run_id"]]["rows_written"] == committed


@pytest.mark.integration
def test_failed_run_records_the_batches_it_committed(tmp_path: Path) -> None:
    src = tmp_path / "logs"
    src.mkdir()
    (src / "a.jsonl").write_text(_events(250))  # 3 batches of 100, committed
    z = bytearray(gzip.compress(_events(500, 1000).encode()))
    z[len(z) // 2 : len(z) // 2 + 40] = b"x" * 40
    (src / "b.jsonl.gz").write_bytes(bytes(z))  # corrupt: the run fails here
    lake = Lake(str(tmp_path / "lake"))
    import subprocess

    proc = subprocess.run(
        [INGEST, "--lake", lake.uri, "--json", "logs", str(src)], capture_output=True, text=True,
        env=cli_env(lake, INGEST_LOG_BATCH_LINES="100"), timeout=300,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error:"), proc.stderr
    landed = len(read(lake, "bronze.events", ["event_id"]))
    assert landed == 250
    (run,) = read(lake, "_meta.runs")
    assert run["status"] == "failed"
    assert run["rows_written"] == landed
    assert run["version_after"] == lake.delta_table("bronze.events").version()
