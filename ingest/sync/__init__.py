"""Stage a shard set onto a GPU node's local disk: this rank's shards, verified, resumable.

Why not ``aws s3 sync``/``s5cmd``: they verify nothing against the shard manifest, do not know
ranks, and an interrupted copy can leave a truncated file under its final name.  Here every byte
is hashed while it streams to a temporary name and only a verified file is renamed into place.

Modules, each one job: ``manifest`` (the schema ``ingest shards`` writes; standard library only),
``plan`` (safe paths, ranks, splits), ``sources`` (local directory, S3), ``state`` (DEST
bookkeeping), ``transfer`` (the verified copy); the terminal bar is ``ingest.progress``.  This module
runs them in order (``sync_shards``) and prunes old copies (``prune_synced``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.errors import ConfigError
from ingest.progress import progress_bar
from ingest.sync.manifest import MANIFEST_NAME, SUMS_NAME, ShardEntry, ShardManifest, SyncError
from ingest.sync.plan import RANK_ENV_PAIRS, assign_ranks, resolve_rank, safe_relpath, select_shards
from ingest.sync.sources import LocalSource, S3Source, Source, open_source
from ingest.sync.state import (
    STATE_NAME,
    TMP_SUFFIX,
    StateWriter,
    atomic_write,
    clean_stale_tmp,
    free_bytes,
    hash_file,
    human,
    load_state,
)
from ingest.sync.transfer import ATTEMPTS, CHUNK, DEFAULT_WORKERS, DIRECT_ALIGN, Cancelled, Worker

if TYPE_CHECKING:  # pragma: no cover
    from ingest.lake import Lake

__all__ = [
    "ATTEMPTS",
    "CHUNK",
    "DEFAULT_WORKERS",
    "DIRECT_ALIGN",
    "MANIFEST_NAME",
    "RANK_ENV_PAIRS",
    "STATE_NAME",
    "SUMS_NAME",
    "TMP_SUFFIX",
    "LocalSource",
    "S3Source",
    "ShardEntry",
    "ShardManifest",
    "Source",
    "SyncError",
    "SyncResult",
    "assign_ranks",
    "clean_stale_tmp",
    "free_bytes",
    "open_source",
    "prune_synced",
    "resolve_rank",
    "safe_relpath",
    "select_shards",
    "sync_shards",
]


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


def sync_shards(
    src: str,
    dest: str | Path,
    *,
    lake: Lake | None = None,
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
    state_files = load_state(dest) if dest.exists() else {}
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
        clean_stale_tmp({dest} | {(dest / s.path).parent for s in [*manifest.shards, *manifest.files]})

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
            f"not enough disk space in {dest}: this sync may need {human(need)} but {human(free)} is free - "
            "free space, choose another DEST, or sync fewer shards (--split, --world-size)"
        )

    dest.mkdir(parents=True, exist_ok=True)
    # A DEST manifest that no longer matches the source must not vouch for a half-updated DEST.
    old_manifest = dest / MANIFEST_NAME
    if old_manifest.exists() and (todo or rehash) and old_manifest.read_bytes() != raw:
        old_manifest.unlink()
    state = StateWriter(dest, {k: v for k, v in state_files.items() if isinstance(v, dict)})

    stop = threading.Event()
    total = sum(s.bytes for s in todo + rehash)
    label = f"sync {len(todo) + len(rehash)} shards"
    downloaded = transferred = 0

    def local_check(sh: ShardEntry) -> int:
        """Re-hash a local copy; download it again only if it is wrong.  -1 means it verified."""
        p = dest / sh.path
        before = os.stat(p)
        if hash_file(p, worker.buf()) == sh.sha256:
            state.record(sh, before)
            bar.advance(sh.bytes)
            return -1
        state.forget(sh.path)
        return worker.fetch(sh)

    # imported here: a no-op re-sync (the common case) starts faster without it
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    try:
        with (
            progress_bar(progress and total > 0, label, total=total, unit="bytes", transient=False) as bar,
            ThreadPoolExecutor(max_workers=nworkers, thread_name_prefix="sync") as pool,
        ):
            worker = Worker(source, dest, state, bar.advance, stop, direct_io=direct_io)
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
                if isinstance(exc, Cancelled):
                    continue
                if exc is not None:
                    raise exc
                n = f.result()
                if n >= 0:
                    downloaded += 1
                    transferred += n
    finally:
        state.flush()

    deleted = 0
    if delete:
        deleted = delete_unlisted(dest, {s.path for s in mine})
        if deleted:
            for p in list(state.files):
                if p not in {s.path for s in mine}:
                    state.forget(p)
            state.flush()

    if not (old_manifest.exists() and old_manifest.read_bytes() == raw):
        atomic_write(old_manifest, raw)
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
    for _, d in aged[keep - 1 :]:
        with contextlib.suppress(FileNotFoundError):
            (d / MANIFEST_NAME).unlink()  # first: a half-removed copy no longer looks complete
        shutil.rmtree(d)
        removed.append(d.name)
    return removed


def delete_unlisted(dest: Path, keep: set[str]) -> int:
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
