"""What a table already holds, answered at a cost that follows the new records, not the table.

``StoredKeys`` says which of a batch's keys (content hashes) a table holds: it searches the
table with the batch's keys as a pushed-down filter, follows other writers through their commit
log entries only, and keeps just this run's own keys in memory.  ``Manifest`` says which listed
source files a table has taken in already (unchanged size and mtime), from a per-source record
in ``_meta.manifests``, so a re-run neither reads those files nor the table.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa

from ingest.delta import commit_actions, write_batch
from ingest.lake import Lake, TableId, plain_dataset
from ingest.sources import SourceFile, ensure_table, is_s3, utcnow


class StoredKeys:
    """Which of a batch's keys the table ``table`` holds in ``column``.

    The table as of the first lookup is one dataset, searched with ``column IN (batch keys)``:
    Delta file statistics and Parquet row-group statistics skip what cannot match, so once
    ``ingest optimize`` has z-ordered the table by the key a lookup reads a few row groups.  Keys
    this run commits (``committed``) are kept in memory; commits by other writers since are read
    from the log, and only the files they added are searched.  Memory holds this run's keys and
    a list of files, never the table's keys.
    """

    def __init__(self, lake: Lake, table: str | TableId, column: str, *, app_id: str) -> None:
        self.lake, self.tid, self.column, self.app_id = lake, TableId.parse(table), column, app_id
        self.version: int | None = None  # the last table version followed
        self.datasets: list[Any] = []
        self.ours: set[str] = set()
        self.our_batches: set[int] = set()

    def held(self, keys: Iterable[str], *, snapshot: Any = None) -> set[str]:
        """The subset of ``keys`` the table holds as of ``snapshot`` (a loaded DeltaTable), or now."""
        import pyarrow.compute as pc

        self._follow(snapshot)
        wanted = set(keys)
        found = wanted & self.ours
        rest = pa.array(sorted(wanted - found), pa.string())
        if len(rest):
            expr = pc.field(self.column).isin(rest)
            for ds in self.datasets:
                found.update(ds.to_table(columns=[self.column], filter=expr)[self.column].to_pylist())
        return found

    def committed(self, batch_version: int, keys: Iterable[str]) -> None:
        """This run committed ``keys`` as batch ``batch_version`` of its app id."""
        self.ours.update(keys)
        self.our_batches.add(batch_version)

    def _follow(self, dt: Any) -> None:
        if dt is None:
            if not self.lake.table_exists(self.tid):
                return
            dt = self.lake.delta_table(self.tid)
        latest = dt.version()
        if latest == self.version:
            return
        if self.version is None:
            self.datasets.append(plain_dataset(dt.to_pyarrow_dataset()))
        else:
            added = [p for v in range(self.version + 1, latest + 1) for p in self._added_by_others(v)]
            if added:
                self.datasets.append(self._files(added))
        self.version = latest

    def _added_by_others(self, version: int) -> list[str]:
        """Data files commit ``version`` added, unless it is one of ours (our keys are in memory)."""
        actions = commit_actions(self.lake, self.tid, version)
        for a in actions:
            txn = a.get("txn")
            if txn and txn.get("appId") == self.app_id and txn.get("version") in self.our_batches:
                return []
        # dataChange=false: the same rows moved (optimize, type rewrites), already searched
        return [a["add"]["path"] for a in actions if "add" in a and a["add"].get("dataChange", True)]

    def _files(self, paths: list[str]) -> Any:
        import pyarrow.dataset as pads

        root = self.lake.table_uri(self.tid).rstrip("/")
        full = [self.lake.fs_path(p if "://" in p else f"{root}/{unquote(p)}") for p in paths]
        schema = pa.schema([(self.column, pa.string())])
        return plain_dataset(pads.dataset(full, schema=schema, format="parquet", filesystem=self.lake.pyarrow_filesystem()))


MANIFESTS_TABLE = TableId("_meta", "manifests")
MANIFEST_SCHEMA = pa.schema(
    [
        ("table_id", pa.string()),  # the Delta table's id: a table dropped and made again starts empty
        ("table_name", pa.string()),
        ("source", pa.string()),  # the source root as given (resolved locally)
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)
MANIFEST_FLUSH = 8192  # files recorded per manifest commit (and one at the end of the run)


def source_key(src: str) -> str:
    """One spelling per source root: a local path resolved, an S3 prefix without a trailing slash."""
    return src.rstrip("/") if is_s3(src) else str(Path(src).expanduser().resolve())


class Manifest:
    """The files of one source that a table has fully taken in, so a re-run skips them unread.

    A file is recorded only after the commits that hold its content (stored, a duplicate of
    stored content, or quarantined) have landed, so a file the manifest names is never lost; a
    run killed before it records re-reads its last files and deduplicates them by content.
    Concurrent runs append their records independently (a file recorded twice is harmless).
    """

    def __init__(self, lake: Lake, *, table: TableId, source: str, run_id: str) -> None:
        self.lake, self.table, self.source, self.run_id = lake, table, source_key(source), run_id
        self.pending: list[SourceFile] = []

    def _table_id(self) -> str | None:
        return self.lake.delta_table(self.table).metadata().id if self.lake.table_exists(self.table) else None

    def unchanged(self, files: list[SourceFile]) -> set[str]:
        """URIs of ``files`` recorded with the same size and mtime (a join in Arrow, not Python)."""
        import pyarrow.compute as pc

        table_id = self._table_id()
        if not files or table_id is None or not self.lake.table_exists(MANIFESTS_TABLE):
            return set()
        stored = self.lake.dataset(MANIFESTS_TABLE).to_table(
            columns=["uri", "size", "mtime"],
            filter=(pc.field("table_id") == table_id) & (pc.field("source") == self.source),
        )
        listed = pa.table(
            {"uri": [f.uri for f in files], "size": [f.size for f in files], "mtime": [f.mtime for f in files]},
            schema=pa.schema([MANIFEST_SCHEMA.field(c) for c in ("uri", "size", "mtime")]),
        )
        return set(listed.join(stored, keys=["uri", "size", "mtime"], join_type="left semi")["uri"].to_pylist())

    def add(self, files: Iterable[SourceFile]) -> None:
        """Record ``files`` (their content is committed); written in blocks of ``MANIFEST_FLUSH``."""
        self.pending.extend(files)
        if len(self.pending) >= MANIFEST_FLUSH:
            self.flush()

    def flush(self) -> None:
        table_id = self._table_id()
        if not self.pending or table_id is None:
            return
        now: datetime = utcnow()
        data = pa.table(
            {
                "table_id": [table_id] * len(self.pending), "table_name": [str(self.table)] * len(self.pending),
                "source": [self.source] * len(self.pending), "uri": [f.uri for f in self.pending],
                "size": [f.size for f in self.pending], "mtime": [f.mtime for f in self.pending],
                "run_id": [self.run_id] * len(self.pending), "recorded_at": [now] * len(self.pending),
            },
            schema=MANIFEST_SCHEMA,
        )
        ensure_table(self.lake, MANIFESTS_TABLE, MANIFEST_SCHEMA)
        write_batch(self.lake, MANIFESTS_TABLE, data, metadata={"run_id": self.run_id})
        self.pending = []
