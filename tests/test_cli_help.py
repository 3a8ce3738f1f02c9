"""``--help`` reads well: every command shows examples a user can copy, flags show no type, and
the help a real process prints to a pipe is plain text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main

from ingest.cli.commands import register_commands


def _leaf_commands() -> list[tuple[str, click.Command]]:
    root = typer.main.get_command(register_commands())
    out: list[tuple[str, click.Command]] = []

    def walk(path: str, cmd: click.Command) -> None:
        if hasattr(cmd, "commands"):  # typer 0.29 groups are not click.Group subclasses
            for name, sub in cmd.commands.items():
                walk(f"{path} {name}".strip(), sub)
        else:
            out.append((path, cmd))

    walk("", root)
    return out


LEAVES = _leaf_commands()


def test_every_command_is_listed() -> None:
    names = {p for p, _ in LEAVES}
    assert {"images", "logs", "tables", "sql", "snapshot create", "shards build", "sync"} <= names, names


@pytest.mark.parametrize("path", [p for p, _ in LEAVES if p != "sync"])
def test_every_command_has_examples_that_fit_a_terminal(path: str) -> None:
    cmd = dict(LEAVES)[path]
    lines = [ln.strip() for ln in (cmd.epilog or "").splitlines() if ln.strip().startswith("$ ")]
    assert lines, f"`ingest {path} --help` shows no example"
    assert any(ln.startswith(f"$ ingest {path}") or f" {path}" in ln for ln in lines), (path, lines)
    too_long = [ln for ln in lines if len(ln) > 76]
    assert not too_long, f"examples of `ingest {path}` wrap in an 80-column terminal: {too_long}"


def _help(*argv: str) -> str:
    exe = Path(sys.executable).parent / "ingest"
    proc = subprocess.run([str(exe), *argv, "--help"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "100", "HOME": "/tmp"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("argv", [(), ("images",), ("vacuum",), ("run",), ("transform",)])
def test_help_of_a_real_process_shows_examples_and_no_flag_types(argv: tuple[str, ...]) -> None:
    out = _help(*argv)
    assert "Examples:" in out and "$ ingest" in out, out
    assert "<bool>" not in out, out
    assert "\x1b[" not in out, "help written to a pipe carries terminal colour codes"


def test_sync_help_has_examples() -> None:
    out = _help("sync")
    assert "examples:" in out.lower() and "ingest sync s3://" in out, out
