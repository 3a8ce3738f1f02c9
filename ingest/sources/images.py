"""Image files (local directory or ``s3://bucket/prefix``) -> a bronze Delta table, one row per
distinct content.

The bytes are stored in the row (``content``), so a pinned snapshot keeps returning them after the
source file changes or is deleted.  Content is keyed by sha256: a rename, copy or re-run adds
nothing.  All writers of one table serialise on the app id ``images:<table>`` (a batch counter):
two concurrent runs conflict in Delta, the loser looks its batch's hashes up again (in the files
the winner added, too) and commits only what is still new, so the same content is never stored
twice.  A batch's files are written once (``ingest.staging``): a lost race re-commits them unless
some of their contents are stored now.  Lookups and the skip of unchanged files cost what the batch holds, not what the table
holds (``ingest.sources.seen``).  Unreadable or truncated images go to
``<table>_quarantine`` once per content hash, one commit per batch (its own batch counter there).

Width and height come from the header; every image is still decoded once, because only a decode
finds a truncated JPEG, GIF, TIFF or BMP (``verify()`` passes them).  Decoding is bounded: at most
``INGEST_IMAGE_DECODE_BYTES`` of pixels are in memory at once, JPEGs decode at 1/8 scale (the
whole entropy-coded stream is still read), and Pillow's decompression-bomb limit quarantines
images too large to decode.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ingest.delta import CHECKPOINT_INTERVAL, ensure_table, keep_checkpointed
from ingest.lake import Lake, TableId, ingest_target
from ingest.progress import progress_bar
from ingest.runlog import track
from ingest.sources.batches import Batch, BatchCommitter
from ingest.sources.files import SourceFile, is_s3, list_source, read_bytes, s3_client
from ingest.sources.quarantine import Bad
from ingest.sources.result import IngestResult, Tally
from ingest.sources.seen import Manifest, StoredKeys
from ingest.sources.util import env_int, utcnow
from ingest.staging import StagedFiles, discard_staged, not_stageable, stage_files

if TYPE_CHECKING:
    from ingest.partition import FileGroup

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")

IMAGES_SCHEMA = pa.schema(
    [
        ("source_uri", pa.string()),
        ("sha256", pa.string()),
        ("size_bytes", pa.int64()),
        ("format", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("source_mtime", pa.timestamp("us", tz="UTC")),
        ("ingest_run_id", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("content", pa.binary()),
    ]
)
# A checkpoint every 10 commits (delta-rs's default is 100): opening the table, and every app-id
# lookup on it, replays the commits since the last checkpoint, one a batch (``keep_checkpointed``
# does the same for tables made before).
IMAGES_TABLE_CONFIG = {"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)}
# Bytes of content in a parquet row group: the writer holds a whole row group encoded, so a
# 64 MB batch in one group cost ~200 MB more memory than in groups of 8 MB (~95 MB), and a
# reader of one image reads its row group.
ROW_GROUP_BYTES = 8 << 20
BINARY_ARRAY_BYTES = 2**31 - 1  # a binary array's int32 offsets address this much content


@dataclass
class _Fetched:
    file: SourceFile
    data: bytes
    sha256: str
    fmt: str | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None


class DecodeBudget:
    """Decoded pixel bytes in memory across worker threads: an image waits until its pixels fit
    (one larger than the whole budget decodes alone), so many big images never decode at once."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, n: int) -> Iterator[None]:
        n = min(n, self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


def decoded_bytes(mode: str, size: tuple[int, int]) -> int:
    """Bytes Pillow allocates for an image (multi-band pixels are stored in 4 bytes)."""
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return size[0] * size[1] * per_pixel


_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def _reason(exc: BaseException) -> str:
    """A quarantine reason that is the same for the same bytes (no object addresses)."""
    text = _OBJECT_REPR.sub("", str(exc).splitlines()[0] if str(exc) else "").strip()
    return f"not a readable image: {type(exc).__name__}: {text}".rstrip(": ")


def inspect_image(data: bytes, *, budget: DecodeBudget | None = None) -> tuple[str, int, int]:
    """(format, width, height) of a decodable image; raises ValueError for a corrupt one.

    The size is the header's (stored orientation); the decode only proves the pixels are all there.
    """
    from PIL import Image

    if not data:
        raise ValueError("not a readable image: empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = (im.format or "").lower(), im.size
            if fmt in ("jpeg", "mpo"):  # (MPO: a camera's multi-picture JPEG)
                im.draft(None, (1, 1))  # DCT scaling: 1/64 of the pixels, every byte still decoded
            with budget.hold(decoded_bytes(im.mode, im.size)) if budget else contextlib.nullcontext():
                try:
                    im.load()  # a truncated file fails here, not at open()
                finally:
                    im.close()  # free the pixels before the budget is released
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad input
        raise ValueError(_reason(exc)) from None
    if not fmt:
        raise ValueError("not a readable image: unknown format")
    return fmt, w, h


def _fetch(lake: Lake, f: SourceFile, client: Any, budget: DecodeBudget) -> _Fetched:
    data = read_bytes(lake, f, client)
    out = _Fetched(f, data, hashlib.sha256(data).hexdigest())
    try:
        out.fmt, out.width, out.height = inspect_image(data, budget=budget)
    except ValueError as exc:
        out.error = str(exc)
    return out


def _fetch_run(lake: Lake, files: list[SourceFile], client: Any, budget: DecodeBudget) -> list[_Fetched]:
    return [_fetch(lake, f, client, budget) for f in files]


def _binary_column(values: list[bytes]) -> pa.Array | pa.ChunkedArray:
    """``values`` as one binary array, copied once into a buffer of their exact total size.

    Arrow's builder (``pa.array``, ``from_pylist``) grows its data buffer by doubling: a 64 MB
    batch touched ~128 MB of fresh memory and copied half of it twice, and zeroing fresh pages
    was the committing thread's largest cost (``bench/bench_fanout.py``)."""
    import numpy as np

    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    if offsets[-1] > BINARY_ARRAY_BYTES:  # more than one binary array holds: Arrow's builder chunks it
        return pa.array(values, pa.binary())
    data = pa.allocate_buffer(int(offsets[-1]))
    view = memoryview(data).cast("B")
    for value, start, end in zip(values, offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        view[start:end] = value
    return pa.Array.from_buffers(pa.binary(), len(values), [None, pa.py_buffer(offsets.astype(np.int32)), data])


def _chunks(files: list[SourceFile], max_files: int, max_bytes: int) -> Iterator[list[SourceFile]]:
    chunk: list[SourceFile] = []
    size = 0
    for f in files:
        if chunk and (len(chunk) >= max_files or size + f.size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(f)
        size += f.size
    if chunk:
        yield chunk


def ingest_images(
    lake: Lake,
    src: str,
    *,
    table: str = "bronze.images",
    progress: bool = False,
    partition: FileGroup | None = None,
) -> IngestResult:
    """Load every image under ``src`` (or one ``partition`` of them) whose content the table does
    not hold yet."""
    tid = ingest_target(table)
    tally = Tally()
    with track(lake, command="images", source=src, target=str(tid), counts=tally) as run:
        listed = list_source(lake, src)
        listed = partition.select(listed) if partition else listed
        files = [f for f in listed if f.uri.lower().endswith(IMAGE_EXTENSIONS)]
        # shallow paths first: an original is preferred over a copy in a sub-folder
        files.sort(key=lambda f: (f.uri.count("/"), f.uri))
        writer = _Writer(lake, tid, run.run_id, tally)
        manifest = Manifest(lake, table=tid, source=src, run_id=run.run_id)
        unchanged = manifest.unchanged(files)
        todo = [f for f in files if f.uri not in unchanged]
        writer.tally.skipped += len(files) - len(todo)
        files_total, files = len(files), todo
        # object storage: many requests in flight; local files: one fetching thread beside the
        # committing one, since more only contend for the GIL (6,000 local PNGs: 2.9 s with 1,
        # 3.8 s with 16; bench/bench_fanout.py).  INGEST_IMAGE_WORKERS sets it (e.g. for NFS)
        workers = env_int("INGEST_IMAGE_WORKERS", 16 if is_s3(src) else 1)
        client = s3_client(lake, pool=workers + 4) if is_s3(src) else None
        budget = DecodeBudget(env_int("INGEST_IMAGE_DECODE_BYTES", 256 << 20))
        # a batch is one commit: up to 4,096 files or 64 MB.  Commits are few because each one
        # costs delta-rs a listing of the whole log on a local lake (~40 ms at 2,000 entries), and
        # small images in 512-file batches made a commit per ~300 KB (1M images: 1,954 commits)
        chunks = list(
            _chunks(files, env_int("INGEST_IMAGE_BATCH_FILES", 4096), env_int("INGEST_IMAGE_BATCH_BYTES", 64 << 20))
        )
        with ThreadPoolExecutor(workers) as pool, progress_bar(progress, f"images -> {tid}", total=len(files)) as bar:

            def submit(chunk: list[SourceFile]) -> list[Future[list[_Fetched]]]:
                # runs of files, ~16 per thread: a task per file cost the committing thread more
                # CPU in futures and wake-ups than the fetching thread spent reading
                run = max(1, len(chunk) // (workers * 16))
                return [
                    pool.submit(_fetch_run, lake, chunk[j : j + run], client, budget) for j in range(0, len(chunk), run)
                ]

            pending = submit(chunks[0]) if chunks else []
            for i in range(len(chunks)):
                fetched = [x for fut in pending for x in fut.result()]
                pending = submit(chunks[i + 1]) if i + 1 < len(chunks) else []  # read ahead while writing
                writer.write(fetched)
                manifest.add(x.file for x in fetched)  # after their commits: a recorded file is in
                bar.advance(len(fetched))
        manifest.flush()
        writer.stored.save()  # the hashes read this run, for the next run's lookups
        writer.stored_bad.save()
        run.details = {"files": files_total, "read": len(files), "ignored_not_images": len(listed) - files_total}
        result = writer.tally.finish(lake, tid, run, snapshot=writer.dt)
    return result


class _Writer:
    """Commits fetched images: corrupt ones to the quarantine, each content once, then the new
    contents to the table, each content once (``StoredKeys`` says what either holds)."""

    def __init__(self, lake: Lake, tid: TableId, run_id: str, tally: Tally) -> None:
        self.lake, self.tid, self.run_id = lake, tid, run_id
        self.app_id = f"images:{tid}"
        self.committer = BatchCommitter(lake, tid, run_id=run_id, tally=tally, app_id=self.app_id)
        self.stored = StoredKeys(lake, tid, "sha256", app_id=self.app_id)
        # source_ref is the content hash in the quarantine table (earlier versions too)
        self.stored_bad = StoredKeys(lake, self.committer.quarantine, "source_ref", app_id=self.app_id)
        self.dt: Any = None  # the table, loaded once and updated per batch
        self.checkpointed: int | None = None  # a table made without IMAGES_TABLE_CONFIG: its last checkpoint
        # the batch's new hashes and its files, written and not committed yet (None: rows to commit)
        self._staged: tuple[frozenset[str], StagedFiles | None] | None = None
        self.tally = tally

    def write(self, fetched: list[_Fetched]) -> None:
        self.tally.bytes_read += sum(len(x.data) for x in fetched)
        bad = [x for x in fetched if x.error is not None]
        if bad:  # first, as every ingester does: a crash in between re-reads both tables
            self.tally.skipped += self.committer.retry(lambda: self._quarantine(bad))
        good = [x for x in fetched if x.error is None]
        self.tally.skipped += self.committer.retry(lambda: self._commit(good))

    def _quarantine(self, bad: list[_Fetched]) -> int:
        """One commit for the batch's corrupt files whose content is not quarantined yet; returns
        how many were quarantined already."""
        # the batch number, the quarantined hashes and the commit from one snapshot of the
        # quarantine: a writer that commits after it, under any number, conflicts with ours and
        # this re-runs (a fresh snapshot at the commit missed one made under a smaller number)
        quarantine = self.committer.quarantine_snapshot()
        seq = self.committer.sequence(quarantine=quarantine)
        known_bad = self.stored_bad.held((x.sha256 for x in bad), snapshot=quarantine)
        new: dict[str, Bad] = {}
        for x in bad:
            if x.sha256 not in known_bad and x.sha256 not in new:
                new[x.sha256] = Bad(x.file.uri, x.sha256, x.error or "", x.data)
        if new:
            self.committer.commit(Batch(seq, bad=list(new.values())), quarantine=quarantine)
            self.stored_bad.committed(seq, new.keys())
        return len(bad) - len(new)

    def _snapshot(self) -> Any:
        """The table's latest version, kept loaded across batches (created empty first)."""
        if self.dt is None:
            ensure_table(self.lake, self.tid, IMAGES_SCHEMA, configuration=IMAGES_TABLE_CONFIG)
            self.dt = self.lake.delta_table(self.tid)
            if "delta.checkpointInterval" not in self.dt.metadata().configuration:
                self.checkpointed = keep_checkpointed(self.lake, self.tid, self.dt)
        else:
            self.dt.update_incremental()  # reads only the commits since the last batch
            if self.checkpointed is not None:
                self.checkpointed = keep_checkpointed(self.lake, self.tid, self.dt, since=self.checkpointed)
        return self.dt

    def _commit(self, good: list[_Fetched]) -> int:
        """One commit of the batch's new contents; returns how many the table held already.

        The rows are written once (``ingest.staging``): when another writer takes the batch
        number first, this runs again, looks the hashes up in what it committed, and commits the
        same files under the next number, unless some of their contents are stored now."""
        # the batch number, the stored hashes and the commit from one snapshot: a writer that
        # commits after it used the same number, so our commit is skipped or conflicts
        # (BatchTaken / a Delta conflict) and this batch is re-checked
        if not good:
            return 0
        dt = self._snapshot()
        seq = self.committer.sequence(snapshot=dt)
        known = self.stored.held((x.sha256 for x in good), snapshot=dt)
        new: dict[str, _Fetched] = {}
        for x in good:
            if x.sha256 not in known and x.sha256 not in new:
                new[x.sha256] = x
        dupes = len(good) - len(new)
        staged = self._staged
        if staged is not None and staged[0] != frozenset(new):  # a concurrent writer stored some of them
            if staged[1] is not None:
                discard_staged(self.lake, staged[1])
            self._staged = staged = None
        if not new:
            return dupes
        if staged is None:
            staged = self._staged = (frozenset(new), self._stage(list(new.values()), dt))
            if staged[1] is not None and self._moved(dt):  # committed to while we wrote: check again
                return self._commit(good)  # now, not after a commit that conflicts and a backoff
        meta = {"run_id": self.run_id}
        batch = Batch(seq, staged=staged[1], metadata=meta) if staged[1] else Batch(seq, self._rows(new), metadata=meta)
        done = self.committer.commit(batch, snapshot=dt)
        self._staged = None
        self.stored.committed(seq, new.keys(), version=done.version)
        return dupes

    @staticmethod
    def _moved(dt: Any) -> bool:
        """Whether the table has commits past the snapshot ``dt`` (which then reads them)."""
        version = dt.version()
        dt.update_incremental()
        return bool(dt.version() != version)

    def _rows(self, new: dict[str, _Fetched]) -> pa.Table:
        now: datetime = utcnow()
        ordered = sorted(new.values(), key=lambda x: x.sha256)  # row-group statistics by hash: lookups skip more
        ts = IMAGES_SCHEMA.field("ingested_at").type
        columns = {
            "source_uri": pa.array([x.file.uri for x in ordered], pa.string()),
            "sha256": pa.array([x.sha256 for x in ordered], pa.string()),
            "size_bytes": pa.array([len(x.data) for x in ordered], pa.int64()),
            "format": pa.array([x.fmt for x in ordered], pa.string()),
            "width": pa.array([x.width for x in ordered], pa.int32()),
            "height": pa.array([x.height for x in ordered], pa.int32()),
            "source_mtime": pa.array([x.file.mtime for x in ordered], ts),
            "ingest_run_id": pa.array([self.run_id] * len(ordered), pa.string()),
            "ingested_at": pa.array([now] * len(ordered), ts),
            "content": _binary_column([x.data for x in ordered]),
        }
        return pa.Table.from_arrays([columns[name] for name in IMAGES_SCHEMA.names], schema=IMAGES_SCHEMA)

    def _stage(self, new: list[_Fetched], dt: Any) -> StagedFiles | None:
        """The batch's rows written as staged files; None for a table made by an older version
        without every column (its batch is a commit of rows, which merges the schema) or one
        with rules only delta-rs' writer enforces (``not_stageable``)."""
        if not set(IMAGES_SCHEMA.names) <= set(pa.schema(dt.schema().to_arrow()).names) or not_stageable(dt):
            return None
        size = sum(len(x.data) for x in new)
        rows_per_group = max(1, len(new) * ROW_GROUP_BYTES // max(size, 1))
        return stage_files(
            self.lake, self.tid, self._rows({x.sha256: x for x in new}), snapshot=dt, row_group_rows=rows_per_group
        )
