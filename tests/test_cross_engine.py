"""deltalake and Spark read each other's Delta tables, latest and time-travelled, on S3 and locally.

The lake is shared by Python ingestion (deltalake), DuckDB/dbt and Spark models; if one engine
wrote something the others cannot read (timestamp types, protocol features, s3a paths) the whole
pipeline breaks, so each direction is checked against real storage.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from ingest.delta import write_batch
from ingest.lake import Lake

pytestmark = [pytest.mark.integration, pytest.mark.spark]

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
T1 = datetime(2026, 2, 3, 4, 5, 6, tzinfo=timezone.utc)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake(request: pytest.FixtureRequest) -> Lake:
    """The same tests against a local directory and SeaweedFS S3."""
    return request.getfixturevalue("local_lake" if request.param == "local" else "s3_lake")


def _batch(ids: list[int], ts: datetime) -> pa.Table:
    return pa.table(
        {
            "event_id": [f"e{i}" for i in ids],
            "user_id": pa.array(ids, pa.int64()),
            "ts": pa.array([ts] * len(ids), pa.timestamp("us", tz="UTC")),
            "payload": pa.array([bytes([i % 256]) * 3 for i in ids], pa.binary()),
        }
    )


def test_spark_reads_deltalake_table_latest_and_version0(lake: Lake, spark_for) -> None:
    write_batch(lake, "bronze.events", _batch([1, 2, 3], T0))
    write_batch(lake, "bronze.events", _batch([4, 5], T1))
    spark = spark_for(lake)
    path = lake.spark_path("bronze.events")

    latest = spark.read.format("delta").load(path)
    assert sorted(r.user_id for r in latest.select("user_id").collect()) == [1, 2, 3, 4, 5]
    assert dict(latest.dtypes) == {
        "event_id": "string",
        "user_id": "bigint",
        "ts": "timestamp",
        "payload": "binary",
    }
    v0 = spark.read.format("delta").option("versionAsOf", 0).load(path)
    rows = v0.orderBy("user_id").collect()
    assert [r.user_id for r in rows] == [1, 2, 3]
    # session time zone is UTC, so Spark's naive datetimes are the UTC wall clock
    assert {r.ts.replace(tzinfo=timezone.utc) for r in rows} == {T0}
    assert rows[0].payload == b"\x01\x01\x01"
    history = spark.sql(f"describe history delta.`{path}`").select("version").collect()
    assert sorted(r.version for r in history) == [0, 1]


def test_deltalake_reads_spark_table_latest_and_version0(lake: Lake, spark_for) -> None:
    spark = spark_for(lake)
    path = lake.spark_path("silver.spark_written")
    first = spark.createDataFrame(
        [(1, "a", T0.replace(tzinfo=None)), (2, "b", T0.replace(tzinfo=None))],
        "id bigint, name string, ts timestamp",
    )
    first.write.format("delta").mode("overwrite").save(path)
    second = spark.createDataFrame([(3, "c", T1.replace(tzinfo=None))], "id bigint, name string, ts timestamp")
    second.write.format("delta").mode("append").save(path)

    assert lake.table_exists("silver.spark_written")
    dt = lake.delta_table("silver.spark_written")
    assert dt.version() == 1
    latest = dt.to_pyarrow_table().sort_by("id")
    assert latest.column("id").to_pylist() == [1, 2, 3]
    assert latest.column("name").to_pylist() == ["a", "b", "c"]
    assert latest.column("ts").to_pylist()[2] == T1  # UTC instant survives the round trip

    old = lake.delta_table("silver.spark_written", version=0).to_pyarrow_table().sort_by("id")
    assert old.column("id").to_pylist() == [1, 2]
    assert old.column("ts").to_pylist() == [T0, T0]

    # the rest of the stack sees it too: lake listing and DuckDB views
    assert "silver.spark_written" in {str(t) for t in lake.list_tables()}
    con = lake.duckdb(tables=None)
    assert con.execute('select count(*) from "silver"."spark_written"').fetchone()[0] == 3


def test_spark_overwrite_then_deltalake_append_keeps_one_history(lake: Lake, spark_for) -> None:
    """Both engines commit to the same log: versions interleave and time travel still works."""
    spark = spark_for(lake)
    path = lake.spark_path("bronze.mixed")
    spark.createDataFrame([(1, "x")], "user_id bigint, event_id string").write.format("delta").mode(
        "overwrite"
    ).save(path)
    write_batch(lake, "bronze.mixed", pa.table({"user_id": pa.array([2], pa.int64()), "event_id": ["y"]}))
    spark.createDataFrame([(3, "z")], "user_id bigint, event_id string").write.format("delta").mode(
        "append"
    ).save(path)

    assert lake.delta_table("bronze.mixed").version() == 2
    got = sorted(r.user_id for r in spark.read.format("delta").option("versionAsOf", 1).load(path).collect())
    assert got == [1, 2]
    assert sorted(lake.delta_table("bronze.mixed").to_pyarrow_table().column("user_id").to_pylist()) == [1, 2, 3]
