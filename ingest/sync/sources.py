"""Where a shard set is read from: a local directory or ``s3://bucket/prefix``, behind one protocol."""

from __future__ import annotations

import http.client
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from ingest.aws import AwsEnv, presign_get
from ingest.errors import ConfigError, SourceError, TransientError, classify_storage_error, storage_hint
from ingest.sync.manifest import MANIFEST_NAME, SyncError
from ingest.sync.state import Transient

if TYPE_CHECKING:  # pragma: no cover
    from ingest.lake import Lake

__all__ = ["LocalSource", "S3Source", "Source", "Stream", "open_source"]


class Stream(Protocol):
    def readinto(self, buf: memoryview) -> int: ...
    def close(self) -> None: ...


class Source(Protocol):
    uri: str

    def read_manifest(self) -> bytes: ...
    def open(self, path: str) -> tuple[Stream, int | None]: ...
    def describe(self, path: str) -> str: ...


class LocalSource:
    """A shard set on a local (or network-mounted) directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def describe(self, path: str) -> str:
        return str(self.root / path)

    def read_manifest(self) -> bytes:
        p = self.root / MANIFEST_NAME
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise SourceError(
                f"no {MANIFEST_NAME} in {self.root}: pass a shard-set root (e.g. <lake>/shards/DATASET/SNAPSHOT)"
            ) from None

    def open(self, path: str) -> tuple[Stream, int | None]:
        p = self.root / path
        try:
            fh = open(p, "rb", buffering=0)
        except FileNotFoundError:
            raise SyncError(f"shard {path} is listed in the manifest but missing at {p}") from None
        return fh, os.fstat(fh.fileno()).st_size


class HttpBody:
    """A response body that releases its connection back to the worker when done."""

    def __init__(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection, pool: S3Source) -> None:
        self._resp, self._conn, self._pool = resp, conn, pool

    def readinto(self, buf: memoryview) -> int:
        return self._resp.readinto(buf)

    def close(self) -> None:
        complete = self._resp.isclosed()
        self._resp.close()
        if complete:
            self._pool.release(self._conn)
        else:
            self._conn.close()


class S3Source:
    """A shard set under ``s3://bucket/prefix``.

    Each GET is presigned by ``ingest.aws.presign_get`` (endpoint, region and credentials incl.
    instance roles come from there; no boto3 import, so a no-op re-sync starts fast); bytes move
    over one keep-alive ``http.client`` connection per worker thread with ``readinto``, which
    avoids botocore's per-chunk copies.
    """

    def __init__(self, uri: str, *, lake: Lake | None = None) -> None:
        parts = urlsplit(uri)
        if not parts.netloc:
            raise ConfigError(f"bad S3 source {uri!r}: write s3://bucket/prefix/")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.s3 = lake.s3 if lake is not None else AwsEnv.read()
        self._local = threading.local()

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def describe(self, path: str) -> str:
        return f"s3://{self.bucket}/{self.key(path)}"

    def _connection(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        u = urlsplit(url)
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
            conn = cls(u.hostname or "", u.port, timeout=60)  # a presigned URL always names its host
        else:
            self._local.conn = None
        return conn, f"{u.path}?{u.query}" if u.query else u.path

    def release(self, conn: http.client.HTTPConnection) -> None:
        """Keep ``conn`` as this thread's connection (a body read to its end hands it back)."""
        old = getattr(self._local, "conn", None)
        if old is not None and old is not conn:
            old.close()
        self._local.conn = conn

    def _get(self, path: str) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        url = presign_get(self.s3, self.bucket, self.key(path))
        conn, target = self._connection(url)
        try:
            conn.request("GET", target)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException):
            conn.close()
            # A kept-alive connection may have been closed by the server: one fresh try.
            conn, target = self._connection(url)
            try:
                conn.request("GET", target)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise Transient(f"{self.describe(path)}: {type(exc).__name__}: {exc}") from None
        if resp.status != 200:
            body = resp.read(4096).decode("utf-8", "replace")
            conn.close()
            code = re.search(r"<Code>([^<]+)</Code>", body)
            what = code.group(1) if code else f"HTTP {resp.status}"
            fault = classify_storage_error(f"HTTP {resp.status} {what}")
            hint = storage_hint(fault, endpoint=self.s3.endpoint_url, bucket=self.bucket)
            if fault == "no_bucket":
                raise SourceError(f"{self.describe(path)}: {what}{hint}")
            if resp.status == 404 or what == "NoSuchKey":
                raise SyncError(
                    f"{self.describe(path)} not found ({what}): the shard set is incomplete; rebuild it or check the prefix"
                )
            if resp.status == 301 or what in ("PermanentRedirect", "AuthorizationHeaderMalformed"):
                raise SourceError(
                    f"{self.describe(path)}: {what} - the bucket is in another region; set AWS_REGION to the bucket's region"
                )
            if resp.status == 401 or fault == "denied":
                raise SourceError(
                    f"{self.describe(path)}: access denied ({what}){storage_hint('denied', endpoint=None, bucket=None)} or the instance role"
                )
            raise Transient(f"{self.describe(path)}: {what}")
        return resp, conn

    def read_manifest(self) -> bytes:
        try:
            resp, conn = self._get(MANIFEST_NAME)
        except SyncError:
            raise SourceError(
                f"no {MANIFEST_NAME} at {self.uri}/: pass a shard-set root (s3://bucket/prefix/ with manifest.json)"
            ) from None
        except Transient as exc:  # unreachable or failing endpoint: an orchestrator retries
            hint = storage_hint("unreachable", endpoint=self.s3.endpoint_url, bucket=None)
            raise TransientError(f"cannot read {self.uri}/{MANIFEST_NAME}: {exc}{hint}") from None
        data = resp.read()
        self.release(conn)
        return data

    def open(self, path: str) -> tuple[Stream, int | None]:
        resp, conn = self._get(path)
        length = resp.getheader("Content-Length")
        return HttpBody(resp, conn, self), int(length) if length is not None else None


def open_source(src: str, *, lake: Lake | None = None) -> Source:
    """``s3://bucket/prefix/``, a local path, or lake-relative ``shards/DATASET/SNAPSHOT``."""
    src = str(src).strip()
    if not src:
        raise ConfigError("SRC is empty: pass s3://bucket/prefix/, a local directory or shards/DATASET/SNAPSHOT")
    if src.startswith(("s3://", "s3a://")):
        return S3Source("s3://" + src.split("://", 1)[1], lake=lake)
    if src.startswith("file://"):
        return LocalSource(urlsplit(src).path)
    if "://" in src:
        raise ConfigError(
            f"unsupported SRC {src!r}: use s3://bucket/prefix/, a local directory or shards/DATASET/SNAPSHOT"
        )
    if src.startswith("shards/") and (lake is not None or not Path(src).exists()):
        # Lake-relative (write ./shards/... for a local directory of that name).
        if lake is None:
            from ingest.lake import Lake
            from ingest.settings import load_settings

            lake = Lake.from_settings(load_settings())
        return open_source(lake.path(src), lake=lake)
    return LocalSource(src)
