"""Build a training shard set from a table pinned by a snapshot, with manifest.json and SHA256SUMS.

The shard set lives at ``<lake>/shards/DATASET/SNAPSHOT/``.  ``manifest.json`` is written last
(its presence means the set is complete) and is the contract ``ingest sync`` reads.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

import pyarrow as pa
from pydantic import BaseModel

from ingest.errors import ConfigError, IngestError
from ingest.lake import Lake, TableId
from transforms.shards.formats import FORMATS, Format, HashingWriter, ShardSpec, write_shard_rows
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

Engine = Literal["local", "spark"]
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
_EXT = {"webdataset": "tar", "mds": "mds", "parquet": "parquet"}


class ShardSetResult(BaseModel):
    """What a build wrote: where, the manifest, and totals."""

    uri: str
    manifest: dict[str, Any]
    shards: int
    samples: int
    bytes: int
    reused: bool = False  # an identical complete set was already there (``reuse``)

    def payload(self) -> dict[str, Any]:
        return {"uri": self.uri, "shards": self.shards, "samples": self.samples, "bytes": self.bytes,
                "manifest": self.manifest}


def shard_path(fmt: str, split: str, index: int) -> str:
    """Path of a shard relative to the set root (POSIX, no '..')."""
    return f"{split}/shard-{index:06d}.{_EXT[fmt]}"


def code_version() -> str:
    """The package version plus the git commit when run from a checkout."""
    from ingest import __version__

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__


def source_runs(lake: Lake, table: str, version: int) -> list[dict[str, Any]]:
    """Runs in ``_meta.runs`` that wrote ``table`` up to ``version`` (its lineage)."""
    from ingest.runlog import RUNS_TABLE

    if not lake.table_exists(RUNS_TABLE):
        return []
    runs = lake.delta_table(RUNS_TABLE).to_pyarrow_table(
        columns=["run_id", "command", "source", "target", "version_after", "started_at", "status"]
    ).to_pylist()
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
        if r["target"] == table and r["status"] == "success"
        and r["version_after"] is not None and r["version_after"] <= version
    ]
    return sorted(out, key=lambda r: (r["version_after"], r["run_id"]))


def default_key(schema: pa.Schema) -> str:
    for name in schema.names:
        if name.endswith("_id") or name == "id":
            return name
    raise ConfigError(f"no --key given and no *_id column among {', '.join(schema.names)}: pass --key COLUMN")


def nullable_columns(table: pa.Table) -> set[str]:
    return {n for n in table.column_names if table.column(n).null_count > 0}


def sample_infos(spec: ShardSpec, table: pa.Table, splits, seed: int) -> list[SampleInfo]:
    return [SampleInfo(k, split_of(k, splits), order_of(k, seed), size) for k, size in spec.sample_sizes(table)]


def write_mds_index(fs, root: str, spec: ShardSpec, shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``index.json`` per split, as ``streaming.StreamingDataset(local=root, split=...)`` reads."""
    written = []
    for split in sorted({s["split"] for s in shards}):
        entries = []
        for s in (x for x in shards if x["split"] == split):
            entry = spec.mds_config()
            entry.update(
                {
                    "raw_data": {"basename": s["path"].split("/", 1)[1], "bytes": s["bytes"], "hashes": {}},
                    "samples": s["samples"],
                    "zip_data": None,
                }
            )
            entries.append(entry)
        data = json.dumps({"shards": entries, "version": 2}, sort_keys=True).encode("utf-8")
        written.append(_put(fs, f"{root}/{split}/index.json", data, f"{split}/index.json"))
    return written


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


def write_prepared(fs, root_fs_path: str, spec: ShardSpec, plan: ShardPlan, prepared: dict[str, list]) -> dict[str, Any]:
    """Write one WebDataset shard from the tar pieces prepared by the sizing pass."""
    from transforms.shards.formats import TAR_END

    rel = shard_path(spec.format, plan.split, plan.index)
    _mkparent(fs, f"{root_fs_path}/{rel}")
    with fs.open_output_stream(f"{root_fs_path}/{rel}") as stream:
        hw = HashingWriter(stream)
        try:
            for k in plan.keys:
                for part in prepared[k]:
                    hw.write(part)
            hw.write(TAR_END)
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


def _clear(fs, root_fs: str) -> None:
    import pyarrow.fs as pafs

    info = fs.get_file_info(root_fs)
    if info.type == pafs.FileType.NotFound:
        return
    try:
        fs.delete_file(f"{root_fs}/{MANIFEST}")
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

    if format not in FORMATS:
        raise ConfigError(f"unknown shard format {format!r}: use one of {', '.join(FORMATS)}")
    if engine not in ("local", "spark"):
        raise ConfigError(f"unknown engine {engine!r}: use local or spark")
    if not re.match(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$", dataset or ""):
        raise ConfigError(f"bad dataset name {dataset!r}: start with a letter, then letters, digits, '_', '-' or '.'")
    splits = validate_split(split if split is not None else {"train": 0.9, "val": 0.1})
    target = parse_size(shard_size)
    if format == "mds" and target >= 2**32:
        raise ConfigError("MDS shards use 32-bit offsets: use --shard-size below 4GB")
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
        if engine == "spark":
            from transforms.shards.spark import build_with_spark

            spec, shards = build_with_spark(
                lake, root, tid, version, format=format, key=key, splits=splits, target=target,
                seed=seed, mtime=int(snap.created_at.timestamp()), master=spark_master,
            )
        else:
            spec, shards = _build_local(
                lake, root, tid, version, format=format, key=key, splits=splits, target=target,
                seed=seed, mtime=int(snap.created_at.timestamp()), progress=progress,
            )
        manifest = finish(
            lake, root, spec, shards, dataset=dataset, snapshot=snap.name, tables={str(tid): version},
            options=options,
        )
        run.rows_written = sum(s["samples"] for s in shards)
        run.details = {"shards": len(shards), "format": format, "engine": engine, "snapshot": snap.name}
    return ShardSetResult(
        uri=root, manifest=manifest, shards=len(shards),
        samples=sum(s["samples"] for s in shards), bytes=sum(s["bytes"] for s in shards),
    )


def build_options(splits: list[tuple[str, float]], target: int, seed: int) -> dict[str, Any]:
    """The arguments besides table, format and key that shape a shard set (kept in its manifest)."""
    return {"split": dict(splits), "shard_size": target, "seed": seed}


def _existing(lake: Lake, root: str, tables: dict[str, int], *, format: str, key: str | None,
              options: dict[str, Any]) -> ShardSetResult | None:
    """The complete set at ``root`` if its manifest records the same pin, format, key and options."""
    try:
        with lake.pyarrow_filesystem().open_input_stream(lake.fs_path(f"{root}/{MANIFEST}")) as fh:
            manifest = json.loads(fh.read())
    except (FileNotFoundError, ValueError):
        return None
    if (manifest.get("tables"), manifest.get("format"), manifest.get("options")) != (tables, format, options) or (
        key is not None and manifest.get("key") != key
    ):
        return None
    shards = manifest.get("shards") or []
    return ShardSetResult(
        uri=root, manifest=manifest, shards=len(shards), reused=True,
        samples=sum(s.get("samples") or 0 for s in shards), bytes=sum(s["bytes"] for s in shards),
    )


def _build_local(lake: Lake, root: str, tid: TableId, version: int, *, format: Format, key: str | None,
                 splits, target: int, seed: int, mtime: int, progress: bool):
    try:
        data = lake.delta_table(tid, version=version).to_pyarrow_table()
    except Exception:  # noqa: BLE001 - only explained here, re-raised as it is otherwise
        from ingest.vacuum import raise_if_vacuumed

        raise_if_vacuumed(lake, {str(tid): version})
        raise
    spec = ShardSpec.from_schema(
        data.schema, format=format, key=key or default_key(data.schema), mtime=mtime,
        size_limit=target, nullable=nullable_columns(data),
    )
    prepared: dict[str, list] | None = None
    try:
        if format == "webdataset":
            prepared = {}
            infos = []
            for k, members in spec.wds_samples(data):
                parts = prepared[k] = spec.wds_parts(members)
                infos.append(SampleInfo(k, split_of(k, splits), order_of(k, seed), sum(len(p) for p in parts)))
        else:
            infos = sample_infos(spec, data, splits, seed)
        plans = plan_shards(infos, splits=splits, target=target, overhead=spec.shard_overhead())
    except ValueError as exc:
        raise ConfigError(f"{tid}@{version}: {exc}") from None
    fs = lake.pyarrow_filesystem()
    _clear(fs, lake.fs_path(root))
    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"shards {Path(root).name}", total=len(plans))
            shards = write_local(lake, root, spec, plans, data, prepared=prepared,
                                 on_shard=lambda _i: bar.advance(task))
    else:
        shards = write_local(lake, root, spec, plans, data, prepared=prepared)
    return spec, shards


def finish(lake: Lake, root: str, spec: ShardSpec, shards: list[dict[str, Any]], *, dataset: str,
           snapshot: str, tables: dict[str, int], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the MDS index (if any), SHA256SUMS, then manifest.json; return the manifest."""
    fs = lake.pyarrow_filesystem()
    root_fs = lake.fs_path(root)
    shards = sorted(shards, key=lambda s: s["path"])
    extra = write_mds_index(fs, root_fs, spec, shards) if spec.format == "mds" else []
    for s in shards + extra:
        if s["path"].startswith("/") or ".." in s["path"].split("/"):
            raise IngestError(f"internal error: shard path {s['path']!r} escapes the shard set")
    sums = "".join(f"{f['sha256']}  {f['path']}\n" for f in sorted(shards + extra, key=lambda f: f["path"]))
    _put(fs, f"{root_fs}/{SUMS}", sums.encode("ascii"), SUMS)
    table = next(iter(tables))
    manifest = {
        "dataset": dataset,
        "snapshot": snapshot,
        "format": spec.format,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "tables": tables,
        "source_runs": source_runs(lake, table, tables[table]),
        "code_version": code_version(),
        "key": spec.key,
        "options": options or {},
        "shards": shards,
        "files": extra,  # other files readers need (MDS index.json per split)
    }
    _put(fs, f"{root_fs}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=False).encode("utf-8"), MANIFEST)
    return manifest
