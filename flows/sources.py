"""One flow per source kind; each runs one ingest task, or one per group of a file source's files
(``partitions``) on threads or Dask worker processes (``task_runner``), then publishes what it
loaded as Prefect artifacts."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.artifacts import publish_ingest
from flows.params import ImagesParams, LogsParams, TablesParams
from flows.tasks import ingest_fanned_out, ingest_source_task, ingest_table_ranges
from ingest.settings import ImageSource, LogSource


@flow(name="ingest-images", flow_run_name="ingest-images-{params.table}")
def ingest_images_flow(params: ImagesParams) -> dict[str, Any]:
    settings = params.settings()
    res = ingest_fanned_out(settings, ImageSource(path=params.src, table=params.table), params)
    publish_ingest(settings, [res])
    return res


@flow(name="ingest-logs", flow_run_name="ingest-logs-{params.table}")
def ingest_logs_flow(params: LogsParams) -> dict[str, Any]:
    settings = params.settings()
    src = LogSource(path=params.src, table=params.table, format=params.format, pattern=params.pattern)
    res = ingest_fanned_out(settings, src, params)
    publish_ingest(settings, [res])
    return res


@flow(name="ingest-tables", flow_run_name="ingest-tables-{params.table}")
def ingest_tables_flow(params: TablesParams) -> dict[str, Any]:
    settings = params.settings()
    if params.partitions == 1 and params.task_runner == "local":
        res = ingest_source_task(settings, params.source())
    else:
        res = ingest_table_ranges(settings, params)
    publish_ingest(settings, [res])
    return res
