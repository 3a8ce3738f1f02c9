"""Delta writes shared by every stage: idempotent batches, schema guards, merges.

deltalake records app transactions but does not skip a repeated one (delta-rs #2580), so every
batch checks ``transaction_version(app_id)`` first.  A crash between data files and commit leaves
only unreferenced files; the re-run writes the batch once.
"""

from __future__ import annotations

import json
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
    from ingest.errors import classify_storage_error

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


def lake_type(t: pa.DataType) -> pa.DataType:
    """The Arrow type a lake file stores for ``t``: timestamps as UTC microseconds
    (timestampNtz tables are rejected by Spark 3.5 readers), and plain string/binary/list instead
    of their large and view variants, at any depth.  pyarrow (through 26) cannot filter a
    ``string_view`` column, so a file that records one breaks every filtered read of the table.
    """
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_map(t):
        return pa.map_(lake_type(t.key_type), lake_type(t.item_type), t.keys_sorted)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return pa.list_(t.value_field.with_type(lake_type(t.value_type)))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(lake_type(t.value_type)), t.list_size)
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(lake_type(f.type)) for f in t])
    return t


def lake_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every column in its lake type (see ``lake_type``)."""
    return pa.schema([f.with_type(lake_type(f.type)) for f in schema], metadata=schema.metadata)


def next_sequence(lake: Lake, table: str | TableId, app_id: str, *, snapshot: Any = None) -> int:
    """The next batch number for a writer that serialises on one app id.

    Two runs that read the same number and both commit would conflict in Delta (same app id),
    so the loser retries, re-reads the table and never writes the same rows twice.  Pass the
    ``snapshot`` (a loaded DeltaTable) the commit will be made against, if there is one.
    """
    if snapshot is None:
        if not lake.table_exists(table):
            return 1
        snapshot = lake.delta_table(table)
    return (snapshot.transaction_version(app_id) or 0) + 1


def has_view_types(schema: pa.Schema) -> bool:
    """Whether a column (at any depth) is a string/binary/list view: see ``lake_type``."""
    return any(_holds_view(f.type) for f in schema)


def _holds_view(t: pa.DataType) -> bool:
    if (
        pa.types.is_string_view(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    ):
        return True
    return any(_holds_view(t.field(i).type) for i in range(t.num_fields))


def conform(lake: Lake, table: str | TableId, data: pa.Table, *, snapshot: Any = None) -> pa.Table:
    """Cast ``data`` to the table's existing column types where that is lossless.

    New columns pass through (schema merge adds them).  A column whose type would change and
    cannot be cast safely raises ``SchemaConflict`` instead of being narrowed silently.
    """
    data = data.cast(lake_schema(data.schema))
    if snapshot is None and not lake.table_exists(table):
        return data
    existing = pa.schema((snapshot or lake.delta_table(table)).schema().to_arrow())
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


def commit_metadata(metadata: dict[str, Any] | None = None) -> dict[str, str] | None:
    """A commit's custom metadata: ``metadata`` plus the ``run_id`` of the run making it.

    Lineage reads the run id back from the commit, so a table version names the run that
    really wrote it (``ingest.lineage``), whichever runs came and went since.
    """
    from ingest.runlog import current_run_id

    out = {k: str(v) for k, v in (metadata or {}).items()}
    run_id = current_run_id()
    if run_id is not None:
        out.setdefault("run_id", run_id)
    return out or None


def commit_run_id(commit: dict[str, Any]) -> str | None:
    """The run id a commit (an entry of ``DeltaTable.history()``) records: ``commit_metadata``
    puts it in the custom metadata, a Spark model inside its ``userMetadata`` JSON."""
    run_id = commit.get("run_id")
    if run_id is None and commit.get("userMetadata"):
        try:
            meta = json.loads(commit["userMetadata"])
        except ValueError:
            meta = None
        run_id = meta.get("run_id") if isinstance(meta, dict) else None
    return str(run_id) if run_id else None


# delta-rs rebases a creation commit that lost the race for version 0 onto the winner as a plain
# add, whatever the mode, so two writers creating one table both land.  Creations therefore
# never retry inside delta-rs: the loser fails, and the caller re-reads the table the winner made.
CREATE_RETRIES = 0


def _transactions(versions: dict[str, int]) -> list[Any]:
    """Delta app transactions stamped with ``lastUpdated``: a table with
    ``delta.setTransactionRetentionDuration`` forgets them once older (one without the stamp
    never expires), and a table without that property keeps them all."""
    import time

    from deltalake import Transaction

    now = int(time.time() * 1000)
    return [Transaction(app_id, version, now) for app_id, version in versions.items()]


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
    extra_transactions: dict[str, int] | None = None,
    snapshot: Any = None,
) -> WriteResult:
    """Append or overwrite one batch, exactly once per ``(app_id, batch_version)``.

    ``snapshot`` (a loaded DeltaTable of an existing table) is checked and committed against
    instead of loading the table again: a writer of many batches keeps one and updates it
    incrementally, so a batch costs the commits since the last one, not the whole log.

    ``extra_transactions`` (app id -> int) are committed atomically with the batch: state a
    reader needs beside the batch number (``transaction_version`` returns the latest one).

    ``target_file_size`` bounds data files; a table created with it keeps it as
    ``delta.targetFileSize``, which later merges honour too.
    """
    from deltalake import CommitProperties, write_deltalake

    tid = TableId.parse(table)
    if (app_id is None) != (batch_version is None):
        raise ValueError("app_id and batch_version go together")
    if extra_transactions and app_id is None:
        raise ValueError("extra_transactions need an app_id")
    # Check and commit against ONE snapshot: a concurrent commit of the same app id after it is
    # then a Delta conflict (retried by the caller), never a silent duplicate.
    dt = snapshot if snapshot is not None else lake.delta_table(tid) if lake.table_exists(tid) else None
    if app_id is not None and dt is not None:
        done = dt.transaction_version(app_id)
        if done is not None and batch_version is not None and done >= batch_version:
            return WriteResult(str(tid), dt.version(), True, 0)
    data = conform(lake, tid, data, snapshot=dt) if mode == "append" else data.cast(lake_schema(data.schema))
    creating = dt is None
    props = CommitProperties(
        custom_metadata=commit_metadata(metadata),
        app_transactions=_transactions({app_id: batch_version, **(extra_transactions or {})})
        if app_id is not None and batch_version is not None
        else None,
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
                lake,
                tid,
                data,
                mode=mode,
                app_id=app_id,
                batch_version=batch_version,
                partition_by=partition_by,
                metadata=metadata,
                target_file_size=target_file_size,
                extra_transactions=extra_transactions,
            )
        raise _storage_failure(lake, exc, tid) from None
    # the snapshot now stands at our commit (delta-rs moves it there)
    version = snapshot.version() if snapshot is not None else current_version(lake, tid)
    return WriteResult(str(tid), version, False, data.num_rows)


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
    from deltalake import CommitProperties

    if not keys:
        raise ValueError("merge_batch needs at least one key column")
    if (app_id is None) != (batch_version is None):
        raise ValueError("app_id and batch_version go together")
    tid = TableId.parse(table)
    missing = [k for k in keys if k not in data.column_names]
    if missing:
        raise IngestError(f"{tid}: merge key column(s) {missing} not in the data")
    if not lake.table_exists(tid):
        return write_batch(
            lake,
            tid,
            data,
            mode="append",
            app_id=app_id,
            batch_version=batch_version,
            metadata=metadata,
            target_file_size=target_file_size,
        )
    dt = lake.delta_table(tid)  # one snapshot for the check and the commit (see write_batch)
    if app_id is not None:
        done = dt.transaction_version(app_id)
        if done is not None and batch_version is not None and done >= batch_version:
            return WriteResult(str(tid), dt.version(), True, 0)
    data = conform(lake, tid, data)
    predicate = " AND ".join([f't."{k}" = s."{k}"' for k in keys] + _key_range(data, keys))
    props = CommitProperties(
        custom_metadata=commit_metadata(metadata),
        app_transactions=_transactions({app_id: batch_version})
        if app_id is not None and batch_version is not None
        else None,
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
    plain_files(lake, tid, dt.version(), metadata=metadata)
    return WriteResult(str(tid), current_version(lake, tid), False, data.num_rows)


def _key_range(data: pa.Table, keys: list[str]) -> list[str]:
    """Literal bounds on the target's keys, from the source's: delta-rs 1.6 otherwise reads the
    key column of every file of the target to find the matches (its merge cost grew with the
    table, 3.5 s of CPU at 5M rows for 20k source rows); with them it skips files by their
    statistics.  Integer and string keys only (literals whose SQL form is exact)."""
    import pyarrow.compute as pc

    bounds = []
    for k in keys:
        col = data.column(k)
        if not (pa.types.is_integer(col.type) or pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        lo_hi = pc.min_max(col)
        lo, hi = lo_hi["min"].as_py(), lo_hi["max"].as_py()
        if lo is None:
            continue
        if isinstance(lo, str):
            lo, hi = "'" + lo.replace("'", "''") + "'", "'" + hi.replace("'", "''") + "'"
        bounds += [f't."{k}" >= {lo}', f't."{k}" <= {hi}']
    return bounds


def delete_rows(lake: Lake, table: str | TableId, predicate: str) -> None:
    """Delete the rows matching ``predicate`` (a Delta SQL predicate), in one commit."""
    dt = lake.delta_table(table)
    dt.delete(predicate)
    plain_files(lake, TableId.parse(table), dt.version())


def commit_actions(lake: Lake, table: str | TableId, version: int) -> list[dict[str, Any]]:
    """The actions (``add``, ``remove``, ``txn``, ``commitInfo``...) of one commit, from its log entry.

    Reading one commit costs what the commit holds, where loading a snapshot of the table costs
    what the table holds: incremental readers follow other writers' commits this way.
    """
    fs = lake.pyarrow_filesystem()
    root = lake.fs_path(lake.table_uri(TableId.parse(table)))
    with fs.open_input_stream(f"{root}/_delta_log/{version:020d}.json") as f:
        return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]


def plain_files(lake: Lake, table: str | TableId, version: int, *, metadata: dict[str, Any] | None = None) -> int:
    """Rewrite the data files commit ``version`` added in view types, in plain types.

    delta-rs's DataFusion operations (merge, delete, update, optimize) write string columns as
    ``string_view`` whatever the input, and pyarrow cannot filter those (see ``lake_type``).  The
    copies hold the same rows, so the commit swaps files with ``dataChange=false`` (like OPTIMIZE)
    and keeps the original statistics.  Readers cope with view types anyway
    (``Lake.dataset``), so a swap that loses a race to a concurrent writer is dropped, not
    retried.  Returns the number of files rewritten.
    """
    import time
    import uuid
    from urllib.parse import unquote

    import pyarrow.parquet as pq
    from deltalake import CommitProperties
    from deltalake.transaction import AddAction, RemoveAction

    tid = TableId.parse(table)
    fs = lake.pyarrow_filesystem()
    root = lake.fs_path(lake.table_uri(tid))
    entries = commit_actions(lake, tid, version)
    # the swap commits against this snapshot: a file a later commit removed is not ours to copy
    dt = lake.delta_table(tid)
    live = set(pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist())
    actions: list[AddAction | RemoveAction] = []
    written: list[str] = []
    now = int(time.time() * 1000)
    for add in (e["add"] for e in entries if "add" in e):
        path = add["path"]
        if "://" in path or path not in live:  # absolute (shallow clones), or gone since
            continue
        src = f"{root}/{unquote(path)}"
        with fs.open_input_file(src) as f:
            schema = pq.read_schema(f)
        if not has_view_types(schema):
            continue
        with fs.open_input_file(src) as f:
            data = pq.read_table(f)
        data = data.cast(lake_schema(data.schema))
        new_path = f"{path.rsplit('/', 1)[0] + '/' if '/' in path else ''}part-00000-{uuid.uuid4()}-c000.snappy.parquet"
        dest = f"{root}/{unquote(new_path)}"
        pq.write_table(data, dest, filesystem=fs, compression="snappy")
        written.append(dest)
        size = fs.get_file_info(dest).size
        parts = add.get("partitionValues") or {}
        actions.append(AddAction(new_path, size, parts, now, False, add.get("stats") or ""))
        actions.append(RemoveAction(path, False, now, add.get("size"), parts))
    if not actions:
        return 0
    try:
        dt.create_write_transaction(
            actions,
            mode="append",
            schema=dt.schema(),
            partition_by=dt.metadata().partition_columns or None,
            commit_properties=CommitProperties(
                custom_metadata={**(commit_metadata(metadata) or {}), "rewrite": "view-typed files"}
            ),
        )
    except Exception:  # noqa: BLE001 - e.g. a concurrent writer removed a file first; readers cope
        for dest in written:
            try:
                fs.delete_file(dest)
            except OSError:
                pass
        return 0
    return len(written)


# actions that only describe a commit (or its writer's bookkeeping), never the table's rows
_NO_ROW_CHANGE = {"commitInfo", "txn", "domainMetadata", "checkpointMetadata", "sidecar"}


def appended_files(lake: Lake, table: str | TableId, *, since: int, until: int) -> list[str] | None:
    """The data files (paths relative to the table) commits ``since+1 .. until`` added, when
    those commits only appended rows; None when any of them did more (removed or rewrote rows,
    changed the schema or protocol) or its log entry is gone (expired by log retention).

    A file swapped with ``dataChange=false`` (OPTIMIZE, ``plain_files``) keeps its rows and is
    not new, unless it replaced a file appended in the same range (the new rows moved: None).
    An incremental reader reads these files and nothing else; None means "rebuild from all".
    """
    from urllib.parse import unquote

    if since > until:
        return None
    fs = lake.pyarrow_filesystem()
    root = lake.fs_path(lake.table_uri(TableId.parse(table)))
    added: list[str] = []
    for version in range(since + 1, until + 1):
        try:
            with fs.open_input_stream(f"{root}/_delta_log/{version:020d}.json") as f:
                entries = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
        except (FileNotFoundError, OSError, ValueError):
            return None
        for entry in entries:
            kind = next(iter(entry), None)
            action = entry.get(kind) or {}
            if kind in _NO_ROW_CHANGE:
                continue
            if kind == "add":
                path = action.get("path") or ""
                if "://" in path or action.get("deletionVector"):
                    return None
                if action.get("dataChange", True):
                    added.append(unquote(path))
                continue
            if kind == "remove" and not action.get("dataChange", True):
                if unquote(action.get("path") or "") in added:
                    return None
                continue
            return None  # a data-changing remove, metaData, protocol, cdc...
    return added
