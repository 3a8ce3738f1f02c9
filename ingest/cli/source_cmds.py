"""Commands that load sources into bronze tables: images, logs, tables (thin wrappers over
``ingest.sources``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from ingest.cli.common import arrow_without_pandas, emit, state
from ingest.cli.help import examples
from ingest.settings import CURSOR_LAG_DEFAULT, CURSOR_LAG_HELP

if TYPE_CHECKING:  # imported lazily: pyarrow would slow every `ingest` start-up
    from ingest.settings import SourceConfig
    from ingest.sources import IngestResult

PARTITIONS_HELP = (
    "Split the source into this many parts (file groups; key ranges of the primary key or cursor "
    "for a table) loaded at once on threads of this process, into the one table, exactly once."
)


def _human(res: dict[str, Any]) -> None:
    runs = (
        f"{res['partitions']} parts, runs {', '.join(res['run_ids'])}" if "run_ids" in res else f"run {res['run_id']}"
    )
    typer.echo(
        f"{res['table']} v{res['version']}: {res['rows_written']} rows written, {res['rows_quarantined']} quarantined, "
        f"{res['skipped']} skipped (already loaded), {res['bytes_read']} bytes read  [{runs}]"
    )
    for note in res["notes"]:
        typer.echo(f"  {note}")


def _emit(ctx: typer.Context, res: IngestResult | dict[str, Any]) -> None:
    out = res if isinstance(res, dict) else res.model_dump(mode="json")
    emit(ctx, out, lambda: _human(out))


def _check_partitions(partitions: int) -> None:
    """A bad --partitions is refused before anything is read or written."""
    from ingest.errors import ConfigError
    from ingest.partition import MAX_GROUPS

    if not 1 <= partitions <= MAX_GROUPS:
        raise ConfigError(f"--partitions must be between 1 and {MAX_GROUPS}, got {partitions}")


def _partitioned(ctx: typer.Context, source: SourceConfig, partitions: int) -> None:
    """``source`` split into ``partitions`` parts run at once (``ingest.pipeline.ingest_partitioned``)."""
    from ingest.pipeline import ingest_partitioned

    st = state(ctx)
    _emit(ctx, ingest_partitioned(st.lake_for_write, source, partitions=partitions, progress=st.progress))


def _split_cols(values: list[str]) -> tuple[str, ...]:
    return tuple(c.strip() for v in values for c in v.split(",") if c.strip())


def register(app: typer.Typer) -> None:
    @app.command(
        "images",
        epilog=examples(
            "ingest images ./photos",
            "ingest images s3://raw-bucket/cameras/ --table bronze.camera_images",
            "ingest images s3://raw-bucket/cameras/ --partitions 4",
        ),
    )
    def images_cmd(
        ctx: typer.Context,
        src: str = typer.Argument(..., help="Local directory or s3://bucket/prefix, walked recursively."),
        table: str = typer.Option("bronze.images", "--table", help="Target table layer.name."),
        partitions: int = typer.Option(1, "--partitions", help=PARTITIONS_HELP),
    ) -> None:
        """Load images: one row per distinct content (sha256), bytes stored in the row."""
        from ingest.settings import ImageSource
        from ingest.sources.images import ingest_images

        _check_partitions(partitions)
        if partitions > 1:
            return _partitioned(ctx, ImageSource(path=src, table=table), partitions)
        st = state(ctx)
        arrow_without_pandas()
        _emit(ctx, ingest_images(st.lake_for_write, src, table=table, progress=st.progress))

    @app.command(
        "logs",
        epilog=examples(
            "ingest logs /var/log/app/ --table bronze.events",
            r"ingest logs web.log.gz --format text --pattern '(?P<ip>\S+) (?P<rest>.*)'",
            "ingest logs s3://raw-bucket/app-logs/ --partitions 4",
        ),
    )
    def logs_cmd(
        ctx: typer.Context,
        src: str = typer.Argument(..., help="Log file, directory or s3://bucket/prefix (.gz files too)."),
        table: str = typer.Option("bronze.events", "--table", help="Target table layer.name."),
        format: str = typer.Option("jsonl", "--format", help="jsonl, or text (parsed by --pattern)."),
        pattern: str | None = typer.Option(
            None, "--pattern", help="Regex with named groups for --format text; one column per group."
        ),
        partitions: int = typer.Option(1, "--partitions", help=PARTITIONS_HELP),
    ) -> None:
        """Load new log lines; files already loaded are skipped, grown files resume at their offset."""
        from ingest.errors import ConfigError
        from ingest.settings import LogSource
        from ingest.sources.logs import ingest_logs

        if format not in ("jsonl", "text"):
            raise ConfigError(f"unknown --format {format!r}: use jsonl or text")
        _check_partitions(partitions)
        if partitions > 1:
            source = LogSource(path=src, table=table, format=format, pattern=pattern)  # type: ignore[arg-type]  # format checked against the Literal above
            return _partitioned(ctx, source, partitions)
        st = state(ctx)
        arrow_without_pandas()
        res = ingest_logs(st.lake_for_write, src, table=table, format=format, pattern=pattern, progress=st.progress)  # type: ignore[arg-type]  # format checked against the Literal above
        _emit(ctx, res)

    @app.command(
        "tables",
        epilog=examples(
            "ingest tables sqlite:///shop.db --source-table orders --table bronze.o",
            'ingest tables "$DB" --source-table users --table bronze.u --cursor ts',
            'ingest tables "$DB" --source-table users --table bronze.u --primary-key id',
            'ingest tables "$DB" --source-table users --table bronze.u\n--primary-key id --partitions 4',
        ),
    )
    def tables_cmd(
        ctx: typer.Context,
        db_url: str = typer.Argument(..., help="SQLAlchemy URL: postgresql://..., mysql://..., sqlite:///path.db"),
        source_table: str = typer.Option(..., "--source-table", help="Table to read: name or schema.name."),
        table: str = typer.Option(..., "--table", help="Target table layer.name."),
        primary_key: list[str] = typer.Option(
            [], "--primary-key", help="Merge on these columns (comma-separated or repeated)."
        ),
        cursor: str | None = typer.Option(None, "--cursor", help="Load incrementally by this column."),
        cursor_lag: float = typer.Option(CURSOR_LAG_DEFAULT, "--cursor-lag", help=CURSOR_LAG_HELP),
        partitions: int = typer.Option(1, "--partitions", help=PARTITIONS_HELP),
    ) -> None:
        """Load a database table: incremental (--cursor), merged (--primary-key) or a full snapshot."""
        from ingest.settings import TableSource
        from ingest.sources.tables import check_cursor_lag, ingest_table

        _check_partitions(partitions)
        check_cursor_lag(cursor_lag)  # before the split too: one wording whatever --partitions
        if partitions > 1:
            source = TableSource(
                url=db_url,
                source_table=source_table,
                table=table,
                primary_key=list(_split_cols(primary_key)),
                cursor=cursor,
                cursor_lag=cursor_lag,
            )
            return _partitioned(ctx, source, partitions)
        st = state(ctx)
        res = ingest_table(
            st.lake_for_write,
            db_url,
            source_table=source_table,
            table=table,
            primary_key=_split_cols(primary_key),
            cursor=cursor,
            cursor_lag=cursor_lag,
            progress=st.progress,
        )
        _emit(ctx, res)
