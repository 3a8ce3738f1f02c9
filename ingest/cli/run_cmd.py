"""`ingest run`: the whole pipeline described by the config."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import typer

from ingest.cli.common import emit, state
from ingest.cli.help import examples

if TYPE_CHECKING:  # pragma: no cover
    from ingest.settings import Settings


def register(app: typer.Typer) -> None:
    @app.command("run", epilog=examples("ingest run", "ingest run --orchestrator local --no-sync"))
    def run_cmd(
        ctx: typer.Context,
        orchestrator: str = typer.Option(
            "prefect",
            "--orchestrator",
            help="prefect: run the Prefect pipeline flow (a temporary local server if PREFECT_API_URL is unset); "
            "local: the same stages in this process without Prefect.",
        ),
        sync: bool = typer.Option(
            True, "--sync/--no-sync", help="Stage the shard set to sync_dest (default ./synced)."
        ),
    ) -> None:
        """Run the whole pipeline: ingest every source, transform, snapshot, build shards, sync.

        With no sources configured it runs on bundled sample data (generated images, JSONL logs
        and a SQLite table under ./sample_data), so it works on a fresh machine with no server.
        """
        st = state(ctx)
        mode: Literal["prefect", "local"]
        if orchestrator not in ("prefect", "local"):
            raise typer.BadParameter("use prefect or local", param_hint="--orchestrator")
        mode = orchestrator  # type: ignore[assignment]  # checked against the Literal just above
        echo = None if st.json else typer.echo
        try:
            if mode == "prefect":
                summary = _run_with_prefect(st.settings, sync=sync, quiet=st.json, echo=echo)
            else:
                from ingest.pipeline import run_pipeline

                summary = run_pipeline(st.settings, progress=st.progress, echo=echo, sync=sync)
        finally:
            _echo_log_file(echo)
        emit(ctx, summary.model_dump(mode="json"), lambda: typer.echo(summary.human()))


def _echo_log_file(echo: Callable[[str], None] | None) -> None:
    """Say where Prefect's and Spark's own output went (stdout: stderr keeps one line on failure)."""
    from ingest.logfile import current_log_file

    path = current_log_file()
    if echo and path is not None:
        echo(f"Prefect and Spark logs: {path}")


def _run_with_prefect(settings: Settings, *, sync: bool, quiet: bool, echo: Callable[[str], None] | None = None):
    """The pipeline flow; Prefect's and the JVM's own logs go to the log file (ingest.logfile),
    the terminal gets one line per finished stage (``echo``) and the summary."""
    import os

    from ingest.errors import IngestError
    from ingest.logfile import prefect_logs_to_file

    # a temporary server on a busy 2-core machine can take longer than Prefect's 20 s default
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # no usage heartbeat: offline it only fails (an ERROR with a traceback in the server's log)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    prefect_logs_to_file()
    from flows.params import PipelineParams
    from flows.pipeline import pipeline_flow

    if quiet:
        logging.getLogger("prefect").setLevel(logging.WARNING)
    stages = _StageEcho(echo) if echo else None
    if stages:
        logging.getLogger("prefect.task_runs").addHandler(stages)
    try:
        state = pipeline_flow(PipelineParams(lake=settings.lake, sync=sync), return_state=True)
    except RuntimeError as exc:
        if "Prefect API server" not in str(exc):
            raise
        raise IngestError(
            f"could not start a local Prefect server ({exc}); set PREFECT_API_URL to a running "
            "server or use `ingest run --orchestrator local`"
        ) from None
    finally:
        if stages:
            logging.getLogger("prefect.task_runs").removeHandler(stages)
    return state.result()  # re-raises the failing stage's error


class _StageEcho(logging.Handler):
    """Echoes "<task run>: <final state>" for each finished Prefect task (the terminal's progress)."""

    _finished = re.compile(r"^Finished in state (\w+)")

    def __init__(self, echo: Callable[[str], None]) -> None:
        super().__init__()
        self.echo = echo

    def emit(self, record: logging.LogRecord) -> None:
        m = self._finished.match(record.getMessage())
        name = getattr(record, "task_run_name", None)
        if m and name:
            self.echo(f"  {name}: {m.group(1).lower()}")
