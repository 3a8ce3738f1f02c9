"""Stage a shard set onto a GPU node's local disk: this rank's shards, verified, resumable.

Why not ``aws s3 sync``/``s5cmd``: they verify nothing against the shard manifest, do not know
ranks, and an interrupted copy can leave a truncated file under its final name.  Here every byte
is hashed (sha256, from the manifest) while it streams to a temporary name; only a verified file
is renamed into place.  A small state file in DEST records what was verified (size, sha256,
mtime), so a re-sync of a complete DEST only stats files instead of re-hashing them.

Transfer path (chosen by ``bench/bench_sync.py``): one locally presigned GET per shard over a plain
``http.client`` connection per worker thread, ``readinto`` a reused 256 KiB buffer, ``hashlib`` (releases
the GIL) and ``os.write`` (O_DIRECT where the filesystem allows); parallel across files, since
sha256 is sequential within a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Protocol
from urllib.parse import urlsplit

from ingest.errors import ConfigError, IngestError, SourceError, TransientError
from ingest.lake import AwsEnv, presign_get

if TYPE_CHECKING:  # pragma: no cover
    from ingest.lake import Lake

MANIFEST_NAME = "manifest.json"
STATE_NAME = ".ingest-sync-state.json"
TMP_SUFFIX = ".ingest-tmp"
# 256 KiB: large enough that hashlib/os.write release the GIL and per-call cost vanishes, small
# enough that recv -> sha256 -> write stay in L2 (1-4 MiB buffers measured slower in bench_sync).
CHUNK = 256 << 10
# O_DIRECT writes go in whole blocks of this many bytes from page-aligned buffers
DIRECT_ALIGN = 4096
DEFAULT_WORKERS = 32  # many streams hide per-request latency (SeaweedFS chunk fetches, S3 first byte)
ATTEMPTS = 3
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")

# (rank variable, world-size variable) pairs, most specific first.
RANK_ENV_PAIRS: tuple[tuple[str, str], ...] = (
    ("RANK", "WORLD_SIZE"),  # torchrun / torch.distributed
    ("GROUP_RANK", "GROUP_WORLD_SIZE"),  # torchelastic node (agent) rank
    ("NODE_RANK", "NNODES"),  # one sync per node (Lightning, torchrun --node_rank)
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),  # Open MPI / Horovod
    ("PMI_RANK", "PMI_SIZE"),  # MPICH / Intel MPI
    ("SLURM_PROCID", "SLURM_NTASKS"),  # srun
)


class SyncError(IngestError):
    """A shard could not be staged (checksum mismatch after retries, missing object, no space)."""

    exit_code = 4


# ---------------------------------------------------------------------------------------------
# manifest
# ---------------------------------------------------------------------------------------------
@dataclass
class ShardEntry:
    """One shard as the manifest lists it (other keys of a manifest entry are ignored)."""

    path: str
    bytes: int
    sha256: str
    split: str | None = None
    samples: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise ValueError(f"path must be a string, got {self.path!r}")
        if not _is_int(self.bytes) or self.bytes < 0:
            raise ValueError(f"bytes must be an integer >= 0, got {self.bytes!r}")
        sha = self.sha256.strip().lower() if isinstance(self.sha256, str) else ""
        if not _SHA_RE.match(sha):
            raise ValueError(f"sha256 {str(self.sha256)[:80]!r} is not 64 hex digits")
        self.sha256 = sha
        if self.split is not None and not isinstance(self.split, str):
            raise ValueError(f"split must be a string, got {self.split!r}")
        if self.samples is not None and (not _is_int(self.samples) or self.samples < 0):
            raise ValueError(f"samples must be an integer >= 0, got {self.samples!r}")

    @classmethod
    def from_dict(cls, data: Any) -> "ShardEntry":
        if not isinstance(data, dict):
            raise ValueError(f"must be an object with path, bytes and sha256, got {type(data).__name__}")
        missing = [k for k in ("path", "bytes", "sha256") if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return cls(**{k: data[k] for k in _ENTRY_FIELDS if k in data})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class ShardManifest:
    """``manifest.json`` at a shard-set root (written by ``ingest shards``).

    A dataclass, not pydantic: ``ingest sync`` is started on every training job and a re-sync of
    a complete DEST must return faster than importing pydantic takes.
    """

    shards: list[ShardEntry]
    # other files every reader of a split needs (the MDS index.json per split)
    files: list[ShardEntry] = field(default_factory=list)
    dataset: str | None = None
    snapshot: str | None = None
    format: str | None = None
    created_at: str | None = None
    code_version: str | None = None
    tables: Any = None
    source_runs: Any = None

    @classmethod
    def from_dict(cls, data: Any) -> "ShardManifest":
        if not isinstance(data, dict):
            raise ValueError(f"the top level must be an object, got {type(data).__name__}")
        if not isinstance(data.get("shards"), list):
            raise ValueError("shards: a list of {path, bytes, sha256} is required")
        lists = {}
        for key in ("shards", "files"):
            entries = []
            for i, raw in enumerate(data.get(key) or []):
                try:
                    entries.append(ShardEntry.from_dict(raw))
                except ValueError as exc:
                    raise ValueError(f"{key}[{i}]: {exc}") from None
            lists[key] = entries
        for key in ("dataset", "snapshot", "format", "created_at", "code_version"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"{key} must be a string, got {data[key]!r}")
        return cls(**lists, **{k: data.get(k) for k in _MANIFEST_META})

    @classmethod
    def parse_bytes(cls, raw: bytes, where: str) -> "ShardManifest":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise SyncError(f"{where} is not valid JSON ({exc}): rebuild the shard set with `ingest shards`") from None
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise SyncError(f"{where} is not a shard manifest ({exc}): rebuild it with `ingest shards`") from None


_ENTRY_FIELDS = ("path", "bytes", "sha256", "split", "samples")
_MANIFEST_META = ("dataset", "snapshot", "format", "created_at", "code_version", "tables", "source_runs")


@dataclass
class SyncResult:
    """What a sync did; ``--json`` prints exactly this (``to_dict``)."""

    files: int  # shards this rank holds after the sync
    dest: str
    source: str
    downloaded: int = 0
    skipped: int = 0
    deleted: int = 0
    retried: int = 0
    bytes: int = 0  # bytes transferred
    total_bytes: int = 0  # bytes of this rank's shards
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1
    dataset: str | None = None
    snapshot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# planning: safe paths, rank assignment, splits
# ---------------------------------------------------------------------------------------------
def safe_relpath(path: str, dest: Path) -> PurePosixPath:
    """The manifest path as a relative path that stays inside DEST, or ``SyncError``.

    Refuses absolute paths, ``..``, backslashes/NULs, our own bookkeeping names and anything
    that resolves (through symlinks already in DEST) outside DEST.
    """
    bad = None
    if not path or "\x00" in path or "\\" in path:
        bad = "empty or contains a NUL/backslash"
    elif path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        bad = "is absolute"
    else:
        parts = path.split("/")
        if ".." in parts:
            bad = "contains '..'"
        elif any(p in ("", ".") for p in parts):
            bad = "has empty or '.' components"
        elif path in (MANIFEST_NAME, STATE_NAME) or path.endswith(TMP_SUFFIX):
            bad = "collides with a sync bookkeeping file"
    if bad is None:
        root = os.path.realpath(dest)
        target = os.path.realpath(os.path.join(root, path))
        if os.path.commonpath([root, target]) != root or target == root:
            bad = f"resolves outside DEST ({target})"
    if bad:
        raise SyncError(f"unsafe shard path {path!r} in manifest: {bad}; refusing to write anything to {dest}")
    return PurePosixPath(path)


def assign_ranks(shards: list[ShardEntry], world_size: int) -> list[list[ShardEntry]]:
    """Split shards into ``world_size`` disjoint lists balanced by bytes (deterministic).

    Largest first, each to the least-loaded rank: any two ranks then differ by at most the size
    of one shard, and every rank computes the same assignment from the same manifest.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    import heapq

    out: list[list[ShardEntry]] = [[] for _ in range(world_size)]
    heap = [(0, 0, r) for r in range(world_size)]  # (bytes, shards, rank): least loaded first
    for sh in sorted(shards, key=lambda s: (-s.bytes, s.path)):
        load, count, r = heapq.heappop(heap)
        out[r].append(sh)
        heapq.heappush(heap, (load + sh.bytes, count + 1, r))
    for lst in out:
        lst.sort(key=lambda s: s.path)
    return out


def resolve_rank(rank: int | None, world_size: int | None, environ: dict[str, str] | None = None) -> tuple[int, int]:
    """Explicit values win; otherwise the launcher's variables (``RANK``/``WORLD_SIZE``, ...)."""
    env = os.environ if environ is None else environ
    source = "--rank/--world-size"
    if rank is None and world_size is None:
        for rv, wv in RANK_ENV_PAIRS:
            if env.get(rv, "").strip() and env.get(wv, "").strip():
                source = f"{rv}/{wv}"
                try:
                    rank, world_size = int(env[rv]), int(env[wv])
                except ValueError:
                    raise ConfigError(f"{rv}={env[rv]!r} / {wv}={env[wv]!r} are not integers: fix the launcher environment or pass --rank/--world-size") from None
                break
    if world_size is None:
        world_size = 1 if rank in (None, 0) else None
    if rank is None:
        rank = 0
    if world_size is None:
        raise ConfigError(f"--rank {rank} given without --world-size: pass both (e.g. --rank {rank} --world-size N)")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in [0, {world_size}) (from {source}): use 0 <= rank < world size")
    return rank, world_size


def select_shards(
    manifest: ShardManifest, *, rank: int, world_size: int, splits: list[str] | None
) -> list[ShardEntry]:
    shards = manifest.shards
    if splits:
        known = sorted({s.split or "" for s in shards})
        missing = [s for s in splits if s not in known]
        if missing:
            raise ConfigError(
                f"split(s) {', '.join(missing)} not in the manifest: use --split with {', '.join(k or '(none)' for k in known)}"
            )
        shards = [s for s in shards if (s.split or "") in splits]
    return assign_ranks(shards, world_size)[rank]


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------
class _Stream(Protocol):
    def readinto(self, buf: memoryview) -> int: ...
    def close(self) -> None: ...


class Source(Protocol):
    uri: str

    def read_manifest(self) -> bytes: ...
    def open(self, path: str) -> tuple[_Stream, int | None]: ...
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
            raise SourceError(f"no {MANIFEST_NAME} in {self.root}: pass a shard-set root (e.g. <lake>/shards/DATASET/SNAPSHOT)") from None

    def open(self, path: str) -> tuple[_Stream, int | None]:
        p = self.root / path
        try:
            fh = open(p, "rb", buffering=0)
        except FileNotFoundError:
            raise SyncError(f"shard {path} is listed in the manifest but missing at {p}") from None
        return fh, os.fstat(fh.fileno()).st_size


class _HttpBody:
    """A response body that releases its connection back to the worker when done."""

    def __init__(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection, pool: "S3Source") -> None:
        self._resp, self._conn, self._pool = resp, conn, pool

    def readinto(self, buf: memoryview) -> int:
        return self._resp.readinto(buf)

    def close(self) -> None:
        complete = self._resp.isclosed()
        self._resp.close()
        if complete:
            self._pool._release(self._conn)
        else:
            self._conn.close()


class S3Source:
    """A shard set under ``s3://bucket/prefix``.

    Each GET is presigned by ``ingest.lake.presign_get`` (endpoint, region and credentials incl.
    instance roles come from there; no boto3 import, so a no-op re-sync starts fast); bytes move
    over one keep-alive ``http.client`` connection per worker thread with ``readinto``, which
    avoids botocore's per-chunk copies.
    """

    def __init__(self, uri: str, *, lake: "Lake | None" = None) -> None:
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
            conn = cls(u.hostname, u.port, timeout=60)
        else:
            self._local.conn = None
        return conn, f"{u.path}?{u.query}" if u.query else u.path

    def _release(self, conn: http.client.HTTPConnection) -> None:
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
                raise _Transient(f"{self.describe(path)}: {type(exc).__name__}: {exc}") from None
        if resp.status != 200:
            body = resp.read(4096).decode("utf-8", "replace")
            conn.close()
            code = re.search(r"<Code>([^<]+)</Code>", body)
            what = code.group(1) if code else f"HTTP {resp.status}"
            if resp.status == 404 or what in ("NoSuchKey", "NoSuchBucket"):
                raise SyncError(f"{self.describe(path)} not found ({what}): the shard set is incomplete; rebuild it or check the prefix")
            if resp.status == 301 or what in ("PermanentRedirect", "AuthorizationHeaderMalformed"):
                raise SourceError(f"{self.describe(path)}: {what} - the bucket is in another region; set AWS_REGION to the bucket's region")
            if resp.status in (401, 403):
                raise SourceError(f"{self.describe(path)}: access denied ({what}) - check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the instance role")
            raise _Transient(f"{self.describe(path)}: {what}")
        return resp, conn

    def read_manifest(self) -> bytes:
        try:
            resp, conn = self._get(MANIFEST_NAME)
        except SyncError:
            raise SourceError(f"no {MANIFEST_NAME} at {self.uri}/: pass a shard-set root (s3://bucket/prefix/ with manifest.json)") from None
        except _Transient as exc:  # unreachable or failing endpoint: an orchestrator retries
            raise TransientError(f"cannot read {self.uri}/{MANIFEST_NAME}: {exc} - check AWS_ENDPOINT_URL ({self.s3.endpoint_url or 'AWS default'}) is reachable") from None
        data = resp.read()
        self._release(conn)
        return data

    def open(self, path: str) -> tuple[_Stream, int | None]:
        resp, conn = self._get(path)
        length = resp.getheader("Content-Length")
        return _HttpBody(resp, conn, self), int(length) if length is not None else None


class _Transient(Exception):
    """A network error worth retrying."""


def open_source(src: str, *, lake: "Lake | None" = None) -> Source:
    """``s3://bucket/prefix/``, a local path, or lake-relative ``shards/DATASET/SNAPSHOT``."""
    src = str(src).strip()
    if not src:
        raise ConfigError("SRC is empty: pass s3://bucket/prefix/, a local directory or shards/DATASET/SNAPSHOT")
    if src.startswith(("s3://", "s3a://")):
        return S3Source("s3://" + src.split("://", 1)[1], lake=lake)
    if src.startswith("file://"):
        return LocalSource(urlsplit(src).path)
    if "://" in src:
        raise ConfigError(f"unsupported SRC {src!r}: use s3://bucket/prefix/, a local directory or shards/DATASET/SNAPSHOT")
    if src.startswith("shards/") and (lake is not None or not Path(src).exists()):
        # Lake-relative (write ./shards/... for a local directory of that name).
        if lake is None:
            from ingest.lake import Lake
            from ingest.settings import load_settings

            lake = Lake.from_settings(load_settings())
        return open_source(lake.path(src), lake=lake)
    return LocalSource(src)


# ---------------------------------------------------------------------------------------------
# DEST state
# ---------------------------------------------------------------------------------------------
def _load_state(dest: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((dest / STATE_NAME).read_bytes())
        files = data.get("files", {})
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}{TMP_SUFFIX}")
    with open(tmp, "wb") as fh:
        _lock_tmp(fh.fileno(), tmp)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class _StateWriter:
    """Records verified files; flushed at most every second (a kill loses at most one second of
    records, and unrecorded files of the right size are re-hashed locally, not re-downloaded)."""

    def __init__(self, dest: Path, files: dict[str, dict[str, Any]]) -> None:
        self.dest, self.files = dest, dict(files)
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._dirty = False

    def record(self, entry: ShardEntry, st: os.stat_result) -> None:
        with self._lock:
            self.files[entry.path] = {"bytes": entry.bytes, "sha256": entry.sha256, "mtime_ns": st.st_mtime_ns}
            self._dirty = True
            if time.monotonic() - self._last > 1.0:
                self._flush_locked()

    def forget(self, path: str) -> None:
        with self._lock:
            if self.files.pop(path, None) is not None:
                self._dirty = True

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._dirty:
            _atomic_write(self.dest / STATE_NAME, json.dumps({"version": 1, "files": self.files}, separators=(",", ":")).encode())
            self._dirty = False
        self._last = time.monotonic()


def _hash_file(path: Path, buf: memoryview) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# the transfer
# ---------------------------------------------------------------------------------------------
@dataclass
class _Worker:
    source: Source
    dest: Path
    state: _StateWriter
    on_bytes: Callable[[int], None]
    stop: threading.Event
    retried: int = 0
    # write through O_DIRECT where the filesystem allows it: shards bypass the page cache, so
    # staging many GB neither evicts the training job's cache nor pays for fresh cache pages
    # (measured here: 1.6 GB buffered 0.3-2.9 s of kernel time, direct 0.65 s steady)
    direct_io: bool = True

    def __post_init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()

    def buf(self) -> memoryview:
        b = getattr(self._local, "buf", None)
        if b is None:
            import mmap

            b = self._local.buf = memoryview(mmap.mmap(-1, CHUNK))  # page-aligned, for O_DIRECT
        return b

    def fetch(self, entry: ShardEntry) -> int:
        """Download, hash while streaming, rename when verified; retries then fails naming the file."""
        final = self.dest / entry.path
        final.parent.mkdir(parents=True, exist_ok=True)
        last, network = "", False
        for attempt in range(1, ATTEMPTS + 1):
            if self.stop.is_set():
                raise _Cancelled()
            try:
                digest, n = self._fetch_once(entry, final)
            except _Transient as exc:
                last, network = str(exc), True
            else:
                network = False
                if n == entry.bytes and digest == entry.sha256:
                    return n
                last = (
                    f"size {n} != {entry.bytes}" if n != entry.bytes else f"sha256 {digest} != manifest {entry.sha256}"
                )
            if attempt < ATTEMPTS:
                with self._lock:
                    self.retried += 1
                time.sleep(0.2 * attempt)
        if network:
            raise SyncError(
                f"shard {entry.path} could not be downloaded after {ATTEMPTS} attempts ({last}): check the "
                "endpoint and network, then re-run (verified shards are kept)"
            )
        raise SyncError(
            f"shard {entry.path} failed verification after {ATTEMPTS} attempts ({last}) from "
            f"{self.source.describe(entry.path)}: the source does not match manifest.json - rebuild or re-upload the shard set"
        )

    def _fetch_once(self, entry: ShardEntry, final: Path) -> tuple[str, int]:
        tmp = final.with_name(f".{final.name}.{os.urandom(4).hex()}{TMP_SUFFIX}")
        buf = self.buf()
        h = hashlib.sha256()
        n = 0
        stream, length = self.source.open(entry.path)
        ok = False
        try:
            if length is not None and length != entry.bytes:
                return "", length
            fd, direct = _open_tmp(tmp, direct=self.direct_io and entry.bytes >= CHUNK)
            try:
                if entry.bytes >= CHUNK:
                    with contextlib.suppress(OSError, AttributeError):
                        os.posix_fallocate(fd, 0, entry.bytes)
                fill = 0  # bytes in buf not yet written: only whole buffers are written mid-file
                while True:
                    try:
                        k = stream.readinto(buf[fill:])
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Transient(f"{type(exc).__name__}: {exc}") from None
                    if not k:
                        break
                    if n + k > entry.bytes:  # longer than the manifest says: stop early
                        n += k
                        return "", n
                    h.update(buf[fill:fill + k])
                    fill += k
                    n += k
                    self.on_bytes(k)
                    if fill == len(buf):
                        direct = _write_all(fd, buf, direct)
                        fill = 0
                    if self.stop.is_set():
                        raise _Cancelled()
                if fill:  # the tail: its whole blocks direct, the rest through the page cache
                    whole = fill - fill % DIRECT_ALIGN if direct else 0
                    if whole:
                        direct = _write_all(fd, buf[:whole], direct)
                    _write_all(fd, buf[whole:fill], _set_direct(fd, False) if direct else False)
            finally:
                os.close(fd)
            digest = h.hexdigest()
            if n == entry.bytes and digest == entry.sha256:
                os.replace(tmp, final)
                ok = True
                self.state.record(entry, os.stat(final))
            return digest, n
        finally:
            stream.close()
            if not ok:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)


class _Cancelled(Exception):
    pass


def _open_tmp(path: Path, *, direct: bool) -> tuple[int, bool]:
    """A new, locked file for writing, with O_DIRECT when asked and supported (not on tmpfs, macOS)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd, on = -1, False
    if direct and hasattr(os, "O_DIRECT"):
        try:
            fd, on = os.open(path, flags | os.O_DIRECT, 0o644), True
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    if fd < 0:
        fd = os.open(path, flags, 0o644)
    try:
        _lock_tmp(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd, on


def _lock_tmp(fd: int, path: Path) -> None:
    """Lock a temp file for as long as it is open: a sync removes only unlocked temp files
    (``_clean_stale_tmp``), so a killed run's leftovers go and a running sync's stay."""
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:  # removed as stale between our create and our lock
        raise _Transient(f"temp file {path.name} was removed by another sync")


def _set_direct(fd: int, on: bool) -> bool:
    import fcntl

    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, (fl | os.O_DIRECT) if on else (fl & ~os.O_DIRECT))
    return on


def _write_all(fd: int, view: memoryview, direct: bool) -> bool:
    """Write all of ``view``; returns whether O_DIRECT is still on (a filesystem that refuses
    direct writes at write time gets buffered ones)."""
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError as exc:
            if not direct or exc.errno != 22:  # EINVAL: direct I/O not possible here
                raise
            direct = _set_direct(fd, False)
    return direct


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use there (``shutil.disk_usage().free``, without
    importing shutil at start-up)."""
    vfs = os.statvfs(path)
    return vfs.f_bavail * vfs.f_frsize


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _clean_stale_tmp(dirs: set[Path]) -> int:
    """Remove the temp files an interrupted sync left in ``dirs``; returns the bytes freed.

    They never look complete (hidden name + suffix) but hold disk space: a shard's temp file is
    preallocated to its full size, so a killed sync on a nearly full disk would otherwise make
    every re-run refuse for space.  Files still locked belong to a running sync and stay.
    """
    freed = 0
    for d in dirs:
        try:
            entries = os.scandir(d)
        except OSError:
            continue
        with entries:
            for e in entries:
                if e.name.startswith(".") and e.name.endswith(TMP_SUFFIX) and e.is_file(follow_symlinks=False):
                    freed += _remove_if_stale(e.path)
    return freed


def _remove_if_stale(path: str) -> int:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        blocks = os.fstat(fd).st_blocks
        os.unlink(path)  # under our lock: a writer that locks after this sees it gone
        return blocks * 512
    except OSError:  # locked by a running sync, or already gone
        return 0
    finally:
        os.close(fd)


def sync_shards(
    src: str,
    dest: str | Path,
    *,
    lake: "Lake | None" = None,
    rank: int | None = None,
    world_size: int | None = None,
    splits: list[str] | None = None,
    workers: int | None = None,
    verify_local: bool = False,
    delete: bool = False,
    progress: bool = False,
    direct_io: bool = True,
) -> SyncResult:
    """Stage this rank's shards of the shard set at ``src`` into local ``dest``, verified.

    After success ``dest`` holds ``manifest.json`` and exactly this rank's shards at their
    manifest paths (plus stale files unless ``delete``).  Safe to re-run after a kill.
    ``direct_io`` writes shards with O_DIRECT where the filesystem supports it.
    """
    t0 = time.perf_counter()
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    rank, world_size = resolve_rank(rank, world_size)
    splits = [s.strip() for s in splits or [] if s and s.strip()] or None
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"DEST {dest} exists and is not a directory: pass a directory")

    source = open_source(src, lake=lake)
    raw = source.read_manifest()
    manifest = ShardManifest.parse_bytes(raw, f"{source.uri}/{MANIFEST_NAME}")
    seen: set[str] = set()
    for sh in [*manifest.shards, *manifest.files]:  # every path checked before anything is written
        safe_relpath(sh.path, dest)
        if sh.path in seen:
            raise SyncError(f"shard path {sh.path!r} is listed twice in the manifest: rebuild the shard set")
        seen.add(sh.path)
    mine = select_shards(manifest, rank=rank, world_size=world_size, splits=splits)
    # every rank gets the split-level files (e.g. MDS index.json) of the splits it syncs
    mine += [f for f in manifest.files if not splits or (f.split or f.path.split("/", 1)[0]) in splits]

    # Decide what is already there: trust size + recorded checksum + mtime (or re-hash).
    state_files = _load_state(dest) if dest.exists() else {}
    todo: list[ShardEntry] = []
    rehash: list[ShardEntry] = []
    for sh in mine:
        try:
            st = os.stat(dest / sh.path)
        except OSError:
            todo.append(sh)
            continue
        rec = state_files.get(sh.path)
        if st.st_size != sh.bytes:
            todo.append(sh)
        elif (
            not verify_local
            and isinstance(rec, dict)
            and rec.get("sha256") == sh.sha256
            and rec.get("bytes") == sh.bytes
            and rec.get("mtime_ns") == st.st_mtime_ns
        ):
            continue
        else:
            rehash.append(sh)

    # A killed sync's temp files count as used space until removed: remove them before measuring.
    if dest.exists():
        _clean_stale_tmp({dest} | {(dest / s.path).parent for s in [*manifest.shards, *manifest.files]})

    nworkers = workers or DEFAULT_WORKERS
    # Space for the missing shards, plus temp copies of local files that may fail re-hashing
    # (at most one per worker at a time; the old copy is only replaced after verification).
    need = sum(s.bytes for s in todo) + sum(sorted(s.bytes for s in rehash)[-nworkers:]) + len(raw)
    probe = dest
    while not probe.exists():
        probe = probe.parent
    free = free_bytes(probe)
    if need > free:
        raise SyncError(
            f"not enough disk space in {dest}: this sync may need {_human(need)} but {_human(free)} is free - "
            "free space, choose another DEST, or sync fewer shards (--split, --world-size)"
        )

    dest.mkdir(parents=True, exist_ok=True)
    # A DEST manifest that no longer matches the source must not vouch for a half-updated DEST.
    old_manifest = dest / MANIFEST_NAME
    if old_manifest.exists() and (todo or rehash) and old_manifest.read_bytes() != raw:
        old_manifest.unlink()
    state = _StateWriter(dest, {k: v for k, v in state_files.items() if isinstance(v, dict)})

    stop = threading.Event()
    bar = _Progress(progress, sum(s.bytes for s in todo + rehash), f"sync {len(todo) + len(rehash)} shards")
    worker = _Worker(source, dest, state, bar.advance, stop, direct_io=direct_io)
    downloaded = transferred = 0

    def local_check(sh: ShardEntry) -> int:
        """Re-hash a local copy; download it again only if it is wrong.  -1 means it verified."""
        p = dest / sh.path
        before = os.stat(p)
        if _hash_file(p, worker.buf()) == sh.sha256:
            state.record(sh, before)
            bar.advance(sh.bytes)
            return -1
        state.forget(sh.path)
        return worker.fetch(sh)

    # imported here: a no-op re-sync (the common case) starts faster without it
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    try:
        with bar, ThreadPoolExecutor(max_workers=nworkers, thread_name_prefix="sync") as pool:
            futs = [pool.submit(worker.fetch, sh) for sh in sorted(todo, key=lambda s: -s.bytes)]
            futs += [pool.submit(local_check, sh) for sh in rehash]
            try:
                done, pending = wait(futs, return_when=FIRST_EXCEPTION)
            except BaseException:  # Ctrl-C: let running transfers stop at their next chunk
                stop.set()
                raise
            if pending:
                stop.set()
                for f in pending:
                    f.cancel()
                wait(pending)
            for f in futs:
                if f.cancelled():
                    continue
                exc = f.exception()
                if isinstance(exc, _Cancelled):
                    continue
                if exc is not None:
                    raise exc
                n = f.result()
                if n >= 0:
                    downloaded += 1
                    transferred += n
    except _Transient as exc:
        raise SyncError(f"transfer failed: {exc}") from None
    finally:
        state.flush()

    deleted = 0
    if delete:
        deleted = _delete_unlisted(dest, {s.path for s in mine})
        if deleted:
            for p in list(state.files):
                if p not in {s.path for s in mine}:
                    state.forget(p)
            state.flush()

    if not (old_manifest.exists() and old_manifest.read_bytes() == raw):
        _atomic_write(old_manifest, raw)
    return SyncResult(
        files=len(mine),
        downloaded=downloaded,
        skipped=len(mine) - downloaded,
        deleted=deleted,
        retried=worker.retried,
        bytes=transferred,
        total_bytes=sum(s.bytes for s in mine),
        seconds=round(time.perf_counter() - t0, 4),
        dest=str(dest),
        source=source.uri,
        rank=rank,
        world_size=world_size,
        dataset=manifest.dataset,
        snapshot=manifest.snapshot,
    )


def prune_synced(root: str | Path, *, keep: int, current: str | Path) -> list[str]:
    """Remove all but the ``keep`` newest synced copies (DEST directories) directly under ``root``;
    ``current`` always stays.  Only directories a sync wrote (with its state file or manifest)
    are touched; a copy's age is its manifest's ``created_at`` (else when its state was written)."""
    import shutil
    from datetime import datetime

    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    current = Path(current).resolve()
    aged: list[tuple[float, Path]] = []
    for d in Path(root).iterdir() if Path(root).is_dir() else ():
        if not d.is_dir() or d.is_symlink() or d.resolve() == current:
            continue
        when = None
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            when = datetime.fromisoformat(json.loads((d / MANIFEST_NAME).read_bytes())["created_at"]).timestamp()
        if when is None:
            with contextlib.suppress(OSError):
                when = (d / STATE_NAME).stat().st_mtime
        if when is not None:
            aged.append((when, d))
    aged.sort(reverse=True)
    removed = []
    for _, d in aged[keep - 1:]:
        with contextlib.suppress(FileNotFoundError):
            (d / MANIFEST_NAME).unlink()  # first: a half-removed copy no longer looks complete
        shutil.rmtree(d)
        removed.append(d.name)
    return removed


def _delete_unlisted(dest: Path, keep: set[str]) -> int:
    """Remove files under DEST that this rank's selection does not list (``--delete``)."""
    n = 0
    for root, dirs, files in os.walk(dest, topdown=False):
        for name in files:
            p = Path(root, name)
            rel = p.relative_to(dest).as_posix()
            if rel in (MANIFEST_NAME, STATE_NAME) or rel in keep:
                continue
            p.unlink()
            n += 1
        for d in dirs:
            with contextlib.suppress(OSError):
                Path(root, d).rmdir()  # only empties
    return n


class _Progress:
    """A rich bar with bytes/s and ETA on a terminal; a no-op otherwise."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled = enabled and total > 0
        self._bar = None
        self._task = None
        self.total, self.label = total, label

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
