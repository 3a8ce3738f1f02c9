"""The one place that writes Delta: idempotent batches, schema guards, merges, commit races.

deltalake records app transactions but does not skip a repeated one (delta-rs #2580), so every
batch checks ``transaction_version(app_id)`` first.  A crash between data files and commit leaves
only unreferenced files; the re-run writes the batch once.

Concurrent writers: a commit that loses a race raises one of the typed conflicts (``BatchTaken``,
deltalake's ``CommitFailedError``); ``with_commit_retry`` runs the step again against what the
winner wrote.  Values are cast by ``ingest.conform`` (exactly, or refused).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pyarrow as pa

from ingest.conform import conform, has_view_types, lake_schema
from ingest.errors import IngestError
from ingest.lake import Lake, TableId

T = TypeVar("T")


@dataclass(frozen=True)
class WriteResult:
    table: str
    version: int | None  # table version after the write (None if the table does not exist)
    skipped: bool  # the batch had already been committed
    rows: int


# delta-rs' refusals of rows that break a table's rules: "Invalid data found: 3 rows failed
# validation check." (CHECK constraints) and "Invariant violations: [...]" (column invariants)
_RULE_BROKEN = re.compile(r"Invalid data found: (\d+) rows? failed validation check|Invariant violations")


def storage_failure(lake: Lake, exc: BaseException, tid: TableId) -> BaseException:
    """A write that failed because storage did (a bucket, credentials or endpoint; a local disk
    full or read-only) as the lake's typed one-line error, like a read; rows the table's own
    rules refuse as a ``ConstraintViolation`` naming the rules (delta-rs' message is a multi-line
    preview of the rows, binary columns included); anything else (a commit race) unchanged."""
    from ingest.errors import ConstraintViolation, classify_storage_error, disk_fault, plain_text

    if broken := _RULE_BROKEN.search(plain_text(str(exc))):
        rows = f"{broken.group(1)} row(s)" if broken.group(1) else "rows"
        return ConstraintViolation(
            f"{tid}: {rows} of this batch break the table's rules ({_table_rules(lake, tid)}); nothing of it was "
            "committed: fix the source rows, or drop the constraint if it is wrong"
        )
    local_disk = not lake.is_s3 and disk_fault(exc) is not None  # delta-rs names it only in its text
    if (
        local_disk
        or isinstance(exc, OSError)
        and (classify_storage_error(exc) or "generic s3 error" in str(exc).lower())
    ):
        return lake.storage_error(exc, f"cannot write {tid}")
    return exc


def _table_rules(lake: Lake, tid: TableId) -> str:
    """The table's CHECK constraints as ``name: expression`` (from its metadata)."""
    try:
        config = lake.delta_table(tid).metadata().configuration
    except Exception:  # noqa: BLE001 - the error being reported matters more than its detail
        return "its CHECK constraints"
    rules = [
        f"{k.removeprefix('delta.constraints.')}: {v}" for k, v in config.items() if k.startswith("delta.constraints.")
    ]
    return "; ".join(rules) or "its column invariants"


def committed_version(lake: Lake, table: str | TableId, app_id: str) -> int | None:
    """The last batch version committed under ``app_id``, or None."""
    if not lake.table_exists(table):
        return None
    return lake.delta_table(table).transaction_version(app_id)


def current_version(lake: Lake, table: str | TableId) -> int | None:
    return lake.delta_table(table).version() if lake.table_exists(table) else None


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


# -- concurrent writers ---------------------------------------------------------------------------
class CommitConflict(Exception):
    """Another writer committed first (a batch number, a table creation): re-read the table and
    run the step again (``with_commit_retry``)."""


class BatchTaken(CommitConflict):
    """Another writer committed this batch number first."""


def is_commit_conflict(exc: BaseException) -> bool:
    """A concurrent writer won the race (retry), as opposed to a real failure: a typed conflict,
    ours or deltalake's (``CommitFailedError``: a conflicting commit, or retries exhausted)."""
    from deltalake.exceptions import CommitFailedError

    return isinstance(exc, (CommitConflict, CommitFailedError))


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


def already_committed(dt: Any, app_id: str | None, batch_version: int | None) -> bool:
    """Whether the snapshot ``dt`` holds batch ``batch_version`` (or a later one) of ``app_id``."""
    if app_id is None or batch_version is None:
        return False
    done = dt.transaction_version(app_id)
    return done is not None and done >= batch_version


def commit_properties(
    metadata: dict[str, Any] | None = None,
    *,
    app_id: str | None = None,
    batch_version: int | None = None,
    extra_transactions: dict[str, int] | None = None,
    retries: int | None = None,
) -> Any:
    """A commit's metadata (``commit_metadata``), its app transactions (the batch number first)
    and its retry budget (``COMMIT_RETRIES`` unless given): every Delta commit's properties.

    App transactions are stamped with ``lastUpdated``: a table with
    ``delta.setTransactionRetentionDuration`` forgets them once older (one without the stamp
    never expires), and a table without that property keeps them all."""
    import time

    from deltalake import CommitProperties, Transaction

    txns = None
    if app_id is not None and batch_version is not None:
        now = int(time.time() * 1000)
        versions = {app_id: batch_version, **(extra_transactions or {})}
        txns = [Transaction(k, v, now) for k, v in versions.items()]
    return CommitProperties(
        custom_metadata=commit_metadata(metadata),
        app_transactions=txns,
        max_commit_retries=COMMIT_RETRIES if retries is None else retries,
    )


# delta-rs retries a commit that lost a race to an append this many times (re-checking conflicts)
COMMIT_RETRIES = 25
# delta-rs rebases a creation commit that lost the race for version 0 onto the winner as a plain
# add, whatever the mode, so two writers creating one table both land.  Creations therefore
# never retry inside delta-rs: the loser fails, and re-reads the table the winner made (the lost
# creation rule in ``write_batch``).
CREATE_RETRIES = 0


def ensure_table(
    lake: Lake, table: str | TableId, schema: pa.Schema, *, configuration: dict[str, str] | None = None
) -> None:
    """Create the table empty before its first exactly-once batch (with table properties
    ``configuration``, if it is created here).

    delta-rs retries a lost *creation* commit as a plain append without checking app ids, so two
    runs that both create a table with the same batch would both land.  An empty creation that
    races is harmless; every batch after it commits against a snapshot and is checked.
    """
    if lake.table_exists(table):
        return
    from deltalake import write_deltalake

    try:
        write_deltalake(
            lake.table_uri(table),
            lake_schema(schema).empty_table(),
            mode="ignore",
            configuration=configuration,
            storage_options=lake.storage_options(),
        )
    except Exception:
        if not lake.table_exists(table):
            raise


def write_batch(
    lake: Lake,
    table: str | TableId,
    data: pa.Table | pa.RecordBatchReader,
    *,
    mode: Literal["append", "overwrite"] = "append",
    app_id: str | None = None,
    batch_version: int | None = None,
    partition_by: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    target_file_size: int | None = None,
    extra_transactions: dict[str, int] | None = None,
    snapshot: Any = None,
    file_bytes: int | None = None,
    row_group_rows: int | None = None,
) -> WriteResult:
    """Append or overwrite one batch, exactly once per ``(app_id, batch_version)``.

    ``snapshot`` (a loaded DeltaTable of an existing table) is checked and committed against
    instead of loading the table again: a writer of many batches keeps one and updates it
    incrementally, so a batch costs the commits since the last one, not the whole log.

    ``extra_transactions`` (app id -> int) are committed atomically with the batch: state a
    reader needs beside the batch number (``transaction_version`` returns the latest one).

    ``target_file_size`` bounds data files; a table created with it keeps it as
    ``delta.targetFileSize``, which later merges honour too.

    ``data`` may be a stream (a ``RecordBatchReader``, overwrite only) too large to hold: then
    ``file_bytes`` and ``row_group_rows`` bound what delta-rs keeps in memory (an open data file,
    a parquet row group) without being recorded in the table.  A stream cannot be read twice,
    so a lost creation race raises ``CommitConflict`` for the caller to read its source again.
    """
    from deltalake import WriterProperties, write_deltalake

    tid = TableId.parse(table)
    if (app_id is None) != (batch_version is None):
        raise ValueError("app_id and batch_version go together")
    if extra_transactions and app_id is None:
        raise ValueError("extra_transactions need an app_id")
    stream = isinstance(data, pa.RecordBatchReader)
    if stream and mode != "overwrite":
        raise ValueError("a RecordBatchReader is written in overwrite mode only (appends are conformed whole)")
    # Check and commit against ONE snapshot: a concurrent commit of the same app id after it is
    # then a Delta conflict (retried by the caller), never a silent duplicate.
    dt = snapshot if snapshot is not None else lake.delta_table(tid) if lake.table_exists(tid) else None
    if dt is not None and already_committed(dt, app_id, batch_version):
        return WriteResult(str(tid), dt.version(), True, 0)
    rows = [0]
    if isinstance(data, pa.RecordBatchReader):
        data = _counted(data.cast(lake_schema(data.schema)), rows)
    elif mode == "append":
        existing = pa.schema(dt.schema().to_arrow()) if dt is not None else None
        data, _ = conform(data, existing, policy="raise", table=str(tid))
    else:
        data = data.cast(lake_schema(data.schema))
    creating = dt is None
    props = commit_properties(
        metadata,
        app_id=app_id,
        batch_version=batch_version,
        extra_transactions=extra_transactions,
        retries=CREATE_RETRIES if creating else None,
    )
    options: dict[str, Any] = {
        "mode": "error" if creating else mode,
        "schema_mode": None if creating else "merge" if mode == "append" else "overwrite",
        "partition_by": partition_by,
        "target_file_size": file_bytes or target_file_size,
        "configuration": {"delta.targetFileSize": str(target_file_size)} if creating and target_file_size else None,
    }
    if row_group_rows:
        options["writer_properties"] = WriterProperties(max_row_group_size=row_group_rows)
    try:
        write_deltalake(
            dt if dt is not None else lake.table_uri(tid),
            data,
            storage_options=lake.storage_options(),
            commit_properties=props,
            **options,
        )
    except Exception as exc:  # noqa: BLE001 - only the lost creation race is handled here
        if creating and lake.table_exists(tid):  # the lost creation rule: check against the winner's table
            if stream:
                raise CommitConflict(f"{tid}: another writer created the table first") from None
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
        raise storage_failure(lake, exc, tid) from None
    # the snapshot now stands at our commit (delta-rs moves it there)
    version = snapshot.version() if snapshot is not None else current_version(lake, tid)
    return WriteResult(str(tid), version, False, rows[0] if stream else data.num_rows)


def _counted(reader: pa.RecordBatchReader, rows: list[int]) -> pa.RecordBatchReader:
    """``reader`` unchanged, counting into ``rows[0]`` the rows read from it."""

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            rows[0] += batch.num_rows
            yield batch

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


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
    if already_committed(dt, app_id, batch_version):
        return WriteResult(str(tid), dt.version(), True, 0)
    data, _ = conform(data, pa.schema(dt.schema().to_arrow()), policy="raise", table=str(tid))
    predicate = " AND ".join([f't."{k}" = s."{k}"' for k in keys] + _key_range(data, keys))
    props = commit_properties(metadata, app_id=app_id, batch_version=batch_version)
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
    except Exception as exc:  # noqa: BLE001 - storage faults become typed errors, anything else is re-raised as is
        raise storage_failure(lake, exc, tid) from None
    plain_files(lake, tid, dt.version(), metadata=metadata)
    return WriteResult(str(tid), current_version(lake, tid), False, data.num_rows)


def commit_change(
    lake: Lake,
    table: str | TableId,
    data: pa.Table,
    *,
    read_version: int,
    predicate: str | None = None,
    clauses: Callable[[Any], Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[int, int]:
    """Commit ``data`` to ``table`` as read at ``read_version``: a MERGE on ``predicate`` (target
    ``t``, source ``s``) with ``clauses`` (a function of deltalake's ``TableMerger``), or, with no
    predicate, an append.  Returns (the table's version after it, rows inserted + updated + deleted).

    The transaction starts at ``read_version`` and does not retry: if another writer committed
    since, it fails with ``CommitConflict``, so the caller recomputes from what is there now.
    View-typed files the merge wrote are rewritten plain (``plain_files``) in a commit that
    carries the same ``metadata``, so the table's last commit still says what built it.
    """
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError

    tid = TableId.parse(table)
    dt = lake.delta_table(tid, version=read_version)
    schema = pa.schema(dt.schema().to_arrow())
    extra = [f for f in data.schema if f.name not in schema.names]  # columns only a clause reads
    data, _ = conform(data, pa.schema([*schema, *extra]), policy="raise", table=str(tid))
    props = commit_properties(metadata, retries=0)
    try:
        if predicate is None:
            write_deltalake(dt, data.select(schema.names), mode="append", commit_properties=props)
            written = data.num_rows
        else:
            merger = dt.merge(data, predicate=predicate, source_alias="s", target_alias="t", commit_properties=props)
            metrics = (clauses(merger) if clauses is not None else merger).execute()
            written = sum(
                int(metrics.get(k) or 0)
                for k in ("num_target_rows_inserted", "num_target_rows_updated", "num_target_rows_deleted")
            )
    except CommitFailedError as exc:
        raise CommitConflict(f"{tid}: another writer committed after version {read_version} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - storage faults become typed errors, anything else is re-raised as is
        raise storage_failure(lake, exc, tid) from None
    version = dt.version()
    if predicate is not None and plain_files(lake, tid, version, metadata=metadata):
        version = current_version(lake, tid) or version
    return version, written


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
    return log_entries(lake, lake.table_uri(TableId.parse(table)), version)


def log_entries(lake: Lake, table_uri: str, version: int) -> list[dict[str, Any]]:
    """The actions of commit ``version`` of the Delta table at ``table_uri`` (a table of the
    lake, or a staging table inside one)."""
    fs = lake.pyarrow_filesystem()
    root = lake.fs_path(table_uri.rstrip("/"))
    with fs.open_input_stream(f"{root}/_delta_log/{version:020d}.json") as f:
        return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]


CHECKPOINT_INTERVAL = 10  # commits between checkpoints: Delta's own default (delta-rs checkpoints every 100)


def keep_checkpointed(lake: Lake, table: str | TableId, dt: Any, *, since: int | None = None) -> int:
    """Checkpoint the loaded table ``dt`` if it is ``CHECKPOINT_INTERVAL`` commits or more past
    its last checkpoint (version ``since``; None: read ``_last_checkpoint``), then follow it to
    that checkpoint; returns the last checkpoint's version.

    Opening a table, and each app-id lookup on it, replays every commit since the last
    checkpoint: for a table without ``delta.checkpointInterval`` that is up to 99 commits."""
    if since is None:
        fs = lake.pyarrow_filesystem()
        path = f"{lake.fs_path(lake.table_uri(TableId.parse(table)))}/_delta_log/_last_checkpoint"
        try:
            with fs.open_input_stream(path) as f:
                since = int(json.loads(f.read())["version"])
        except (FileNotFoundError, KeyError, ValueError):
            since = -1
    if dt.version() - since < CHECKPOINT_INTERVAL:
        return since
    dt.create_checkpoint()
    dt.update_incremental()  # the loaded snapshot starts from the new checkpoint
    return int(dt.version())


def plain_files(lake: Lake, table: str | TableId, version: int, *, metadata: dict[str, Any] | None = None) -> int:
    """Rewrite the data files commit ``version`` added in view types, in plain types.

    delta-rs's DataFusion operations (merge, delete, update, optimize) write string columns as
    ``string_view`` whatever the input, and pyarrow cannot filter those (see ``lake_type``).  The
    copies hold the same rows, so the commit swaps the files (marked ``SWAP_MARK``: the rows did
    not change) and keeps the original statistics.  Readers cope with view types anyway
    (``Lake.dataset``), so a swap that loses a race to a concurrent writer is dropped, not
    retried.  Returns the number of files rewritten.
    """
    import time
    import uuid
    from urllib.parse import unquote

    import pyarrow.parquet as pq
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
        # dataChange=true, unlike OPTIMIZE: delta-rs checks a concurrent compaction against a
        # data-changing removal only (one that moved the same file as ours would have committed
        # too, and the rows would be there twice: bench/repro/swap_after_compaction.py).  The
        # rows are the same: readers of the log tell it by the commit's SWAP_MARK (``moves_rows``)
        actions.append(AddAction(new_path, size, parts, now, True, add.get("stats") or ""))
        actions.append(RemoveAction(path, True, now, add.get("size"), parts))
    if not actions:
        return 0
    try:
        dt.create_write_transaction(
            actions,
            mode="append",
            schema=dt.schema(),
            partition_by=dt.metadata().partition_columns or None,
            # no retry: delta-rs lets an append-mode transaction's removes pass its conflict check,
            # so a swap committed after another writer removed (compacted, merged) the same file
            # would add its rows back beside that writer's copy: any commit since our snapshot
            # drops the swap instead (bench/repro/swap_after_compaction.py)
            commit_properties=commit_properties({**(metadata or {}), **SWAP_MARK}, retries=0),
        )
    except Exception:  # noqa: BLE001 - a concurrent writer committed first; readers cope with view types
        for dest in written:
            try:
                fs.delete_file(dest)
            except OSError:
                pass
        return 0
    return len(written)


SWAP_MARK = {"rewrite": "view-typed files"}  # a commit of ``plain_files``: the same rows in other files


def is_type_swap(commit: list[dict[str, Any]]) -> bool:
    """Whether a commit (its log entries) is a ``plain_files`` swap: the same rows in other files."""
    return any(all(e["commitInfo"].get(k) == v for k, v in SWAP_MARK.items()) for e in commit if "commitInfo" in e)


def moves_rows(action: dict[str, Any], *, swap: bool) -> bool:
    """Whether an add or remove ``action`` only moves rows: marked ``dataChange=false`` (OPTIMIZE),
    or part of a swap (``swap``: ``is_type_swap`` of its commit)."""
    return swap or not action.get("dataChange", True)


# actions that only describe a commit (or its writer's bookkeeping), never the table's rows
_NO_ROW_CHANGE = {"commitInfo", "txn", "domainMetadata", "checkpointMetadata", "sidecar"}


def appended_files(lake: Lake, table: str | TableId, *, since: int, until: int) -> list[str] | None:
    """The data files (paths relative to the table) commits ``since+1 .. until`` added, when
    those commits only appended rows; None when any of them did more (removed or rewrote rows,
    changed the schema or protocol) or its log entry is gone (expired by log retention).

    A file swapped in (OPTIMIZE, ``plain_files``: ``moves_rows``) keeps its rows and is not new,
    unless it replaced a file appended in the same range (the new rows moved: None).
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
        swap = is_type_swap(entries)
        for entry in entries:
            kind = next(iter(entry), None)
            action = entry.get(kind) or {}
            if kind in _NO_ROW_CHANGE:
                continue
            if kind == "add":
                path = action.get("path") or ""
                if "://" in path or action.get("deletionVector"):
                    return None
                if not moves_rows(action, swap=swap):
                    added.append(unquote(path))
                continue
            if kind == "remove" and moves_rows(action, swap=swap):
                if unquote(action.get("path") or "") in added:
                    return None
                continue
            return None  # a data-changing remove, metaData, protocol, cdc...
    return added
