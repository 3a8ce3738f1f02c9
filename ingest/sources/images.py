"""Image files (local directory or ``s3://bucket/prefix``) -> a bronze Delta table, one row per
distinct content.

The bytes are stored in the row (``content``), so a pinned snapshot keeps returning them after the
source file changes or is deleted.  Content is keyed by sha256: a rename, copy or re-run adds
nothing.  All writers of one table serialise on the app id ``images:<table>`` (a batch counter):
two concurrent runs conflict in Delta, the loser re-reads the stored hashes and writes only what
is still new, so the same content is never stored twice.  Unreadable or truncated images go to
``<table>_quarantine`` once per content hash.
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

import pyarrow as pa

from ingest.delta import current_version, write_batch
from ingest.lake import Lake, TableId, ingest_target
from ingest.runlog import track
from ingest.sources import (
    Bad,
    BatchTaken,
    IngestResult,
    SourceFile,
    Tally,
    ensure_table,
    env_int,
    is_s3,
    list_source,
    next_sequence,
    progress_bar,
    read_bytes,
    s3_client,
    utcnow,
    with_commit_retry,
    write_quarantine,
)

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


@dataclass
class _Fetched:
    file: SourceFile
    data: bytes
    sha256: str
    fmt: str | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of a fully decodable image; raises ValueError for a corrupt one."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = (im.format or "").lower(), im.size
            im.load()  # a truncated file fails here, not at open()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad input
        raise ValueError(f"not a readable image: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) from None
    if not fmt:
        raise ValueError("not a readable image: unknown format")
    return fmt, w, h


def _fetch(lake: Lake, f: SourceFile, client: Any) -> _Fetched:
    data = read_bytes(lake, f, client)
    out = _Fetched(f, data, hashlib.sha256(data).hexdigest())
    try:
        out.fmt, out.width, out.height = inspect_image(data)
    except ValueError as exc:
        out.error = str(exc)
    return out


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


def stored_hashes(lake: Lake, table: str | TableId) -> set[str]:
    """Content hashes already in the table (reads only the sha256 column)."""
    if not lake.table_exists(table):
        return set()
    ds = lake.delta_table(table).to_pyarrow_dataset()
    return set(ds.to_table(columns=["sha256"])["sha256"].to_pylist())


def stored_locations(lake: Lake, table: str | TableId) -> set[tuple[str, int, datetime]]:
    """(source_uri, size, mtime) of stored rows: an unchanged file there is skipped without reading it."""
    if not lake.table_exists(table):
        return set()
    t = lake.delta_table(table).to_pyarrow_dataset().to_table(columns=["source_uri", "size_bytes", "source_mtime"])
    return set(zip(t["source_uri"].to_pylist(), t["size_bytes"].to_pylist(), t["source_mtime"].to_pylist()))


def ingest_images(
    lake: Lake, src: str, *, table: str = "bronze.images", progress: bool = False
) -> IngestResult:
    """Load every image under ``src`` whose content the table does not hold yet."""
    tid = ingest_target(table)
    with track(lake, command="images", source=src, target=str(tid)) as run:
        listed = list_source(lake, src)
        files = [f for f in listed if f.uri.lower().endswith(IMAGE_EXTENSIONS)]
        # shallow paths first: an original is preferred over a copy in a sub-folder
        files.sort(key=lambda f: (f.uri.count("/"), f.uri))
        writer = _Writer(lake, tid, run.run_id)
        unchanged = stored_locations(lake, tid)
        todo = [f for f in files if (f.uri, f.size, f.mtime) not in unchanged]
        writer.tally.skipped += len(files) - len(todo)
        files_total, files = len(files), todo
        workers = env_int("INGEST_IMAGE_WORKERS", 16)
        client = s3_client(lake, pool=workers + 4) if is_s3(src) else None
        chunks = list(
            _chunks(files, env_int("INGEST_IMAGE_BATCH_FILES", 512), env_int("INGEST_IMAGE_BATCH_BYTES", 64 << 20))
        )
        with ThreadPoolExecutor(workers) as pool, progress_bar(progress, f"images -> {tid}", total=len(files)) as bar:

            def submit(chunk: list[SourceFile]) -> list[Future[_Fetched]]:
                return [pool.submit(_fetch, lake, f, client) for f in chunk]

            pending = submit(chunks[0]) if chunks else []
            for i in range(len(chunks)):
                fetched = [fut.result() for fut in pending]
                pending = submit(chunks[i + 1]) if i + 1 < len(chunks) else []  # read ahead while writing
                writer.write(fetched)
                bar.advance(len(fetched))
        run.details = {"files": files_total, "read": len(files), "ignored_not_images": len(listed) - files_total}
        result = writer.tally.finish(lake, tid, run)
    return result


class _Writer:
    def __init__(self, lake: Lake, tid: TableId, run_id: str) -> None:
        self.lake, self.tid, self.run_id = lake, tid, run_id
        self.app_id = f"images:{tid}"
        self.known = stored_hashes(lake, tid)
        self.known_version = current_version(lake, tid)
        self.tally = Tally()

    def write(self, fetched: list[_Fetched]) -> None:
        self.tally.bytes_read += sum(len(x.data) for x in fetched)
        for x in fetched:
            if x.error is not None:
                self._quarantine(x)
        good = [x for x in fetched if x.error is None]
        rows, dupes = with_commit_retry(lambda: self._commit(good))
        self.tally.rows += rows
        self.tally.skipped += dupes

    def _quarantine(self, x: _Fetched) -> None:
        n = with_commit_retry(
            lambda: write_quarantine(
                self.lake, self.tid, [Bad(x.file.uri, x.sha256, x.error or "", x.data)],
                run_id=self.run_id, app_id=f"images-quarantine:{self.tid}:{x.sha256}", batch_version=1,
            )
        )
        if n:
            self.tally.quarantined += n
        else:
            self.tally.skipped += 1

    def _commit(self, good: list[_Fetched]) -> tuple[int, int]:
        # the batch number before the stored hashes: a writer that commits in between used the
        # same number, so our commit of it is skipped (BatchTaken) and this batch is re-checked
        seq = next_sequence(self.lake, self.tid, self.app_id)
        version = current_version(self.lake, self.tid)
        if version != self.known_version:  # another writer committed: see its hashes
            self.known = stored_hashes(self.lake, self.tid)
            self.known_version = version
        now: datetime = utcnow()
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for x in good:
            if x.sha256 in self.known or x.sha256 in seen:
                continue
            seen.add(x.sha256)
            rows.append(
                {
                    "source_uri": x.file.uri, "sha256": x.sha256, "size_bytes": len(x.data),
                    "format": x.fmt, "width": x.width, "height": x.height,
                    "source_mtime": x.file.mtime, "ingest_run_id": self.run_id,
                    "ingested_at": now, "content": x.data,
                }
            )
        dupes = len(good) - len(rows)
        if not rows:
            return 0, dupes
        ensure_table(self.lake, self.tid, IMAGES_SCHEMA)
        res = write_batch(
            self.lake, self.tid, pa.Table.from_pylist(rows, schema=IMAGES_SCHEMA),
            app_id=self.app_id, batch_version=seq, metadata={"run_id": self.run_id},
        )
        if res.skipped:  # a concurrent run took this batch number: see what it stored, then retry
            raise BatchTaken(self.app_id)
        self.known |= seen  # (known_version stays behind: the next batch re-reads the hashes)
        return res.rows, dupes
