"""Shared parts of the source ingesters: the result model, quarantine, reading local or S3
sources, and fitting parsed records to a table's column types (``fit_rows``; Arrow batches and
single values go through ``ingest.conform``, commits through ``ingest.delta``).

Every ingester follows one shape: list inputs, skip what the lake already holds (Delta app
transactions), write bad records to ``<layer>.<name>_quarantine`` first and good rows second, each
write exactly once per batch id, and record the run in ``_meta.runs``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import pyarrow as pa
from pydantic import BaseModel

from ingest.conform import Misfit, coerce
from ingest.delta import (  # noqa: F401 - the commit helpers are re-exported for the ingesters
    BatchTaken,
    ensure_table,
    next_sequence,
    with_commit_retry,
    write_batch,
)
from ingest.errors import IngestError, SourceError, TransientError
from ingest.lake import Lake, TableId
from ingest.progress import progress_bar  # noqa: F401 - re-exported: tests run the pre-fingerprint logs.py, which imports it from here


class IngestResult(BaseModel):
    """What one ingest run did; printed by ``--json`` and returned to the pipeline/flows."""

    table: str
    version: int | None
    rows_written: int = 0
    rows_quarantined: int = 0
    skipped: int = 0  # inputs (files, images, batches) already in the lake
    run_id: str
    bytes_read: int = 0
    notes: list[str] = []  # things the user should know, e.g. a partial line waiting


@dataclass
class Tally:
    """What a run has committed so far, counted as each commit lands (a retried batch counts
    once, a failed run keeps what it committed: ``track(counts=...)``); ``finish`` copies it into
    the run log and the result."""

    rows: int = 0
    quarantined: int = 0
    skipped: int = 0
    bytes_read: int = 0

    def copy_to(self, run: Any) -> None:
        run.rows_written, run.rows_quarantined = self.rows, self.quarantined
        run.skipped, run.bytes_read = self.skipped, self.bytes_read

    def finish(self, lake: Lake, table: TableId, run: Any) -> IngestResult:
        """Also creates the (empty) quarantine table, so queries on it work for a clean source."""
        from ingest.delta import current_version

        ensure_table(lake, quarantine_table(table), QUARANTINE_SCHEMA)
        self.copy_to(run)
        run.version_after = current_version(lake, table)
        return IngestResult(
            table=str(table),
            version=run.version_after,
            rows_written=self.rows,
            rows_quarantined=self.quarantined,
            skipped=self.skipped,
            run_id=run.run_id,
            bytes_read=self.bytes_read,
        )


# -- quarantine ---------------------------------------------------------------------------------
QUARANTINE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),  # file / object URI or redacted DB URL + table
        ("source_ref", pa.string()),  # line number, byte offset, primary key ...
        ("reason", pa.string()),
        ("raw", pa.binary()),  # the record as it arrived
        ("run_id", pa.string()),
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class Bad:
    """One record that could not be loaded."""

    source: str
    source_ref: str
    reason: str
    raw: bytes


def quarantine_table(table: str | TableId) -> TableId:
    """``bronze.events`` -> ``bronze.events_quarantine`` (beside the target)."""
    t = TableId.parse(table)
    return TableId(t.layer, f"{t.name}_quarantine")


def write_quarantine(
    lake: Lake,
    table: str | TableId,
    bad: list[Bad],
    *,
    run_id: str,
    app_id: str,
    batch_version: int,
) -> int:
    """Append ``bad`` to the quarantine table once per ``(app_id, batch_version)``; returns rows written."""
    if not bad:
        return 0
    now = datetime.now(UTC)
    data = pa.Table.from_pylist(
        [
            {
                "source": b.source,
                "source_ref": b.source_ref,
                "reason": b.reason[:2000],
                "raw": b.raw,
                "run_id": run_id,
                "quarantined_at": now,
            }
            for b in bad
        ],
        schema=QUARANTINE_SCHEMA,
    )
    ensure_table(lake, quarantine_table(table), QUARANTINE_SCHEMA)
    res = write_batch(lake, quarantine_table(table), data, app_id=app_id, batch_version=batch_version)
    return 0 if res.skipped else res.rows


# -- sources: local paths and s3:// prefixes ----------------------------------------------------
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
    paths = [root.resolve()] if root.is_file() else _walk_inside(root.resolve())
    out = []
    for p in paths:
        st = p.stat()
        out.append(SourceFile(str(p), st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
    return sorted(out, key=lambda f: f.uri)


def _walk_inside(base: Path) -> list[Path]:
    """Regular files under ``base`` (resolved), by real path, following no link out of it."""
    found: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        for name in [*filenames, *(d for d in dirnames if (here / d).is_symlink())]:
            p = here / name
            if _hidden(str(p.relative_to(base))):
                continue
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(base):
                    logging.getLogger(__name__).warning("skipped %s: a symlink to %s, outside %s", p, target, base)
                    continue
                if not target.is_file() or _hidden(str(target.relative_to(base))):
                    continue  # a linked directory inside SRC is walked as itself
                p = target
            elif not p.is_file():
                continue  # sockets, FIFOs
            found.add(p)
    return sorted(found)


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


# -- fitting records to column types --------------------------------------------------------------
_ISO_TS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$")


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "ts" if _ISO_TS.match(v) else "str"
    if isinstance(v, (dict, list)):
        return "json"
    if isinstance(v, datetime):
        return "ts"
    return "str"


_KIND_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "ts": pa.timestamp("us", tz="UTC"),
    "str": pa.string(),
    "json": pa.string(),
}


def infer_type(values: list[Any]) -> pa.DataType:
    """The type most values of a new column have (int+float is float); the rest are quarantined."""
    counts: dict[str, int] = {}
    for v in values:
        if v is not None:
            k = _kind(v)
            counts[k] = counts.get(k, 0) + 1
    if not counts:
        return pa.string()
    if "int" in counts and "float" in counts:
        counts["float"] += counts.pop("int")
    return _KIND_TYPES[max(counts, key=lambda k: (counts[k], k))]


def fit_rows(
    rows: list[dict[str, Any]], existing: pa.Schema | None, *, fixed: dict[str, pa.DataType] | None = None
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Records -> an Arrow table typed like the target table; records that do not fit are returned
    as ``(index, reason)`` instead of being cast (new columns take the type most values have)."""
    fixed = fixed or {}
    names: list[str] = []
    seen: set[str] = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                names.append(k)
    types: dict[str, pa.DataType] = {}
    for n in names:
        if n in fixed:
            types[n] = fixed[n]
        elif existing is not None and existing.get_field_index(n) >= 0:
            types[n] = existing.field(n).type
        else:
            types[n] = infer_type([r.get(n) for r in rows])
    good: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    for i, r in enumerate(rows):
        out = {}
        try:
            for n in names:
                try:
                    out[n] = coerce(r.get(n), types[n])
                except Misfit as exc:
                    raise Misfit(f"column {n!r} ({types[n]}): {exc}") from None
        except Misfit as exc:
            bad.append((i, str(exc)))
            continue
        good.append(out)
    schema = pa.schema([(n, types[n]) for n in names])
    return pa.Table.from_pylist(good, schema=schema), bad


def row_json(row: dict[str, Any]) -> bytes:
    """A record as JSON bytes for the quarantine's ``raw`` column."""

    def default(o: Any) -> Any:
        if isinstance(o, (datetime, date)):
            return o.isoformat()
        if isinstance(o, (bytes, bytearray)):
            return o.hex()
        return str(o)

    return json.dumps(row, default=default, sort_keys=True).encode()


def utcnow() -> datetime:
    return datetime.now(UTC)


def env_int(name: str, default: int) -> int:
    """Batch-size knobs (bounded memory), overridable for tests and tuning."""
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default
