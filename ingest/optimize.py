"""Compaction: small files into few, a current checkpoint, old log entries cleaned up.

Every ingest batch is one small file, so a table fed hourly for a year is thousands of files
that every reader opens.  ``optimize`` bin-packs them with delta-rs (``optimize.compact``, or
``optimize.z_order`` by the column readers look up: the content hash of images, the event time
of logs), writes a checkpoint and lets Delta drop log entries past the table's log retention.

Compaction commits with ``dataChange=false``: the rows stay the same, older versions still name
the old files, and ``ingest vacuum`` keeps those a pinned snapshot reads.  Pinned tables keep
their whole log (``ingest.snapshots.PIN_LOG_RETENTION``), so time travel to a pin still works
after the cleanup; app transactions live in the checkpoint, so exactly-once is unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ingest.lake import Lake, TableId

# z-ordering rewrites every file of the table (not only the small ones): worth it for the column
# readers search by, and only when asked for (the scheduled maintenance does it less often)
ROW_GROUP_ROWS = 16_384  # small row groups: a lookup by the z-order key reads one per key it may hold


@dataclass
class TableOptimize:
    table: str
    version_before: int
    version_after: int
    files_before: int
    files_after: int
    files_removed: int = 0
    files_added: int = 0
    z_order: list[str] = field(default_factory=list)
    log_files_removed: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "files_removed": self.files_removed,
            "files_added": self.files_added,
            "files_before": self.files_before,
            "files_after": self.files_after,
            "z_order": self.z_order,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "log_files_removed": self.log_files_removed,
        }


@dataclass
class OptimizeResult:
    tables: list[TableOptimize]

    def payload(self) -> dict[str, Any]:
        return {
            "files_removed": sum(t.files_removed for t in self.tables),
            "files_added": sum(t.files_added for t in self.tables),
            "tables": [t.payload() for t in self.tables],
        }


def z_order_columns(table: TableId, schema: pa.Schema) -> list[str]:
    """The column(s) readers of this table look rows up by, or [] (plain compaction)."""
    names = schema.names
    if "sha256" in names:
        return ["sha256"]  # images: the dedup lookup of every ingest
    if str(table) == "_meta.manifests":
        return ["table_id", "source"]
    if str(table) == "_meta.log_streams":
        return ["table_id", "app_id"]
    times = [f.name for f in schema if pa.types.is_timestamp(f.type) and not f.name.startswith("_")]
    return times[:1]  # events: readers filter by time


def optimize(
    lake: Lake,
    *,
    tables: list[str] | None = None,
    z_order: bool = False,
    target_size: int | None = None,
) -> OptimizeResult:
    """Compact every table (or ``tables``); ``z_order`` also orders each by its lookup column."""
    from ingest.runlog import track

    todo = [TableId.parse(t) for t in tables] if tables else lake.list_tables()
    with track(lake, command="optimize", source="z_order" if z_order else "compact", target="lake") as run:
        result = OptimizeResult([_optimize_table(lake, tid, z_order=z_order, target_size=target_size) for tid in todo])
        run.details = result.payload()
        run.rows_written = 0
    return result


# One optimize of a table at a time.  delta-rs lets two compactions of the same files both commit
# (every row then twice: bench/repro/swap_after_compaction.py), so an optimize first claims the
# table in its own Delta log: an app transaction whose version is the claim's time (even) or its
# release (odd).  A claim is a commit that fails if anything committed since it read the table,
# so of two optimizes only one claims; the other finds the claim and stops.  A claim older than
# CLAIM_LEASE_S (an optimize killed before its release) no longer counts.
CLAIM_APP_ID = "ingest:optimize"
CLAIM_LEASE_S = 6 * 3600


class OptimizeRunning(Exception):
    """Another optimize holds the table's claim."""


def _claimed_by_other(dt: Any, now_ms: int) -> int | None:
    """When another optimize claimed the table (epoch ms), if its claim still counts."""
    v = dt.transaction_version(CLAIM_APP_ID)
    if v is None or v % 2:
        return None
    since = v // 2
    return since if now_ms - since < CLAIM_LEASE_S * 1000 else None


def _set_claim(lake: Lake, tid: TableId, *, claim: bool) -> int:
    """Claim (or release) the table: one commit of only an app transaction, made against the
    table as read here and failing if another commit came first.  Returns the claim's time."""
    import time

    from deltalake import CommitProperties, Transaction

    from ingest.delta import COMMIT_RETRIES, CommitConflict, commit_metadata, is_commit_conflict, storage_failure

    now_ms = int(time.time() * 1000)
    dt = lake.delta_table(tid)
    if claim and (since := _claimed_by_other(dt, now_ms)) is not None:
        raise OptimizeRunning(since)
    version = now_ms * 2 + (0 if claim else 1)
    try:
        dt.create_write_transaction(
            [],
            mode="append",
            schema=dt.schema(),
            partition_by=dt.metadata().partition_columns or None,
            commit_properties=CommitProperties(
                custom_metadata=commit_metadata({"maintenance": "optimize claim" if claim else "optimize release"}),
                app_transactions=[Transaction(CLAIM_APP_ID, version, now_ms)],
                # a claim must see every commit before it; a release (no data) may be rebased
                max_commit_retries=0 if claim else COMMIT_RETRIES,
            ),
        )
    except Exception as exc:  # noqa: BLE001 - a lost race is retried, a storage fault typed, anything else re-raised
        if is_commit_conflict(exc):  # any commit since our read: read again (with_commit_retry)
            raise CommitConflict(f"{tid}: {exc}") from None
        raise storage_failure(lake, exc, tid) from None  # a storage fault as the lake's one-line error
    return now_ms


def _optimize_table(lake: Lake, tid: TableId, *, z_order: bool, target_size: int | None) -> TableOptimize:
    from datetime import UTC, datetime

    from ingest.delta import CommitConflict, with_commit_retry
    from ingest.errors import TransientError

    try:
        with_commit_retry(lambda: _set_claim(lake, tid, claim=True))
    except OptimizeRunning as running:
        since = datetime.fromtimestamp(running.args[0] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise TransientError(
            f"cannot optimize {tid}: another `ingest optimize` of it is running (since {since}); run it again later"
        ) from None
    except CommitConflict:
        raise TransientError(
            f"cannot optimize {tid}: other writers kept committing to it; run `ingest optimize` again"
        ) from None
    try:
        return _optimize_claimed(lake, tid, z_order=z_order, target_size=target_size)
    finally:
        with_commit_retry(lambda: _set_claim(lake, tid, claim=False))


def _optimize_claimed(lake: Lake, tid: TableId, *, z_order: bool, target_size: int | None) -> TableOptimize:
    from ingest.delta import is_commit_conflict, plain_files, with_commit_retry
    from ingest.errors import TransientError

    try:
        # a writer that rewrote files this compaction read (a merge, another optimize) wins the
        # commit: compact again from the table it left (the rows are the same either way)
        before, files_before, columns, metrics = with_commit_retry(
            lambda: _compact(lake, tid, z_order=z_order, target_size=target_size)
        )
    except Exception as exc:
        if is_commit_conflict(exc):
            raise TransientError(
                f"cannot optimize {tid}: other writers kept rewriting its files; run `ingest optimize` again"
            ) from None
        raise
    dt = lake.delta_table(tid)
    if dt.version() != before:
        from ingest.sources.seen import refresh_saved_keys

        plain_files(lake, tid, dt.version(), metadata={"maintenance": "optimize"})
        refresh_saved_keys(lake, tid)  # the next ingest's dedup lookups read none of the new files
        dt = lake.delta_table(tid)
    dt.create_checkpoint()
    entries = _log_entries(lake, tid)
    dt.cleanup_metadata()  # only entries older than the table's log retention, before the checkpoint
    return TableOptimize(
        table=str(tid),
        version_before=before,
        version_after=dt.version(),
        files_before=files_before,
        files_after=len(dt.file_uris()),
        files_removed=int(metrics.get("numFilesRemoved", 0)),
        files_added=int(metrics.get("numFilesAdded", 0)),
        z_order=columns,
        log_files_removed=entries - _log_entries(lake, tid),
    )


def _compact(
    lake: Lake, tid: TableId, *, z_order: bool, target_size: int | None
) -> tuple[int, int, list[str], dict[str, Any]]:
    """One compaction (or z-order) of the table as it stands: (version read, its files, the
    z-order columns, delta-rs' metrics)."""
    from deltalake import WriterProperties

    from ingest.delta import commit_properties

    dt = lake.delta_table(tid)
    before, files_before = dt.version(), len(dt.file_uris())
    columns = z_order_columns(tid, pa.schema(dt.schema().to_arrow())) if z_order else []
    props = commit_properties({"maintenance": "optimize"})
    writer = WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression="SNAPPY")
    try:
        if columns:
            metrics = dt.optimize.z_order(
                columns, target_size=target_size, writer_properties=writer, commit_properties=props
            )
        else:
            metrics = dt.optimize.compact(target_size=target_size, writer_properties=writer, commit_properties=props)
    except OSError as exc:
        raise lake.storage_error(exc, f"cannot optimize {tid}") from None
    return before, files_before, columns, metrics


def _log_entries(lake: Lake, tid: TableId) -> int:
    """Commit files in the table's ``_delta_log`` (what ``cleanup_metadata`` removes)."""
    import pyarrow.fs as pafs

    base = lake.fs_path(f"{lake.table_uri(tid).rstrip('/')}/_delta_log")
    infos = lake.pyarrow_filesystem().get_file_info(pafs.FileSelector(base, allow_not_found=True))
    return sum(1 for i in infos if i.base_name.endswith(".json"))
