"""`ingest run`: the whole pipeline described by the config."""

from __future__ import annotations

import typer

from ingest.cli.common import emit, state


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(ctx: typer.Context) -> None:
        """Run the whole pipeline: ingest every source, transform, snapshot, build shards, sync.

        With no sources configured it runs on bundled sample data (generated images, JSONL logs
        and a SQLite table), so it works on a fresh machine with no server.
        """
        from ingest.pipeline import run_pipeline

        st = state(ctx)
        summary = run_pipeline(st.settings, progress=st.progress, echo=None if st.json else typer.echo)
        emit(ctx, summary.model_dump(mode="json"), lambda: typer.echo(summary.human()))
