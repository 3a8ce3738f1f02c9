"""Operations: data health and lineage."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from ingest.cli.common import emit, state


def register(app: typer.Typer) -> None:
    @app.command("health")
    def health_cmd(
        ctx: typer.Context,
        table: list[str] | None = typer.Option(None, "--table", help="Check only these tables (repeatable)."),
    ) -> None:
        """Freshness, volume, schema, distribution and quarantine checks per table.

        Thresholds come from settings (`health:` in lakehouse.yaml or LAKEHOUSE_HEALTH__*).
        Exits 1 when any threshold is breached, so a scheduled deployment can alert.
        """
        from ingest.health import check_health

        st = state(ctx)
        report = check_health(st.lake_obj, st.settings.health, tables=table or None)

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

    @app.command("lineage")
    def lineage_cmd(
        ctx: typer.Context,
        ref: str = typer.Argument(..., help="A shard set (shards/DATASET/SNAPSHOT, a path or s3:// URI) or a table layer.name[@version]."),
    ) -> None:
        """Print the chain shard set -> snapshot -> table versions -> transform runs -> ingest runs -> sources."""
        from ingest.lineage import lineage

        node = lineage(state(ctx).lake_obj, ref)
        emit(ctx, node.model_dump(mode="json"), lambda: typer.echo("\n".join(node.render())))
