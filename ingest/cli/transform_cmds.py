"""`ingest transform` (dbt build + Spark models) and `ingest catalog export`."""

from __future__ import annotations

import typer

from ingest.cli.common import emit, state, to_json
from ingest.cli.help import examples


def _print_models(models: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="models")
    for col in ("model", "kind", "status", "table", "version", "rows", "written"):
        t.add_column(col)
    for m in models:
        t.add_row(
            m["name"],
            m["kind"],
            m["status"],
            m.get("table") or "-",
            "" if m.get("version") is None else str(m["version"]),
            "" if m.get("rows") is None else str(m["rows"]),
            "" if m.get("rows_written") is None else str(m["rows_written"]),
        )
    Console().print(t)


def _print_result(payload: dict) -> None:
    _print_models([m for m in payload["models"] if m.get("table")])
    tests = payload["tests"]
    typer.echo(
        f"tests: {len(tests['passed'])} passed, {len(tests['failed'])} failed, {len(tests['warned'])} warned"
        + (f" ({', '.join(tests['warned'])})" if tests["warned"] else "")
    )


def _echo_spark_log(json_out: bool) -> None:
    """Where the Spark JVM's own output went, if one started (ingest.logfile)."""
    from ingest.logfile import current_log_file

    path = current_log_file()
    if path is not None and not json_out:
        typer.echo(f"Spark logs: {path}")


def register(app: typer.Typer) -> None:
    @app.command(
        "transform", epilog=examples("ingest transform", "ingest transform --select photo_features+ --full-refresh")
    )
    def transform_cmd(
        ctx: typer.Context,
        select: str | None = typer.Option(
            None,
            "--select",
            "-s",
            help="dbt selector, e.g. photo_features, +daily_activity, tag:gold (default: everything).",
        ),
        full_refresh: bool = typer.Option(
            False, "--full-refresh", help="Rebuild incremental models from all of bronze, and rerun every Spark model."
        ),
        snapshot: str | None = typer.Option(
            None,
            "--snapshot",
            help="Read bronze as pinned by this snapshot (implies --full-refresh).",
        ),
        test_all: bool = typer.Option(
            False,
            "--test-all",
            help="Run every data test over whole tables, and the unit tests, even on an incremental run.",
        ),
    ) -> None:
        """Run dbt build (models + data and unit tests), then the Spark models, in dependency order.

        Incremental runs test what they changed: data tests read the rows this run wrote or
        loaded, and unit tests run when dbt_project/ changed.  After a failed run, on
        --full-refresh and with --test-all, everything is tested.  A Spark model whose input
        table is unchanged since it last ran is skipped (no JVM starts when all are).
        """
        from transforms.dbt_runner import TransformFailed, run_transform

        st = state(ctx)
        st.lake_obj  # noqa: B018 - reading a missing lake (a misspelt --lake) fails here, before dbt starts
        try:
            result = run_transform(
                st.settings,
                select=select,
                full_refresh=full_refresh,
                progress=st.progress,
                snapshot=snapshot,
                test_all=test_all,
            )
        except TransformFailed as exc:
            payload = exc.result.model_dump(mode="json")
            if st.json:
                typer.echo(to_json(payload))
            else:
                _print_result(payload)
            _echo_spark_log(st.json)
            raise
        payload = result.model_dump(mode="json")
        emit(ctx, payload, lambda: _print_result(payload))
        _echo_spark_log(st.json)

    catalog = typer.Typer(help="Share the lake with SQL clients.", no_args_is_help=True)

    @catalog.command(
        "export",
        epilog=examples(
            "ingest catalog export lake.duckdb", 'duckdb lake.duckdb -c "select count(*) from gold.photo_features"'
        ),
    )
    def export_cmd(
        ctx: typer.Context,
        dest: str = typer.Argument(..., help="DuckDB file to write, e.g. lake.duckdb"),
        materialize: bool = typer.Option(
            False,
            "--materialize",
            help="Copy the rows into the file (self-contained) instead of views over the lake's parquet files.",
        ),
        force: bool = typer.Option(False, "--force", help="Replace an existing file."),
    ) -> None:
        """Write a DuckDB file with one view per lake table (layer.name) for SQL clients."""
        from ingest.catalog import export_catalog

        res = export_catalog(state(ctx).lake_obj, dest, materialize=materialize, overwrite=force)
        payload = res.model_dump(mode="json")

        def human() -> None:
            kinds = {t.kind for t in res.tables}
            typer.echo(f"wrote {res.path}: {len(res.tables)} tables ({', '.join(sorted(kinds)) or 'none'})")
            if "view" in kinds:
                typer.echo("views read the current Delta files: re-export after new commits")

        emit(ctx, payload, human)

    app.add_typer(catalog, name="catalog")
