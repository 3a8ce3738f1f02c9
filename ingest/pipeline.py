"""The whole pipeline as plain functions: ingest -> transform -> snapshot -> shards -> sync.

`ingest run` and the Prefect pipeline flow both call these stage functions, so the flow stays
thin and every stage is tested directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from ingest.lake import Lake
from ingest.settings import ImageSource, LogSource, Settings, SourceConfig, TableSource

if TYPE_CHECKING:
    from ingest.partition import FileGroup, KeyRange

Echo = Callable[[str], Any] | None


class StageResult(BaseModel):
    stage: str
    ok: bool = True
    detail: dict[str, Any] = Field(default_factory=dict)


class PipelineSummary(BaseModel):
    """What a pipeline run produced: tables and versions written, snapshot, shard set, sync."""

    lake: str
    started_at: datetime
    finished_at: datetime | None = None
    tables: dict[str, int | None] = Field(default_factory=dict)
    ingested: list[dict[str, Any]] = Field(default_factory=list)
    transformed: list[dict[str, Any]] = Field(default_factory=list)
    snapshot: str | None = None
    snapshot_tables: dict[str, int] = Field(default_factory=dict)
    reused: bool = False  # nothing new: the last snapshot, its shard set and synced copy serve again
    shard_set: str | None = None
    shards: int = 0
    synced_to: str | None = None
    synced_files: int = 0
    pruned: dict[str, list[str]] = Field(default_factory=dict)  # retention: shard sets, synced copies removed

    def human(self) -> str:
        lines = [f"lake: {self.lake}"]
        for r in self.ingested:
            lines.append(
                f"  ingested {r['table']}: v{r.get('version')} +{r.get('rows_written', 0)} rows, "
                f"{r.get('rows_quarantined', 0)} quarantined, {r.get('skipped', 0)} skipped"
            )
        for m in self.transformed:
            if m.get("table"):  # DuckDB-only views (staging) have no lake table to report
                lines.append(f"  built {m['table']}: {m.get('status')} ({m.get('rows')} rows, v{m.get('version')})")
        if self.snapshot:
            pinned = ", ".join(f"{t}@v{v}" for t, v in sorted(self.snapshot_tables.items()))
            again = " (reused: no table changed)" if self.reused else ""
            lines.append(f"  snapshot {self.snapshot}{again} pins {pinned or 'no tables'}")
        if self.shard_set:
            lines.append(f"  shard set {self.shard_set} ({self.shards} shards)")
        if self.synced_to:
            lines.append(f"  synced {self.synced_files} files to {self.synced_to}")
        for what, names in self.pruned.items():
            if names:
                lines.append(f"  removed {len(names)} old {what} (keep): {', '.join(names)}")
        return "\n".join(lines)


def default_sources(settings: Settings) -> list[SourceConfig]:
    """The bundled demo sources, generated on first use (no server needed)."""
    from ingest.sample import generate_sample

    root = Path(settings.sample_dir or "sample_data").resolve()
    if not (root / "photos.db").exists():
        generate_sample(root)
    return [
        ImageSource(path=str(root / "images"), table="bronze.images"),
        LogSource(path=str(root / "logs"), table="bronze.events", format="jsonl"),
        TableSource(
            url=f"sqlite:///{root / 'photos.db'}",
            source_table="photos",
            table="bronze.photos",
            primary_key=["photo_id"],
            cursor="updated_at",
        ),
    ]


def sources_of(settings: Settings) -> list[SourceConfig]:
    return list(settings.sources) if settings.sources else default_sources(settings)


def ingest_source(
    lake: Lake, source: SourceConfig, *, progress: bool = False, partition: FileGroup | KeyRange | None = None
) -> dict[str, Any]:
    """Load one configured source (or one ``partition`` of it: a group of a file source's files,
    a key range of a table); the same call the CLI commands make."""
    from ingest.partition import FileGroup, KeyRange

    if partition is not None and isinstance(source, TableSource) != isinstance(partition, KeyRange):
        raise ValueError(f"a {source.kind} source is not split by {type(partition).__name__}")
    group = partition if isinstance(partition, FileGroup) else None
    if isinstance(source, ImageSource):
        from ingest.sources.images import ingest_images

        res = ingest_images(lake, source.path, table=source.table, progress=progress, partition=group)
    elif isinstance(source, LogSource):
        from ingest.sources.logs import ingest_logs

        res = ingest_logs(
            lake,
            source.path,
            table=source.table,
            format=source.format,
            pattern=source.pattern,
            progress=progress,
            partition=group,
        )
    else:
        from ingest.sources.tables import ingest_table

        res = ingest_table(
            lake,
            source.url,
            source_table=source.source_table,
            table=source.table,
            primary_key=tuple(source.primary_key),
            cursor=source.cursor,
            cursor_lag=source.cursor_lag,
            progress=progress,
            key_range=partition if isinstance(partition, KeyRange) else None,
        )
    return res.model_dump(mode="json")


def source_parts(lake: Lake, source: SourceConfig, count: int) -> list[FileGroup] | list[KeyRange]:
    """The parts ``source`` splits into, ``count`` of them: groups of a file source's files, key
    ranges of a table (fewer for a short key span; ``ingest.sources.tables.table_key_ranges``).
    The flows submit one task per part; ``ingest_partitioned`` runs them on threads here."""
    from ingest.partition import file_groups

    if not isinstance(source, TableSource):
        return file_groups(count)
    from ingest.sources.tables import table_key_ranges

    return table_key_ranges(
        lake,
        source.url,
        source_table=source.source_table,
        table=source.table,
        primary_key=source.primary_key,
        cursor=source.cursor,
        cursor_lag=source.cursor_lag,
        count=count,
    )


def ingest_partitioned(lake: Lake, source: SourceConfig, *, partitions: int, progress: bool = False) -> dict[str, Any]:
    """Load ``source`` split into ``partitions`` parts that run at once on threads of this
    process, all writing its one table exactly once (each part is an ordinary ingest, whose
    commit checks hold against concurrent writers); the counts summed (``merge_results``).
    Every part runs to its end before the first failure is raised, so no part is cut short and
    a failure is never a silent partial success.  Progress bars only for a single part (one
    terminal display at a time)."""
    from concurrent.futures import ThreadPoolExecutor, wait

    from ingest.partition import merge_results

    parts = source_parts(lake, source, partitions)
    bars = progress and len(parts) == 1
    with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="ingest-part") as pool:
        futures = [pool.submit(ingest_source, lake, source, progress=bars, partition=p) for p in parts]
        wait(futures)
    for future in futures:
        if (exc := future.exception()) is not None:
            raise exc
    return merge_results([f.result() for f in futures])


def transform_stage(
    settings: Settings, *, select: str | None = None, full_refresh: bool = False, progress: bool = False
) -> list[dict[str, Any]]:
    from transforms.dbt_runner import run_transform

    result = run_transform(settings, select=select, full_refresh=full_refresh, progress=progress)
    return [m.model_dump(mode="json") if hasattr(m, "model_dump") else dict(m) for m in result.models]


def snapshot_name(dataset: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{dataset}-{now:%Y%m%dT%H%M%SZ}"


def snapshot_stage(settings: Settings, *, name: str | None = None, reuse: bool = True) -> dict[str, Any]:
    """Pin the gold tables; with ``reuse``, when no table changed since the pipeline's last
    snapshot, that snapshot is returned instead (``reused``), so its shard set serves again."""
    from ingest.snapshots import PIPELINE_NOTE, create_snapshot, current_versions, find_snapshot

    lake = Lake.from_settings(settings)
    dataset = settings.shards.dataset
    if reuse:
        same = find_snapshot(lake, tables=current_versions(lake), prefix=f"{dataset}-", note=PIPELINE_NOTE)
        if same is not None:
            return {**same.model_dump(mode="json"), "reused": True}
    snap = create_snapshot(lake, name or snapshot_name(dataset), note=PIPELINE_NOTE)
    return {**snap.model_dump(mode="json"), "reused": False}


def shards_stage(settings: Settings, snapshot: str, *, progress: bool = False) -> dict[str, Any]:
    """The snapshot's shard set (built, or the complete one already there), then retention:
    only the ``shards.keep`` newest sets of pipeline snapshots stay (``transforms.shards.retention``)."""
    from transforms.shards import build_shards
    from transforms.shards.retention import prune_shard_sets

    lake = Lake.from_settings(settings)
    s = settings.shards
    res = build_shards(
        lake,
        s.dataset,
        table=s.table,
        snapshot=snapshot,
        format=s.format,
        key=s.key,
        shard_size=s.shard_size,
        progress=progress,
        reuse=True,
    )
    pruned = prune_shard_sets(lake, s.dataset, keep=s.keep, current=snapshot)
    return {**res.model_dump(mode="json"), "pruned": pruned}


def sync_stage(settings: Settings, shard_set_uri: str, *, progress: bool = False) -> dict[str, Any]:
    """Sync to ``sync_dest/DATASET/SNAPSHOT`` (a no-op when that copy is complete), then keep the
    ``sync.keep`` newest copies of the dataset there."""
    from ingest.sync import prune_synced, sync_shards

    lake = Lake.from_settings(settings)
    dest = Path(settings.sync_dest or "synced").resolve()
    parts = shard_set_uri.rstrip("/").split("/")
    target = dest / parts[-2] / parts[-1]
    res = sync_shards(shard_set_uri, target, lake=lake, progress=progress)
    pruned = prune_synced(target.parent, keep=settings.sync.keep, current=target)
    return {**res.to_dict(), "pruned": pruned}


def _ingest_all(settings: Settings, sources: list[SourceConfig], *, progress: bool = False) -> list[dict[str, Any]]:
    lake = Lake.from_settings(settings)
    return [ingest_source(lake, src, progress=progress) for src in sources]


@dataclass(frozen=True)
class Stages:
    """The callables a pipeline run uses; Prefect swaps in tasks that wrap the same functions.

    How a stage reports progress is the stage's business (``local`` binds the terminal bars;
    Prefect tasks log instead), so the pipeline passes none.
    """

    ingest_all: Callable[[Settings, list[SourceConfig]], list[dict[str, Any]]]
    transform: Callable[[Settings], list[dict[str, Any]]]
    snapshot: Callable[..., dict[str, Any]]
    shards: Callable[[Settings, str], dict[str, Any]]
    sync: Callable[[Settings, str], dict[str, Any]]

    @classmethod
    def local(cls, *, progress: bool = False) -> Stages:
        """The stages in this process, with progress bars when ``progress``."""
        return cls(
            ingest_all=partial(_ingest_all, progress=progress),
            transform=partial(transform_stage, progress=progress),
            snapshot=snapshot_stage,
            shards=partial(shards_stage, progress=progress),
            sync=partial(sync_stage, progress=progress),
        )


def run_pipeline(
    settings: Settings,
    *,
    progress: bool = False,
    echo: Echo = None,
    stages: Stages | None = None,
    sync: bool = True,
) -> PipelineSummary:
    """Run every stage in order; a failing stage raises and stops its dependants.

    ``stages`` default to ``Stages.local(progress=progress)``; ``progress`` applies only to those.
    """
    stages = stages or Stages.local(progress=progress)
    say = echo or (lambda _msg: None)
    lake = Lake.from_settings(settings)
    summary = PipelineSummary(lake=lake.uri, started_at=datetime.now(UTC))
    sources = sources_of(settings)
    say(f"ingest {len(sources)} sources: " + ", ".join(f"{s.kind} -> {s.table}" for s in sources))
    for res in stages.ingest_all(settings, sources):
        summary.ingested.append(res)
        summary.tables[res["table"]] = res.get("version")
    say("transform (dbt + Spark)")
    summary.transformed = stages.transform(settings)
    for m in summary.transformed:
        if m.get("table"):
            summary.tables[m["table"]] = m.get("version")
    snap = stages.snapshot(settings, name=snapshot_name(settings.shards.dataset))
    summary.snapshot, summary.snapshot_tables = snap["name"], snap.get("tables", {})
    summary.reused = bool(snap.get("reused"))
    say(f"snapshot {summary.snapshot}{' (reused)' if summary.reused else ''}; shards from {settings.shards.table}")
    shards = stages.shards(settings, summary.snapshot)
    summary.shard_set, summary.shards = shards["uri"], shards.get("shards", 0)
    summary.pruned["shard sets"] = shards.get("pruned", [])
    if sync:
        say(f"sync {summary.shard_set}")
        synced = stages.sync(settings, summary.shard_set)
        summary.synced_to, summary.synced_files = synced.get("dest"), synced.get("files", 0)
        summary.pruned["synced copies"] = synced.get("pruned", [])
    summary.finished_at = datetime.now(UTC)
    return summary
