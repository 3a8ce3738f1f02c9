"""The ``ingest`` command line.

Each stage's commands live in their own module and register themselves on the app, so a reader
finds `ingest images` next to the code that ingests images.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional

import typer

from ingest import __version__
from ingest.cli.common import CliState, fail, run_cli

app = typer.Typer(
    name="ingest",
    help=(
        "Lakehouse ingestion and ELT for ML teams: load images, logs and database tables into "
        "Delta Lake, transform them with dbt and Spark, pin snapshots and build training shards."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Modules that define commands; each has `register(app)`.
COMMAND_MODULES = [
    "ingest.cli.lake_cmds",
    "ingest.cli.run_cmd",
    "ingest.cli.source_cmds",
    "ingest.cli.ops_cmds",
    "ingest.cli.snapshot_cmds",
    "ingest.cli.sync_cmd",
    "ingest.cli.transform_cmds",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ingest {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    lake: Optional[str] = typer.Option(
        None, "--lake", help="Lake root: a local directory or s3://bucket/prefix (env LAKEHOUSE_LAKE; default ./lake)",
        show_default=False,
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout; no progress bars."),
    config: Optional[str] = typer.Option(
        None, "--config", help="Settings file (env LAKEHOUSE_CONFIG; default ./lakehouse.yaml)", show_default=False
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    ctx.obj = CliState(lake=lake, json=json_out, config=config)


for _mod in COMMAND_MODULES:
    importlib.import_module(_mod).register(app)


def main(argv: list[str] | None = None) -> None:
    run_cli(app, argv if argv is not None else sys.argv[1:])


__all__ = ["app", "main", "fail"]
