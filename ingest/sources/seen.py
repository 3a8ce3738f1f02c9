"""What a table already holds, answered at a cost that follows the new records, not the table.

``StoredKeys`` says which of a batch's keys (content hashes) a table holds: an index of the
stored hashes' prefixes (``ingest.sources.keyindex``), saved beside the table between runs,
names the few files to search with the batch's keys as a pushed-down filter; it follows other
writers through their commit log entries only, and keeps this run's own keys in memory.  ``Manifest`` says which listed
source files a table has taken in already (unchanged size and mtime), from a per-source record
in ``_meta.manifests``, so a re-run neither reads those files nor the table.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa

from ingest.conform import lake_schema
from ingest.delta import commit_actions, ensure_table, is_type_swap, moves_rows, write_batch
from ingest.lake import Lake, TableId, plain_dataset
from ingest.sources.files import SourceFile, is_s3
from ingest.sources.keyindex import PrefixIndex, SavedPrefixes, digest_prefixes, key_prefix
from ingest.sources.util import utcnow


class StoredKeys:
    """Which of a batch's keys the table ``table`` holds in ``column``.

    Every data file of the table is known by its path and its ``column`` min/max statistics
    (from the snapshot at the first lookup, then from the log entries of later commits).  The
    first lookup that reaches a file reads its keys once into a ``PrefixIndex`` (the first 64
    bits of each hex digest, 12 bytes a row); from then on a lookup is a binary search per key,
    and only the files whose index holds a key's prefix are searched, with ``column IN (keys)``
    pushed down, for the keys that matched: a batch costs what it holds, not what the table
    holds (files with keys that are not hex digests are searched every time, as before).  Keys
    this run commits (``committed``) are kept in memory and its own commits are not searched
    again.  Memory holds a line and a footer per file, the index and this run's keys.
    """

    def __init__(self, lake: Lake, table: str | TableId, column: str, *, app_id: str) -> None:
        self.lake, self.tid, self.column, self.app_id = lake, TableId.parse(table), column, app_id
        self.version: int | None = None  # the last table version followed
        self.files: list[tuple[str, str | None, str | None]] = []  # (path, min, max) to search
        self.ours: set[str] = set()
        self.our_batches: set[int] = set()
        self._root = lake.table_uri(self.tid).rstrip("/")
        self._fragments: dict[str, Any] = {}  # path -> its Parquet fragment, footer read once per run
        self._indexed: set[str] = set()
        self._index = PrefixIndex()  # the hash prefixes of the files searched so far
        self._unindexed: set[str] = set()  # files whose keys are not all hex digests: searched every time
        self._log_paths: dict[str, str] = {}  # file path -> the path the Delta log names it by
        self._saved = SavedPrefixes(lake.pyarrow_filesystem(), lake.fs_path(self._root), column)
        self._loaded = False  # whether what earlier runs saved is in the index (at the first lookup)
        self._unsaved: dict[str, Any] = {}  # log path -> prefixes read from the data file this run
        self._our_commits: list[tuple[int, list[str]]] = []  # (table version, keys) of our commits
        self._table_schema: pa.Schema | None = None

    def held(self, keys: Iterable[str], *, snapshot: Any = None) -> set[str]:
        """The subset of ``keys`` the table holds as of ``snapshot`` (a loaded DeltaTable), or now."""
        self._follow(snapshot)
        wanted = set(keys)
        found = wanted & self.ours
        paths, search = self._where(sorted(wanted - found))
        if paths and search:
            found.update(self._search(paths, search).column(self.column).to_pylist())
        return found

    def rows(self, keys: Iterable[str], *, columns: list[str], snapshot: Any = None) -> pa.Table:
        """``columns`` of the rows whose key is one of ``keys``, as of ``snapshot`` (or now),
        read only from the files that may hold them.  Keys this run committed are not looked
        up (their rows are not in ``files``): a table read through a fresh instance."""
        self._follow(snapshot)
        paths, search = self._where(sorted(set(keys)))
        return self._search(paths, search if paths else [], columns)

    def _where(self, rest: list[str]) -> tuple[list[str], list[str]]:
        """The files to search for the sorted ``rest`` keys, and the keys to search them with."""
        paths = [path for path, lo, hi in self.files if _overlaps(rest, lo, hi)] if rest else []
        if not paths:
            return [], []
        prefixes = [key_prefix(k) for k in rest]
        if any(p is None for p in prefixes):  # not a hex digest: search every file
            return paths, rest
        self._add_to_index([p for p in paths if p not in self._indexed and p not in self._unindexed])
        holding = self._index.files_holding(prefixes)  # type: ignore[arg-type]  # no None left (checked)
        search = [p for p in paths if p in self._unindexed or p in holding]
        candidates = {i for p in search for i in holding.get(p, ())}
        keys = rest if any(p in self._unindexed for p in search) else [rest[i] for i in sorted(candidates)]
        return search, keys

    def _add_to_index(self, paths: list[str]) -> None:
        """Take the hashes of files not indexed yet into the prefix index: saved ones from the
        saved index, the rest read from their data file once per run."""
        import numpy as np

        if not self._loaded and paths:  # the first time: everything earlier runs saved, at once
            self._loaded = True
            by_log_path = {log: path for path, log in self._log_paths.items()}
            for saved_paths, prefixes, files in self._saved.load(set(by_log_path)):
                full = [by_log_path[p] for p in saved_paths]
                self._index.add_sorted(full, prefixes, files)
                self._indexed.update(full)
        for path in (p for p in paths if p not in self._indexed):
            parts: list[Any] | None = []
            try:  # a batch at a time: a large file's hashes are never all decoded at once
                for batch in self._fragment(path).to_batches(
                    columns=[self.column], batch_size=16_384, use_threads=False
                ):
                    got = digest_prefixes(batch.column(0))
                    if got is None:
                        parts = None
                        break
                    parts.append(got)  # type: ignore[union-attr]  # None breaks out of the loop
            except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):  # view-typed files
                parts = None
            if parts is None:
                self._unindexed.add(path)
            else:
                read = np.concatenate(parts) if parts else np.empty(0, np.uint64)
                self._index.add(path, read)
                self._indexed.add(path)
                if path in self._log_paths:
                    self._unsaved[self._log_paths[path]] = read

    def index_all(self) -> None:
        """Take every data file of the table into the index now (saved or read)."""
        self._follow(None)
        self._add_to_index([p for p, _, _ in self.files if p not in self._indexed and p not in self._unindexed])

    def save_added(self, since: int) -> None:
        """Read and save the keys of the live files that commits after version ``since`` added,
        without loading what is saved (its entries stay as they are)."""
        self._follow(None)
        if self.version is None:
            return
        live = {path for path, _, _ in self.files}
        added = [
            self._path(a["add"]["path"])
            for v in range(since + 1, self.version + 1)
            for a in commit_actions(self.lake, self.tid, v)
            if "add" in a
        ]
        self._loaded = True  # only the new files' keys are wanted
        self._add_to_index([p for p in dict.fromkeys(added) if p in live])
        self.save()

    def save(self, *, merge: bool = False) -> None:
        """Save the prefixes of the files this run read or committed, so the next run does not
        read them (a failed save only costs the next run those reads).  A commit's keys are
        saved for each file it added (one, unless a batch outgrew a file): a lookup then
        searches the batch's files, never misses one."""
        entries = dict(self._unsaved)
        try:
            for version, keys in self._our_commits:
                prefixes = digest_prefixes(pa.array(keys, pa.string()))
                if prefixes is None:
                    continue  # keys that are no digests: those files are searched every time
                for add in (a["add"] for a in commit_actions(self.lake, self.tid, version) if "add" in a):
                    self._path(add["path"])
                    entries[add["path"]] = prefixes
            self._saved.save(entries, live=set(self._log_paths.values()), merge=merge)
        except (OSError, pa.ArrowInvalid):
            return
        self._unsaved, self._our_commits = {}, []

    def _fragment(self, path: str) -> Any:
        """The file's Parquet fragment; its footer is read once per run, later searches reuse it."""
        import pyarrow.dataset as pads

        if path not in self._fragments:
            fragment = pads.ParquetFileFormat().make_fragment(path, filesystem=self.lake.pyarrow_filesystem())
            fragment.ensure_complete_metadata()
            self._fragments[path] = fragment
        return self._fragments[path]

    def committed(self, batch_version: int, keys: Iterable[str], *, version: int | None = None) -> None:
        """This run committed ``keys`` as batch ``batch_version`` of its app id, in table
        ``version`` (given: ``save`` saves the prefixes of the files that commit added)."""
        keys = list(keys)
        self.ours.update(keys)
        self.our_batches.add(batch_version)
        if version is not None:
            self._our_commits.append((version, keys))

    def _search(self, paths: list[str], keys: list[str], columns: list[str] | None = None) -> pa.Table:
        """``columns`` (the key alone by default) of the rows of ``paths`` whose key is in ``keys``."""
        import pyarrow.compute as pc
        import pyarrow.dataset as pads

        if columns is None:
            columns, schema = [self.column], pa.schema([(self.column, pa.string())])
        else:  # the table's types (plain, not view types), whatever each file holds
            whole = self._schema()
            schema = pa.schema([whole.field(c) for c in dict.fromkeys([*columns, self.column])])
        if not paths or not keys:
            return schema.empty_table().select(columns)
        fs = self.lake.pyarrow_filesystem()
        fragments = [self._fragment(p) for p in paths]
        ds = pads.FileSystemDataset(fragments, schema, pads.ParquetFileFormat(), fs)
        expr = pc.field(self.column).isin(pa.array(keys, pa.string()))
        try:
            return ds.to_table(columns=columns, filter=expr)
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):  # view-typed files
            return plain_dataset(ds).to_table(columns=columns, filter=expr)

    def _schema(self) -> pa.Schema:
        """The table's schema at the version followed, in plain types (read once)."""
        if self._table_schema is None:
            dt = self.lake.delta_table(self.tid, version=self.version)
            self._table_schema = lake_schema(pa.schema(dt.schema().to_arrow()))
        return self._table_schema

    def _follow(self, dt: Any) -> None:
        if dt is None:
            if not self.lake.table_exists(self.tid):
                return
            dt = self.lake.delta_table(self.tid)
        latest = dt.version()
        if latest == self.version:
            return
        if self.version is None:
            adds = pa.table(dt.get_add_actions(flatten=True))
            lows, highs = (
                adds[f"{kind}.{self.column}"].to_pylist()
                if f"{kind}.{self.column}" in adds.column_names
                else [None] * adds.num_rows
                for kind in ("min", "max")
            )
            self.files += [
                (self._path(p), lo, hi) for p, lo, hi in zip(adds["path"].to_pylist(), lows, highs, strict=True)
            ]
        else:
            for v in range(self.version + 1, latest + 1):
                self.files += self._added_by_others(v)
        self.version = latest

    def _added_by_others(self, version: int) -> list[tuple[str, str | None, str | None]]:
        """Data files commit ``version`` added, unless it is one of ours (our keys are in memory)."""
        actions = commit_actions(self.lake, self.tid, version)
        for a in actions:
            txn = a.get("txn")
            if txn and txn.get("appId") == self.app_id and txn.get("version") in self.our_batches:
                return []
        out = []
        swap = is_type_swap(actions)
        for add in (a["add"] for a in actions if "add" in a):
            if moves_rows(add, swap=swap):
                continue  # the same rows moved (optimize, type rewrites): already searched
            stats = json.loads(add.get("stats") or "{}")
            lo, hi = (stats.get(k, {}).get(self.column) for k in ("minValues", "maxValues"))
            out.append((self._path(add["path"]), lo, hi))
        return out

    def _path(self, path: str) -> str:
        """The file path of a data file the log names ``path`` (remembered for ``SavedPrefixes``)."""
        full = self.lake.fs_path(path if "://" in path else f"{self._root}/{unquote(path)}")
        self._log_paths[full] = path
        return full


def refresh_saved_keys(
    lake: Lake, table: str | TableId, *, columns: list[str] | None = None, since: int | None = None
) -> None:
    """Bring the saved key index of ``columns`` (or of every column the table keeps one of) up
    to date, so the next lookup reads no data file.  After a rewrite (``ingest optimize``, a
    model's full build): every file is indexed and the saved index becomes one file without the
    files the table no longer holds.  ``since`` a table version: only the live files later
    commits added are read and saved, and the saved index itself is not read (a model's increment)."""
    tid = TableId.parse(table)
    saved = SavedPrefixes.columns(lake.pyarrow_filesystem(), lake.fs_path(lake.table_uri(tid)))
    for column in saved if columns is None else columns:
        keys = StoredKeys(lake, tid, column, app_id="")
        if since is None:
            keys.index_all()
            keys.save(merge=True)
        else:
            keys.save_added(since)


def _overlaps(keys: list[str], lo: str | None, hi: str | None) -> bool:
    """Whether a file whose key statistics are [lo, hi] may hold one of the sorted ``keys``
    (missing statistics: it may)."""
    if lo is None or hi is None:
        return True
    if len(hi) < len(keys[-1]):  # a truncated maximum: every value with its prefix may be there
        hi += "\U0010ffff"
    i = bisect.bisect_left(keys, lo)
    return i < len(keys) and keys[i] <= hi


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
        self._id: str | None = None

    def _table_id(self) -> str | None:
        """The table's id, read once it exists (a table replaced during the run is not followed:
        its records would then name the old id, and a later run just reads those files again)."""
        if self._id is None and self.lake.table_exists(self.table):
            table_id = self.lake.delta_table(self.table).metadata().id  # a UUID string (typed int | None)
            self._id = None if table_id is None else str(table_id)
        return self._id

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
                "table_id": [table_id] * len(self.pending),
                "table_name": [str(self.table)] * len(self.pending),
                "source": [self.source] * len(self.pending),
                "uri": [f.uri for f in self.pending],
                "size": [f.size for f in self.pending],
                "mtime": [f.mtime for f in self.pending],
                "run_id": [self.run_id] * len(self.pending),
                "recorded_at": [now] * len(self.pending),
            },
            schema=MANIFEST_SCHEMA,
        )
        ensure_table(self.lake, MANIFESTS_TABLE, MANIFEST_SCHEMA)
        write_batch(self.lake, MANIFESTS_TABLE, data, metadata={"run_id": self.run_id})
        self.pending = []
