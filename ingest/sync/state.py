"""DEST bookkeeping: the state file of verified shards, locked temp files, stale-temp cleanup, free space.

A small state file in DEST records what was verified (size, sha256, mtime), so a re-sync of a
complete DEST only stats files instead of re-hashing them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ingest.sync.manifest import ShardEntry

__all__ = [
    "STATE_NAME",
    "TMP_SUFFIX",
    "StateWriter",
    "Transient",
    "atomic_write",
    "clean_stale_tmp",
    "free_bytes",
    "hash_file",
    "human",
    "load_state",
    "lock_tmp",
]

STATE_NAME = ".ingest-sync-state.json"
TMP_SUFFIX = ".ingest-tmp"


class Transient(Exception):
    """A network or race error worth retrying (never leaves the package: retried, then a ``SyncError``)."""


def load_state(dest: Path) -> dict[str, dict[str, Any]]:
    """The verified files recorded in DEST (empty when the state file is missing or unreadable)."""
    try:
        data = json.loads((dest / STATE_NAME).read_bytes())
        files = data.get("files", {})
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` through a locked, fsynced temp file and a rename (never half-written)."""
    for attempt in range(3):
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}{TMP_SUFFIX}")
        with open(tmp, "wb") as fh:
            try:
                lock_tmp(fh.fileno(), tmp)
            except Transient:  # another sync removed it as stale before we locked it: a new name
                if attempt == 2:
                    raise OSError(f"temp file {tmp.name} was removed by another sync three times") from None
                continue
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return


def lock_tmp(fd: int, path: Path) -> None:
    """Lock a temp file for as long as it is open: a sync removes only unlocked temp files
    (``clean_stale_tmp``), so a killed run's leftovers go and a running sync's stay.

    Raises:
        Transient: the file was removed as stale between our create and our lock.
    """
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        raise Transient(f"temp file {path.name} was removed by another sync")


class StateWriter:
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
            data = json.dumps({"version": 1, "files": self.files}, separators=(",", ":")).encode()
            atomic_write(self.dest / STATE_NAME, data)
            self._dirty = False
        self._last = time.monotonic()


def hash_file(path: Path, buf: memoryview) -> str:
    """sha256 of a local file, read through ``buf``."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use there (``shutil.disk_usage().free``, without
    importing shutil at start-up)."""
    vfs = os.statvfs(path)
    return vfs.f_bavail * vfs.f_frsize


def human(n: float) -> str:
    """A byte count for messages (``1.5 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def clean_stale_tmp(dirs: set[Path]) -> int:
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
