"""``bronze.events`` -> ``silver.user_sessions``: per-user sessions split by an inactivity gap.

A session ends when a user is inactive for longer than ``gap_minutes`` (default 30).  The
session id is a hash of (user_id, session_start), so re-running over the same events yields the
same ids and downstream joins stay stable.  Events replayed by log re-ingestion (same event_id)
count once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest.lake import Lake
from transforms.spark.common import ModelInputs, SparkModelResult, overwrite_delta, read_delta

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

SOURCE = "bronze.events"
TARGET = "silver.user_sessions"
DEFAULT_GAP_MINUTES = 30


def sessions_frame(events: "DataFrame", *, gap_minutes: int | float = DEFAULT_GAP_MINUTES) -> "DataFrame":
    """The sessionization itself, on any DataFrame with event_id, ts, user_id, event_type."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not gap_minutes or gap_minutes <= 0:
        raise ValueError(f"gap_minutes must be a positive number of minutes, got {gap_minutes!r}")
    ts_type = dict(events.dtypes).get("ts")
    if ts_type is None:
        raise ValueError(f"{SOURCE} has no ts column (columns: {', '.join(events.columns)})")
    ts = F.col("ts") if ts_type.startswith("timestamp") else F.to_timestamp(F.col("ts"))
    ev = (
        events.select("event_id", ts.alias("ts"), F.col("user_id").cast("bigint").alias("user_id"), "event_type")
        .where(F.col("user_id").isNotNull() & F.col("ts").isNotNull())
        .dropDuplicates(["event_id"])
    )
    w = Window.partitionBy("user_id").orderBy("ts", "event_id")
    gap_s = float(gap_minutes) * 60.0
    prev = F.lag("ts").over(w)
    starts = ev.withColumn(
        "_new",
        F.when(prev.isNull(), 1)
        .when(F.col("ts").cast("double") - prev.cast("double") > gap_s, 1)
        .otherwise(0),
    ).withColumn("_seq", F.sum("_new").over(w.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
    sessions = starts.groupBy("user_id", "_seq").agg(
        F.min("ts").alias("session_start"),
        F.max("ts").alias("session_end"),
        F.count(F.lit(1)).alias("events"),
        F.sum(F.when(F.col("event_type") == "view", 1).otherwise(0)).alias("views"),
        F.sum(F.when(F.col("event_type") == "like", 1).otherwise(0)).alias("likes"),
    )
    session_id = F.substring(
        F.sha2(
            F.concat_ws("|", F.col("user_id").cast("string"), F.date_format("session_start", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")),
            256,
        ),
        1,
        32,
    )
    return sessions.select(
        F.col("user_id"),
        session_id.alias("session_id"),
        "session_start",
        "session_end",
        F.col("events").cast("bigint").alias("events"),
        F.col("views").cast("bigint").alias("views"),
        F.col("likes").cast("bigint").alias("likes"),
    )


def sessionize_events(
    spark: "SparkSession",
    lake: Lake,
    *,
    gap_minutes: int | float = DEFAULT_GAP_MINUTES,
    source: str = SOURCE,
    target: str = TARGET,
    inputs: ModelInputs | None = None,
) -> SparkModelResult:
    """Rebuild ``silver.user_sessions`` from all of ``bronze.events`` (atomic overwrite).

    ``inputs`` (from ``transforms.spark.model_inputs``) pins the source version read and is
    recorded in the commit.
    """
    version = inputs.source_version if inputs is not None else None
    events = read_delta(spark, lake, source, model="sessionize_events", version=version)
    out = sessions_frame(events, gap_minutes=gap_minutes).orderBy("user_id", "session_start")
    return overwrite_delta(spark, lake, target, out, name="sessionize_events", inputs=inputs)
