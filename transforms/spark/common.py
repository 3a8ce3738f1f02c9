"""What every Spark model shares: one atomic Delta overwrite, the inputs it records, a typed result."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
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


@dataclass(frozen=True)
class ModelInputs:
    """Everything a Spark model's output is a function of, recorded in the commit that wrote it.

    The same inputs give the same table (the models are deterministic), so a run whose inputs
    match the target's last commit has nothing to do and starts no JVM.
    """

    model: str
    source: str
    source_version: int
    code: str  # sha256 of the model's module and this one
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


def code_fingerprint(module_file: str) -> str:
    h = hashlib.sha256()
    for path in (Path(module_file), Path(__file__)):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def recorded_inputs(lake: Lake, table: str | TableId) -> dict[str, Any] | None:
    """The ``ModelInputs`` the table's last commit recorded (None: not a model commit)."""
    if not lake.table_exists(table):
        return None
    last = lake.delta_table(table).history(1)
    try:
        recorded = json.loads((last[0] if last else {}).get("userMetadata") or "")
    except ValueError:
        return None
    if not isinstance(recorded, dict):
        return None
    recorded.pop("run_id", None)  # which run wrote it, not what it was built from
    return recorded


# Delta's commit conflicts (io.delta.exceptions.*): another writer committed to the table between
# this transaction's read and its commit.  Running the model again from fresh inputs is correct.
_CONFLICT = re.compile(
    r"Concurrent(Append|Write|DeleteRead|DeleteDelete|Transaction|Modification)Exception"
    r"|MetadataChangedException|ProtocolChangedException|DELTA_CONCURRENT_|DELTA_METADATA_CHANGED|DELTA_PROTOCOL_CHANGED"
)


def conflict_name(exc: BaseException) -> str | None:
    """The Delta conflict ``exc`` is (e.g. ``ConcurrentAppendException``), or None for any other error."""
    for name in (*(c.__name__ for c in type(exc).__mro__), (str(exc).splitlines() or [""])[0]):
        m = _CONFLICT.search(name)
        if m:
            return m.group(0)
    return None


def up_to_date(lake: Lake, inputs: ModelInputs, target: str | TableId) -> SparkModelResult | None:
    """A 'skipped' result when ``target`` already holds what ``inputs`` would produce, else None."""
    if recorded_inputs(lake, target) != json.loads(inputs.to_json()):
        return None
    dt = lake.delta_table(target)
    return SparkModelResult(
        name=inputs.model, table=str(TableId.parse(target)), status="skipped", version=dt.version(),
        rows=dt.count(), rows_written=0,
        message=f"up to date: {inputs.source} is still at version {inputs.source_version}",
    )


def table_exists(spark: "SparkSession", lake: Lake, table: str | TableId) -> bool:
    """Whether a Delta table is at the table's location, asked through Spark (works on a cluster)."""
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, lake.spark_path(str(TableId.parse(table))))


def read_delta(
    spark: "SparkSession", lake: Lake, table: str | TableId, *, model: str, version: int | None = None
) -> "DataFrame":
    """The table as Spark sees it, as of ``version`` (the one recorded as the model's input)."""
    tid = TableId.parse(table)
    if not table_exists(spark, lake, tid):
        raise ConfigError(
            f"{model} needs {tid}, which does not exist in lake {lake.uri}: ingest it first (see `ingest --help`)"
        )
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", int(version))
    return reader.load(lake.spark_path(str(tid)))


def overwrite_delta(
    spark: "SparkSession", lake: Lake, table: str | TableId, df: "DataFrame", *, name: str,
    inputs: ModelInputs | None = None,
) -> SparkModelResult:
    """Replace the table's contents in ONE Delta commit, so readers see old or new, never a mix.

    The schema is replaced too (``overwriteSchema``): a model owns its output table.  The commit
    records ``inputs`` and the run id (as ``userMetadata``), which lets the next run see it has
    nothing to do and lineage name the run that wrote it.
    """
    from delta.tables import DeltaTable

    from ingest.runlog import current_run_id

    tid = TableId.parse(table)
    path = lake.spark_path(str(tid))
    meta = json.loads(inputs.to_json()) if inputs is not None else {"model": name}
    run_id = current_run_id()  # named in the commit, for lineage (ingest.delta.commit_run_id)
    if run_id is not None:
        meta["run_id"] = run_id
    user_metadata = json.dumps(meta, sort_keys=True)
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "true")
        .option("userMetadata", user_metadata)
        .save(path)
    )
    # our commit, not a later one by another writer: the newest that carries our metadata
    recent = DeltaTable.forPath(spark, path).history(20).select("version", "operationMetrics", "userMetadata").collect()
    last = next((c for c in recent if c["userMetadata"] == user_metadata), recent[0])
    metrics = last["operationMetrics"] or {}
    rows = int(metrics["numOutputRows"]) if metrics.get("numOutputRows") is not None else None
    return SparkModelResult(
        name=name, table=str(tid), status="success", version=int(last["version"]), rows=rows, rows_written=rows
    )
