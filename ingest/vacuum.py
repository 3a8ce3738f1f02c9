"""Retention: delete old data files, except every file a pinned snapshot still reads.

deltalake's vacuum decides which files are old (by ``retain_hours``, keeping the versions we
pass); we subtract the files of every pinned version once more, ourselves, and delete the rest
through the lake's filesystem.  The commit log is never cleaned here, so pinned versions stay
reconstructible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import unquote

from ingest.lake import Lake, TableId


@dataclass
class TableVacuum:
    table: str
    pinned_versions: list[int]
    deleted: list[str] = field(default_factory=list)  # paths relative to the table root
    kept_for_pins: list[str] = field(default_factory=list)
    bytes_deleted: int = 0


@dataclass
class VacuumResult:
    retain_hours: float
    dry_run: bool
    tables: list[TableVacuum]

    @property
    def files_deleted(self) -> int:
        return sum(len(t.deleted) for t in self.tables)

    def payload(self) -> dict:
        return {
            "retain_hours": self.retain_hours,
            "dry_run": self.dry_run,
            "files_deleted": self.files_deleted,
            "bytes_deleted": sum(t.bytes_deleted for t in self.tables),
            "tables": [
                {
                    "table": t.table,
                    "pinned_versions": t.pinned_versions,
                    "files_deleted": len(t.deleted),
                    "files_kept_for_pins": len(t.kept_for_pins),
                    "bytes_deleted": t.bytes_deleted,
                }
                for t in self.tables
            ],
        }


def _rel(path: str, root: str) -> str:
    """A data file path relative to its table root, URL-decoded (add actions encode partitions)."""
    p = unquote(path)
    root = unquote(root).rstrip("/")
    for prefix in (root + "/", "file://" + root + "/"):
        if p.startswith(prefix):
            return p[len(prefix) :]
    return p


def files_of_version(lake: Lake, table: str | TableId, version: int) -> set[str]:
    """Every data (and deletion-vector-free) file a version reads, relative to the table root."""
    dt = lake.delta_table(table, version=version)
    root = dt.table_uri
    return {_rel(u, root) for u in dt.file_uris()}


def vacuum(lake: Lake, *, retain_hours: float = 168, dry_run: bool = False, tables: list[str] | None = None) -> VacuumResult:
    """Delete files older than ``retain_hours`` that no current version or pinned snapshot needs."""
    if retain_hours < 0:
        raise ValueError(f"retain_hours must be >= 0, got {retain_hours}")
    from ingest.runlog import track

    with track(lake, command="vacuum", source=f"retain_hours={retain_hours:g}", target="lake") as run:
        result = _vacuum(lake, retain_hours=retain_hours, dry_run=dry_run, tables=tables)
        run.details = result.payload()
        run.rows_written = 0
    return result


def _vacuum(lake: Lake, *, retain_hours: float, dry_run: bool, tables: list[str] | None) -> VacuumResult:
    from ingest.snapshots import pinned_versions

    pins = pinned_versions(lake)
    fs = lake.pyarrow_filesystem()
    todo = [TableId.parse(t) for t in tables] if tables else lake.list_tables()
    results: list[TableVacuum] = []
    for tid in todo:
        dt = lake.delta_table(tid)
        versions = [v for v in pins.get(str(tid), []) if v <= dt.version()]
        candidates = dt.vacuum(
            retention_hours=math.ceil(retain_hours),  # never shorter than asked
            dry_run=True,
            enforce_retention_duration=False,
            keep_versions=versions or None,
        )
        protected: set[str] = set()
        for v in versions:
            protected |= files_of_version(lake, tid, v)
        root = lake.table_uri(tid)
        tv = TableVacuum(table=str(tid), pinned_versions=versions)
        for cand in sorted(candidates):
            rel = _rel(cand, root)
            if rel in protected:
                tv.kept_for_pins.append(rel)
                continue
            full = lake.fs_path(f"{root.rstrip('/')}/{rel}")
            if not dry_run:
                info = fs.get_file_info(full)
                tv.bytes_deleted += max(info.size or 0, 0)
                try:
                    fs.delete_file(full)
                except FileNotFoundError:
                    continue
            tv.deleted.append(rel)
        results.append(tv)
    return VacuumResult(retain_hours=retain_hours, dry_run=dry_run, tables=results)
