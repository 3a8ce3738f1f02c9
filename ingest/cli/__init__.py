"""The ``ingest`` command line.

Each stage's commands live in their own module and register themselves on the typer app
(``ingest.cli.commands``), so a reader finds `ingest images` next to the code that ingests
images.  ``main`` imports only the module of the command being run, and ``ingest sync`` (started
by every training job) runs without typer or pydantic: see ``ingest.cli.sync_cmd``.
"""

from __future__ import annotations

import sys
from typing import Any

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
    "ingest.cli.serve_cmd",
    "ingest.cli.docs_cmd",
]

# command -> its module (tests/test_cli_registry.py checks this against the modules)
COMMANDS = {
    "ls": "ingest.cli.lake_cmds",
    "sql": "ingest.cli.lake_cmds",
    "history": "ingest.cli.lake_cmds",
    "run": "ingest.cli.run_cmd",
    "images": "ingest.cli.source_cmds",
    "logs": "ingest.cli.source_cmds",
    "tables": "ingest.cli.source_cmds",
    "health": "ingest.cli.ops_cmds",
    "lineage": "ingest.cli.ops_cmds",
    "snapshot": "ingest.cli.snapshot_cmds",
    "vacuum": "ingest.cli.snapshot_cmds",
    "optimize": "ingest.cli.snapshot_cmds",
    "shards": "ingest.cli.snapshot_cmds",
    "sync": "ingest.cli.sync_cmd",
    "transform": "ingest.cli.transform_cmds",
    "catalog": "ingest.cli.transform_cmds",
    "serve": "ingest.cli.serve_cmd",
    "docs": "ingest.cli.docs_cmd",
}
_GLOBAL_OPTIONS_WITH_VALUE = ("--lake", "--config")


def modules_for(argv: list[str]) -> list[str] | None:
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


def main(argv: list[str] | None = None) -> None:
    """The console script (argv None) and in-process callers (tests pass argv)."""
    args = sys.argv[1:] if argv is None else argv
    if modules_for(args) == [COMMANDS["sync"]]:
        from ingest.cli.sync_cmd import main as sync_main

        sync_main(args)  # exits, unless the line is one for typer (e.g. `ingest --help sync`)
    from ingest.cli.commands import main as app_main

    app_main(argv)


def __getattr__(name: str) -> Any:
    if name == "app":  # the full app, for tests and embedding
        from ingest.cli.commands import register_commands

        return register_commands()
    if name == "register_commands":
        from ingest.cli.commands import register_commands

        return register_commands
    raise AttributeError(f"module 'ingest.cli' has no attribute {name!r}")


__all__ = ["app", "main", "register_commands"]
