"""The typer app behind ``ingest`` (every command but the start-up path of ``ingest sync``).

Each stage's commands live in their own module and register themselves on the app, so a reader
finds `ingest images` next to the code that ingests images.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys

import typer

from ingest import __version__
from ingest.cli import COMMAND_MODULES, modules_for
from ingest.cli.common import CliState, run_cli
from ingest.cli.help import examples, hide_flag_types

hide_flag_types()

_app = typer.Typer(
    name="ingest",
    help=(
        "Lakehouse ingestion and ELT for ML teams: load images, logs and database tables into "
        "Delta Lake, transform them with dbt and Spark, pin snapshots and build training shards."
    ),
    epilog=examples(
        "ingest run",
        "ingest images ./photos && ingest transform && ingest snapshot create v1",
        "ingest shards build photos --table gold.photo_features --snapshot v1",
        "ingest sync shards/photos/v1 /local/nvme/photos",
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ingest {__version__}")
        raise typer.Exit()


_registered: set[str] = set()


@_app.callback()
def _main(
    ctx: typer.Context,
    lake: str | None = typer.Option(
        None,
        "--lake",
        help="Lake root: a local directory or s3://bucket/prefix (env LAKEHOUSE_LAKE; default ./lake)",
        show_default=False,
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout; no progress bars."),
    config: str | None = typer.Option(
        None, "--config", help="Settings file (env LAKEHOUSE_CONFIG; default ./lakehouse.yaml)", show_default=False
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="On failure, print the traceback before the one-line error (env LAKEHOUSE_DEBUG=1)."
    ),
) -> None:
    ctx.obj = CliState(lake=lake, json=json_out, config=config, debug=debug)


def register_commands(modules: list[str] | None = None) -> typer.Typer:
    """Register the commands of ``modules`` (default: all) on the app and return it."""
    for mod in COMMAND_MODULES if modules is None else modules:
        if mod not in _registered:
            importlib.import_module(mod).register(_app)
            _registered.add(mod)
    return _app


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

    from ingest.logfile import drop_empty_log

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    drop_empty_log()
    os._exit(_EXIT_CODE)


def main(argv: list[str] | None = None) -> None:
    """Run a command on the typer app (see ``ingest.cli.main``)."""
    global _EXIT_CODE
    as_script = argv is None
    args = sys.argv[1:] if argv is None else argv
    if as_script:  # only a process that is about to end may skip native teardown
        from ingest.logfile import native_stderr_to_log

        atexit.register(_exit_without_native_teardown)
        native_stderr_to_log()  # Rust panic lines of a failed delta-rs write are not the error line
    try:
        run_cli(register_commands(modules_for(args)), args)
    except SystemExit as exc:
        code = exc.code
        _EXIT_CODE = code if isinstance(code, int) else (0 if code is None else 1)
        if isinstance(code, str):
            print(code, file=sys.stderr)
        raise
    except BaseException:  # run_cli reports every error; never let one end the process with 0
        _EXIT_CODE = 1
        raise
