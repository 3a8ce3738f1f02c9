"""What every Spark model shares: one atomic Delta overwrite and a small typed result."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from ingest.errors import ConfigError
from ingest.lake import Lake, TableId

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class SparkModelResult:
    """One model run, in the shape ``transforms.dbt_runner.ModelResult`` accepts."""

    name: str
    table: str
    status: Literal["success", "skipped"]
    version: int | None = None
    rows: int | None = None
    rows_written: int | None = None
    mode: str = "overwrite"
    message: str | None = None
    kind: str = "spark"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def table_exists(spark: "SparkSession", lake: Lake, table: str | TableId) -> bool:
    """Whether a Delta table is at the table's location, asked through Spark (works on a cluster)."""
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, lake.spark_path(str(TableId.parse(table))))


def read_delta(spark: "SparkSession", lake: Lake, table: str | TableId, *, model: str) -> "DataFrame":
    tid = TableId.parse(table)
    if not table_exists(spark, lake, tid):
        raise ConfigError(
            f"{model} needs {tid}, which does not exist in lake {lake.uri}: ingest it first (see `ingest --help`)"
        )
    return spark.read.format("delta").load(lake.spark_path(str(tid)))


def overwrite_delta(
    spark: "SparkSession", lake: Lake, table: str | TableId, df: "DataFrame", *, name: str
) -> SparkModelResult:
    """Replace the table's contents in ONE Delta commit, so readers see old or new, never a mix.

    The schema is replaced too (``overwriteSchema``): a model owns its output table.
    """
    from delta.tables import DeltaTable

    tid = TableId.parse(table)
    path = lake.spark_path(str(tid))
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "true")
        .option("userMetadata", f"spark model {name}")
        .save(path)
    )
    last = DeltaTable.forPath(spark, path).history(1).select("version", "operationMetrics").first()
    metrics = last["operationMetrics"] or {}
    rows = int(metrics["numOutputRows"]) if metrics.get("numOutputRows") is not None else None
    return SparkModelResult(
        name=name, table=str(tid), status="success", version=int(last["version"]), rows=rows, rows_written=rows
    )
