"""`ingest run`: the whole pipeline described by the config."""

from __future__ import annotations

from typing import Literal

import typer

from ingest.cli.common import emit, state


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        ctx: typer.Context,
        orchestrator: str = typer.Option(
            "prefect", "--orchestrator",
            help="prefect: run the Prefect pipeline flow (a temporary local server if PREFECT_API_URL is unset); "
            "local: the same stages in this process without Prefect.",
        ),
        sync: bool = typer.Option(True, "--sync/--no-sync", help="Stage the shard set to sync_dest (default ./synced)."),
    ) -> None:
        """Run the whole pipeline: ingest every source, transform, snapshot, build shards, sync.

        With no sources configured it runs on bundled sample data (generated images, JSONL logs
        and a SQLite table under ./sample_data), so it works on a fresh machine with no server.
        """
        st = state(ctx)
        mode: Literal["prefect", "local"]
        if orchestrator not in ("prefect", "local"):
            raise typer.BadParameter("use prefect or local", param_hint="--orchestrator")
        mode = orchestrator  # type: ignore[assignment]
        if mode == "prefect":
            summary = _run_with_prefect(st.settings, sync=sync, quiet=st.json)
        else:
            from ingest.pipeline import run_pipeline

            summary = run_pipeline(
                st.settings, progress=st.progress, echo=None if st.json else typer.echo, sync=sync
            )
        emit(ctx, summary.model_dump(mode="json"), lambda: typer.echo(summary.human()))


def _run_with_prefect(settings, *, sync: bool, quiet: bool):
    import logging
    import os

    from ingest.errors import IngestError

    # a temporary server on a busy 2-core machine can take longer than Prefect's 20 s default
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.params import PipelineParams
    from flows.pipeline import pipeline_flow

    if quiet:
        logging.getLogger("prefect").setLevel(logging.WARNING)
    try:
        state = pipeline_flow(PipelineParams(lake=settings.lake, sync=sync), return_state=True)
    except RuntimeError as exc:
        if "Prefect API server" not in str(exc):
            raise
        raise IngestError(
            f"could not start a local Prefect server ({exc}); set PREFECT_API_URL to a running "
            "server or use `ingest run --orchestrator local`"
        ) from None
    return state.result()  # re-raises the failing stage's error
