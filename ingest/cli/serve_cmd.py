"""`ingest serve`: the lake as a PostgreSQL-wire SQL endpoint for analysts' tools."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ingest.cli.common import state
from ingest.cli.help import examples


def register(app: typer.Typer) -> None:
    @app.command(
        "serve",
        epilog=examples(
            "LAKEHOUSE_SERVE_PASSWORD=s3cret ingest serve --port 5433",
            'psql "postgresql://me:s3cret@127.0.0.1:5433/lake" -c "select 1"',
        ),
    )
    def serve_cmd(
        ctx: typer.Context,
        host: str = typer.Option(
            "127.0.0.1", "--host", help="Address to listen on; a non-loopback one needs LAKEHOUSE_SERVE_PASSWORD."
        ),
        port: int = typer.Option(5433, "--port", help="TCP port."),
        tls_cert: Path | None = typer.Option(
            None, "--tls-cert", help="PEM certificate (chain): clients must then use TLS.", show_default=False
        ),
        tls_key: Path | None = typer.Option(
            None, "--tls-key", help="PEM private key of --tls-cert.", show_default=False
        ),
    ) -> None:
        """Serve read-only SQL over the lake to any PostgreSQL client (psql, psycopg, DBeaver, Metabase).

        Tables are layer.name at their current Delta version; SET lakehouse.as_of = 'NAME' reads them as of a snapshot (or a Delta version number, or an ISO timestamp). Password: env LAKEHOUSE_SERVE_PASSWORD, any user name.
        """
        from ingest.serve import PASSWORD_ENV, ServeConfig, check_config, serve

        config = ServeConfig(
            host=host,
            port=port,
            password=os.environ.get(PASSWORD_ENV) or None,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
        check_config(config)  # refuse before reading the lake
        serve(state(ctx).lake_obj, config)
