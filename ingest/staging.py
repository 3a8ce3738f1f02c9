"""A batch's data files written before its commit, so a commit that loses a race is made again
with the same files instead of encoding the rows again.

``write_deltalake`` writes and commits in one call: when a concurrent writer takes the batch
number first, its files are left unreferenced and the loser encodes the whole batch again (a
64 MB image batch each time).  Here delta-rs writes the rows into a one-commit *staging table*
inside the target's folder (``<table>/staged/<id>/``); that commit's add actions carry delta-rs'
own file statistics, so nothing here computes them.  The staging log is deleted at once and the
add actions are committed to the target (``create_write_transaction``) as often as races need;
the files stay where delta-rs wrote them, named by a path relative to the table root, as
partition folders are.  Files whose rows changed after a lost race are deleted at once; a run
killed between staging and commit leaves its files unreferenced, as a killed ``write_deltalake``
does.  The folder is not hidden (no ``_``), so delta-rs' full vacuum lists such files; ``ingest
vacuum`` deletes only files a commit removed (a committed batch's, after ``ingest optimize``),
never one a running writer is about to commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ingest.conform import conform
from ingest.delta import (
    WriteResult,
    already_committed,
    commit_properties,
    log_entries,
    storage_failure,
)
from ingest.lake import Lake, TableId

__all__ = ["STAGING_DIR", "StagedFiles", "commit_staged", "discard_staged", "not_stageable", "stage_files"]

STAGING_DIR = "staged"
# table properties that decide which statistics a data file's add action carries
_STATS_PROPERTIES = ("delta.dataSkippingNumIndexedCols", "delta.dataSkippingStatsColumns")
# Writer features an append of plain files honours as they are.  Anything else (CHECK
# constraints, column mapping, generated or identity columns, row tracking...) is checked or
# rewritten by delta-rs' writer for the target, which the staging table does not have.
_SAFE_WRITER_FEATURES = frozenset(
    {"appendOnly", "deletionVectors", "timestampNtz", "v2Checkpoint", "vacuumProtocolCheck", "checkpointProtection"}
)
_FIELD_RULES = ("delta.invariants", "delta.generationExpression", "delta.identity", "delta.columnMapping")


def not_stageable(snapshot: Any) -> str | None:
    """Why staged files cannot be appended to the table read at ``snapshot`` (None: they can).

    A table a user gave CHECK constraints, column mapping or generated columns (e.g. with Spark)
    takes its rows through ``write_batch``, whose writer enforces them."""
    protocol, config = snapshot.protocol(), snapshot.metadata().configuration
    if protocol.min_writer_version in (4, 5, 6):
        return f"writer protocol version {protocol.min_writer_version} (generated columns, column mapping or identity)"
    if extra := set(protocol.writer_features or ()) - _SAFE_WRITER_FEATURES:
        return f"writer features {sorted(extra)}"
    if rules := sorted(k for k in config if k.startswith("delta.constraints.")):
        return f"CHECK constraints {rules}"
    if config.get("delta.columnMapping.mode", "none") != "none":
        return "column mapping"
    if ruled := [f.name for f in snapshot.schema().fields if any(k.startswith(_FIELD_RULES) for k in f.metadata)]:
        return f"column rules on {ruled}"
    return None


@dataclass(frozen=True)
class StagedFiles:
    """Data files in ``table``'s folder, written and not committed (``actions``: their adds)."""

    table: TableId
    folder: str  # relative to the table root
    actions: tuple[Any, ...]  # deltalake AddAction
    rows: int


def stage_files(
    lake: Lake, table: str | TableId, data: pa.Table, *, snapshot: Any, row_group_rows: int | None = None
) -> StagedFiles:
    """Write ``data`` as data files of ``table`` (read at ``snapshot``) without committing them.

    ``row_group_rows`` bounds a parquet row group, which the writer holds in memory encoded
    (delta-rs' default is a million rows: a whole batch of images).

    Raises ``ValueError`` when ``data`` has a column the table lacks (a schema change is a
    commit of its own: ``write_batch`` merges it) or the table has rules a staged append would
    bypass (``not_stageable``).
    """
    from deltalake import WriterProperties, write_deltalake
    from deltalake.transaction import AddAction

    tid = TableId.parse(table)
    if (reason := not_stageable(snapshot)) is not None:
        raise ValueError(f"{tid} cannot take staged files ({reason}): write this batch with write_batch")
    schema = pa.schema(snapshot.schema().to_arrow())
    data, _ = conform(data, schema, policy="raise", table=str(tid))
    extra = [n for n in data.column_names if n not in schema.names]
    if extra:
        raise ValueError(f"{tid} has no column(s) {extra}: write this batch with write_batch, which merges the schema")
    meta = snapshot.metadata()
    folder = f"{STAGING_DIR}/{uuid.uuid4().hex}"
    stage_uri = f"{lake.table_uri(tid).rstrip('/')}/{folder}"
    options: dict[str, Any] = {
        "mode": "error",
        "partition_by": meta.partition_columns or None,
        "configuration": {k: v for k, v in meta.configuration.items() if k in _STATS_PROPERTIES} or None,
    }
    if row_group_rows:
        options["writer_properties"] = WriterProperties(max_row_group_size=row_group_rows)
    try:
        write_deltalake(stage_uri, data, storage_options=lake.storage_options(), **options)
        adds = [e["add"] for e in log_entries(lake, stage_uri, 0) if "add" in e]
        lake.pyarrow_filesystem().delete_dir(lake.fs_path(f"{stage_uri}/_delta_log"))
    except Exception as exc:  # noqa: BLE001 - storage faults become typed errors, anything else is re-raised as is
        raise storage_failure(lake, exc, tid) from None
    actions = tuple(
        AddAction(
            f"{folder}/{a['path']}",
            a["size"],
            a.get("partitionValues") or {},
            a["modificationTime"],
            True,
            a.get("stats") or "",
        )
        for a in adds
    )
    return StagedFiles(tid, folder, actions, data.num_rows)


def commit_staged(
    lake: Lake,
    staged: StagedFiles,
    *,
    snapshot: Any,
    app_id: str,
    batch_version: int,
    metadata: dict[str, Any] | None = None,
    extra_transactions: dict[str, int] | None = None,
) -> WriteResult:
    """Commit ``staged`` against ``snapshot``, exactly once per ``(app_id, batch_version)``.

    A writer that committed the same app id after ``snapshot`` makes this fail with deltalake's
    ``CommitFailedError`` (a commit conflict): the files stay staged, and the caller checks
    again and commits them under the next number, or discards them (``discard_staged``).
    """
    tid = staged.table
    if already_committed(snapshot, app_id, batch_version):
        return WriteResult(str(tid), snapshot.version(), True, 0)
    read_version = snapshot.version()
    props = commit_properties(
        metadata, app_id=app_id, batch_version=batch_version, extra_transactions=extra_transactions
    )
    try:
        snapshot.create_write_transaction(
            list(staged.actions),
            mode="append",
            schema=snapshot.schema(),
            partition_by=snapshot.metadata().partition_columns or None,
            commit_properties=props,
        )
    except Exception as exc:  # noqa: BLE001 - storage faults become typed errors, a lost race is re-raised as is
        raise storage_failure(lake, exc, tid) from None
    return WriteResult(
        str(tid), _own_version(lake, tid, snapshot, read_version, app_id, batch_version), False, staged.rows
    )


def _own_version(lake: Lake, tid: TableId, snapshot: Any, read_version: int, app_id: str, batch_version: int) -> int:
    """The version our commit got: ``create_write_transaction`` leaves ``snapshot`` where it was,
    and delta-rs may have rebased the commit past writers that did not conflict (a compaction),
    whose commits may be followed by others'.  ``snapshot`` is moved to the latest version."""
    snapshot.update_incremental()
    latest = snapshot.version()
    if latest == read_version + 1:
        return latest
    for v in range(read_version + 1, latest + 1):
        for e in log_entries(lake, lake.table_uri(tid), v):
            txn = e.get("txn")
            if txn and txn.get("appId") == app_id and txn.get("version") == batch_version:
                return v
    raise RuntimeError(
        f"{tid}: batch {batch_version} of {app_id} committed but not found in versions {read_version + 1}-{latest}"
    )


def discard_staged(lake: Lake, staged: StagedFiles) -> None:
    """Delete staged files that will not be committed (their rows changed after a lost race)."""
    folder = lake.fs_path(f"{lake.table_uri(staged.table).rstrip('/')}/{staged.folder}")
    try:
        lake.pyarrow_filesystem().delete_dir(folder)
    except FileNotFoundError:
        pass
