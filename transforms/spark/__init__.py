"""Spark models: plain functions ``(spark, lake) -> result`` callable from the CLI, Prefect and tests.

Nothing here imports pyspark at import time, so ``ingest`` starts fast without a JVM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ingest.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ingest.lake import Lake

# model name -> (source table, target table)
SPARK_MODELS: dict[str, tuple[str, str]] = {
    "dedup_images": ("bronze.images", "silver.image_duplicates"),
    "sessionize_events": ("bronze.events", "silver.user_sessions"),
}


def _model(name: str) -> Callable[..., Any]:
    if name == "dedup_images":
        from transforms.spark.dedup_images import dedup_images

        return dedup_images
    from transforms.spark.sessionize import sessionize_events

    return sessionize_events


def selected_models(select: str | list[str] | None) -> list[str]:
    """Model names matched by a dbt-style selection (names or target tables, ``+`` and ``x:`` ignored)."""
    if not select:
        return list(SPARK_MODELS)
    words = select.split() if isinstance(select, str) else list(select)
    wanted = {w.strip("+").split(":")[-1] for w in words}
    return [m for m, (_, target) in SPARK_MODELS.items() if m in wanted or target in wanted]


def run_spark_models(
    spark: "SparkSession", lake: "Lake", *, select: str | list[str] | None = None
) -> list[dict[str, Any]]:
    """Run the selected Spark models (all by default) and return one result dict per model.

    A model whose input table is missing is skipped when running everything, but is an error when
    it was asked for by name.
    """
    from transforms.spark.common import table_exists

    names = selected_models(select)
    results: list[dict[str, Any]] = []
    for name in names:
        source, target = SPARK_MODELS[name]
        if not table_exists(spark, lake, source):
            if select:
                raise ConfigError(f"spark model {name} needs {source}, which does not exist in {lake.uri}: ingest it first")
            results.append(
                {"name": name, "kind": "spark", "table": target, "status": "skipped", "version": None,
                 "rows": None, "rows_written": None, "mode": "overwrite", "message": f"{source} does not exist yet"}
            )
            continue
        results.append(_model(name)(spark, lake).as_dict())
    return results


__all__ = ["SPARK_MODELS", "run_spark_models", "selected_models"]
