"""The Spark path of a shard build: one Spark task per shard range, the same bytes as local.

Two jobs over the pinned table version: (1) every row's key and exact encoded size, computed by
the same Python encoder the local path uses; the driver then plans shards with the same planner;
(2) rows joined to their (shard, position), range-partitioned by shard and sorted, and each task
writes its shards straight to the lake and returns their sizes and checksums.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ingest.errors import ConfigError
from ingest.lake import Lake, TableId
from transforms.shards.formats import Format, ShardSpec, shard_format
from transforms.shards.plan import SampleInfo, order_of, plan_shards, split_of

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

_KEY = "__shard_key"
_SHARD = "__shard_no"
_POS = "__shard_pos"


def _session(lake: Lake, spark: SparkSession | None, master: str | None = None) -> SparkSession:
    """The active session (or a new one on ``master``, the configured ``spark_master``), with
    Python workers that can import this project.

    On a local master, PySpark starts workers with ``python3`` from PATH unless PYSPARK_PYTHON is
    set, which is not the venv: point local sessions at this interpreter.  Cluster executors keep
    their own configured Python.
    """
    import os
    import sys

    from pyspark.sql import SparkSession

    from transforms.spark.session import build_spark, point_at_lake

    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        spark = build_spark(lake, app_name="shards-build", master=master)
    sc = spark.sparkContext
    if (sc.master or "").startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        sc.pythonExec = sys.executable
    return point_at_lake(spark, lake) if lake.is_s3 else spark


def _nullable(df, columns: Sequence[str]) -> set[str]:
    from pyspark.sql import functions as F

    row = df.select([F.sum(F.col(f"`{c}`").isNull().cast("long")).alias(c) for c in columns]).collect()[0]
    return {c for c in columns if (row[c] or 0) > 0}


def build_with_spark(
    lake: Lake,
    root: str,
    tid: TableId,
    version: int,
    *,
    format: Format,
    key: str | None,
    splits: Sequence[tuple[str, float]],
    target: int,
    seed: int,
    mtime: int,
    spark: SparkSession | None = None,
    master: str | None = None,
) -> tuple[ShardSpec, list[dict[str, Any]]]:
    """Plan on the driver, write shards in Spark tasks; returns (spec, shard descriptions)."""
    from pyspark.sql import functions as F

    from transforms.shards.build import clear_shard_set, default_key, write_one

    spark = _session(lake, spark, master)
    schema = lake.delta_table(tid, version=version).to_pyarrow_dataset().schema
    key = key or default_key(schema)
    df = spark.read.format("delta").option("versionAsOf", version).load(lake.spark_path(str(tid)))
    nullable = _nullable(df, schema.names) if shard_format(format).needs_nullable else set()
    spec = ShardSpec.from_schema(schema, format=format, key=key, mtime=mtime, size_limit=target, nullable=nullable)

    # job 1: key text and exact encoded size of every row
    def sizes(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            pairs = list(spec.sample_sizes(pa.Table.from_batches([batch])))
            yield pa.RecordBatch.from_arrays(
                [pa.array([k for k, _ in pairs], pa.string()), pa.array([s for _, s in pairs], pa.int64())],
                names=["key", "size"],
            )

    measured = df.mapInArrow(sizes, "key string, size long").toArrow()
    infos = [
        SampleInfo(k, split_of(k, splits), order_of(k, seed), s)
        for k, s in zip(measured.column("key").to_pylist(), measured.column("size").to_pylist(), strict=True)
    ]
    try:
        plans = plan_shards(infos, splits=splits, target=target, overhead=spec.shard_overhead())
    except ValueError as exc:
        raise ConfigError(f"{tid}@{version}: {exc}") from None
    fs = lake.pyarrow_filesystem()
    clear_shard_set(fs, lake.fs_path(root))
    if not plans:
        return spec, []

    assign = pa.table(
        {
            _KEY: [k for p in plans for k in p.keys],
            _SHARD: pa.array([i for i, p in enumerate(plans) for _ in p.keys], pa.int32()),
            _POS: pa.array([j for p in plans for j in range(len(p.keys))], pa.int32()),
        }
    )
    slots = [(p.split, p.index) for p in plans]
    columns = list(schema.names)
    root_fs = lake.fs_path(root)

    def with_key(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from transforms.shards.plan import key_text

        for batch in batches:
            keys = pa.array([key_text(v) for v in batch.column(key).to_pylist()], pa.string())
            yield pa.RecordBatch.from_arrays([*batch.columns, keys], names=[*batch.schema.names, _KEY])

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from transforms.shards.plan import ShardPlan

        task_fs = lake.pyarrow_filesystem()
        pending: list[pa.RecordBatch] = []
        current: int | None = None

        def flush() -> pa.RecordBatch:
            rows = pa.Table.from_batches(pending).sort_by(_POS)
            split, index = slots[current]  # type: ignore[index]  # current is set before the first flush
            plan = ShardPlan(split=split, index=index)
            # Spark hands over large_string/large_binary: cast back so Parquet schemas match too
            info = write_one(task_fs, root_fs, spec, plan, rows.select(columns).cast(schema))
            return pa.RecordBatch.from_pylist([{**info, "shard_no": current}], schema=_RESULT)

        for batch in batches:
            shard_col = batch.column(_SHARD).to_pylist()
            start = 0
            for i in range(1, len(shard_col) + 1):
                if i == len(shard_col) or shard_col[i] != shard_col[start]:
                    if current is not None and shard_col[start] != current:
                        yield flush()
                        pending = []
                    current = shard_col[start]
                    pending.append(batch.slice(start, i - start))
                    start = i
        if pending:
            yield flush()

    from pyspark.sql.types import StringType, StructField, StructType

    keyed_schema = StructType([*df.schema.fields, StructField(_KEY, StringType(), True)])
    keyed = df.mapInArrow(with_key, keyed_schema)
    joined = keyed.join(F.broadcast(spark.createDataFrame(assign)), on=_KEY, how="inner")
    out = (
        joined.repartitionByRange(len(plans), _SHARD)
        .sortWithinPartitions(_SHARD, _POS)
        .mapInArrow(write, "path string, split string, samples long, bytes long, sha256 string, shard_no int")
        .toArrow()
    )
    shards = sorted(out.to_pylist(), key=lambda r: r["shard_no"])
    if [r["shard_no"] for r in shards] != list(range(len(plans))):
        raise ConfigError(f"spark shard build wrote {len(shards)} of {len(plans)} shards: rerun the build")
    for r, p in zip(shards, plans, strict=True):
        if r["samples"] != p.samples:
            raise ConfigError(f"shard {r['path']} has {r['samples']} samples, planned {p.samples}: rerun the build")
        del r["shard_no"]
    return spec, shards


_RESULT = pa.schema(
    [
        ("path", pa.string()),
        ("split", pa.string()),
        ("samples", pa.int64()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("shard_no", pa.int32()),
    ]
)
