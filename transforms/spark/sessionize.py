"""``bronze.events`` -> ``silver.user_sessions``: per-user sessions split by an inactivity gap.

A session ends when a user is inactive for longer than ``gap_minutes`` (default 30).  The
session id is a hash of (user_id, session_start), so re-running over the same events yields the
same ids and downstream joins stay stable.  Events replayed by log re-ingestion (same event_id)
count once.

Incremental run (the source only appended events since the table was built): for each user with
new events, a session that ended more than the gap before the user's earliest new event cannot
change (nothing new can join it or bridge it), so only the user's later sessions are recomputed,
from the events at or after the first of them (a watermark per user), and merged in by
(user_id, session_id): new and changed sessions written, sessions that no longer exist deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest.lake import Lake
from transforms.spark.common import (
    Increment,
    ModelInputs,
    SparkModelResult,
    files_reaching,
    merge_delta,
    overwrite_delta,
    read_appended,
    read_delta,
    read_files,
    spark_schema,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

SOURCE = "bronze.events"
TARGET = "silver.user_sessions"
DEFAULT_GAP_MINUTES = 30


def _check_gap(gap_minutes: int | float) -> None:
    if not gap_minutes or gap_minutes <= 0:
        raise ValueError(f"gap_minutes must be a positive number of minutes, got {gap_minutes!r}")


def usable_events(events: DataFrame) -> DataFrame:
    """event_id, ts (timestamp), user_id (bigint), event_type of the rows that have a user and a time."""
    from pyspark.sql import functions as F

    ts_type = dict(events.dtypes).get("ts")
    if ts_type is None:
        raise ValueError(f"{SOURCE} has no ts column (columns: {', '.join(events.columns)})")
    ts = F.col("ts") if ts_type.startswith("timestamp") else F.to_timestamp(F.col("ts"))
    return events.select(
        "event_id", ts.alias("ts"), F.col("user_id").cast("bigint").alias("user_id"), "event_type"
    ).where(F.col("user_id").isNotNull() & F.col("ts").isNotNull())


def sessions_frame(events: DataFrame, *, gap_minutes: int | float = DEFAULT_GAP_MINUTES) -> DataFrame:
    """The sessionization itself, on any DataFrame with event_id, ts, user_id, event_type."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    _check_gap(gap_minutes)
    ev = usable_events(events).dropDuplicates(["event_id"])
    w = Window.partitionBy("user_id").orderBy("ts", "event_id")
    # in whole microseconds: seconds as doubles round at the microsecond near today's epoch
    gap_us = round(float(gap_minutes) * 60_000_000)
    prev = F.lag("ts").over(w)
    starts = ev.withColumn(
        "_new",
        F.when(prev.isNull(), 1).when(F.unix_micros("ts") - F.unix_micros(prev) > F.lit(gap_us), 1).otherwise(0),
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
            F.concat_ws(
                "|", F.col("user_id").cast("string"), F.date_format("session_start", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")
            ),
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
    spark: SparkSession,
    lake: Lake,
    *,
    gap_minutes: int | float = DEFAULT_GAP_MINUTES,
    source: str = SOURCE,
    target: str = TARGET,
    inputs: ModelInputs | None = None,
    increment: Increment | None = None,
) -> SparkModelResult:
    """Rebuild ``silver.user_sessions`` from all of ``bronze.events`` (atomic overwrite), or with
    an ``increment`` (``transforms.spark.common.increment_since``) merge only the sessions its new
    events change.

    ``inputs`` (from ``transforms.spark.model_inputs``) pins the source version read and is
    recorded in the commit.
    """
    version = inputs.source_version if inputs is not None else None
    if increment is not None and inputs is not None:
        return _merge_new_events(spark, lake, increment, inputs, gap_minutes=gap_minutes, source=source, target=target)
    events = read_delta(spark, lake, source, model="sessionize_events", version=version)
    out = sessions_frame(events, gap_minutes=gap_minutes).orderBy("user_id", "session_start")
    return overwrite_delta(spark, lake, target, out, name="sessionize_events", inputs=inputs)


def _merge_new_events(
    spark: SparkSession,
    lake: Lake,
    increment: Increment,
    inputs: ModelInputs,
    *,
    gap_minutes: int | float,
    source: str,
    target: str,
) -> SparkModelResult:
    from pyspark.sql import functions as F

    _check_gap(gap_minutes)
    model = "sessionize_events"
    gap = F.expr(f"INTERVAL {round(float(gap_minutes) * 60_000_000)} MICROSECONDS")
    new = usable_events(read_appended(spark, lake, source, increment, model=model, version=inputs.source_version))
    first_new = new.groupBy("user_id").agg(F.min("ts").alias("first_new"))
    stored = read_delta(spark, lake, target, model=model, version=increment.target_version)
    # per user: the sessions the new events can change, and the watermark they start at.  One
    # action brings the (one row per user with new events) watermarks to the driver: the lowest
    # picks the source files to read, the rest go back as a local table (no further job)
    touched = stored.join(F.broadcast(first_new), "user_id").where(F.col("session_end") >= F.col("first_new") - gap)
    rows = (
        first_new.join(touched.groupBy("user_id").agg(F.min("session_start").alias("first_touched")), "user_id", "left")
        .select(
            "user_id",
            F.unix_micros(F.least("first_new", F.coalesce("first_touched", "first_new"))).alias("mark"),
        )
        .collect()
    )  # ints: no time zone on the way
    columns = stored.columns
    if not rows:  # the new files hold no usable event: a commit that records the new input
        return _merge(spark, lake, target, increment, inputs, spark.createDataFrame([], stored.schema), clauses=False)
    low = min(r.mark for r in rows)
    marks = spark.createDataFrame([(r.user_id, r.mark) for r in rows], "user_id bigint, mark bigint").select(
        "user_id", F.timestamp_micros("mark").alias("watermark")
    )
    files = None
    if dict(new.dtypes).get("ts", "").startswith("timestamp"):
        files = files_reaching(lake, source, version=inputs.source_version, column="ts", low_micros=low)
    events = (
        read_delta(spark, lake, source, model=model, version=inputs.source_version)
        if files is None
        else read_files(spark, lake, source, files, schema=spark_schema(lake, source, version=inputs.source_version))
    )
    events = usable_events(events).where(F.col("ts") >= F.timestamp_micros(F.lit(low)))
    window = events.join(F.broadcast(marks), "user_id").where(F.col("ts") >= F.col("watermark"))
    fresh = sessions_frame(window.drop("watermark"), gap_minutes=gap_minutes)
    gone = (
        stored.join(F.broadcast(marks), "user_id")
        .where(F.col("session_start") >= F.col("watermark"))
        .select(*columns)
        .join(fresh.select("user_id", "session_id"), ["user_id", "session_id"], "left_anti")
    )
    # the few changed sessions, computed once and kept on the executors for MERGE's two passes
    changes = fresh.withColumn("_gone", F.lit(False)).unionByName(gone.withColumn("_gone", F.lit(True)))
    return _merge(spark, lake, target, increment, inputs, changes.localCheckpoint(), clauses=True)


def _merge(
    spark: SparkSession,
    lake: Lake,
    target: str,
    increment: Increment,
    inputs: ModelInputs,
    changes: DataFrame,
    *,
    clauses: bool,
) -> SparkModelResult:
    """MERGE ``changes`` (sessions, ``_gone`` marking those to delete) by (user_id, session_id)."""
    if not clauses:
        return merge_delta(
            spark,
            lake,
            target,
            increment,
            lambda t: t.merge(changes.alias("s"), "false").whenNotMatchedInsertAll(),
            name="sessionize_events",
            inputs=inputs,
        )
    values = {c: f"s.{c}" for c in changes.columns if c != "_gone"}
    return merge_delta(
        spark,
        lake,
        target,
        increment,
        lambda t: (
            t.merge(changes.alias("s"), "t.user_id = s.user_id AND t.session_id = s.session_id")
            .whenMatchedDelete(condition="s._gone")
            .whenMatchedUpdate(condition="NOT s._gone", set=values)
            .whenNotMatchedInsert(condition="NOT s._gone", values=values)
        ),
        name="sessionize_events",
        inputs=inputs,
    )
