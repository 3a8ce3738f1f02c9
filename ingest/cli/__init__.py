"""The ``ingest`` command line.

Each stage's commands live in their own module and register themselves on the app, so a reader
finds `ingest images` next to the code that ingests images.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
from typing import Optional

import typer

from ingest import __version__
from ingest.cli.common import CliState, fail, run_cli

_app = typer.Typer(
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

# Modules that define commands; each has `register(app)`.  Importing them all costs start-up
# time every command pays, so `main` imports only the module of the command being run.
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


# command -> its module (tests/test_cli_registry.py checks this against the modules)
COMMANDS = {
    "ls": "ingest.cli.lake_cmds", "sql": "ingest.cli.lake_cmds", "history": "ingest.cli.lake_cmds",
    "run": "ingest.cli.run_cmd",
    "images": "ingest.cli.source_cmds", "logs": "ingest.cli.source_cmds", "tables": "ingest.cli.source_cmds",
    "health": "ingest.cli.ops_cmds", "lineage": "ingest.cli.ops_cmds",
    "snapshot": "ingest.cli.snapshot_cmds", "vacuum": "ingest.cli.snapshot_cmds", "shards": "ingest.cli.snapshot_cmds",
    "sync": "ingest.cli.sync_cmd",
    "transform": "ingest.cli.transform_cmds", "catalog": "ingest.cli.transform_cmds",
}
_GLOBAL_OPTIONS_WITH_VALUE = ("--lake", "--config")
_registered: set[str] = set()


@_app.callback()
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


def register_commands(modules: list[str] | None = None) -> typer.Typer:
    """Register the commands of ``modules`` (default: all) on the app and return it."""
    for mod in COMMAND_MODULES if modules is None else modules:
        if mod not in _registered:
            importlib.import_module(mod).register(_app)
            _registered.add(mod)
    return _app


def _modules_for(argv: list[str]) -> list[str] | None:
    """The one module a command line needs, or None (help, unknown command: load them all)."""
    if "--version" in argv:
        return []
    it = iter(argv)
    for token in it:
        if token in _GLOBAL_OPTIONS_WITH_VALUE:
            next(it, None)
        elif not token.startswith("-"):
            return [COMMANDS[token]] if token in COMMANDS else None
    return None


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the full app, for tests and embedding
        return register_commands()
    raise AttributeError(f"module 'ingest.cli' has no attribute {name!r}")


_EXIT_CODE = 0


def _exit_without_native_teardown() -> None:
    """The last exit handler: end the process before C++ static destructors run.

    After deltalake's pyarrow datasets have been scanned, Arrow's I/O threads can still be
    joinable when libstdc++ tears down globals, which aborts a finished command with
    "terminate called without an active exception" (delta-rs #2184, apache/arrow #34314).
    Every Python-level exit handler registered after this one (Prefect's temporary server,
    ...) has already run when it does.
    """
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_EXIT_CODE)


def main(argv: list[str] | None = None) -> None:
    """The console script (argv None) and in-process callers (tests pass argv)."""
    global _EXIT_CODE
    as_script = argv is None
    args = sys.argv[1:] if as_script else argv
    if as_script:  # only a process that is about to end may skip native teardown
        atexit.register(_exit_without_native_teardown)
    try:
        run_cli(register_commands(_modules_for(args)), args)
    except SystemExit as exc:
        code = exc.code
        _EXIT_CODE = code if isinstance(code, int) else (0 if code is None else 1)
        if isinstance(code, str):
            print(code, file=sys.stderr)
        raise


__all__ = ["app", "main", "fail", "register_commands"]
