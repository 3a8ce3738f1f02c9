"""Read-only SQL over lake tables named ``layer.name``, optionally as of a version/time/snapshot."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pyarrow as pa

from ingest.errors import ConfigError, IngestError
from ingest.lake import LAYERS, Lake, TableId

_TABLE_REF = re.compile(r'(?<![\w."])"?(' + "|".join(LAYERS) + r')"?\s*\.\s*"?([A-Za-z_][A-Za-z0-9_]*)"?')
_READ_ONLY = {"SELECT", "EXPLAIN", "PRAGMA"}


def referenced_tables(query: str) -> list[TableId]:
    seen: dict[str, TableId] = {}
    for layer, name in _TABLE_REF.findall(query):
        tid = TableId(layer, name)
        seen.setdefault(str(tid), tid)
    return list(seen.values())


def check_read_only(query: str) -> None:
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise IngestError(f"SQL does not parse: {str(exc).splitlines()[0]}") from None
    if not statements:
        raise IngestError("no SQL statement given")
    for st in statements:
        kind = st.type.name.upper()
        if kind not in _READ_ONLY:
            raise IngestError(
                f"refused: `ingest sql` is read-only and this is a {kind} statement; "
                "write through the ingest/transform commands instead"
            )


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
        return {str(t): ts.isoformat() for t in tables}
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


def run_sql(lake: Lake, query: str, *, as_of: str | int | None = None) -> pa.Table:
    """Run one read-only query; table names are ``layer.name``."""
    check_read_only(query)
    tables = referenced_tables(query)
    versions = resolve_as_of(lake, as_of, tables)
    con = lake.duckdb(tables=tables, version=versions)  # type: ignore[arg-type]
    try:
        return con.execute(query).fetch_arrow_table()
    except Exception as exc:  # noqa: BLE001 - duckdb errors become one line
        raise IngestError(f"query failed: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()
