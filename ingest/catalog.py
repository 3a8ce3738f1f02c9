"""Export the lake as a DuckDB database file: one view (or table) per lake table.

Analysts open the file in any DuckDB client and write ``select * from gold.photo_features``
without knowing where the lake is.  DuckDB here has no Delta (or httpfs) extension - the
duckdb-extension wheels only exist for other DuckDB versions and the machines are offline - so:

* ``views`` (local lakes): each view reads the parquet files of the table's current Delta
  version with ``read_parquet([...])``.  It stays cheap and shares the lake's files, but it is
  pinned to the version exported: re-run the export after new commits (a vacuum that deletes
  old files breaks old views).  Tables whose Delta features parquet alone cannot honour
  (deletion vectors, column mapping) are copied instead.
* ``tables`` (always for s3:// lakes, or ``materialize=True``): the rows are copied into the
  file, a self-contained snapshot that needs no credentials.

``_catalog.tables`` in the file lists every table with its Delta version and how it was exported.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, Field

from ingest.errors import ConfigError
from ingest.lake import Lake, TableId

ExportKind = Literal["view", "table"]
_UNSUPPORTED_FEATURES = {"deletionVectors", "columnMapping"}


class ExportedTable(BaseModel):
    table: str
    version: int
    kind: ExportKind
    files: int


class CatalogExport(BaseModel):
    path: str
    lake: str
    tables: list[ExportedTable] = Field(default_factory=list)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _needs_copy(dt) -> bool:
    proto = dt.protocol()
    features = set(proto.reader_features or []) | set(proto.writer_features or [])
    return bool(features & _UNSUPPORTED_FEATURES)


def parquet_scan(lake: Lake, dt) -> str | None:
    """``read_parquet([...])`` over the data files of ``dt``'s version, for DuckDB's own parquet
    reader (row-group pruning by statistics, filters evaluated before other columns are read);
    None when it cannot read the table: an S3 lake (no httpfs offline), no files, or Delta
    features parquet alone cannot honour (deletion vectors, column mapping)."""
    if lake.is_s3 or _needs_copy(dt):
        return None
    files = dt.file_uris()
    if not files:
        return None
    file_list = ", ".join(_sql_str(f.removeprefix("file://")) for f in files)
    # partition values live in the file paths; without partitions a `key=value` directory
    # above the lake must not become a column
    hive = "true" if dt.metadata().partition_columns else "false"
    return f"read_parquet([{file_list}], hive_partitioning = {hive}, union_by_name = true)"


def export_catalog(
    lake: Lake,
    dest: str | os.PathLike[str],
    *,
    materialize: bool = False,
    overwrite: bool = False,
    tables: list[str] | None = None,
) -> CatalogExport:
    """Write ``dest`` (a new DuckDB file) with one ``layer.name`` relation per lake table.

    The file is built next to ``dest`` and renamed into place, so a failed export leaves no
    half-written catalog.
    """
    import duckdb

    path = Path(dest).expanduser().resolve()
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists: pass --force to replace it")
    if not path.parent.is_dir():
        raise ConfigError(f"directory {path.parent} does not exist: create it first")
    ids = [TableId.parse(t) for t in tables] if tables else lake.list_tables()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    result = CatalogExport(path=str(path), lake=lake.uri)
    con = duckdb.connect(str(tmp))
    try:
        con.execute("set TimeZone = 'UTC'")
        for tid in ids:
            dt = lake.delta_table(tid)
            con.execute(f'create schema if not exists "{tid.layer}"')
            target = f'"{tid.layer}"."{tid.name}"'
            files = dt.file_uris()
            scan = None if materialize else parquet_scan(lake, dt)
            kind: ExportKind = "table" if scan is None else "view"
            if scan is not None:
                con.execute(f"create view {target} as select * from {scan}")
            else:
                # copied rows (or an empty table with the right columns)
                kind = "table"
                con.register("__export", dt.to_pyarrow_dataset())
                con.execute(f"create table {target} as select * from __export")
                con.unregister("__export")
            result.tables.append(ExportedTable(table=str(tid), version=dt.version(), kind=kind, files=len(files)))
        con.execute('create schema if not exists "_catalog"')
        meta = pa.Table.from_pylist(
            [{**t.model_dump(), "lake": lake.uri, "exported_at": datetime.now(UTC)} for t in result.tables],
            schema=pa.schema(
                [
                    ("table", pa.string()),
                    ("version", pa.int64()),
                    ("kind", pa.string()),
                    ("files", pa.int64()),
                    ("lake", pa.string()),
                    ("exported_at", pa.timestamp("us", tz="UTC")),
                ]
            ),
        )
        con.register("__meta", meta)
        con.execute('create table "_catalog"."tables" as select * from __meta')
        con.unregister("__meta")
        con.execute("checkpoint")
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    os.replace(tmp, path)
    return result
