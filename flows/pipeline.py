"""The daily pipeline: ingests in parallel, then transform, then snapshot + shards, then sync.

The stage order lives in `ingest.pipeline.run_pipeline`; this flow only swaps each stage for a
Prefect task.  A failed stage raises, so its dependants never start and the run ends Failed.
"""

from __future__ import annotations

from prefect import flow

from flows.params import PipelineParams
from flows.tasks import ingest_in_parallel, shards_task, snapshot_task, sync_task, transform_task
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
    return run_pipeline(params.settings(), stages=PREFECT_STAGES, sync=params.sync)
