"""The daily pipeline: ingests in parallel, then transform, then snapshot + shards, then sync.

The stage order lives in `ingest.pipeline.run_pipeline`; this flow only swaps each stage for a
Prefect task, then publishes what the run produced as artifacts (`flows.artifacts`).  A failed
stage raises, so its dependants never start and the run ends Failed.
"""

from __future__ import annotations

from prefect import flow

from flows.artifacts import publish_pipeline, report_links
from flows.params import PipelineParams
from flows.tasks import (
    ingest_in_parallel,
    shards_task,
    snapshot_task,
    sync_task,
    transform_task,
)
from ingest.pipeline import PipelineSummary, Stages, run_pipeline

PREFECT_STAGES = Stages(
    ingest_all=ingest_in_parallel,
    transform=transform_task,
    snapshot=snapshot_task,
    shards=shards_task,
    sync=sync_task,
)


@flow(name="pipeline")
def pipeline_flow(params: PipelineParams = PipelineParams()) -> PipelineSummary:  # noqa: B008 - Prefect shows the default in the deployment form; never mutated
    settings = params.settings()
    summary = run_pipeline(settings, stages=PREFECT_STAGES, sync=params.sync)
    links = report_links(health_report=params.health_report, docs_site=params.docs_site)
    publish_pipeline(settings, summary, links)
    return summary
