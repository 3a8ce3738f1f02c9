"""Which shards this rank stages, and where: safe paths, rank assignment, splits."""

from __future__ import annotations

import heapq
import os
import re
from pathlib import Path, PurePosixPath

from ingest.errors import ConfigError
from ingest.sync.manifest import MANIFEST_NAME, ShardEntry, ShardManifest, SyncError
from ingest.sync.state import STATE_NAME, TMP_SUFFIX

__all__ = ["RANK_ENV_PAIRS", "assign_ranks", "resolve_rank", "safe_relpath", "select_shards"]

# (rank variable, world-size variable) pairs, most specific first.
RANK_ENV_PAIRS: tuple[tuple[str, str], ...] = (
    ("RANK", "WORLD_SIZE"),  # torchrun / torch.distributed
    ("GROUP_RANK", "GROUP_WORLD_SIZE"),  # torchelastic node (agent) rank
    ("NODE_RANK", "NNODES"),  # one sync per node (Lightning, torchrun --node_rank)
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),  # Open MPI / Horovod
    ("PMI_RANK", "PMI_SIZE"),  # MPICH / Intel MPI
    ("SLURM_PROCID", "SLURM_NTASKS"),  # srun
)


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
                    raise ConfigError(
                        f"{rv}={env[rv]!r} / {wv}={env[wv]!r} are not integers: fix the launcher environment or pass --rank/--world-size"
                    ) from None
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


def select_shards(manifest: ShardManifest, *, rank: int, world_size: int, splits: list[str] | None) -> list[ShardEntry]:
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
