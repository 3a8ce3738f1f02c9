"""Source files: listing and reading a local directory or an ``s3://`` prefix alike."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from ingest.errors import IngestError, SourceError, TransientError
from ingest.lake import Lake

__all__ = ["SourceFile", "is_s3", "list_source", "open_range", "read_bytes", "s3_client", "source_error"]


@dataclass(frozen=True)
class SourceFile:
    uri: str  # absolute local path or s3://bucket/key
    size: int
    mtime: datetime

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


def is_s3(src: str) -> bool:
    return src.startswith(("s3://", "s3a://"))


def _split_s3(uri: str) -> tuple[str, str]:
    p = urlparse(uri)
    if not p.netloc:
        raise SourceError(f"malformed source {uri!r}: write s3://bucket/prefix")
    return p.netloc, p.path.lstrip("/")


def s3_client(lake: Lake, pool: int = 32):
    """A boto3 client for sources, from the same S3 settings as the lake (one credential source)."""
    return lake.boto3_client(max_pool_connections=pool)


def source_error(lake: Lake, exc: BaseException, src: str) -> IngestError:
    """One line that says which source failed and what to check (the lake's classifier); an
    unreachable endpoint is a ``TransientError`` so an orchestrator retries it."""
    bucket = urlparse(src).netloc if is_s3(src) else None
    err = lake.storage_error(exc, f"cannot read source {src}", bucket=bucket)
    return err if isinstance(err, TransientError) else SourceError(str(err))


def list_source(lake: Lake, src: str) -> list[SourceFile]:
    """Every non-hidden file under a local directory or S3 prefix (recursively), sorted by URI.

    An S3 prefix is a folder: ``s3://b/logs`` lists ``logs/…`` (or the object ``logs`` itself),
    never ``logs-archive/…``.  Locally, symlinks never lead out of SRC: a link to a file outside
    it is skipped with a warning, a link to a file inside it is that file, listed once under its
    real path; linked directories are not walked (their content is either listed already or
    outside).
    """
    if is_s3(src):
        return _list_s3(lake, src)
    root = Path(src).expanduser()
    if not root.exists():
        raise SourceError(f"source {src!r} does not exist: pass an existing directory, file or s3://bucket/prefix")
    found = {str(root.resolve()): root.resolve().stat()} if root.is_file() else _walk_inside(root.resolve())
    out = [SourceFile(p, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)) for p, st in found.items()]
    return sorted(out, key=lambda f: f.uri)


def _walk_inside(base: Path) -> dict[str, os.stat_result]:
    """Regular files under ``base`` (resolved), by real path, with their stat; following no link
    out of it.  ``os.scandir`` entries carry their type, so a plain file costs one ``stat``: 12,000
    files list in 0.07-0.10 s of CPU, against 0.28-0.45 s with a ``pathlib`` walk (three checks
    and path objects per file), paid by each group of a fanned-out ingest."""
    found: dict[str, os.stat_result] = {}
    todo = [str(base)]
    while todo:
        try:
            with os.scandir(todo.pop()) as listing:
                entries = list(listing)
        except OSError:  # unreadable or gone: skipped, as os.walk does
            continue
        for entry in entries:
            if _hidden(entry.name):
                continue
            try:
                if entry.is_symlink():
                    target = Path(entry.path).resolve()
                    if not target.is_relative_to(base):
                        logging.getLogger(__name__).warning(
                            "skipped %s: a symlink to %s, outside %s", entry.path, target, base
                        )
                        continue
                    if target.is_file() and not _hidden(str(target.relative_to(base))):
                        found[str(target)] = target.stat()  # a linked directory inside is walked as itself
                elif entry.is_dir(follow_symlinks=False):
                    todo.append(entry.path)
                elif entry.is_file(follow_symlinks=False):  # not sockets, FIFOs
                    found[entry.path] = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed while listed: not there to load
                continue
    return found


def _list_s3(lake: Lake, src: str) -> list[SourceFile]:
    bucket, prefix = _split_s3(src)
    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    client = s3_client(lake)
    out: list[SourceFile] = []

    def add(obj: dict[str, Any]) -> None:
        mtime = obj["LastModified"]
        out.append(SourceFile(f"s3://{bucket}/{obj['Key']}", int(obj["Size"]), mtime.astimezone(UTC)))

    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if not key.endswith("/") and not _hidden(key[len(folder) :]):
                    add(obj)
        if not out and folder != prefix:  # s3://b/logs/app.log names one object
            first = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("Contents", [])
            if first and first[0]["Key"] == prefix:
                add(first[0])
    except Exception as exc:  # noqa: BLE001 - any failure to list is an unreadable source
        raise source_error(lake, exc, src) from None
    return sorted(out, key=lambda f: f.uri)


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in rel.strip("/").split("/") if part)


def read_bytes(lake: Lake, f: SourceFile, client: Any = None) -> bytes:
    """The whole content of one source file."""
    if is_s3(f.uri):
        bucket, key = _split_s3(f.uri)
        try:
            return (client or s3_client(lake)).get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001 - every storage failure becomes one source error
            raise source_error(lake, exc, f.uri) from None
    with open(f.uri, "rb") as fh:
        return fh.read()


@contextlib.contextmanager
def open_range(
    lake: Lake, f: SourceFile, start: int = 0, end: int | None = None, *, client: Any = None
) -> Iterator[BinaryIO]:
    """A binary stream of bytes ``[start, end)`` of a source file (ranged GET on S3; pass the
    run's ``client`` when reading many small ranges)."""
    if is_s3(f.uri):
        bucket, key = _split_s3(f.uri)
        rng = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            body = (client or s3_client(lake, pool=4)).get_object(Bucket=bucket, Key=key, Range=rng)["Body"]
        except Exception as exc:  # noqa: BLE001 - every storage failure becomes one source error
            raise source_error(lake, exc, f.uri) from None
        try:
            yield body
        finally:
            body.close()
        return
    fh = open(f.uri, "rb")
    try:
        fh.seek(start)
        yield fh if end is None else _Limited(fh, end - start)  # type: ignore[misc]  # _Limited reads like the file it wraps
    finally:
        fh.close()


class _Limited:
    """A read-only view of the next ``n`` bytes of a stream."""

    def __init__(self, fh: BinaryIO, n: int) -> None:
        self.fh, self.left = fh, n

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.fh.read(size)
        self.left -= len(data)
        return data
