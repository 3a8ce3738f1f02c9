"""Named snapshots: a pinned Delta version per table, so training data can be rebuilt exactly.

A snapshot is one row in ``_meta.snapshots`` (metadata only, no data copied).  Readers resolve
the name to ``{"gold.x": 12}`` and time-travel; ``vacuum`` keeps every file a pin still needs.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from ingest.errors import ConfigError, IngestError
from ingest.lake import Lake, TableId

SNAPSHOTS_TABLE = "_meta.snapshots"
# Pinned tables keep their commit log this long, so time travel to a pin stays possible even when
# a writer's checkpoint would otherwise clean up logs older than Delta's 30-day default.
PIN_LOG_RETENTION = "interval 36500 days"

SNAPSHOTS_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("tables", pa.string()),  # JSON {"gold.x": 12}
        ("note", pa.string()),
        ("create_id", pa.string()),  # tells concurrent creators of one name apart
    ]
)

# The note on snapshots `ingest run` makes: each exists to name one shard set, so shard-set
# retention (`shards.keep`) drops it with its set.  Snapshots made by hand are never dropped.
PIPELINE_NOTE = "ingest run"

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")


class SnapshotExists(IngestError):
    """A snapshot with this name already exists."""


class Snapshot(BaseModel):
    """A name for a set of pinned table versions."""

    name: str
    created_at: datetime
    tables: dict[str, int] = Field(default_factory=dict)
    note: str | None = None

    def payload(self) -> dict[str, Any]:
        """The ``--json`` shape: name, created_at, tables (and note, if one was given)."""
        out: dict[str, Any] = {
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "tables": dict(sorted(self.tables.items())),
        }
        if self.note:
            out["note"] = self.note
        return out


def validate_name(name: str) -> str:
    """Snapshot names must not look like a version number or a timestamp (``--as-of`` takes all three)."""
    text = (name or "").strip()
    if not _NAME_RE.match(text):
        raise ConfigError(
            f"bad snapshot name {name!r}: start with a letter, then letters, digits, '_', '-' or '.' "
            "(e.g. train-2024-06)"
        )
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    raise ConfigError(f"bad snapshot name {name!r}: it reads as a timestamp; pick a name like v-{text}")


def _rows(lake: Lake) -> list[dict[str, Any]]:
    if not lake.table_exists(SNAPSHOTS_TABLE):
        return []
    return lake.delta_table(SNAPSHOTS_TABLE).to_pyarrow_table().to_pylist()


def _to_snapshot(row: dict[str, Any]) -> Snapshot:
    return Snapshot(
        name=row["name"],
        created_at=row["created_at"],
        tables={k: int(v) for k, v in json.loads(row["tables"] or "{}").items()},
        note=row.get("note"),
    )


def _winner(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Of concurrent rows for one name, the earliest (ties by create_id) is the snapshot."""
    return min(rows, key=lambda r: (r["created_at"], r["create_id"] or ""))


def list_snapshots(lake: Lake) -> list[Snapshot]:
    """Every snapshot, oldest first."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in _rows(lake):
        by_name.setdefault(row["name"], []).append(row)
    snaps = [_to_snapshot(_winner(rows)) for rows in by_name.values()]
    return sorted(snaps, key=lambda s: (s.created_at, s.name))


def get_snapshot(lake: Lake, name: str) -> Snapshot:
    """The snapshot called ``name``; ConfigError with the list command if there is none."""
    rows = [r for r in _rows(lake) if r["name"] == name]
    if not rows:
        raise ConfigError(f"no snapshot named {name!r} in lake {lake.uri}: run `ingest snapshot list` to see the names")
    return _to_snapshot(_winner(rows))


def _default_tables(lake: Lake) -> list[TableId]:
    gold = [t for t in lake.list_tables() if t.layer == "gold"]
    if not gold:
        raise ConfigError(f"lake {lake.uri} has no gold tables to pin: build them first or pass --tables bronze.x,...")
    return gold


def _protect_log(lake: Lake, tid: TableId) -> None:
    """Keep the table's commit log (metadata-only commit, once per table)."""
    dt = lake.delta_table(tid)
    if dt.metadata().configuration.get("delta.logRetentionDuration") == PIN_LOG_RETENTION:
        return
    try:
        dt.alter.set_table_properties({"delta.logRetentionDuration": PIN_LOG_RETENTION})
    except Exception as exc:  # noqa: BLE001 - a concurrent writer; the pin is still valid
        import logging

        logging.getLogger(__name__).warning("could not extend log retention of %s: %s", tid, exc)


def create_snapshot(
    lake: Lake,
    name: str,
    *,
    tables: list[str] | None = None,
    note: str | None = None,
) -> Snapshot:
    """Pin the current version of ``tables`` (default: every gold table) under a unique name."""
    from ingest.delta import delete_rows, next_sequence, write_batch

    name = validate_name(name)
    tids = [TableId.parse(t) for t in tables] if tables else _default_tables(lake)
    if any(str(t) == SNAPSHOTS_TABLE for t in tids):
        raise ConfigError(f"{SNAPSHOTS_TABLE} cannot be pinned by a snapshot")
    if any(r["name"] == name for r in _rows(lake)):
        raise SnapshotExists(
            f"snapshot {name!r} already exists: pick another name or `ingest snapshot drop {name}` first"
        )
    for tid in tids:
        if not lake.table_exists(tid):
            raise ConfigError(f"table {tid} does not exist in lake {lake.uri}: run `ingest ls` to see the tables")
    # before pinning: the retention commit is then part of the pin, and a run with nothing new
    # finds the same versions as the last snapshot (see `find_snapshot`)
    for tid in tids:
        _protect_log(lake, tid)
    pinned = current_versions(lake, tids)
    create_id = uuid.uuid4().hex
    snap = Snapshot(name=name, created_at=datetime.now(UTC), tables=pinned, note=note)
    row = {
        "name": name,
        "created_at": snap.created_at,
        "tables": json.dumps(dict(sorted(pinned.items()))),
        "note": note,
        "create_id": create_id,
    }
    app_id = f"snapshot:{name}"
    from deltalake.exceptions import CommitFailedError

    try:
        result = write_batch(
            lake,
            SNAPSHOTS_TABLE,
            pa.Table.from_pylist([row], schema=SNAPSHOTS_SCHEMA),
            app_id=app_id,
            batch_version=next_sequence(lake, SNAPSHOTS_TABLE, app_id),
            metadata={"ingest_command": "snapshot create", "snapshot": name},
        )
    except CommitFailedError:
        # Delta refuses a second commit of the same app transaction: another creator won.
        if any(r["name"] == name for r in _rows(lake)):
            raise SnapshotExists(
                f"snapshot {name!r} already exists (created concurrently): pick another name"
            ) from None
        raise
    # A concurrent creator may have written the same name: the earliest row wins, the other withdraws.
    rows = [r for r in _rows(lake) if r["name"] == name]
    if result.skipped or not rows or _winner(rows)["create_id"] != create_id:
        if not result.skipped:
            delete_rows(lake, SNAPSHOTS_TABLE, f"create_id = '{create_id}'")
        raise SnapshotExists(f"snapshot {name!r} already exists (created concurrently): pick another name")
    return snap


def current_versions(lake: Lake, tables: list[TableId] | None = None) -> dict[str, int]:
    """``{table: latest version}`` for ``tables`` (default: every gold table, what a snapshot pins)."""
    return {str(t): lake.delta_table(t).version() for t in (tables if tables is not None else _default_tables(lake))}


def find_snapshot(lake: Lake, *, tables: dict[str, int], prefix: str = "", note: str | None = None) -> Snapshot | None:
    """The newest snapshot pinning exactly ``tables`` (named ``prefix...``, with ``note``), or None."""
    for snap in reversed(list_snapshots(lake)):
        if snap.tables == tables and snap.name.startswith(prefix) and (note is None or snap.note == note):
            return snap
    return None


def drop_snapshot(lake: Lake, name: str) -> Snapshot:
    """Remove a snapshot; its files become ordinary old files that ``vacuum`` may delete."""
    from ingest.delta import delete_rows

    snap = get_snapshot(lake, name)
    delete_rows(lake, SNAPSHOTS_TABLE, f"name = '{validate_name(name)}'")
    return snap


def pinned_versions(lake: Lake) -> dict[str, list[int]]:
    """Per table, every version some snapshot pins."""
    out: dict[str, set[int]] = {}
    for snap in list_snapshots(lake):
        for table, version in snap.tables.items():
            out.setdefault(table, set()).add(int(version))
    return {t: sorted(v) for t, v in out.items()}


# Vacuum lives beside snapshots because it must know every pin.
from ingest.vacuum import vacuum  # noqa: E402,F401 - re-exported as ingest.snapshots.vacuum; imported last (ingest.vacuum imports this module)
