"""The one progress bar: rich on stderr, for people only (a terminal, not ``--json``).

Every stage that shows progress uses it: the ingesters, ``ingest sync`` and the shard builder.
rich is imported only when a bar is drawn, so commands that start fast (``ingest sync``) stay fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

__all__ = ["Bar", "Unit", "progress_bar"]

Unit = Literal["items", "bytes"]
"""What the bar counts: items shows ``done/total``; bytes shows MiB done, MiB/s and an ETA."""


class Bar:
    """What a stage reports; a bar that is not drawn (no terminal, ``--json``) ignores it all."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._p, self._t = progress, task

    def advance(self, n: float = 1) -> None:
        if self._p is not None:
            self._p.advance(self._t, n)

    def total(self, n: float | None) -> None:
        if self._p is not None:
            self._p.update(self._t, total=n)

    def note(self, text: str) -> None:
        """Text after the bar, e.g. ``3/10 files · 120,345 lines``: what a person counts."""
        if self._p is not None:
            self._p.update(self._t, note=text)


@contextlib.contextmanager
def progress_bar(
    enabled: bool, description: str, *, total: float | None = None, unit: Unit = "items", transient: bool = True
) -> Iterator[Bar]:
    """A bar labelled ``description`` while the block runs, when ``enabled``; else a silent one."""
    if unit not in ("items", "bytes"):
        raise ValueError(f"progress unit must be 'items' or 'bytes', not {unit!r}")
    if not enabled:
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    counts = [DownloadColumn(binary_units=True), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()]
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *counts,
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=Console(stderr=True),
        transient=transient,
    ) as p:
        yield Bar(p, p.add_task(description, total=total, note=""))
