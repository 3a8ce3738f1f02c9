"""One flow per source kind; each runs one ingest task."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.params import ImagesParams, LogsParams, TablesParams
from flows.tasks import ingest_source_task
from ingest.settings import ImageSource, LogSource, TableSource


@flow(name="ingest-images", flow_run_name="ingest-images-{params.table}")
def ingest_images_flow(params: ImagesParams) -> dict[str, Any]:
    return ingest_source_task(params.settings(), ImageSource(path=params.src, table=params.table))


@flow(name="ingest-logs", flow_run_name="ingest-logs-{params.table}")
def ingest_logs_flow(params: LogsParams) -> dict[str, Any]:
    src = LogSource(path=params.src, table=params.table, format=params.format, pattern=params.pattern)
    return ingest_source_task(params.settings(), src)


@flow(name="ingest-tables", flow_run_name="ingest-tables-{params.table}")
def ingest_tables_flow(params: TablesParams) -> dict[str, Any]:
    src = TableSource(
        url=params.resolved_url(), source_table=params.source_table, table=params.table,
        primary_key=params.primary_key, cursor=params.cursor, cursor_lag=params.cursor_lag,
    )
    return ingest_source_task(params.settings(), src)
