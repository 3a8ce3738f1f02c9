"""Build a training shard set from a table pinned by a snapshot, with manifest.json and SHA256SUMS.

The shard set lives at ``<lake>/shards/DATASET/SNAPSHOT/``.  ``manifest.json`` is written last
(its presence means the set is complete); its schema is ``ingest.sync.manifest.ShardManifest``,
the one ``ingest sync`` reads.  Everything format-specific is the format's class
(``transforms.shards.formats.FORMATS``).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel

from ingest.errors import ConfigError, IngestError
from ingest.lake import Lake, TableId
from ingest.progress import progress_bar
from ingest.sync.manifest import MANIFEST_NAME, SUMS_NAME, ShardEntry, ShardManifest
from transforms.shards.formats import Format, HashingWriter, ShardSpec, shard_format, write_shard_rows
from transforms.shards.plan import (
    SampleInfo,
    ShardPlan,
    key_text,
    order_of,
    parse_size,
    plan_shards,
    split_of,
    validate_split,
)

__all__ = [
    "ENGINES",
    "Engine",
    "ShardJob",
    "ShardSetResult",
    "build_options",
    "build_shards",
    "clear_shard_set",
    "code_version",
    "default_key",
    "finish",
    "shard_path",
    "source_runs",
    "write_index_files",
    "write_local",
    "write_one",
    "write_prepared",
]

Engine = Literal["local", "spark"]


@dataclass(frozen=True)
class ShardJob:
    """One shard set to build, whichever engine builds it: the pinned table, the format, how
    samples are keyed, split and sized, and the engines' own run options."""

    lake: Lake
    root: str
    table: TableId
    version: int
    format: Format
    key: str | None
    splits: Sequence[tuple[str, float]]
    target: int
    seed: int
    mtime: int
    progress: bool = False  # local: a progress bar on stderr
    spark_master: str | None = None  # spark: where its session starts (None: an active one, or local[2])


def _spark_engine(job: ShardJob) -> tuple[ShardSpec, list[dict[str, Any]]]:
    """Plan on the driver, write shards in Spark tasks (pyspark is imported only for this engine)."""
    from transforms.shards.spark import build_with_spark

    return build_with_spark(
        job.lake,
        job.root,
        job.table,
        job.version,
        format=job.format,
        key=job.key,
        splits=job.splits,
        target=job.target,
        seed=job.seed,
        mtime=job.mtime,
        master=job.spark_master,
    )


class ShardSetResult(BaseModel):
    """What a build wrote: where, the manifest, and totals."""

    uri: str
    manifest: dict[str, Any]
    shards: int
    samples: int
    bytes: int
    reused: bool = False  # an identical complete set was already there (``reuse``)

    def payload(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "shards": self.shards,
            "samples": self.samples,
            "bytes": self.bytes,
            "manifest": self.manifest,
        }


def shard_path(fmt: str, split: str, index: int) -> str:
    """Path of a shard relative to the set root (POSIX, no '..')."""
    return f"{split}/shard-{index:06d}.{shard_format(fmt).ext}"


def code_version() -> str:
    """The package version plus the git commit when run from a checkout."""
    from ingest import __version__

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__


def source_runs(lake: Lake, table: str, version: int) -> list[dict[str, Any]]:
    """Runs in ``_meta.runs`` that wrote ``table`` up to ``version`` (its lineage)."""
    from ingest.runlog import RUNS_TABLE

    if not lake.table_exists(RUNS_TABLE):
        return []
    runs = (
        lake.delta_table(RUNS_TABLE)
        .to_pyarrow_table(columns=["run_id", "command", "source", "target", "version_after", "started_at", "status"])
        .to_pylist()
    )
    out = [
        {
            "run_id": r["run_id"],
            "command": r["command"],
            "source": r["source"],
            "target": r["target"],
            "version_after": r["version_after"],
            "started_at": r["started_at"].isoformat() if r["started_at"] else None,
        }
        for r in runs
        if r["target"] == table
        and r["status"] == "success"
        and r["version_after"] is not None
        and r["version_after"] <= version
    ]
    return sorted(out, key=lambda r: (r["version_after"], r["run_id"]))


def default_key(schema: pa.Schema) -> str:
    for name in schema.names:
        if name.endswith("_id") or name == "id":
            return name
    raise ConfigError(f"no --key given and no *_id column among {', '.join(schema.names)}: pass --key COLUMN")


def nullable_columns(table: pa.Table) -> set[str]:
    return {n for n in table.column_names if table.column(n).null_count > 0}


def write_index_files(fs, root: str, spec: ShardSpec, shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The files besides the shards that the format's readers need (MDS: ``index.json`` per split)."""
    return [_put(fs, f"{root}/{rel}", data, rel) for rel, data in spec.codec.index_files(spec, shards).items()]


def _mkparent(fs, full: str) -> None:
    """Local filesystems need the directory; object stores must not get directory markers."""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(full.rsplit("/", 1)[0], recursive=True)


def _put(fs, full: str, data: bytes, rel: str) -> dict[str, Any]:
    import hashlib

    _mkparent(fs, full)
    with fs.open_output_stream(full) as out:
        out.write(data)
    return {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_local(
    lake: Lake,
    root: str,
    spec: ShardSpec,
    plans: list[ShardPlan],
    table: pa.Table,
    *,
    prepared: dict[str, list] | None = None,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Write every planned shard in this process, two shards at a time.

    ``prepared`` (WebDataset) maps each key to its tar pieces from the sizing pass, whose payloads
    are views into ``table``: nothing is encoded or copied twice.  Shards are independent, and
    hashing and writing release the GIL, so a second thread keeps the disk and a core busy.
    """
    from concurrent.futures import ThreadPoolExecutor

    fs = lake.pyarrow_filesystem()
    root_fs = lake.fs_path(root)
    pos: dict[str, int] = {}
    if prepared is None:
        pos = {key_text(v): i for i, v in enumerate(table.column(spec.key).to_pylist())}

    def one(plan: ShardPlan) -> dict[str, Any]:
        if prepared is not None:
            return write_prepared(fs, root_fs, spec, plan, prepared)
        rows = table.take(pa.array([pos[k] for k in plan.keys], pa.int64()))
        return write_one(fs, root_fs, spec, plan, rows)

    shards = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for info in pool.map(one, plans):
            shards.append(info)
            if on_shard:
                on_shard(info)
    return shards


def write_prepared(
    fs, root_fs_path: str, spec: ShardSpec, plan: ShardPlan, prepared: dict[str, list]
) -> dict[str, Any]:
    """Write one shard from the pieces the format's sizing pass prepared (``ShardFormat.prepare``)."""
    rel = shard_path(spec.format, plan.split, plan.index)
    _mkparent(fs, f"{root_fs_path}/{rel}")
    with fs.open_output_stream(f"{root_fs_path}/{rel}") as stream:
        hw = HashingWriter(stream)
        try:
            spec.codec.write_prepared(spec, (prepared[k] for k in plan.keys), hw)
        finally:
            hw.close()
    return {"path": rel, "split": plan.split, "samples": plan.samples, "bytes": hw.bytes, "sha256": hw.sha.hexdigest()}


def write_one(fs, root_fs_path: str, spec: ShardSpec, plan: ShardPlan, rows: pa.Table) -> dict[str, Any]:
    """Write one shard (rows in shard order) and describe it for the manifest."""
    rel = shard_path(spec.format, plan.split, plan.index)
    _mkparent(fs, f"{root_fs_path}/{rel}")
    with fs.open_output_stream(f"{root_fs_path}/{rel}") as stream:
        hw = HashingWriter(stream)
        try:
            n = write_shard_rows(spec, rows, hw)
        finally:
            hw.close()
    return {"path": rel, "split": plan.split, "samples": n, "bytes": hw.bytes, "sha256": hw.sha.hexdigest()}


def clear_shard_set(fs, root_fs: str) -> None:
    """Empty a shard-set directory before a build, manifest first (a half-removed set never looks complete)."""
    import pyarrow.fs as pafs

    info = fs.get_file_info(root_fs)
    if info.type == pafs.FileType.NotFound:
        return
    try:
        fs.delete_file(f"{root_fs}/{MANIFEST_NAME}")
    except (FileNotFoundError, OSError):
        pass
    fs.delete_dir_contents(root_fs, missing_dir_ok=True)


def build_shards(
    lake: Lake,
    dataset: str,
    *,
    table: str,
    snapshot: str,
    format: Format = "webdataset",
    key: str | None = None,
    split: dict[str, float] | None = None,
    shard_size: str | int = "256MB",
    seed: int = 0,
    engine: Engine = "local",
    progress: bool = False,
    reuse: bool = False,
    spark_master: str | None = None,
) -> ShardSetResult:
    """Write ``<lake>/shards/DATASET/SNAPSHOT/`` from ``table`` at the snapshot's version.

    Deterministic: the same snapshot and arguments give byte-identical shards and checksums, so
    with ``reuse`` a complete set built with the same arguments is returned as it is (``reused``).
    ``engine="spark"`` starts its session on ``spark_master`` (``Settings.spark_master``;
    default ``local[2]``) unless one is already active.
    """
    from ingest.runlog import track
    from ingest.snapshots import get_snapshot

    codec = shard_format(format)
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}: use {' or '.join(ENGINES)}")
    if not re.match(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$", dataset or ""):
        raise ConfigError(f"bad dataset name {dataset!r}: start with a letter, then letters, digits, '_', '-' or '.'")
    splits = validate_split(split if split is not None else {"train": 0.9, "val": 0.1})
    target = parse_size(shard_size)
    codec.check_size(target)
    tid = TableId.parse(table)
    snap = get_snapshot(lake, snapshot)
    if str(tid) not in snap.tables:
        raise ConfigError(
            f"snapshot {snapshot!r} does not pin {tid}; it pins {', '.join(sorted(snap.tables)) or 'nothing'}"
        )
    version = snap.tables[str(tid)]
    root = lake.path("shards", dataset, snap.name)
    options = build_options(splits, target, seed)
    if reuse and (found := _existing(lake, root, {str(tid): version}, format=format, key=key, options=options)):
        return found
    with track(lake, command="shards build", source=f"{tid}@{version}", target=root) as run:
        job = ShardJob(
            lake,
            root,
            tid,
            version,
            format=format,
            key=key,
            splits=splits,
            target=target,
            seed=seed,
            mtime=int(snap.created_at.timestamp()),
            progress=progress,
            spark_master=spark_master,
        )
        spec, shards = ENGINES[engine](job)
        manifest = finish(
            lake,
            root,
            spec,
            shards,
            dataset=dataset,
            snapshot=snap.name,
            tables={str(tid): version},
            options=options,
        )
        run.rows_written = sum(s["samples"] for s in shards)
        run.details = {"shards": len(shards), "format": format, "engine": engine, "snapshot": snap.name}
    return ShardSetResult(
        uri=root,
        manifest=manifest,
        shards=len(shards),
        samples=sum(s["samples"] for s in shards),
        bytes=sum(s["bytes"] for s in shards),
    )


def build_options(splits: list[tuple[str, float]], target: int, seed: int) -> dict[str, Any]:
    """The arguments besides table, format and key that shape a shard set (kept in its manifest)."""
    return {"split": dict(splits), "shard_size": target, "seed": seed}


def _existing(
    lake: Lake, root: str, tables: dict[str, int], *, format: str, key: str | None, options: dict[str, Any]
) -> ShardSetResult | None:
    """The complete set at ``root`` if its manifest records the same pin, format, key and options."""
    try:
        with lake.pyarrow_filesystem().open_input_stream(lake.fs_path(f"{root}/{MANIFEST_NAME}")) as fh:
            raw = fh.read()
        manifest = ShardManifest.from_dict(json.loads(raw))
    except (FileNotFoundError, ValueError):
        return None
    if (manifest.tables, manifest.format, manifest.options) != (tables, format, options) or (
        key is not None and manifest.key != key
    ):
        return None
    return ShardSetResult(
        uri=root,
        manifest=json.loads(raw),
        shards=len(manifest.shards),
        reused=True,
        samples=sum(s.samples or 0 for s in manifest.shards),
        bytes=sum(s.bytes for s in manifest.shards),
    )


def _local_engine(job: ShardJob) -> tuple[ShardSpec, list[dict[str, Any]]]:
    """Read the pinned version into memory and write the shards from this process."""
    lake, root, tid, version, splits, target = job.lake, job.root, job.table, job.version, job.splits, job.target
    try:
        data = lake.delta_table(tid, version=version).to_pyarrow_table()
    except Exception:  # only explained here, re-raised as it is otherwise
        from ingest.vacuum import raise_if_vacuumed

        raise_if_vacuumed(lake, {str(tid): version})
        raise
    spec = ShardSpec.from_schema(
        data.schema,
        format=job.format,
        key=job.key or default_key(data.schema),
        mtime=job.mtime,
        size_limit=target,
        nullable=nullable_columns(data),
    )
    try:
        sizes, prepared = spec.codec.prepare(spec, data)
        infos = [SampleInfo(k, split_of(k, splits), order_of(k, job.seed), size) for k, size in sizes]
        plans = plan_shards(infos, splits=splits, target=target, overhead=spec.shard_overhead())
    except ValueError as exc:
        raise ConfigError(f"{tid}@{version}: {exc}") from None
    fs = lake.pyarrow_filesystem()
    clear_shard_set(fs, lake.fs_path(root))
    with progress_bar(job.progress, f"shards {Path(root).name}", total=len(plans)) as bar:
        shards = write_local(lake, root, spec, plans, data, prepared=prepared, on_shard=lambda _i: bar.advance())
    return spec, shards


# the shard builders by engine name (``--engine``)
ENGINES: dict[str, Callable[[ShardJob], tuple[ShardSpec, list[dict[str, Any]]]]] = {
    "local": _local_engine,
    "spark": _spark_engine,
}


def finish(
    lake: Lake,
    root: str,
    spec: ShardSpec,
    shards: list[dict[str, Any]],
    *,
    dataset: str,
    snapshot: str,
    tables: dict[str, int],
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the MDS index (if any), SHA256SUMS, then manifest.json; return the manifest."""
    fs = lake.pyarrow_filesystem()
    root_fs = lake.fs_path(root)
    shards = sorted(shards, key=lambda s: s["path"])
    extra = write_index_files(fs, root_fs, spec, shards)
    for s in shards + extra:
        if s["path"].startswith("/") or ".." in s["path"].split("/"):
            raise IngestError(f"internal error: shard path {s['path']!r} escapes the shard set")
    sums = "".join(f"{f['sha256']}  {f['path']}\n" for f in sorted(shards + extra, key=lambda f: f["path"]))
    _put(fs, f"{root_fs}/{SUMS_NAME}", sums.encode("ascii"), SUMS_NAME)
    table = next(iter(tables))
    manifest = ShardManifest(
        dataset=dataset,
        snapshot=snapshot,
        format=spec.format,
        created_at=datetime.now(UTC).isoformat(),
        tables=tables,
        source_runs=source_runs(lake, table, tables[table]),
        code_version=code_version(),
        key=spec.key,
        options=options or {},
        shards=[ShardEntry(**s) for s in shards],
        files=[ShardEntry(**f) for f in extra],  # other files readers need (MDS index.json per split)
    )
    _put(fs, f"{root_fs}/{MANIFEST_NAME}", manifest.to_bytes(), MANIFEST_NAME)
    return manifest.to_dict()
