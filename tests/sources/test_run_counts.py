"""rows_written in `_meta.runs` and `--json` is what the run itself committed: under concurrency
(a run that lost a commit race used to forget the batches it had committed before it; 60,000
reported for 80,000 landed) and when a run fails after committing some batches (it recorded 0).

The racers are `ingest` CLI processes released together by a barrier (tests/test_delta.py).
"""

from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from ingest.lake import Lake
from tests.sources.conftest import INGEST, cli_env, read

RACERS = 3


def _events(n: int, start: int = 0) -> str:
    return "".join(json.dumps({"event_id": f"e{i}", "user_id": i % 7, "n": i}) + "\n" for i in range(start, start + n))


def _cli_after_barrier(argv: list[str], env: dict[str, str], out: str, barrier) -> None:
    """The `ingest` console script in this process, started when every racer is ready."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    err = os.open(out + ".err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(err, 2)
    import deltalake  # noqa: F401 - warm imports so the racers meet at their first commits

    import ingest.cli.source_cmds  # noqa: F401
    import ingest.sources.logs  # noqa: F401
    from ingest.cli import main

    barrier.wait(timeout=120)
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    os.sys.stdout.flush()
    os.sys.stderr.flush()
    os._exit(code)  # no native teardown (see ingest/cli/__init__.py)


def _race(lake: Lake, args: list[str], tmp: Path, **env: str) -> list[tuple[int, str, str]]:
    ctx = mp.get_context("spawn")  # deltalake's tokio runtime does not survive fork
    barrier = ctx.Barrier(RACERS)
    outs = [str(tmp / f"racer{i}.out") for i in range(RACERS)]
    argv = ["--lake", lake.uri, "--json", *args]
    procs = [ctx.Process(target=_cli_after_barrier, args=(argv, cli_env(lake, **env), o, barrier)) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    return [(p.exitcode, Path(o).read_text(), Path(o + ".err").read_text()) for p, o in zip(procs, outs)]


@pytest.mark.integration
def test_concurrent_log_ingests_report_every_row_they_committed(tmp_path: Path) -> None:
    src = tmp_path / "logs"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.jsonl").write_text(_events(400, 1000 * i))
    lake = Lake(str(tmp_path / "lake"))
    results = _race(lake, ["logs", str(src)], tmp_path, INGEST_LOG_BATCH_LINES="20")
    assert [code for code, _, _ in results] == [0] * RACERS, [err for _, _, err in results]
    reported = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    rows = read(lake, "bronze.events", ["event_id"])
    assert len(rows) == len({r["event_id"] for r in rows}) == 1600  # exactly once
    # the commits of different runs interleaved (each commit names its run)
    writers = [c.get("run_id") for c in reversed(lake.delta_table("bronze.events").history()) if c.get("run_id")]
    blocks = [w for i, w in enumerate(writers) if i == 0 or writers[i - 1] != w]
    assert len(blocks) > len(set(blocks)) >= 2, blocks
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
