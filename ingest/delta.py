"""Delta writes shared by every stage: idempotent batches, schema guards, merges.

deltalake records app transactions but does not skip a repeated one (delta-rs #2580), so every
batch checks ``transaction_version(app_id)`` first.  A crash between data files and commit leaves
only unreferenced files; the re-run writes the batch once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from ingest.errors import IngestError
from ingest.lake import Lake, TableId


class SchemaConflict(IngestError):
    """Incoming data changes a column's type in a way that cannot be cast safely."""

    def __init__(self, table: str, columns: dict[str, tuple[str, str]]) -> None:
        self.columns = columns
        detail = ", ".join(f"{c}: {old} -> {new}" for c, (old, new) in columns.items())
        super().__init__(f"{table}: incompatible column types ({detail})")


@dataclass(frozen=True)
class WriteResult:
    table: str
    version: int | None  # table version after the write (None if the table does not exist)
    skipped: bool  # the batch had already been committed
    rows: int


def _storage_failure(lake: Lake, exc: BaseException, tid: TableId) -> BaseException:
    """A write that failed because object storage did (bucket, credentials, endpoint) as the
    lake's typed one-line error, like a read; anything else (a commit race) unchanged."""
    from ingest.lake import classify_storage_error

    if isinstance(exc, OSError) and (classify_storage_error(exc) or "generic s3 error" in str(exc).lower()):
        return lake.storage_error(exc, f"cannot write {tid}")
    return exc


def committed_version(lake: Lake, table: str | TableId, app_id: str) -> int | None:
    """The last batch version committed under ``app_id``, or None."""
    if not lake.table_exists(table):
        return None
    return lake.delta_table(table).transaction_version(app_id)


def current_version(lake: Lake, table: str | TableId) -> int | None:
    return lake.delta_table(table).version() if lake.table_exists(table) else None


def _utc(schema: pa.Schema) -> pa.Schema:
    """Timestamps as UTC microseconds (timestampNtz tables are rejected by Spark 3.5 readers)."""
    fields = []
    for f in schema:
        if pa.types.is_timestamp(f.type):
            f = f.with_type(pa.timestamp("us", tz="UTC"))
        elif pa.types.is_large_string(f.type):
            f = f.with_type(pa.string())
        elif pa.types.is_large_binary(f.type):
            f = f.with_type(pa.binary())
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)


def conform(lake: Lake, table: str | TableId, data: pa.Table) -> pa.Table:
    """Cast ``data`` to the table's existing column types where that is lossless.

    New columns pass through (schema merge adds them).  A column whose type would change and
    cannot be cast safely raises ``SchemaConflict`` instead of being narrowed silently.
    """
    data = data.cast(_utc(data.schema))
    if not lake.table_exists(table):
        return data
    existing = pa.schema(lake.delta_table(table).schema().to_arrow())
    conflicts: dict[str, tuple[str, str]] = {}
    cols = []
    for name in data.column_names:
        col = data[name]
        idx = existing.get_field_index(name)
        if idx >= 0 and not col.type.equals(existing.field(idx).type):
            target = existing.field(idx).type
            try:
                col = col.cast(target, safe=True)
                # narrowing casts (int64 -> int32) are "safe" only when values fit; verify round-trip
                if not pa.types.is_null(data[name].type) and not col.cast(data[name].type).equals(data[name]):
                    raise pa.ArrowInvalid("lossy")
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                conflicts[name] = (str(target), str(data[name].type))
        cols.append(col)
    if conflicts:
        raise SchemaConflict(str(TableId.parse(table)), conflicts)
    return pa.table(cols, names=data.column_names)


# delta-rs rebases a creation commit that lost the race for version 0 onto the winner as a plain
# add, whatever the mode, so two writers creating one table both land.  Creations therefore
# never retry inside delta-rs: the loser fails, and the caller re-reads the table the winner made.
CREATE_RETRIES = 0


def write_batch(
    lake: Lake,
    table: str | TableId,
    data: pa.Table,
    *,
    mode: Literal["append", "overwrite"] = "append",
    app_id: str | None = None,
    batch_version: int | None = None,
    partition_by: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    target_file_size: int | None = None,
) -> WriteResult:
    """Append or overwrite one batch, exactly once per ``(app_id, batch_version)``.

    ``target_file_size`` bounds data files; a table created with it keeps it as
    ``delta.targetFileSize``, which later merges honour too.
    """
    from deltalake import CommitProperties, Transaction, write_deltalake

    tid = TableId.parse(table)
    if (app_id is None) != (batch_version is None):
        raise ValueError("app_id and batch_version go together")
    # Check and commit against ONE snapshot: a concurrent commit of the same app id after it is
    # then a Delta conflict (retried by the caller), never a silent duplicate.
    dt = lake.delta_table(tid) if lake.table_exists(tid) else None
    if app_id is not None and dt is not None:
        done = dt.transaction_version(app_id)
        if done is not None and done >= batch_version:  # type: ignore[operator]
            return WriteResult(str(tid), dt.version(), True, 0)
    data = conform(lake, tid, data) if mode == "append" else data.cast(_utc(data.schema))
    creating = dt is None
    props = CommitProperties(
        custom_metadata={k: str(v) for k, v in (metadata or {}).items()} or None,
        app_transactions=[Transaction(app_id, batch_version)] if app_id is not None else None,
        max_commit_retries=CREATE_RETRIES if creating else 25,
    )
    try:
        write_deltalake(
            dt if dt is not None else lake.table_uri(tid),
            data,
            mode="error" if creating else mode,
            schema_mode=None if creating else "merge" if mode == "append" else "overwrite",
            partition_by=partition_by,
            storage_options=lake.storage_options(),
            commit_properties=props,
            target_file_size=target_file_size,
            configuration={"delta.targetFileSize": str(target_file_size)} if creating and target_file_size else None,
        )
    except Exception as exc:  # noqa: BLE001 - only the lost creation race is handled here
        if creating and lake.table_exists(tid):  # another writer created it: check again
            return write_batch(
                lake, tid, data, mode=mode, app_id=app_id, batch_version=batch_version,
                partition_by=partition_by, metadata=metadata, target_file_size=target_file_size,
            )
        raise _storage_failure(lake, exc, tid) from None
    return WriteResult(str(tid), current_version(lake, tid), False, data.num_rows)


def merge_batch(
    lake: Lake,
    table: str | TableId,
    data: pa.Table,
    *,
    keys: list[str],
    app_id: str | None = None,
    batch_version: int | None = None,
    metadata: dict[str, Any] | None = None,
    target_file_size: int | None = None,
) -> WriteResult:
    """Upsert by ``keys``: matching rows are replaced, new rows inserted; exactly once per batch.

    ``target_file_size`` applies when this creates the table (merges follow the table's setting).
    """
    from deltalake import CommitProperties, Transaction

    if not keys:
        raise ValueError("merge_batch needs at least one key column")
    tid = TableId.parse(table)
    missing = [k for k in keys if k not in data.column_names]
    if missing:
        raise IngestError(f"{tid}: merge key column(s) {missing} not in the data")
    if not lake.table_exists(tid):
        return write_batch(
            lake, tid, data, mode="append", app_id=app_id, batch_version=batch_version,
            metadata=metadata, target_file_size=target_file_size,
        )
    dt = lake.delta_table(tid)  # one snapshot for the check and the commit (see write_batch)
    if app_id is not None:
        done = dt.transaction_version(app_id)
        if done is not None and done >= batch_version:  # type: ignore[operator]
            return WriteResult(str(tid), dt.version(), True, 0)
    data = conform(lake, tid, data)
    predicate = " AND ".join(f't."{k}" = s."{k}"' for k in keys)
    props = CommitProperties(
        custom_metadata={k: str(v) for k, v in (metadata or {}).items()} or None,
        app_transactions=[Transaction(app_id, batch_version)] if app_id is not None else None,
        max_commit_retries=25,
    )
    try:
        (
            dt.merge(
                data,
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=props,
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
    except OSError as exc:
        raise _storage_failure(lake, exc, tid) from None
    return WriteResult(str(tid), current_version(lake, tid), False, data.num_rows)
