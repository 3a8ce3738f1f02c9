"""Read-only SQL over lake tables named ``layer.name``, optionally as of a version/time/snapshot."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache, partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ingest.errors import ConfigError, IngestError, first_line
from ingest.lake import LAYERS, Lake, TableId

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

_TABLE_REF = re.compile(r'(?<![\w."])"?(' + "|".join(LAYERS) + r')"?\s*\.\s*"?([A-Za-z_][A-Za-z0-9_]*)"?')
_READ_ONLY = {"SELECT", "EXPLAIN", "PRAGMA"}


def referenced_tables(query: str) -> list[TableId]:
    seen: dict[str, TableId] = {}
    for layer, name in _TABLE_REF.findall(query):
        tid = TableId(layer, name)
        seen.setdefault(str(tid), tid)
    return list(seen.values())


_EXPLAIN = re.compile(r"^\s*explain\s+(analy[sz]e\s+)?", re.IGNORECASE)
_PRAGMA_NAME = re.compile(r"^\s*pragma\s+([A-Za-z_]+)", re.IGNORECASE)
# pragmas that only describe; others change settings or read files (import_database)
_READ_ONLY_PRAGMAS = {
    "table_info",
    "show",
    "show_tables",
    "show_tables_expanded",
    "show_databases",
    "version",
    "database_size",
    "storage_info",
    "platform",
    "functions",
    "collations",
    "metadata_info",
    "database_list",
    "user_agent",
}


def _refuse(kind: str) -> IngestError:
    return IngestError(
        f"refused: SQL over the lake is read-only and this is a {kind} statement; "
        "write through the ingest/transform commands instead"
    )


def check_read_only(query: str) -> None:
    """Refuse anything but reads; EXPLAIN ANALYZE runs its statement, so that is checked too."""
    import duckdb

    # parsing can already run pragma macros (import_database reads files): parse without file access
    parser = duckdb.connect(config={"enable_external_access": False})
    try:
        statements = parser.extract_statements(query)
    except duckdb.Error as exc:
        raise IngestError(f"SQL does not parse: {str(exc).splitlines()[0]}") from None
    finally:
        parser.close()
    if not statements:
        raise IngestError("no SQL statement given")
    for st in statements:
        kind = st.type.name.upper()
        if kind not in _READ_ONLY:
            raise _refuse(kind)
        if kind == "EXPLAIN":
            check_read_only(_EXPLAIN.sub("", st.query, count=1))
        if kind == "PRAGMA":
            m = _PRAGMA_NAME.match(st.query)
            if not m or m.group(1).lower() not in _READ_ONLY_PRAGMAS:
                raise _refuse(f"PRAGMA {m.group(1) if m else ''}".strip())


def resolve_as_of(lake: Lake, as_of: str | int | None, tables: list[TableId]) -> dict[str, int | str]:
    """Per-table versions for ``--as-of``: a version number, an ISO timestamp or a snapshot name."""
    if as_of is None or as_of == "":
        return {}
    text = str(as_of).strip()
    if re.fullmatch(r"\d+", text):
        return {str(t): int(text) for t in tables}
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        ts = None
    if ts is not None:
        if ts.tzinfo is None:  # a bare date or local-looking time means UTC, like the lake
            ts = ts.replace(tzinfo=UTC)
        return {str(t): version_at(lake, t, ts) for t in tables}
    from ingest.snapshots import get_snapshot  # snapshot names

    snap = get_snapshot(lake, text)
    pinned: dict[str, int | str] = {}
    for t in tables:
        if str(t) not in snap.tables:
            raise ConfigError(
                f"snapshot {text!r} does not pin {t}; it pins {', '.join(sorted(snap.tables)) or 'nothing'}"
            )
        pinned[str(t)] = snap.tables[str(t)]
    return pinned


def version_at(lake: Lake, table: TableId, ts: datetime) -> int:
    """The table's newest version committed at or before ``ts``.

    deltalake silently loads version 0 for a time before the first commit; that answer would be
    wrong (the table did not exist), so this raises instead.
    """
    commits = sorted((h["version"], h["timestamp"]) for h in lake.delta_table(table).history() if "timestamp" in h)
    millis = ts.timestamp() * 1000
    found = [v for v, at in commits if at <= millis]
    if not found:
        first = datetime.fromtimestamp(commits[0][1] / 1000, UTC).isoformat() if commits else "?"
        raise ConfigError(
            f"{table} did not exist at {ts.isoformat()}: its first commit is at {first} (see `ingest history {table}`)"
        )
    return max(found)


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """Once the views are set up: no file or network access (no COPY TO, ATTACH, read_csv,
    INSTALL), and no setting can be changed back."""
    con.execute("set enable_external_access = false")
    con.execute("set lock_configuration = true")


def open_tables(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    versions: dict[TableId, int | str | None],
    *,
    dataset: Callable[[TableId, int | str | None], Any] | None = None,
) -> None:
    """Point the ``layer.name`` view of each table at its version (None: the current one).

    ``dataset`` builds a table's dataset (default ``lake.dataset``; a server passes a cache).
    Opening a table reads file footers: a version whose files `ingest vacuum` removed fails
    here, and says so instead of "Could not open".
    """
    from ingest.lake import add_view
    from ingest.vacuum import raise_if_vacuumed

    build = dataset or (lambda tid, v: lake.dataset(tid, version=v))
    for tid, v in versions.items():
        try:
            add_view(con, tid, build(tid, v))
        except Exception:
            raise_if_vacuumed(lake, {str(tid): v})  # type: ignore[dict-item]  # a timestamp version (str) loads too
            raise


def run_sql(lake: Lake, query: str, *, as_of: str | int | None = None) -> pa.Table:
    """Run one read-only query; table names are ``layer.name``.  The whole result in memory: use
    ``stream_sql`` for results of any size."""
    with stream_sql(lake, query, as_of=as_of) as reader:
        return reader.read_all()


@contextmanager
def stream_sql(
    lake: Lake, query: str, *, as_of: str | int | None = None, batch_rows: int = 16_384
) -> Iterator[pa.RecordBatchReader]:
    """Run one read-only query and yield its result as a stream of record batches (bounded memory:
    DuckDB produces the next batch when it is read).  The connection lives as long as the block;
    a failure while reading is one ``IngestError`` line, as when the query starts."""
    check_read_only(query)
    tables = referenced_tables(query)
    versions = resolve_as_of(lake, as_of, tables)
    reads = {str(t): versions.get(str(t)) for t in tables}
    import duckdb

    con = duckdb.connect()
    import os

    for stmt in filter(None, os.environ.get("XSQL", "").split(";")):
        con.execute(stmt)
    try:
        open_tables(
            lake,
            con,
            {t: versions.get(str(t)) for t in tables},
            dataset=partial(_stream_dataset, lake),
        )
        lock_down(con)  # the views are set up: from here on the query cannot touch files
        try:
            inner = con.execute(query).to_arrow_reader(batch_rows)
        except Exception as exc:  # noqa: BLE001 - duckdb errors become one line
            raise _query_failed(lake, reads, exc) from None
        yield pa.RecordBatchReader.from_batches(inner.schema, _batches(lake, reads, inner))
    finally:
        con.close()


def _stream_dataset(lake: Lake, tid: TableId, version: int | str | None) -> Any:
    """``lake.dataset`` for one pass over a table in bounded memory: one file at a time (the
    files are read through pyarrow's own filesystem, as every lake table's are)."""
    return _one_file_ahead(lake.dataset(tid, version=version))


def _one_file_ahead(ds: Any) -> Any:
    """``ds`` scanned one file and one batch at a time.  DuckDB scans a registered dataset through
    its ``scanner()`` with pyarrow's default read-ahead (four files, sixteen batches), which holds
    several decoded row groups of a large table at once; a stream needs one.  Other dataset
    kinds (view-typed files copied in memory) are returned unchanged."""
    import pyarrow.dataset as pads

    if type(ds) is not pads.FileSystemDataset:
        return ds
    return _one_file_ahead_type()(list(ds.get_fragments()), ds.schema, ds.format, ds.filesystem)


@cache
def _one_file_ahead_type() -> type:
    import pyarrow.dataset as pads

    class OneFileAhead(pads.FileSystemDataset):
        def scanner(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("fragment_readahead", 1)
            kwargs.setdefault("batch_readahead", 0)
            return super().scanner(*args, **kwargs)

    return OneFileAhead


def _batches(lake: Lake, reads: dict[str, Any], reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a failure mid-stream is one line too
            raise _query_failed(lake, reads, exc) from None
        yield batch


def _query_failed(lake: Lake, reads: dict[str, Any], exc: BaseException) -> IngestError:
    """The error for a failed query; the versions read may have lost their files to `ingest
    vacuum`: say so, not "Could not open"."""
    from ingest.vacuum import raise_if_vacuumed

    message = f"query failed: {first_line(exc)}"
    raise_if_vacuumed(lake, reads)
    return IngestError(message)


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()
