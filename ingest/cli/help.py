"""How ``--help`` reads: example command lines under every command, and flags without a type.

Every command shows one or two lines a user can copy (``tests/test_cli_help.py`` checks that each
command has them, so a new command cannot ship without).
"""

from __future__ import annotations

import typer.core


def examples(*lines: str) -> str:
    """The epilog of a command: ``lines`` (without the ``$ ``) kept as written.

    Click re-wraps help text into one paragraph; a paragraph that starts with ``\\b`` keeps its
    line breaks.  A line too long for an 80-column terminal is written with ``\\n`` where it
    breaks: it shows as a shell continuation (`` \\`` and an indented rest), still copyable.
    """
    if not lines:
        raise ValueError("examples() needs at least one command line")
    return "\b\nExamples:\n" + "\n".join(f"  $ {line}".replace("\n", " \\\n      ") for line in lines)


_original_display_type = typer.core.TyperOption.display_type_rich


def _display_type_rich(self: typer.core.TyperOption, ctx) -> str | None:
    """Typer 0.29 labels every option with its type, ``<bool>`` for flags that take no value."""
    if self.is_flag and self.metavar is None:
        return None
    return _original_display_type(self, ctx)


def hide_flag_types() -> None:
    """Install the flag rule above on typer's option class (idempotent)."""
    typer.core.TyperOption.display_type_rich = _display_type_rich  # type: ignore[method-assign]  # a patch of one method, on purpose
