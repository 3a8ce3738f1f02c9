"""Operations: data health and lineage."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ingest.cli.common import emit, state, write_page
from ingest.cli.help import examples


def register(app: typer.Typer) -> None:
    @app.command(
        "health",
        epilog=examples(
            "ingest health --table bronze.events --table silver.events || alert",
            "ingest --lake ./lake health --html health.html; xdg-open health.html",
        ),
    )
    def health_cmd(
        ctx: typer.Context,
        table: list[str] | None = typer.Option(None, "--table", help="Check only these tables (repeatable)."),
        html: Path | None = typer.Option(
            None,
            "--html",
            help="Also write the report with charts to this HTML file (self-contained, opens offline).",
            show_default=False,
        ),
    ) -> None:
        """Freshness, volume, schema, distribution and quarantine checks per table.

        Thresholds come from settings (`health:` in lakehouse.yaml or LAKEHOUSE_HEALTH__*).
        Exits 1 when any threshold is breached, so a scheduled deployment can alert
        (also with --html: the file is written first).
        """
        from ingest.health import check_health

        st = state(ctx)
        report = check_health(st.lake_obj, st.settings.health, tables=table or None)
        if html is not None:
            from ingest.health_html import render_health_html

            write_page(html, render_health_html(lake=st.lake_obj, report=report, thresholds=st.settings.health))
            if not st.json:
                typer.echo(f"wrote {html}", err=True)

        def human() -> None:
            t = Table(title=f"data health ({'ok' if report.ok else 'BREACH'})")
            for col in ("table", "status", "check", "detail"):
                t.add_column(col)
            for th in report.tables:
                for c in th.checks:
                    t.add_row(th.table, c.status, c.name, c.detail, style=None if c.status == "ok" else "red")
            Console().print(t)

        emit(ctx, report.model_dump(mode="json"), human)
        if not report.ok:
            raise typer.Exit(1)

    @app.command(
        "lineage",
        epilog=examples("ingest lineage shards/photos/train-2024-06", "ingest lineage gold.photo_features@12"),
    )
    def lineage_cmd(
        ctx: typer.Context,
        ref: str = typer.Argument(
            ..., help="A shard set (shards/DATASET/SNAPSHOT, a path or s3:// URI) or a table layer.name[@version]."
        ),
    ) -> None:
        """Print the chain shard set -> snapshot -> table versions -> transform runs -> ingest runs -> sources."""
        from ingest.lineage import lineage

        node = lineage(state(ctx).lake_obj, ref)
        emit(ctx, node.model_dump(mode="json"), lambda: typer.echo("\n".join(node.render())))
