"""Commit primitives every ingester shares: the lost-race retry and the empty table created
before a table's first exactly-once batch."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa

from ingest.lake import Lake, TableId

__all__ = ["BatchTaken", "ensure_table", "is_commit_conflict", "with_commit_retry"]

T = TypeVar("T")


class BatchTaken(Exception):
    """Another writer committed this batch number first: re-read the table and try again."""


def is_commit_conflict(exc: BaseException) -> bool:
    """A concurrent writer won the race (retry), as opposed to a real failure."""
    if isinstance(exc, BatchTaken):
        return True
    from deltalake.exceptions import CommitFailedError, DeltaError

    if isinstance(exc, CommitFailedError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (DeltaError, OSError)) and (
        "already exists" in text or "version" in text and "exists" in text or "concurrent" in text
    )


def with_commit_retry(fn: Callable[[], T], *, attempts: int = 12) -> T:
    """Run ``fn`` again when a concurrent commit conflicts; ``fn`` re-reads the table each time,
    so its exactly-once checks see what the other writer committed."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_commit_conflict(exc) or attempt == attempts - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")  # pragma: no cover


def ensure_table(lake: Lake, table: str | TableId, schema: pa.Schema) -> None:
    """Create the table empty before its first exactly-once batch.

    delta-rs retries a lost *creation* commit as a plain append without checking app ids, so two
    runs that both create a table with the same batch would both land.  An empty creation that
    races is harmless; every batch after it commits against a snapshot and is checked.
    """
    if lake.table_exists(table):
        return
    from deltalake import write_deltalake

    from ingest.delta import lake_schema

    try:
        write_deltalake(
            lake.table_uri(table),
            lake_schema(schema).empty_table(),
            mode="ignore",
            storage_options=lake.storage_options(),
        )
    except Exception:
        if not lake.table_exists(table):
            raise
