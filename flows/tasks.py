"""Prefect tasks: each calls one plain function; retries only for transient errors."""

from __future__ import annotations

import os
from typing import Any

from prefect import task
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.params import FanoutParams, TablesParams
from ingest.errors import is_transient
from ingest.lake import Lake
from ingest.partition import FileGroup, KeyRange, merge_results
from ingest.settings import Settings, SourceConfig, TableSource

RETRIES = 3
BACKOFF: list[float] = [2, 8, 30]


def retry_transient(task, task_run, state) -> bool:  # Prefect's retry_condition_fn signature
    """Retry S3/DB connection failures; never retry data errors (they would fail the same way)."""
    try:
        state.result(raise_on_failure=True)
    except Exception as exc:  # noqa: BLE001 - the task's own failure, classified for the retry
        return is_transient(exc)
    return False


@task(
    task_run_name="ingest-{source.kind}-{source.table}",
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=retry_transient,
)
def ingest_source_task(settings: Settings, source: SourceConfig) -> dict[str, Any]:
    from ingest.pipeline import ingest_source

    return ingest_source(Lake.from_settings(settings), source)


@task(
    task_run_name="ingest-{source.kind}-{source.table}-{partition}",
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=retry_transient,
)
def ingest_partition_task(lake: str, source: SourceConfig, partition: FileGroup) -> dict[str, Any]:
    """One group of a file source, on whichever worker runs it: the worker reads its settings and
    credentials from its own environment, so no secret travels to it (only the lake URI)."""
    import socket

    from prefect import get_run_logger

    from ingest.pipeline import ingest_source
    from ingest.settings import load_settings

    # which worker loaded which group: the first thing to look at when one group is slow or fails
    worker = f"{socket.gethostname()}:{os.getpid()}"
    get_run_logger().info("file group %s on worker process %s", partition, worker)
    res = ingest_source(Lake.from_settings(load_settings(lake=lake)), source, partition=partition)
    return {**res, "worker": worker}


@task(
    task_run_name="ingest-tables-{params.table}-{key_range}",
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=retry_transient,
)
def ingest_table_range_task(lake: str, params: TablesParams, key_range: KeyRange) -> dict[str, Any]:
    """One key range of a table: the task carries the parameters (which hold no password: a URL
    with one is refused, ``url_env`` names the variable) and the worker resolves the URL."""
    import socket

    from prefect import get_run_logger

    from ingest.pipeline import ingest_source
    from ingest.settings import load_settings

    worker = f"{socket.gethostname()}:{os.getpid()}"
    get_run_logger().info("key range %s on worker process %s", key_range, worker)
    res = ingest_source(Lake.from_settings(load_settings(lake=lake)), params.source(), partition=key_range)
    return {**res, "worker": worker}


def task_runner_for(fanout: FanoutParams) -> TaskRunner:
    """Threads in this process, a local Dask cluster of worker processes, or an existing one."""
    if fanout.task_runner == "local":
        return ThreadPoolTaskRunner(max_workers=fanout.partitions)
    from prefect_dask import DaskTaskRunner

    if fanout.dask_address:
        return DaskTaskRunner(address=fanout.dask_address)
    workers = fanout.dask_workers or max(1, min(fanout.partitions, os.cpu_count() or 1))
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers,
            "processes": True,
            "threads_per_worker": 1,
            "dashboard_address": None,
            "preload": ["flows.worker"],  # the ingesters' imports before the first task, not in it
        }
    )


def ingest_fanned_out(settings: Settings, source: SourceConfig, fanout: FanoutParams) -> dict[str, Any]:
    """One task per group of the source's files, all writing one table; their results summed.
    Each group is exactly-once on its own, and so are groups racing each other (the ingesters'
    commit checks), so a failed group re-runs alone or with the rest."""
    if fanout.partitions == 1 and fanout.task_runner == "local":
        return ingest_source_task(settings, source)
    if isinstance(source, TableSource):
        raise ValueError("a table is split by key ranges: use ingest_table_ranges")
    from ingest.pipeline import source_parts

    lake = Lake.from_settings(settings)
    groups = source_parts(lake, source, fanout.partitions)
    # the URI is absolute: a worker elsewhere resolves nothing relative
    parts = [{"lake": lake.uri, "source": source, "partition": g} for g in groups]
    return _fan_out(fanout, ingest_partition_task, parts)


def ingest_table_ranges(settings: Settings, params: TablesParams) -> dict[str, Any]:
    """One task per key range of the table (``partitions`` of them, fewer for a short key span),
    all merging into or appending to one table, exactly once: ranges are disjoint, and their
    commits serialise on the table's app id as concurrent runs do."""
    from ingest.pipeline import source_parts

    lake = Lake.from_settings(settings)
    ranges = source_parts(lake, params.source(), params.partitions)
    parts = [{"lake": lake.uri, "params": params, "key_range": r} for r in ranges]
    return _fan_out(params, ingest_table_range_task, parts)


def _fan_out(fanout: FanoutParams, task_fn: Any, parts: list[dict[str, Any]]) -> dict[str, Any]:
    with task_runner_for(fanout) as runner:
        futures: list[PrefectFuture[dict[str, Any]]] = [runner.submit(task_fn, parameters=p) for p in parts]
        wait(futures)  # every part ends (done or failed) before the first failure is raised
        return merge_results([f.result() for f in futures])


@task(task_run_name="transform", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def transform_task(settings: Settings, select: str | None = None, full_refresh: bool = False) -> list[dict[str, Any]]:
    from ingest.pipeline import transform_stage

    return transform_stage(settings, select=select, full_refresh=full_refresh)


@task(task_run_name="snapshot-{name}", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def snapshot_task(settings: Settings, name: str) -> dict[str, Any]:
    from ingest.pipeline import snapshot_stage

    return snapshot_stage(settings, name=name)


@task(
    task_run_name="shards-{snapshot}", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient
)
def shards_task(settings: Settings, snapshot: str) -> dict[str, Any]:
    from ingest.pipeline import shards_stage

    return shards_stage(settings, snapshot)


@task(
    task_run_name="sync-{shard_set}", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient
)
def sync_task(settings: Settings, shard_set: str) -> dict[str, Any]:
    from ingest.pipeline import sync_stage

    return sync_stage(settings, shard_set)


def ingest_in_parallel(settings: Settings, sources: list[SourceConfig]) -> list[dict[str, Any]]:
    """Submit every ingest at once; ``.result()`` re-raises the first failure."""
    futures = [ingest_source_task.submit(settings, src) for src in sources]
    return [f.result() for f in futures]
