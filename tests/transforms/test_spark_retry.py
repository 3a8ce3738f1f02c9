"""Spark model commit conflicts, without a JVM: which errors are retried, and the one-line failure
when every attempt conflicts (tests/transforms/test_spark_models.py has the real Spark conflict)."""

from __future__ import annotations

import pyarrow as pa
import pytest

import transforms.spark as spark_pkg
from ingest.delta import write_batch
from ingest.errors import TransientError
from ingest.lake import Lake
from transforms.spark.common import conflict_name


class ConcurrentAppendException(Exception):
    """Named like delta-spark's captured exception (delta.exceptions.captured)."""


def test_conflict_names() -> None:
    assert conflict_name(ConcurrentAppendException("[DELTA_CONCURRENT_APPEND.WITHOUT_HINT] x")) == "ConcurrentAppendException"
    assert conflict_name(RuntimeError("io.delta.exceptions.MetadataChangedException: y")) == "MetadataChangedException"
    assert conflict_name(RuntimeError("[DELTA_CONCURRENT_APPEND] Transaction conflict detected")) == "DELTA_CONCURRENT_"
    assert conflict_name(RuntimeError("file not found")) is None


def test_every_attempt_conflicting_fails_with_one_line(local_lake: Lake, monkeypatch) -> None:
    write_batch(local_lake, "bronze.events", pa.table({"event_id": ["e1"]}))
    calls: list[int] = []

    def conflicting(spark, lake, *, inputs, increment=None):
        calls.append(inputs.source_version)
        raise ConcurrentAppendException("[DELTA_CONCURRENT_APPEND.WITHOUT_HINT] Transaction conflict detected.\nat ...")

    monkeypatch.setattr(spark_pkg, "_model", lambda name: conflicting)
    monkeypatch.setattr(spark_pkg.time, "sleep", lambda s: None)
    monkeypatch.setattr("transforms.spark.common.table_exists", lambda *a: True)
    with pytest.raises(TransientError) as err:
        spark_pkg.run_spark_models(None, local_lake, select="sessionize_events")  # type: ignore[arg-type]
    assert len(calls) == spark_pkg.COMMIT_ATTEMPTS
    assert "\n" not in str(err.value) and "ConcurrentAppendException" in str(err.value)
    assert "silver.user_sessions" in str(err.value)


def test_other_errors_are_not_retried(local_lake: Lake, monkeypatch) -> None:
    write_batch(local_lake, "bronze.events", pa.table({"event_id": ["e1"]}))
    calls: list[int] = []

    def broken(spark, lake, *, inputs, increment=None):
        calls.append(1)
        raise ValueError("bronze.events has no ts column")

    monkeypatch.setattr(spark_pkg, "_model", lambda name: broken)
    monkeypatch.setattr("transforms.spark.common.table_exists", lambda *a: True)
    with pytest.raises(ValueError, match="no ts column"):
        spark_pkg.run_spark_models(None, local_lake, select="sessionize_events")  # type: ignore[arg-type]
    assert calls == [1]


def test_a_source_commit_that_adds_no_rows_keeps_a_model_up_to_date(local_lake: Lake) -> None:
    """No JVM: the model's table records its inputs (as a Spark commit's userMetadata would); a
    compaction of the source moves its version but adds no rows, so the model stays skipped."""
    from deltalake import DeltaTable

    for i in range(2):
        write_batch(local_lake, "bronze.events", pa.table({"event_id": [f"e{i}"]}))
    inputs = spark_pkg.model_inputs(local_lake, "sessionize_events")
    write_batch(local_lake, "silver.user_sessions", pa.table({"user_id": [1]}), metadata={"userMetadata": inputs.to_json()})
    assert spark_pkg.up_to_date_results(local_lake, ["sessionize_events"])["sessionize_events"]["status"] == "skipped"

    DeltaTable(local_lake.table_uri("bronze.events")).optimize.compact()
    done = spark_pkg.up_to_date_results(local_lake, ["sessionize_events"])["sessionize_events"]
    assert done["status"] == "skipped" and "no new rows since version 1" in done["message"], done
    write_batch(local_lake, "bronze.events", pa.table({"event_id": ["e9"]}))
    assert spark_pkg.up_to_date_results(local_lake, ["sessionize_events"]) == {}
