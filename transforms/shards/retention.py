"""Shard-set retention for `ingest run`: keep the newest N sets of its own snapshots.

Every pipeline run with new data makes a snapshot and a full shard set, so without this the lake
grows by one shard set per run.  Only sets named after a snapshot the pipeline made
(``PIPELINE_NOTE``) or after a snapshot that no longer exists are pruned; such a snapshot is
dropped with its set (it exists only to name the set, and its pins would keep old table files
from `ingest vacuum`).  A set of a snapshot made by hand (`ingest snapshot create`) is never
removed and does not count towards N: drop that snapshot first to let retention take it.
"""

from __future__ import annotations

import json
from datetime import datetime

from ingest.lake import Lake
from ingest.sync.manifest import MANIFEST_NAME


def _manifest_time(fs, root: str) -> datetime | None:
    try:
        with fs.open_input_stream(f"{root}/{MANIFEST_NAME}") as fh:
            return datetime.fromisoformat(json.loads(fh.read())["created_at"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def prune_shard_sets(lake: Lake, dataset: str, *, keep: int, current: str) -> list[str]:
    """Remove all but the ``keep`` newest prunable shard sets of ``dataset`` (``current``, the
    set just built or reused, always stays); returns the removed sets' snapshot names."""
    import pyarrow.fs as pafs

    from ingest.snapshots import PIPELINE_NOTE, drop_snapshot, list_snapshots

    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    fs = lake.pyarrow_filesystem()
    base = lake.fs_path(lake.path("shards", dataset))
    snaps = {s.name: s for s in list_snapshots(lake)}
    aged: list[tuple[datetime, str]] = []
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        name = info.base_name
        if info.type != pafs.FileType.Directory or name == current:
            continue
        snap = snaps.get(name)
        if snap is not None and snap.note != PIPELINE_NOTE:
            continue  # pinned by hand: kept, not counted
        when = snap.created_at if snap is not None else _manifest_time(fs, info.path)
        if when is not None:  # a set we cannot date is left alone
            aged.append((when, name))
    aged.sort(reverse=True)
    removed = []
    for _, name in aged[keep - 1 :]:  # `current` is one of the kept
        if name in snaps:
            drop_snapshot(lake, name)  # first: a set without snapshot is still found (by manifest) next time
        root = f"{base}/{name}"
        try:
            fs.delete_file(f"{root}/{MANIFEST_NAME}")  # a half-removed set no longer looks complete
        except (FileNotFoundError, OSError):
            pass
        fs.delete_dir(root)
        removed.append(name)
    return removed
