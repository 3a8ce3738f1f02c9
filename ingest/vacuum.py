"""Retention: delete old data files, except every file a pinned snapshot still reads, and files
no commit ever named once they are a day old (``ORPHAN_MIN_HOURS``).

deltalake's vacuum decides which files are old (by ``retain_hours``, keeping the versions we
pass); we subtract the files of every pinned version once more, ourselves, and delete the rest
through the lake's filesystem.  The commit log is never cleaned here, so pinned versions stay
reconstructible.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from urllib.parse import unquote

from ingest.errors import IngestError
from ingest.lake import Lake, TableId
from ingest.staging import STAGING_DIR

# Delta's default delta.deletedFileRetentionDuration (7 days): a reader that loaded an older
# version (`ingest sql --as-of`, a shard build) must find its files for at least this long.
MIN_RETAIN_HOURS = 168
# Files no commit ever named (a writer killed between writing and committing; a batch's staged
# files) go only when this old, whatever --retain-hours says: a running writer's files are
# unnamed until its commit, and deleting them then would commit references to missing files.
ORPHAN_MIN_HOURS = 24


class RetentionTooShort(IngestError):
    """``retain_hours`` below Delta's minimum without ``force``."""


class VersionVacuumed(IngestError):
    """A read needs data files that vacuum deleted."""


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
    root = unquote(root).rstrip("/").removeprefix("file://")  # deltalake: root file:///x/, files /x/...
    for prefix in (root + "/", "file://" + root + "/"):
        if p.startswith(prefix):
            return p[len(prefix) :]
    return p


def files_of_version(lake: Lake, table: str | TableId, version: int) -> set[str]:
    """Every data (and deletion-vector-free) file a version reads, relative to the table root."""
    dt = lake.delta_table(table, version=version)
    root = dt.table_uri
    return {_rel(u, root) for u in dt.file_uris()}


def missing_files(lake: Lake, table: str | TableId, version: int | None = None) -> tuple[int, list[str]]:
    """(the version, the data files it reads that no longer exist)."""
    import pyarrow.fs as pafs

    v = version if version is not None else lake.delta_table(table).version()
    rels = sorted(files_of_version(lake, table, v))
    root = lake.table_uri(table).rstrip("/")
    infos = lake.pyarrow_filesystem().get_file_info([lake.fs_path(f"{root}/{r}") for r in rels])
    return v, [r for r, i in zip(rels, infos, strict=True) if i.type == pafs.FileType.NotFound]


def raise_if_vacuumed(lake: Lake, reads: dict[str, int | None]) -> None:
    """After a failed read of ``{table: version or None (latest)}``: ``VersionVacuumed`` if the
    reason is that vacuum deleted files of a version read, else nothing (the caller re-raises)."""
    for table, version in reads.items():
        try:
            v, gone = missing_files(lake, table, version)
        except (IngestError, OSError):  # the table or version itself is gone, or storage fails: not this case
            continue
        if gone:
            raise VersionVacuumed(
                f"version {v} of {table} was vacuumed ({len(gone)} of its data files are deleted): "
                f"read a newer version (`ingest history {table}`); pin versions you need with `ingest snapshot create`"
            )


def vacuum(
    lake: Lake,
    *,
    retain_hours: float = MIN_RETAIN_HOURS,
    dry_run: bool = False,
    tables: list[str] | None = None,
    force: bool = False,
) -> VacuumResult:
    """Delete files older than ``retain_hours`` that no current version or pinned snapshot needs.

    Below ``MIN_RETAIN_HOURS`` a concurrent reader of an older version could lose its files
    mid-read, so that needs ``force`` (a dry run deletes nothing and needs none).
    """
    if retain_hours < 0:
        raise ValueError(f"retain_hours must be >= 0, got {retain_hours}")
    if retain_hours < MIN_RETAIN_HOURS and not (force or dry_run):
        raise RetentionTooShort(
            f"refused: --retain-hours {retain_hours:g} is below Delta's minimum of {MIN_RETAIN_HOURS} h (7 days): "
            "a query or shard build reading an older version could lose its files mid-read; pass --force to vacuum anyway"
        )
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
        # delta-rs' lite mode: files commits removed, older than asked (never shorter); its full
        # mode (as Delta's own VACUUM) adds files in the folder no commit names, at the floor
        candidates = set(
            dt.vacuum(
                retention_hours=math.ceil(retain_hours),
                dry_run=True,
                enforce_retention_duration=False,
                keep_versions=versions or None,
            )
        ) | set(
            dt.vacuum(
                retention_hours=math.ceil(max(retain_hours, ORPHAN_MIN_HOURS)),
                dry_run=True,
                enforce_retention_duration=False,
                keep_versions=versions or None,
                full=True,
            )
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
                if not lake.is_s3 and rel.startswith(f"{STAGING_DIR}/"):  # a batch's folder, empty now
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.dirname(full))
            tv.deleted.append(rel)
        results.append(tv)
    return VacuumResult(retain_hours=retain_hours, dry_run=dry_run, tables=results)
