"""Snapshot the gold tables and cut training shards from the snapshot."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.params import ShardsParams
from flows.tasks import shards_task, snapshot_task
from ingest.pipeline import snapshot_name


@flow(name="snapshot-and-shards")
def shards_flow(params: ShardsParams = ShardsParams()) -> dict[str, Any]:  # noqa: B008 - Prefect shows the default in the deployment form; never mutated
    settings = params.settings()
    updates = {
        k: v for k, v in {"dataset": params.dataset, "table": params.table, "format": params.format}.items() if v
    }
    if updates:
        settings = settings.model_copy(update={"shards": settings.shards.model_copy(update=updates)})
    snapshot = params.snapshot or snapshot_task(settings, snapshot_name(settings.shards.dataset))["name"]
    return {"snapshot": snapshot, **shards_task(settings, snapshot)}
