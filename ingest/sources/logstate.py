"""Where each log stream stands, kept beside its Delta app transactions so those can expire.

Every log file's content is an app id of the bronze table (``logs.py``), thousands of them over
the years.  Delta's ``delta.setTransactionRetentionDuration`` lets a table forget app
transactions older than the retention (delta-rs drops them from snapshots and checkpoints), the
way Spark's streaming sinks use it: the writer's own state says where each stream stands, and the
transaction only guards the commit against a retry until that state is written.

``StreamStates`` is that state: a row per stream and committed offset in ``_meta.log_streams``
(offset, line count and the check of the bytes before it), written after the commits it
describes have landed.  A stream is read from its transaction while that lives and from this
record once it has expired; a transaction found ahead of its record (a run killed before it
wrote them) is recorded by the next run.  So exactly-once holds as long as no stream stays
unrecorded longer than the retention: a run killed right after a commit must run again within it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from ingest.delta import ensure_table, with_commit_retry, write_batch
from ingest.lake import Lake, TableId
from ingest.sources.quarantine import quarantine_table
from ingest.sources.util import utcnow

TXN_RETENTION = "delta.setTransactionRetentionDuration"
DEFAULT_TXN_RETENTION = "interval 30 days"

STREAMS_TABLE = TableId("_meta", "log_streams")
STREAMS_SCHEMA = pa.schema(
    [
        ("table_id", pa.string()),  # the Delta table's id: a table dropped and made again starts empty
        ("table_name", pa.string()),
        ("app_id", pa.string()),
        ("offset", pa.int64()),
        ("lines", pa.int64()),
        ("check", pa.int64()),
        ("run_id", pa.string()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)
FLUSH_EVERY = 1024  # streams recorded per commit (and one at the end of the run)


@dataclass(frozen=True)
class StreamState:
    offset: int
    lines: int
    check: int | None


class StreamStates:
    """The recorded state of a table's log streams: read once per run, written in blocks."""

    def __init__(self, lake: Lake, table: TableId, *, run_id: str) -> None:
        self.lake, self.table, self.run_id = lake, table, run_id
        self._known: dict[str, StreamState] | None = None
        self._table_id: str | None = None
        self.pending: dict[str, StreamState] = {}

    def _id(self) -> str | None:
        if self._table_id is None and self.lake.table_exists(self.table):
            table_id = self.lake.delta_table(self.table).metadata().id
            self._table_id = None if table_id is None else str(table_id)
        return self._table_id

    def _states(self) -> dict[str, StreamState]:
        if self._known is None:
            self._known = self._load()
        return self._known

    def get(self, app_id: str) -> StreamState | None:
        return self._states().get(app_id)

    def _load(self) -> dict[str, StreamState]:
        import pyarrow.compute as pc

        table_id = self._id()
        if table_id is None or not self.lake.table_exists(STREAMS_TABLE):
            return {}
        rows = (
            self.lake.dataset(STREAMS_TABLE)
            .to_table(columns=["app_id", "offset", "lines", "check"], filter=pc.field("table_id") == table_id)
            .sort_by([("offset", "ascending")])  # the furthest offset of a stream wins
        )
        cols = rows.to_pydict()
        return {
            a: StreamState(o, n, c)
            for a, o, n, c in zip(cols["app_id"], cols["offset"], cols["lines"], cols["check"], strict=True)
        }

    def record(self, app_id: str, state: StreamState) -> None:
        """``app_id`` stands at ``state`` (its commits have landed); written at the next flush."""
        states = self._states()
        known = states.get(app_id)
        if known is not None and known.offset >= state.offset:
            return
        states[app_id] = self.pending[app_id] = state
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        table_id = self._id()
        if not self.pending or table_id is None:
            return
        now: datetime = utcnow()
        items = list(self.pending.items())
        data = pa.table(
            {
                "table_id": [table_id] * len(items),
                "table_name": [str(self.table)] * len(items),
                "app_id": [a for a, _ in items],
                "offset": [s.offset for _, s in items],
                "lines": [s.lines for _, s in items],
                "check": [s.check for _, s in items],
                "run_id": [self.run_id] * len(items),
                "recorded_at": [now] * len(items),
            },
            schema=STREAMS_SCHEMA,
        )
        ensure_table(self.lake, STREAMS_TABLE, STREAMS_SCHEMA)
        with_commit_retry(lambda: write_batch(self.lake, STREAMS_TABLE, data, metadata={"run_id": self.run_id}))
        self.pending = {}


def expire_transactions(lake: Lake, table: TableId) -> None:
    """Give the log table and its quarantine a transaction retention, unless they have one (a
    retention the user set on the table stays)."""
    for tid in (table, quarantine_table(table)):
        if lake.table_exists(tid):
            with_commit_retry(lambda tid=tid: _set_retention(lake, tid))  # type: ignore[misc]  # bound per table


def _set_retention(lake: Lake, tid: TableId) -> None:
    dt: Any = lake.delta_table(tid)
    if TXN_RETENTION not in dt.metadata().configuration:
        dt.alter.set_table_properties({TXN_RETENTION: DEFAULT_TXN_RETENTION}, raise_if_not_exists=False)
