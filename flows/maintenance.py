"""Scheduled table maintenance: compact small files (`ingest optimize`), then delete the files no
current version or pinned snapshot reads any more (`ingest vacuum`)."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from pydantic import Field

from flows.params import LakeParams
from flows.tasks import BACKOFF, RETRIES, retry_transient
from ingest.lake import Lake
from ingest.settings import Settings
from ingest.vacuum import MIN_RETAIN_HOURS


class MaintenanceParams(LakeParams):
    tables: list[str] | None = Field(default=None, description="Tables to maintain (default: every table)")
    z_order: bool = Field(default=False, description="Order rows by each table's lookup column (rewrites every file)")
    retain_hours: float = Field(
        default=MIN_RETAIN_HOURS, ge=MIN_RETAIN_HOURS, description="Vacuum keeps files removed less than this long ago"
    )


@task(task_run_name="optimize", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def optimize_task(settings: Settings, tables: list[str] | None, z_order: bool) -> dict[str, Any]:
    from ingest.optimize import optimize

    return optimize(Lake.from_settings(settings), tables=tables, z_order=z_order).payload()


@task(task_run_name="vacuum", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def vacuum_task(settings: Settings, tables: list[str] | None, retain_hours: float) -> dict[str, Any]:
    from ingest.vacuum import vacuum

    return vacuum(Lake.from_settings(settings), tables=tables, retain_hours=retain_hours).payload()


@flow(name="maintenance")
def maintenance_flow(params: MaintenanceParams | None = None) -> dict[str, Any]:
    params = params or MaintenanceParams()
    settings = params.settings()
    compacted = optimize_task(settings, params.tables, params.z_order)
    return {"optimize": compacted, "vacuum": vacuum_task(settings, params.tables, params.retain_hours)}
