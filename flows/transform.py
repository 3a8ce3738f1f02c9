"""The transform flow: dbt build plus the Spark models."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.params import TransformParams
from flows.tasks import transform_task


@flow(name="transform")
def transform_flow(params: TransformParams = TransformParams()) -> list[dict[str, Any]]:  # noqa: B008 - Prefect shows the default in the deployment form; never mutated
    return transform_task(params.settings(), params.select, params.full_refresh)
