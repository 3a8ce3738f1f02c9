"""Splitting one source into parts that separate processes (or machines) ingest at once: a file
source into groups of files (``FileGroup``), a database table into ranges of a key (``KeyRange``).

A group is a pure function of a file's URI (a stable hash modulo the group count), so every
worker lists the source itself and keeps its own files: nothing is shipped between workers and a
file listed by two of them at different times still belongs to exactly one group.  All groups
write the same table through the ordinary ingesters, whose exactly-once checks (Delta app
transactions, content identity) hold under concurrent writers; a group only narrows what one
writer reads.  Key ranges are computed once, by whoever submits the tasks, from the column's
minimum and maximum, and together cover every value (the first range has no lower bound and takes
NULLs, the last no upper bound), so rows that arrive between the split and the reads are read too.
No orchestration here: ``flows.tasks`` submits one task per part.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from ingest.sources import SourceFile

F = TypeVar("F", bound=SourceFile)

MAX_GROUPS = 4096


@dataclass(frozen=True)
class FileGroup:
    """Group ``index`` (0-based) of ``count``: the files whose URI hashes there."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_GROUPS:
            raise ValueError(f"partitions must be between 1 and {MAX_GROUPS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"group index {self.index} is not in 0..{self.count - 1}")

    def holds(self, uri: str) -> bool:
        return self.count == 1 or group_of(uri, self.count) == self.index

    def select(self, files: Iterable[F]) -> list[F]:
        """The files of this group, in their listed order."""
        return [f for f in files if self.holds(f.uri)]

    def __str__(self) -> str:
        return f"{self.index + 1}of{self.count}"


def group_of(uri: str, count: int) -> int:
    """A stable group number for ``uri`` (the same in every process and Python version)."""
    digest = hashlib.blake2b(uri.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def file_groups(count: int) -> list[FileGroup]:
    """Every group of a source split ``count`` ways (together they hold each file once)."""
    if not 1 <= count <= MAX_GROUPS:
        raise ValueError(f"partitions must be between 1 and {MAX_GROUPS}, got {count}")
    return [FileGroup(i, count) for i in range(count)]


@dataclass(frozen=True)
class KeyRange:
    """Range ``index`` (0-based) of ``count`` over ``column``: ``low <= column < high``; None is
    unbounded (the first range, whose ``low`` is None, also takes rows where ``column`` is NULL)."""

    index: int
    count: int
    column: str
    low: Any = None
    high: Any = None

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_GROUPS:
            raise ValueError(f"partitions must be between 1 and {MAX_GROUPS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"range index {self.index} is not in 0..{self.count - 1}")

    def __str__(self) -> str:
        return f"{self.column}:{self.index + 1}of{self.count}"


def key_ranges(column: str, low: Any, high: Any, count: int) -> list[KeyRange]:
    """``count`` ranges of equal width between the column's ``low`` and ``high`` (its minimum and
    maximum now), covering every value; fewer when the span holds fewer distinct bounds (an
    integer key from 1 to 3 splits into at most 3).  Numbers, dates and timestamps only: other
    types have no width to divide."""
    if not 1 <= count <= MAX_GROUPS:
        raise ValueError(f"partitions must be between 1 and {MAX_GROUPS}, got {count}")
    if low is None or high is None or count == 1:
        return [KeyRange(0, 1, column)]
    bounds: list[Any] = []
    for i in range(1, count):
        b = _between(low, high, i, count)
        if low < b <= high and (not bounds or b > bounds[-1]):
            bounds.append(b)
    edges = [None, *bounds, None]
    n = len(edges) - 1
    return [KeyRange(i, n, column, edges[i], edges[i + 1]) for i in range(n)]


def _between(low: Any, high: Any, i: int, count: int) -> Any:
    """The bound ``i/count`` of the way from ``low`` to ``high``, exactly in the column's type."""
    if isinstance(low, bool) or type(low) is not type(high):
        raise ValueError(f"cannot split a key from {low!r} to {high!r} into ranges")
    if isinstance(low, int):
        return low + (high - low) * i // count
    if isinstance(low, Decimal):
        return low + (high - low) * i / count
    if isinstance(low, float):
        return low + (high - low) * i / count
    if isinstance(low, datetime):
        return low + (high - low) * i // count
    if isinstance(low, date):
        return date.fromordinal(low.toordinal() + (high.toordinal() - low.toordinal()) * i // count)
    raise ValueError(f"key ranges need a numeric, date or timestamp column; this one holds {type(low).__name__} values")


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result for a partitioned ingest: counts summed, the table's version after the last
    group, every group's run id (each group is its own run in ``_meta.runs``)."""
    if not results:
        raise ValueError("no partition results to merge")
    tables = {r["table"] for r in results}
    if len(tables) != 1:
        raise ValueError(f"partitions wrote different tables: {sorted(tables)}")
    versions = [r["version"] for r in results if r.get("version") is not None]
    out: dict[str, Any] = {
        "table": results[0]["table"],
        "version": max(versions) if versions else None,
        "partitions": len(results),
        "run_ids": [r["run_id"] for r in results],
        "run_id": results[0]["run_id"],
        "notes": [n for r in results for n in r.get("notes", [])],
        "workers": [r["worker"] for r in results if r.get("worker")],  # host:pid, when the runner says
    }
    for key in ("rows_written", "rows_quarantined", "skipped", "bytes_read"):
        out[key] = sum(int(r.get(key) or 0) for r in results)
    return out
