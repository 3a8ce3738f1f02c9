"""The quarantine: records that could not be loaded, kept beside the target table with the
reason and the bytes as they arrived (``<layer>.<name>_quarantine``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from ingest.delta import ensure_table, write_batch
from ingest.lake import Lake, TableId

__all__ = ["QUARANTINE_SCHEMA", "Bad", "quarantine_table", "row_json", "write_quarantine"]

QUARANTINE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),  # file / object URI or redacted DB URL + table
        ("source_ref", pa.string()),  # line number, byte offset, primary key ...
        ("reason", pa.string()),
        ("raw", pa.binary()),  # the record as it arrived
        ("run_id", pa.string()),
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class Bad:
    """One record that could not be loaded."""

    source: str
    source_ref: str
    reason: str
    raw: bytes


def quarantine_table(table: str | TableId) -> TableId:
    """``bronze.events`` -> ``bronze.events_quarantine`` (beside the target)."""
    t = TableId.parse(table)
    return TableId(t.layer, f"{t.name}_quarantine")


def write_quarantine(
    lake: Lake,
    table: str | TableId,
    bad: list[Bad],
    *,
    run_id: str,
    app_id: str,
    batch_version: int,
    snapshot: Any = None,
) -> int:
    """Append ``bad`` to the quarantine table once per ``(app_id, batch_version)``; returns rows
    written.  ``snapshot`` (a loaded quarantine table) is the one to check and commit against."""
    if not bad:
        return 0
    now = datetime.now(UTC)
    data = pa.Table.from_pylist(
        [
            {
                "source": b.source,
                "source_ref": b.source_ref,
                "reason": b.reason[:2000],
                "raw": b.raw,
                "run_id": run_id,
                "quarantined_at": now,
            }
            for b in bad
        ],
        schema=QUARANTINE_SCHEMA,
    )
    if snapshot is None:
        ensure_table(lake, quarantine_table(table), QUARANTINE_SCHEMA)
    res = write_batch(
        lake, quarantine_table(table), data, app_id=app_id, batch_version=batch_version, snapshot=snapshot
    )
    return 0 if res.skipped else res.rows


def row_json(row: dict[str, Any]) -> bytes:
    """A record as JSON bytes for the quarantine's ``raw`` column."""

    def default(o: Any) -> Any:
        if isinstance(o, (datetime, date)):
            return o.isoformat()
        if isinstance(o, (bytes, bytearray)):
            return o.hex()
        return str(o)

    return json.dumps(row, default=default, sort_keys=True).encode()
