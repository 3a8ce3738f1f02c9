"""Racers for the concurrency tests: separate processes (as real runs are) released together by a
barrier, and the checks that their writes really overlapped - a test whose racers could have run
one after another proves nothing about concurrency."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any, Callable

from ingest.delta import commit_run_id
from ingest.lake import Lake

RACE_TIMEOUT = 300


def race(target: Callable[..., Any], racers: list[tuple]) -> list[int | None]:
    """Run ``target(*args, barrier)`` for each ``args`` in ``racers``, each in a spawned process;
    ``target`` waits at ``barrier`` once it is ready. Returns the exit codes."""
    ctx = mp.get_context("spawn")  # deltalake's tokio runtime does not survive fork
    barrier = ctx.Barrier(len(racers))
    procs = [ctx.Process(target=_then_exit, args=(target, (*args, barrier))) for args in racers]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=RACE_TIMEOUT)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


def _then_exit(target: Callable[..., Any], args: tuple) -> None:
    """Run ``target`` and end the process as the CLI does, without native teardown: a racer that
    returned normally was seen to abort in interpreter shutdown ("terminate called without an
    active exception", exit -6) while a native runtime's threads were still up."""
    import sys
    import traceback

    code = 0
    try:
        target(*args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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
    import ingest.sources.images  # noqa: F401
    import ingest.sources.logs  # noqa: F401
    import ingest.sources.tables  # noqa: F401
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


def race_cli(lake: Lake, runs: list[list[str]], tmp: Path, **env: str) -> list[tuple[int | None, str, str]]:
    """``ingest --lake LAKE --json ARGS`` for each ARGS in ``runs``, all released at once.
    Returns ``(exit code, stdout, stderr)`` per run."""
    from tests.sources.conftest import cli_env

    outs = [str(tmp / f"racer{i}.out") for i in range(len(runs))]
    codes = race(
        _cli_after_barrier, [(["--lake", lake.uri, "--json", *args], cli_env(lake, **env), o) for args, o in zip(runs, outs)]
    )
    return [(c, Path(o).read_text(), Path(o + ".err").read_text()) for c, o in zip(codes, outs)]


def writer_blocks(lake: Lake, table: str, writer: Callable[[dict], str | None] = commit_run_id) -> list[str]:
    """The writers of ``table``'s commits in version order (by run id unless ``writer`` says
    otherwise), consecutive commits of one writer folded into one block."""
    writers = [w for c in reversed(lake.delta_table(table).history()) if (w := writer(c))]
    return [w for i, w in enumerate(writers) if i == 0 or writers[i - 1] != w]


def assert_interleaved(lake: Lake, table: str, writer: Callable[[dict], str | None] = commit_run_id) -> None:
    """At least two writers committed to ``table`` and one of them committed both before and
    after another: the runs overlapped (runs one after another leave one block per writer)."""
    blocks = writer_blocks(lake, table, writer)
    assert len(blocks) > len(set(blocks)) >= 2, f"{table}: commits did not interleave: {blocks}"


def assert_runs_overlapped(lake: Lake, command: str, *, since: Any = None) -> None:
    """Every ``command`` run in ``_meta.runs`` (started after ``since``, a datetime, if given) was
    under way while another one was: for writers that commit once per run, where commits cannot
    interleave."""
    from datetime import timedelta

    runs = [
        r
        for r in lake.delta_table("_meta.runs").to_pyarrow_table().to_pylist()
        if r["command"] == command and (since is None or r["started_at"] > since)
    ]
    spans = [(r["started_at"], r["started_at"] + timedelta(seconds=r["duration_s"])) for r in runs]
    assert len(spans) >= 2, runs
    for i, (start, end) in enumerate(spans):
        others = [s for j, s in enumerate(spans) if j != i]
        assert any(s < end and start < e for s, e in others), f"{command} runs one after another: {spans}"
