"""Commands that look at the lake: ls, sql, history."""

from __future__ import annotations

from datetime import UTC

import typer
from rich.console import Console
from rich.table import Table

from ingest.cli.common import emit, state, stdout_closed_is_fine
from ingest.cli.help import examples
from ingest.lake import Lake


def table_summaries(lake: Lake) -> list[dict]:
    """`ingest ls`: each table of ``Lake.list_tables`` with its version, rows and last update."""
    out = []
    for tid in lake.list_tables():
        dt = lake.delta_table(tid)
        hist = dt.history(1)
        ts = hist[0].get("timestamp") if hist else None
        from datetime import datetime

        out.append(
            {
                "table": str(tid),
                "version": dt.version(),
                "rows": dt.count(),
                "last_update": datetime.fromtimestamp(ts / 1000, UTC).isoformat() if ts else None,
            }
        )
    return out


def table_history(lake, table: str, limit: int | None = None) -> list[dict]:
    from datetime import datetime

    from ingest.delta import commit_run_id

    dt = lake.delta_table(table)
    out = []
    for h in dt.history(limit):
        metrics = h.get("operationMetrics") or {}
        out.append(
            {
                "version": h.get("version"),
                "timestamp": datetime.fromtimestamp(h["timestamp"] / 1000, UTC).isoformat()
                if h.get("timestamp")
                else None,
                "operation": h.get("operation"),
                "rows_added": _int(metrics.get("num_added_rows", metrics.get("numOutputRows"))),
                "rows_removed": _int(metrics.get("num_removed_rows", metrics.get("numTargetRowsDeleted"))),
                "run_id": commit_run_id(h) or (h.get("userMetadata") or None),
            }
        )
    return out


def _int(v):
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _print_table(rows: list[dict], title: str | None = None) -> None:
    console = Console()
    if not rows:
        console.print("(no rows)")
        return
    t = Table(title=title)
    for k in rows[0]:
        t.add_column(str(k))
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r.values()])
    console.print(t)


def register(app: typer.Typer) -> None:
    @app.command("ls", epilog=examples("ingest ls", "ingest --lake s3://bucket/lake --json ls"))
    def ls_cmd(ctx: typer.Context) -> None:
        """List every lake table with its Delta version, row count and last update."""
        rows = table_summaries(state(ctx).lake_obj)
        emit(ctx, rows, lambda: _print_table(rows, title=f"tables in {state(ctx).lake_obj.uri}"))

    @app.command(
        "sql",
        epilog=examples(
            'ingest sql "select place, count(*) from silver.photos group by 1"',
            'ingest sql "select * from gold.photo_features" --as-of v1 > f.csv',
        ),
    )
    def sql_cmd(
        ctx: typer.Context,
        query: str = typer.Argument(
            ..., help='Read-only SQL; name tables layer.name, e.g. "select * from gold.photo_features".'
        ),
        as_of: str | None = typer.Option(
            None, "--as-of", help="Read every table as of a Delta version number, an ISO timestamp or a snapshot name."
        ),
        fmt: str | None = typer.Option(
            None,
            "--format",
            show_default=False,
            help="table, csv, tsv, json or jsonl (default: table on a terminal, csv into a pipe or file; --json implies json).",
        ),
    ) -> None:
        """Run read-only SQL over lake tables (DuckDB dialect); rows stream out as they are read.

        Binary cells print as <N bytes> (base64 in json/jsonl), structs and lists as JSON.
        """
        import sys

        import pyarrow as pa

        from ingest.cli.sql_output import FORMATS, default_format, write_result
        from ingest.query import stream_sql

        if fmt is not None and fmt not in FORMATS:
            raise typer.BadParameter(f"use {', '.join(FORMATS)}", param_hint="--format")
        chosen = (
            default_format(json_flag=state(ctx).json, stdout_is_terminal=sys.stdout.isatty())
            if fmt is None or state(ctx).json
            else fmt
        )
        sys.stdout.flush()
        # this process only streams: glibc's allocator returns each batch's memory for the next,
        # where pyarrow's default (mimalloc) keeps per-thread heaps that add ~30 MB at 1M rows
        pa.set_memory_pool(pa.system_memory_pool())
        with stdout_closed_is_fine(), stream_sql(state(ctx).lake_obj, query, as_of=as_of) as reader:
            write_result(reader, chosen, sys.stdout.buffer)  # type: ignore[arg-type]  # a checked format name (FORMATS) is a Format

    @app.command(
        "history",
        epilog=examples("ingest history bronze.events --limit 10", "ingest --json history gold.photo_features"),
    )
    def history_cmd(
        ctx: typer.Context,
        table: str = typer.Argument(..., help="layer.name"),
        limit: int | None = typer.Option(None, "--limit", help="Only the newest N versions."),
    ) -> None:
        """A table's Delta versions: time, operation, rows added/removed and the run that wrote it."""
        rows = table_history(state(ctx).lake_obj, table, limit)
        emit(ctx, rows, lambda: _print_table(rows, title=f"history of {table}"))
