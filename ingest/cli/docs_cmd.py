"""`ingest docs`: the documentation site (dbt models, Spark models, the lake's lineage)."""

from __future__ import annotations

from pathlib import Path

import typer

from ingest.cli.common import emit, state
from ingest.cli.help import examples


def register(app: typer.Typer) -> None:
    @app.command(
        "docs",
        epilog=examples(
            "ingest --lake ./lake docs --out ./site && xdg-open ./site/index.html",
            "ingest --lake s3://bucket/lake docs --out /srv/www/lake-docs",
        ),
    )
    def docs_cmd(
        ctx: typer.Context,
        out: Path = typer.Option(..., "--out", help="Directory to write the site into (created if missing)."),
    ) -> None:
        """Build a static documentation site: dbt's docs plus the Spark models and the lake's lineage.

        Open DIR/index.html in a browser (it works from file://; no server needed).
        """
        from transforms.docs_site import build_docs_site

        st = state(ctx)
        site = build_docs_site(st.settings, out=out)
        emit(
            ctx,
            site.model_dump(mode="json"),
            lambda: typer.echo(
                f"wrote {site.index} ({len(site.models)} dbt models, {len(site.spark_models)} Spark models) "
                f"and {site.lake_page} ({site.lake_nodes} lineage nodes)"
            ),
        )
