"""Spark models: plain functions ``(spark, lake) -> result`` callable from the CLI, Prefect and tests.

Nothing here imports pyspark at import time, so ``ingest`` starts fast without a JVM.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ingest.errors import ConfigError, TransientError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ingest.lake import Lake
    from transforms.spark.common import ModelInputs

# model name -> (source table, target table)
SPARK_MODELS: dict[str, tuple[str, str]] = {
    "dedup_images": ("bronze.images", "silver.image_duplicates"),
    "sessionize_events": ("bronze.events", "silver.user_sessions"),
}


def _module(name: str) -> Any:
    """The module that defines model ``name`` (imported on demand: it imports pyspark)."""
    import importlib

    modules = {"dedup_images": "dedup_images", "sessionize_events": "sessionize"}
    if name not in modules:
        raise ValueError(f"unknown Spark model {name!r}: use one of {sorted(modules)}")
    return importlib.import_module(f"transforms.spark.{modules[name]}")


def _model(name: str) -> Callable[..., Any]:
    return getattr(_module(name), name)


def model_params(name: str) -> dict[str, Any]:
    """The parameters a model runs with (its defaults), part of what its output depends on."""
    module = _module(name)
    if name == "dedup_images":
        return {"threshold": module.DEFAULT_THRESHOLD}
    return {"gap_minutes": module.DEFAULT_GAP_MINUTES}


def model_description(name: str) -> str:
    """The first paragraph of the model's module docstring (what `ingest docs` shows for it)."""
    first = (_module(name).__doc__ or name).strip().split("\n\n")[0]
    return " ".join(first.replace("``", "`").split())


def model_inputs(lake: Lake, name: str, *, source_version: int | str | None = None) -> ModelInputs:
    """What a run of ``name`` would read now (or at the pinned ``source_version``)."""
    from transforms.spark.common import ModelInputs, code_fingerprint

    source, _ = SPARK_MODELS[name]
    return ModelInputs(
        model=name,
        source=source,
        source_version=lake.delta_table(source, version=source_version).version(),
        code=code_fingerprint(_module(name).__file__),
        params=model_params(name),
    )


def up_to_date_results(
    lake: Lake, names: list[str], *, source_versions: dict[str, int | str] | None = None
) -> dict[str, dict[str, Any]]:
    """The models among ``names`` whose table already reflects their input, without a JVM."""
    from transforms.spark.common import up_to_date

    pins = source_versions or {}
    done: dict[str, dict[str, Any]] = {}
    for name in names:
        source, target = SPARK_MODELS[name]
        if not lake.table_exists(source):
            continue
        result = up_to_date(lake, model_inputs(lake, name, source_version=pins.get(source)), target)
        if result is not None:
            done[name] = result.as_dict()
    return done


def selected_models(select: str | list[str] | None) -> list[str]:
    """Model names matched by a dbt-style selection (names or target tables, ``+`` and ``x:`` ignored)."""
    if not select:
        return list(SPARK_MODELS)
    words = select.split() if isinstance(select, str) else list(select)
    wanted = {w.strip("+").split(":")[-1] for w in words}
    return [m for m, (_, target) in SPARK_MODELS.items() if m in wanted or target in wanted]


def run_spark_models(
    spark: SparkSession | Callable[[], SparkSession],
    lake: Lake,
    *,
    select: str | list[str] | None = None,
    source_versions: dict[str, int | str] | None = None,
    full_refresh: bool = False,
    driver_max_rows: int = 0,
) -> list[dict[str, Any]]:
    """Run the selected Spark models (all by default) and return one result dict per model.

    A model whose table already holds the result of its current input (same source version,
    code and parameters, as recorded in its last commit) is skipped unless ``full_refresh``.
    When the source only appended rows since that commit, the model merges what they change
    (``increment_since``): on the driver when they are at most ``driver_max_rows`` rows
    (``transforms.spark.driver``), else on Spark; otherwise, and with ``full_refresh``, it
    rebuilds its whole table on Spark.  ``spark`` may be a function that starts the session,
    called only when a model needs it (no JVM for runs the driver handles).
    ``source_versions`` pins inputs (``{"bronze.images": 3}``).  A model whose input table is
    missing is skipped when running everything, but is an error when it was asked for by name.
    A commit that conflicts with another writer of the model's table runs the model again
    (``COMMIT_ATTEMPTS``), then fails with a ``TransientError``.
    """
    pins = source_versions or {}
    names = selected_models(select)
    results: list[dict[str, Any]] = []
    session = _LazySession(spark)
    for name in names:
        source, target = SPARK_MODELS[name]
        if not lake.table_exists(source):
            if select:
                raise ConfigError(
                    f"spark model {name} needs {source}, which does not exist in {lake.uri}: ingest it first"
                )
            results.append(
                {
                    "name": name,
                    "kind": "spark",
                    "table": target,
                    "status": "skipped",
                    "version": None,
                    "rows": None,
                    "rows_written": None,
                    "mode": "overwrite",
                    "message": f"{source} does not exist yet",
                }
            )
            continue
        started = time.perf_counter()
        row = _run_model(
            session, lake, name, pin=pins.get(source), full_refresh=full_refresh, driver_max_rows=driver_max_rows
        )
        results.append({**row, "seconds": round(time.perf_counter() - started, 3)})
    return results


# a commit that loses a race to another writer of the model's table is run again, this many times
COMMIT_ATTEMPTS = 5


class _LazySession:
    """The session, or the function that starts it, started at most once and only when asked."""

    def __init__(self, spark: SparkSession | Callable[[], SparkSession]) -> None:
        self._spark = spark

    def get(self) -> SparkSession:
        if callable(self._spark) and not hasattr(self._spark, "sparkContext"):
            self._spark = self._spark()
        return self._spark  # type: ignore[return-value]  # narrowed above: a started session


def _refresh_key_index(lake: Lake, target: str, columns: list[str], *, since: int | None) -> None:
    """Save the keys of what the run wrote, so the next increment's lookups read no data file.
    The run's commit has landed: a failure here only costs the next run those reads."""
    from ingest.sources.seen import refresh_saved_keys

    try:
        refresh_saved_keys(lake, target, columns=columns, since=since)
    except Exception as exc:  # noqa: BLE001 - the commit landed; the index only saves later reads
        import logging

        logging.getLogger(__name__).warning("could not update the key index of %s: %s", target, exc)


def _run_model(
    session: _LazySession, lake: Lake, name: str, *, pin: int | str | None, full_refresh: bool, driver_max_rows: int
) -> dict[str, Any]:
    """One model run; after a Delta commit conflict it starts over from freshly read inputs (the
    source may have moved on, or the other writer may already have built the same result)."""
    from transforms.spark.common import INCREMENT_CONF, conflict_name, increment_since, session_conf, up_to_date
    from transforms.spark.driver import DRIVER_INCREMENTS, new_rows

    _, target = SPARK_MODELS[name]
    for attempt in range(COMMIT_ATTEMPTS):
        inputs = model_inputs(lake, name, source_version=pin)
        fresh = None if full_refresh and attempt == 0 else up_to_date(lake, inputs, target)
        if fresh is not None:
            return fresh.as_dict()
        increment = None if full_refresh else increment_since(lake, inputs, target)
        driver = DRIVER_INCREMENTS[name]
        try:
            if increment is None:
                result = _model(name)(session.get(), lake, inputs=inputs, increment=None)
            elif new_rows(lake, increment, inputs) <= driver_max_rows and driver.ready(lake, inputs):
                result = driver.run(lake, increment, inputs, target=target, **model_params(name))
            else:
                spark = session.get()
                with session_conf(spark, INCREMENT_CONF):
                    result = _model(name)(spark, lake, inputs=inputs, increment=increment)
        except Exception as exc:
            conflict = conflict_name(exc)
            if conflict is None:
                raise
            if attempt == COMMIT_ATTEMPTS - 1:
                raise TransientError(
                    f"{target}: another writer committed to it during each of {COMMIT_ATTEMPTS} attempts "
                    f"({conflict}); run `ingest transform` again"
                ) from None
            time.sleep(min(8.0, 0.5 * 2**attempt) * (0.5 + random.random()))
            continue
        if driver.key_columns and result.status == "success":
            _refresh_key_index(
                lake, target, list(driver.key_columns), since=None if increment is None else increment.target_version
            )
        return result.as_dict()
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["SPARK_MODELS", "model_inputs", "run_spark_models", "selected_models", "up_to_date_results"]
