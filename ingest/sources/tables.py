"""Database tables (PostgreSQL, MySQL, SQLite by SQLAlchemy URL) -> a bronze Delta table.

Three modes, chosen by the options:
* ``--cursor COL``: incremental.  The next run reads ``COL >= max(COL in the lake) - lag`` in cursor
  order, so rows committed late with an older cursor value inside the lag window are picked up;
  rows already in the lake are removed from each batch (multiset difference) before the append.
* ``--primary-key COLS``: rows are merged on the key (updates replace, no duplicates); unchanged
  rows are not rewritten.  Combined with ``--cursor`` only the cursor window is read.
* neither: a full snapshot replaces the table in one atomic commit.

Reads are columnar (connectorx -> Arrow in bounded batches) with a SQLAlchemy fallback; both read
every column as the dialect's type map says (``ingest.sources.typemap``, README).  SQL is
built with SQLAlchemy's dialect quoting: identifiers are always quoted, values are literals.
Every batch commits under the app id ``tables:<table>`` (a counter), so concurrent runs conflict
in Delta and the loser retries against what the winner wrote.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ingest.conform import conform, lake_schema
from ingest.delta import BatchTaken, ensure_table, write_batch
from ingest.errors import ConfigError, IngestError, SourceError
from ingest.lake import Lake, TableId, ingest_target, plain_dataset, redact
from ingest.progress import progress_bar
from ingest.runlog import track
from ingest.sources.batches import Batch, BatchCommitter
from ingest.sources.coerce import fit_rows
from ingest.sources.quarantine import Bad, quarantine_table, row_json
from ingest.sources.result import IngestResult, Tally
from ingest.sources.typemap import TablePlan, type_map
from ingest.sources.util import env_int, utcnow

if TYPE_CHECKING:
    from ingest.partition import KeyRange

Mode = Literal["snapshot", "incremental", "merge"]
META_COLUMNS = ("_run_id", "_ingested_at")
_DIALECTS = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
}


@dataclass(frozen=True)
class DbSource:
    """A parsed SQLAlchemy URL plus the quoted table it reads."""

    url: Any  # sqlalchemy.engine.URL
    dialect: str
    schema: str | None
    name: str
    plan: TablePlan | None = None  # the columns and how each is read (``describe``)

    @property
    def label(self) -> str:
        """The source as recorded in the run log and the quarantine (no password)."""
        shown = self.url.render_as_string(hide_password=True)
        return f"{shown}#{self.schema + '.' if self.schema else ''}{self.name}"

    def sa_dialect(self):
        return self.url.get_dialect()()

    def sa_url(self) -> Any:
        """The URL for SQLAlchemy: a plain mysql:// URL uses PyMySQL (a dependency) rather than
        SQLAlchemy's default driver, mysqlclient, which needs C libraries."""
        if self.dialect == "mysql" and "+" not in self.url.drivername:
            return self.url.set(drivername="mysql+pymysql")
        return self.url

    def connectorx_url(self) -> str:
        scheme = "postgresql" if self.dialect == "postgresql" else "mysql"
        return self.url.set(drivername=scheme).render_as_string(hide_password=False)


def parse_source(url: str, source_table: str) -> DbSource:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        u = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "malformed database URL: write e.g. postgresql://user:pass@host:5432/db, "
            "mysql://user:pass@host/db or sqlite:///path/to.db"
        ) from None
    if u.host and "@" in u.host:  # a raw "@" in the password: the host follows the last "@"
        rest, _, host = u.host.rpartition("@")
        u = u.set(password=f"{u.password or ''}@{rest}", host=host)
    backend = u.get_backend_name()
    if backend not in _DIALECTS:
        raise ConfigError(f"unsupported database {backend!r}: use a postgresql, mysql or sqlite URL")
    try:
        u.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"unknown SQLAlchemy driver {u.drivername!r}: write e.g. postgresql://, postgresql+psycopg://, "
            "mysql+pymysql:// or sqlite:///"
        ) from None
    if not source_table or not source_table.strip():
        raise ConfigError("--source-table is empty: name the table to read, e.g. --source-table public.photos")
    parts = source_table.strip().split(".")
    if len(parts) > 2 or not all(parts):
        raise ConfigError(f"bad --source-table {source_table!r}: write table or schema.table")
    schema, name = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    return DbSource(u, _DIALECTS[backend], schema, name)


def build_query(src: DbSource, *, cursor: str | None = None, low: Any = None, key_range: KeyRange | None = None) -> str:
    """``SELECT <columns> FROM "schema"."table" [WHERE "cursor" >= <literal> ORDER BY "cursor"]``;
    the columns as the type map reads them (``src.plan``), or ``*``; only the rows of
    ``key_range`` when one is given."""
    import sqlalchemy as sa
    from sqlalchemy.sql import quoted_name

    cols: list[Any] = [sa.text("*")]
    if src.plan is not None:
        quote = src.sa_dialect().identifier_preparer.quote_identifier
        cols = [
            sa.column(quoted_name(c.name, True))
            if c.select == "{c}"
            else sa.literal_column(c.select.format(c=quote(c.name))).label(quoted_name(c.name, True))
            for c in src.plan.columns
        ]
    q = sa.select(*cols).select_from(
        sa.table(quoted_name(src.name, True), schema=quoted_name(src.schema, True) if src.schema else None)
    )
    if key_range is not None:
        q = q.where(*_range_filter(key_range))
    if cursor is not None:
        col: Any = sa.column(quoted_name(cursor, True))
        if low is not None:
            declared = next((c.declared for c in src.plan.columns if c.name == cursor), "") if src.plan else ""
            q = q.where(type_map(src.dialect).cursor_at_least(col, declared, low))
        q = q.order_by(col)
    return str(q.compile(dialect=src.sa_dialect(), compile_kwargs={"literal_binds": True}))


def _range_filter(key_range: KeyRange) -> list[Any]:
    import sqlalchemy as sa
    from sqlalchemy.sql import quoted_name

    col: Any = sa.column(quoted_name(key_range.column, True))
    out: list[Any] = []
    if key_range.low is not None:
        out.append(col >= sa.literal(key_range.low))
    if key_range.high is not None:
        below = col < sa.literal(key_range.high)
        out.append(below if key_range.low is not None else sa.or_(below, col.is_(None)))
    return out


def split_column(primary_key: tuple[str, ...] | list[str], cursor: str | None) -> str:
    """The column a table is split on for a partitioned ingest: the (first) primary key column,
    else the cursor.  A full snapshot is one atomic overwrite, so it is not split."""
    keys = [k.strip() for k in primary_key if k and k.strip()]
    if keys:
        return keys[0]
    if cursor and cursor.strip():
        return cursor.strip()
    raise ConfigError("partitions split a table by key ranges: give --primary-key or --cursor")


def table_key_ranges(
    lake: Lake,
    url: str,
    *,
    source_table: str,
    table: str,
    primary_key: tuple[str, ...] | list[str] = (),
    cursor: str | None = None,
    cursor_lag: float | timedelta = 0,
    count: int,
) -> list[KeyRange]:
    """``count`` ranges of the split column (``split_column``) over the rows the ingest will
    read: between the column's minimum and maximum in the source, above the cursor's lower bound
    when the split column is the cursor.  Ranges of equal width: skewed keys give uneven tasks."""
    import sqlalchemy as sa
    from sqlalchemy.sql import quoted_name

    from ingest.partition import key_ranges

    column = split_column(primary_key, cursor)
    src = parse_source(url, source_table)
    low = None
    if cursor and column == cursor.strip():
        low = lower_bound(high_water_mark(lake, ingest_target(table), column), cursor_lag)
    col: Any = sa.column(quoted_name(column, True))
    q = sa.select(sa.func.min(col), sa.func.max(col)).select_from(
        sa.table(quoted_name(src.name, True), schema=quoted_name(src.schema, True) if src.schema else None)
    )
    if low is not None:
        q = q.where(col >= sa.literal(low))
    try:
        engine = _engine(src)
        try:
            with engine.connect() as conn:
                lo, hi = conn.execute(q).one()
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - one line, password hidden
        raise _db_error(src, exc) from None
    try:
        return key_ranges(column, lo, hi, count)
    except ValueError as exc:
        raise ConfigError(f"cannot split {src.label} by {column}: {exc}") from None


def _engine(src: DbSource) -> Any:
    import sqlalchemy as sa

    return sa.create_engine(src.sa_url(), connect_args={"connect_timeout": 10} if src.dialect != "sqlite" else {})


def describe(src: DbSource) -> DbSource:
    """``src`` with its ``plan``: each column's declared type from the database's catalog, mapped
    by the dialect's type map (``ingest.sources.typemap``)."""
    try:
        engine = _engine(src)
        try:
            with engine.connect() as conn:
                quote = src.sa_dialect().identifier_preparer.quote_identifier
                plan = type_map(src.dialect).plan(conn, schema=src.schema, name=src.name, quote=quote)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - one line, password hidden
        raise _db_error(src, exc) from None
    if not plan.columns:
        raise SourceError(f"cannot read {src.label}: table does not exist - check --source-table")
    return replace(src, plan=plan)


# -- reading -------------------------------------------------------------------------------------
class BatchReader(Protocol):
    """Reads a query's result in batches of about ``batch_rows`` rows: Arrow tables, or Python
    records where the database's values need a look one by one (``_fit`` takes either).

    ``parallel`` (any row order is fine): the reader may split the read over connections.
    ``after`` is the error of the reader tried before this one, if any (it may explain this
    one's failure better).  A failure before the first batch lets the next reader try.
    """

    def __call__(
        self, src: DbSource, query: str, batch_rows: int, *, parallel: bool, after: BaseException | None
    ) -> Generator[pa.Table | list[dict[str, Any]]]: ...


def read_batches(
    src: DbSource, query: str, batch_rows: int, *, parallel: bool = False
) -> Iterator[pa.Table | list[dict[str, Any]]]:
    """The query's result in batches of ``batch_rows``, by the first of the dialect's readers
    (``READERS``) that gets going: connectorx (columnar) for PostgreSQL and MySQL, SQLAlchemy
    for SQLite (whose columns may hold values of any type) and as the fallback."""
    failed: BaseException | None = None
    for reader in READERS[src.dialect]:
        started = False
        try:
            # closed when this generator is: the reader's connections and threads end with it
            with contextlib.closing(reader(src, query, batch_rows, parallel=parallel, after=failed)) as batches:
                for batch in batches:
                    started = True
                    yield batch
            return
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit, IngestError)):
                raise
            if started:
                raise _db_error(src, exc) from None
            failed = exc
    raise _db_error(src, failed or SourceError("no reader")) from None


def connectorx_batches(
    src: DbSource, query: str, batch_rows: int, *, parallel: bool, after: BaseException | None = None
) -> Generator[pa.Table]:
    """Arrow batches via connectorx; ``parallel`` splits the read by ranges of an integer
    primary key, when the table has one."""
    int_pk = _preflight(src)
    import connectorx as cx

    split: dict[str, Any] = {}
    parts = env_int("INGEST_TABLE_PARTITIONS", max(2, min(4, os.cpu_count() or 2)))
    if parallel and int_pk and parts > 1:
        split = {"partition_on": int_pk, "partition_num": parts}
    reader = cx.read_sql(src.connectorx_url(), query, return_type="arrow_stream", batch_size=batch_rows, **split)
    pending: list[pa.RecordBatch] = []
    rows = yielded = 0
    for rb in _read_ahead(reader, depth=2):
        pending.append(rb)
        rows += rb.num_rows
        if rows >= batch_rows:
            yield pa.Table.from_batches(pending, schema=reader.schema)
            yielded += rows
            pending, rows = [], 0
    if pending or yielded == 0:
        yield pa.Table.from_batches(pending, schema=reader.schema)


def _read_ahead(it: Any, depth: int) -> Iterator[Any]:
    """Pull the next ``depth`` items on a thread, so the database read overlaps the Delta write
    (both release the GIL); memory stays bounded by ``depth`` batches."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def pump() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)

    t = threading.Thread(target=pump, name="db-read-ahead", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _preflight(src: DbSource) -> str | None:
    """Fail fast with one line on bad credentials, a wrong host or a missing table (connectorx's
    pool retries for seconds and logs to stderr), and return the table's integer primary key
    column if it has exactly one.  Skipped when the SQLAlchemy driver is not installed."""
    import sqlalchemy as sa

    try:
        engine = _engine(src)
    except Exception:  # noqa: BLE001 - no driver: connectorx will report the problem
        return None
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            warnings.simplefilter("ignore", sa.exc.SAWarning)  # "did not recognize type": the type map reads it
            insp = sa.inspect(conn)
            try:
                pk = insp.get_pk_constraint(src.name, schema=src.schema).get("constrained_columns") or []
                if len(pk) != 1:
                    return None
                if src.plan is not None:  # the catalog was read already (and SQLAlchemy warns of types it lacks)
                    return (
                        pk[0]
                        if any(
                            c.name == pk[0] and c.delta is not None and pa.types.is_integer(c.delta)
                            for c in src.plan.columns
                        )
                        else None
                    )
                types = {c["name"]: c["type"] for c in insp.get_columns(src.name, schema=src.schema)}
                return pk[0] if isinstance(types.get(pk[0]), sa.Integer) else None
            except sa.exc.NoSuchTableError:
                raise SourceError(f"cannot read {src.label}: table does not exist - check --source-table") from None
            except sa.exc.SQLAlchemyError:
                return None
    except IngestError:
        raise
    except Exception as exc:  # noqa: BLE001 - every driver error becomes one source error
        raise _db_error(src, exc) from None
    finally:
        engine.dispose()


def sqlalchemy_batches(
    src: DbSource, query: str, batch_rows: int, *, parallel: bool = False, after: BaseException | None = None
) -> Generator[list[dict[str, Any]]]:
    """Python records via SQLAlchemy, streamed (``parallel`` does not apply)."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(src.sa_url())
        conn = engine.connect()
    except Exception as exc:  # noqa: BLE001 - cannot reach the database at all
        raise _db_error(src, after if after and "No module named" in str(exc) else exc) from None
    try:
        try:
            result = conn.execution_options(stream_results=True).execute(sa.text(query))
        except Exception as exc:  # noqa: BLE001 - every driver error becomes one source error
            raise _db_error(src, exc) from None
        names = list(result.keys())
        yielded = False
        while True:
            chunk = result.fetchmany(batch_rows)
            if not chunk:
                break
            yielded = True
            yield [dict(zip(names, r, strict=True)) for r in chunk]
        if not yielded:
            yield []
    finally:
        conn.close()
        engine.dispose()


# the readers of each dialect, in the order they are tried
READERS: dict[str, tuple[BatchReader, ...]] = {
    "postgresql": (connectorx_batches, sqlalchemy_batches),
    "mysql": (connectorx_batches, sqlalchemy_batches),
    "sqlite": (sqlalchemy_batches,),
}


def _db_error(src: DbSource, exc: BaseException) -> IngestError:
    """One line naming the source and what to check; a server that cannot be reached is a
    ``TransientError`` (an orchestrator retries it), bad credentials or a missing table are not."""
    from ingest.errors import TransientError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = redact(text, secrets=[src.url.password])
    low = text.lower()
    hint = ""
    error: type[SourceError] | type[TransientError] = SourceError
    if "does not exist" in low or "no such table" in low or "doesn't exist" in low:
        hint = " - check --source-table"
    elif "password" in low or "authentication" in low or "access denied" in low:
        hint = " - check the user and password in the URL"
    elif "connect" in low or "timeout" in low or "timed out" in low or "refused" in low:
        hint, error = " - check the host and port in the URL", TransientError
    return error(f"cannot read {src.label}: {text[:300]}{hint}")


# -- lake side -----------------------------------------------------------------------------------
def _existing_schema(lake: Lake, tid: TableId) -> pa.Schema | None:
    return pa.schema(lake.delta_table(tid).schema().to_arrow()) if lake.table_exists(tid) else None


def high_water_mark(lake: Lake, tid: TableId, cursor: str) -> Any:
    """max(cursor) over the rows already in the lake (None if the table is empty or missing).

    Reads only the files that can hold it: the largest per-file ``max`` statistic S bounds the
    search to rows >= S (file and row-group statistics skip the rest), and if S overstates the
    column (rounded or incremented statistics) nothing matches and the whole column is read.
    """
    schema = _existing_schema(lake, tid)
    if schema is None or cursor not in schema.names:
        return None
    dt = lake.delta_table(tid)
    adds = pa.table(dt.get_add_actions(flatten=True))
    stat = f"max.{cursor}"
    if stat in adds.column_names and adds.num_rows:
        try:
            top = pc.max(adds[stat]).cast(schema.field(cursor).type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a statistic in another type: read it all
            top = None
        if top is not None and top.is_valid:
            col = _read_column(dt, cursor, pads.field(cursor) >= top)
            if len(col):
                return pc.max(col).as_py()
    col = _read_column(dt, cursor, None)
    return pc.max(col).as_py() if len(col) else None


def _read_column(dt: Any, column: str, filt: Any) -> pa.ChunkedArray:
    """One column of a table, filtered; files in view types (see ``Lake.dataset``) are read in
    plain types only when the filter meets one, since that check opens every file's footer."""
    try:
        return dt.to_pyarrow_dataset().to_table(columns=[column], filter=filt)[column]
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):
        return plain_dataset(dt.to_pyarrow_dataset()).to_table(columns=[column], filter=filt)[column]


def lower_bound(hwm: Any, lag: float | timedelta) -> Any:
    """hwm - lag, in the cursor's own type (numbers, dates/timestamps, ISO-8601 strings)."""
    if hwm is None:
        return None
    secs = lag.total_seconds() if isinstance(lag, timedelta) else float(lag)
    if secs == 0:
        return hwm
    if isinstance(hwm, bool):
        raise ConfigError("a boolean column cannot be a cursor: use a number or timestamp column")
    if isinstance(hwm, int):
        return hwm - int(secs)
    if isinstance(hwm, float):
        return hwm - secs
    if isinstance(hwm, Decimal):
        return hwm - Decimal(secs)
    if isinstance(hwm, datetime):
        return hwm - timedelta(seconds=secs)
    if isinstance(hwm, date):
        return hwm - timedelta(days=max(1, int(secs // 86400)))
    if isinstance(hwm, str):
        try:
            dt = datetime.fromisoformat(hwm)
        except ValueError:
            raise ConfigError(
                f"--cursor-lag needs a numeric or timestamp cursor; the cursor holds text like {hwm!r}"
            ) from None
        low = dt - timedelta(seconds=secs)
        text = low.isoformat(sep="T" if "T" in hwm else " ")
        if hwm.endswith("Z"):
            text = text.replace("+00:00", "Z")
        return text
    raise ConfigError(f"cannot apply --cursor-lag to cursor values of type {type(hwm).__name__}")


def _rows_already_stored(batch: pa.Table, *, snapshot: Any, cursor: str | None, keys: tuple[str, ...]) -> pa.Table:
    """``batch`` minus the rows the table (as of ``snapshot``, a loaded DeltaTable) already holds
    with the same values (multiset EXCEPT ALL).

    With a cursor only the rows at or above the batch's lowest cursor value are compared; with a
    single-column key only the rows in the batch's key range.
    """
    if batch.num_rows == 0:
        return batch
    import duckdb

    schema = pa.schema(snapshot.schema().to_arrow())
    filt = None
    if cursor is not None and cursor in schema.names:
        low = pc.min(batch[cursor]).as_py()
        if low is not None:
            filt = pads.field(cursor) >= pa.scalar(low, type=schema.field(cursor).type)
    elif len(keys) == 1 and keys[0] in schema.names and keys[0] in batch.column_names:
        # a merge compares only stored rows in the batch's key range (file statistics prune the rest)
        lo, hi = pc.min_max(batch[keys[0]]).values()
        if lo.is_valid and hi.is_valid:
            t = schema.field(keys[0]).type
            filt = (pads.field(keys[0]) >= pa.scalar(lo.as_py(), t)) & (pads.field(keys[0]) <= pa.scalar(hi.as_py(), t))
    shared = [c for c in batch.column_names if c in schema.names]
    existing = plain_dataset(snapshot.to_pyarrow_dataset()).to_table(columns=shared, filter=filt)
    if existing.num_rows == 0:
        return batch
    for c in batch.column_names:
        if c not in shared:
            existing = existing.append_column(c, pa.nulls(existing.num_rows, batch.schema.field(c).type))
    existing = existing.select(batch.column_names)
    con = duckdb.connect()
    try:
        con.register("incoming", batch)
        con.register("stored", existing)
        cols = ", ".join('"' + c.replace('"', '""') + '"' for c in batch.column_names)
        out = con.sql(f"select {cols} from incoming except all select {cols} from stored").arrow()
        if isinstance(out, pa.RecordBatchReader):
            out = out.read_all()
        return out.cast(batch.schema)
    finally:
        con.close()


@dataclass
class _Counts(Tally):
    batches: int = 0


def check_cursor_lag(cursor_lag: float | timedelta) -> float:
    """The lag in seconds; a negative one is refused with the flag's name (also before a split)."""
    lag_s = cursor_lag.total_seconds() if isinstance(cursor_lag, timedelta) else float(cursor_lag)
    if lag_s < 0:
        raise ConfigError(f"--cursor-lag must be >= 0, got {cursor_lag}")
    return lag_s


def ingest_table(
    lake: Lake,
    url: str,
    *,
    source_table: str,
    table: str,
    primary_key: tuple[str, ...] | list[str] = (),
    cursor: str | None = None,
    cursor_lag: float | timedelta = 0,
    progress: bool = False,
    key_range: KeyRange | None = None,
) -> IngestResult:
    """Load ``source_table`` from the database at ``url`` into ``table`` (see the module doc for
    modes), or only the rows of one ``key_range`` of it (``table_key_ranges``): ranges loaded at
    once by several processes write the table exactly once, as concurrent runs do."""
    tid = ingest_target(table)
    src = parse_source(url, source_table)
    keys = tuple(k.strip() for k in primary_key if k and k.strip())
    if cursor is not None and not cursor.strip():
        raise ConfigError("--cursor is empty: name a column that grows, e.g. --cursor updated_at")
    check_cursor_lag(cursor_lag)
    mode: Mode = "merge" if keys else "incremental" if cursor else "snapshot"
    if key_range is not None and key_range.column != split_column(keys, cursor):
        raise ConfigError(
            f"key range {key_range} is not over {split_column(keys, cursor)}, the column this ingest splits on"
        )
    counts = _Counts()
    batch_rows = env_int("INGEST_TABLE_BATCH_ROWS", 100_000)
    with track(lake, command="tables", source=src.label, target=str(tid), counts=counts) as run:
        committer = BatchCommitter(
            lake,
            tid,
            run_id=run.run_id,
            tally=counts,
            app_id=f"tables:{tid}",
            mode="merge" if keys else "append",
            keys=keys,
        )
        src = describe(src)
        low = lower_bound(high_water_mark(lake, tid, cursor), cursor_lag) if cursor else None
        query = build_query(src, cursor=cursor, low=low, key_range=key_range)
        with progress_bar(progress, f"{src.name} -> {tid}") as bar:
            if mode == "snapshot":
                # a concurrent overwrite conflicts in Delta: read the source again and replace again
                committer.retry(lambda: _snapshot(committer, src, query, batch_rows, counts, bar))
            else:
                for batch in read_batches(src, query, batch_rows, parallel=cursor is None):
                    _load_batch(committer, src, batch, keys=keys, cursor=cursor, counts=counts)
                    bar.advance(_len(batch))
        run.details = {"mode": mode, "query": query, "batches": counts.batches, "cursor_low": low}
        if key_range is not None:
            run.details["key_range"] = str(key_range)
        result = counts.finish(lake, tid, run)
    return result


def _len(batch: pa.Table | list) -> int:
    return batch.num_rows if isinstance(batch, pa.Table) else len(batch)


def _fit(
    src: DbSource, batch: pa.Table | list[dict[str, Any]], against: pa.Schema | None, counts: _Counts
) -> tuple[pa.Table, list[Bad]]:
    """A source batch typed like ``against`` (the target's schema) plus the rows that do not fit,
    as quarantine records.  Columns ``against`` lacks take the type map's type (``src.plan``), or
    pass through (schema merge adds them)."""
    if src.plan is not None:
        against = src.plan.declared_schema(against)
    if isinstance(batch, pa.Table):
        counts.bytes_read += batch.nbytes
        batch = batch.cast(lake_schema(batch.schema))
        good, misfits = conform(batch, against, policy="quarantine")
        rows = batch.take(pa.array([i for i, _ in misfits], pa.int64())).to_pylist() if misfits else []
        bad = [Bad(src.label, f"row {i}", reason, row_json(r)) for (i, reason), r in zip(misfits, rows, strict=True)]
        return good, bad
    counts.bytes_read += sum(len(str(r)) for r in batch)
    good, misfits = fit_rows(batch, against)
    return good, [Bad(src.label, f"row {i}", reason, row_json(batch[i])) for i, reason in misfits]


def _with_meta(t: pa.Table, run_id: str, now: datetime) -> pa.Table:
    t = t.append_column("_run_id", pa.repeat(pa.scalar(run_id, pa.string()), t.num_rows))
    return t.append_column("_ingested_at", pa.repeat(pa.scalar(now, pa.timestamp("us", tz="UTC")), t.num_rows))


def _new_bad(lake: Lake, tid: TableId, bad: list[Bad], *, snapshot: Any = None) -> list[Bad]:
    """Drop quarantine records already recorded for this source (re-reads of a window or
    snapshot), as of ``snapshot`` (a loaded quarantine table) or now."""
    q = quarantine_table(tid)
    if not bad or (snapshot is None and not lake.table_exists(q)):
        return bad
    ds = plain_dataset(snapshot.to_pyarrow_dataset()) if snapshot is not None else lake.dataset(q)
    stored = ds.to_table(columns=["raw", "reason"], filter=pads.field("source") == bad[0].source)
    seen = set(zip(stored["raw"].to_pylist(), stored["reason"].to_pylist(), strict=True))
    return [b for b in bad if (b.raw, b.reason[:2000]) not in seen]


def _load_batch(
    committer: BatchCommitter,
    src: DbSource,
    batch: pa.Table | list[dict[str, Any]],
    *,
    keys: tuple[str, ...],
    cursor: str | None,
    counts: _Counts,
) -> None:
    """Quarantine, then append or merge one batch; the whole step re-runs after a commit conflict."""
    lake, tid, run_id = committer.lake, committer.tid, committer.run_id

    def attempt() -> None:
        # the batch number, the stored rows and the commit from one snapshot of the table: a
        # writer that commits after it, under any number, conflicts with ours and this attempt
        # re-runs (a commit against a fresh snapshot missed one made under a smaller number, as
        # the target and its quarantine share the counter).  A new table is created empty first.
        scratch = _Counts()
        dt = committer.snapshot()
        good, bad = _fit(src, batch, None if dt is None else pa.schema(dt.schema().to_arrow()), scratch)
        missing = [c for c in (*keys, *([cursor] if cursor else [])) if c not in good.column_names]
        if missing and good.num_rows:
            raise ConfigError(f"column(s) {missing} not in {src.name}: check --primary-key / --cursor")
        created = dt is None
        if created:
            ensure_table(lake, tid, _with_meta(good, run_id, utcnow()).schema)
            dt = committer.snapshot()
        quarantine = committer.quarantine_snapshot() if bad else None  # likewise for the bad rows
        seq = committer.sequence(snapshot=dt, quarantine=quarantine)
        fresh = _rows_already_stored(good, snapshot=dt, cursor=cursor, keys=keys)
        rows = _with_meta(fresh, run_id, utcnow()) if fresh.num_rows or created else None
        new_bad = _new_bad(lake, tid, bad, snapshot=quarantine)
        meta = {"run_id": run_id, "source": src.label}
        done = committer.commit(Batch(seq, rows, new_bad, metadata=meta), snapshot=dt, quarantine=quarantine)
        counts.batches += int(done.written)
        counts.skipped += good.num_rows - fresh.num_rows
        counts.bytes_read += scratch.bytes_read

    committer.retry(attempt)


def _snapshot(committer: BatchCommitter, src: DbSource, query: str, batch_rows: int, counts: _Counts, bar) -> None:
    """Replace the table with the source's rows in one commit, streaming bounded batches."""
    lake, tid, run_id = committer.lake, committer.tid, committer.run_id
    existing = _existing_schema(lake, tid)
    total, counts = counts, _Counts()  # counted only when the commit lands (a retry starts over)
    bad_all: list[Bad] = []
    first: dict[str, Any] = {}

    now = utcnow()

    def typed() -> Iterator[pa.RecordBatch]:
        for batch in read_batches(src, query, batch_rows, parallel=True):
            good, bad = _fit(src, batch, first.get("schema", existing), counts)
            good = _with_meta(good, run_id, now)
            bad_all.extend(bad)
            if "schema" not in first:
                first["schema"] = good.schema
            elif not good.schema.equals(first["schema"]):
                good = good.select(first["schema"].names).cast(first["schema"])
            counts.rows += good.num_rows
            bar.advance(good.num_rows)
            yield from good.to_batches()

    gen = typed()
    head = next(gen, None)  # None: the source table is empty, and the table becomes empty too
    schema = first["schema"]
    if head is None and existing is not None and schema.names == list(META_COLUMNS):
        schema = existing  # an empty result read through SQLAlchemy names no columns: keep the table's

    def all_batches() -> Iterator[pa.RecordBatch]:
        if head is not None:
            yield head
        yield from gen

    # one snapshot for the batch number and the commit: two overwrites with the same app id then
    # conflict, and the loser (retried by the caller) reads the source again
    dt = lake.delta_table(tid) if lake.table_exists(tid) else None
    seq = committer.sequence(snapshot=dt)
    # existing columns keep their types (conform); new ones are added, dropped ones go
    res = write_batch(
        lake,
        tid,
        pa.RecordBatchReader.from_batches(schema, all_batches()),
        mode="overwrite",
        app_id=f"tables:{tid}",
        batch_version=seq,
        snapshot=dt,
        metadata={"run_id": run_id, "source": src.label, "mode": "snapshot"},
        # the parquet writer holds a whole row group (1M rows by default) in memory: bound it,
        row_group_rows=env_int("INGEST_TABLE_ROW_GROUP", 128 * 1024),
        # and delta-rs keeps each data file in memory until it is closed: bound that too
        file_bytes=env_int("INGEST_TABLE_FILE_BYTES", 16 << 20),
    )
    if res.skipped:  # a concurrent run created the table and took this batch number: read again
        raise BatchTaken(f"tables:{tid}")
    counts.batches += 1
    for f in ("rows", "quarantined", "bytes_read", "batches"):  # committed: a later failure keeps them
        setattr(total, f, getattr(total, f) + getattr(counts, f))
    if bad_all:  # after the rows: a crash in between leaves them to the re-run, which reads again
        committer.retry(lambda: _quarantine_snapshot_bad(committer, bad_all, dt))


def _quarantine_snapshot_bad(committer: BatchCommitter, bad_all: list[Bad], before: Any) -> None:
    """Quarantine a snapshot's bad rows not recorded yet, under the number its overwrite took
    (numbered from ``before``, the table as it stood then) unless the quarantine has passed it
    since: a concurrent overwrite of the same table, which read the source later, may have
    quarantined other rows under a higher number, and ours would be skipped as committed.  The
    lookup, the number and the commit use one snapshot of the quarantine: a commit after it is
    a conflict, and this runs again."""
    quarantine = committer.quarantine_snapshot()
    bad = _new_bad(committer.lake, committer.tid, bad_all, snapshot=quarantine)
    if not bad:
        return
    version = committer.sequence(snapshot=before, quarantine=quarantine)
    if not committer.write_bad(bad, version=version, snapshot=quarantine):
        raise BatchTaken(f"tables:{committer.tid}")
