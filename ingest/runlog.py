"""The run log: one row per command run in ``_meta.runs``.

Freshness and volume checks, lineage and `ingest history` read it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa

from ingest.lake import Lake

RUNS_TABLE = "_meta.runs"

RUNS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("command", pa.string()),
        ("source", pa.string()),
        ("target", pa.string()),
        ("version_before", pa.int64()),
        ("version_after", pa.int64()),
        ("rows_written", pa.int64()),
        ("rows_quarantined", pa.int64()),
        ("skipped", pa.int64()),
        ("bytes_read", pa.int64()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("duration_s", pa.float64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("details", pa.string()),
    ]
)


# the run whose code is executing: every Delta commit made meanwhile records it (ingest.delta),
# so lineage names the run that produced a version, not the last run that looked at the table
_CURRENT_RUN: ContextVar[str | None] = ContextVar("lakehouse_run_id", default=None)


def current_run_id() -> str | None:
    """The run id of the innermost ``track`` block running in this context, if any."""
    return _CURRENT_RUN.get()


class Counts(Protocol):
    """What a run has committed so far (``ingest.sources.Tally``)."""

    def copy_to(self, run: Run) -> None: ...


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


@dataclass
class Run:
    command: str
    source: str
    target: str
    run_id: str = field(default_factory=new_run_id)
    version_before: int | None = None
    version_after: int | None = None
    rows_written: int = 0
    rows_quarantined: int = 0
    skipped: int = 0
    bytes_read: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_s: float = 0.0
    status: str = "running"
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d["details"] = json.dumps(self.details, default=str, sort_keys=True)
        return d


def record(lake: Lake, *runs: Run) -> None:
    """Append ``runs`` to the run log in one commit."""
    from ingest.delta import write_batch

    if runs:
        write_batch(lake, RUNS_TABLE, pa.Table.from_pylist([r.row() for r in runs], schema=RUNS_SCHEMA))


@contextmanager
def track(lake: Lake, *, command: str, source: str, target: str, counts: Counts | None = None) -> Iterator[Run]:
    """Record a run in ``_meta.runs`` whether it succeeds or fails.

    ``counts`` is copied into a failed run's record too: the batches it committed before failing
    stay in the table, so the run log says so.
    """
    from ingest.delta import current_version
    from ingest.lake import redact

    run = Run(command=command, source=redact(source, lake), target=target)
    # a run that fails before writing anything must not create a (misspelt) local lake just to log it
    existed = lake.is_s3 or lake.exists()
    t0 = time.monotonic()
    token = _CURRENT_RUN.set(run.run_id)
    try:
        if "." in target:
            try:
                run.version_before = current_version(lake, target)
            except Exception:  # noqa: BLE001 - a target that is not a table (e.g. a shard set)
                run.version_before = None
        yield run
        run.status = "success"
    except BaseException as exc:
        run.status = "failed"
        run.error = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, lake)
        if counts is not None:
            counts.copy_to(run)
        if "." in target and run.version_after is None:
            try:
                run.version_after = current_version(lake, target)
            except Exception:  # noqa: BLE001 - the lake itself may be what failed
                pass
        raise
    finally:
        run.duration_s = time.monotonic() - t0
        try:
            if existed or run.status != "failed" or lake.exists():
                record(lake, run)
        except Exception:  # noqa: BLE001 - never mask the run's own outcome
            pass
        finally:
            _CURRENT_RUN.reset(token)
