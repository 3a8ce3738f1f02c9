"""Prefect tasks: each calls one plain function; retries only for transient errors."""

from __future__ import annotations

from typing import Any

from prefect import task

from ingest.errors import is_transient
from ingest.lake import Lake
from ingest.settings import Settings, SourceConfig

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


@task(task_run_name="transform", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def transform_task(settings: Settings, select: str | None = None, full_refresh: bool = False) -> list[dict[str, Any]]:
    from ingest.pipeline import transform_stage

    return transform_stage(settings, select=select, full_refresh=full_refresh)


@task(task_run_name="snapshot-{name}", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def snapshot_task(settings: Settings, name: str) -> dict[str, Any]:
    from ingest.pipeline import snapshot_stage

    return snapshot_stage(settings, name=name)


@task(task_run_name="shards-{snapshot}", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def shards_task(settings: Settings, snapshot: str) -> dict[str, Any]:
    from ingest.pipeline import shards_stage

    return shards_stage(settings, snapshot)


@task(task_run_name="sync-{shard_set}", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def sync_task(settings: Settings, shard_set: str) -> dict[str, Any]:
    from ingest.pipeline import sync_stage

    return sync_stage(settings, shard_set)


def ingest_in_parallel(settings: Settings, sources: list[SourceConfig]) -> list[dict[str, Any]]:
    """Submit every ingest at once; ``.result()`` re-raises the first failure."""
    futures = [ingest_source_task.submit(settings, src) for src in sources]
    return [f.result() for f in futures]
