"""What every Spark model shares: one atomic Delta overwrite or merge, the inputs it records, a typed result."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ingest.errors import ConfigError, TransientError
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
    # the driver's increments (driver.py) compute the same table: a change there is a change too
    for path in (Path(module_file), Path(__file__), Path(__file__).with_name("driver.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def recorded_inputs(lake: Lake, table: str | TableId) -> dict[str, Any] | None:
    """The ``ModelInputs`` the table's last commit recorded (None: not a model commit)."""
    return _last_inputs(lake, table)[0]


def _last_inputs(lake: Lake, table: str | TableId) -> tuple[dict[str, Any] | None, int | None]:
    """(the inputs the last commit recorded, that commit's version), from one snapshot."""
    if not lake.table_exists(table):
        return None, None
    last = lake.delta_table(table).history(1)
    commit = last[0] if last else {}
    version = commit.get("version")
    try:
        recorded = json.loads(commit.get("userMetadata") or "")
    except ValueError:
        return None, version
    if not isinstance(recorded, dict):
        return None, version
    recorded.pop("run_id", None)  # which run wrote it, not what it was built from
    return recorded, version


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
    if isinstance(exc, TargetMovedError):
        return type(exc).__name__
    return None


def up_to_date(lake: Lake, inputs: ModelInputs, target: str | TableId) -> SparkModelResult | None:
    """A 'skipped' result when ``target`` already holds what ``inputs`` would produce, else None.

    That is so when its last commit recorded the same inputs, or the same but an older source
    version and the source's commits since then added no rows (an OPTIMIZE, an empty batch).
    """
    recorded = recorded_inputs(lake, target)
    wanted = json.loads(inputs.to_json())
    if recorded == wanted:
        since = inputs.source_version
    else:
        increment = increment_since(lake, inputs, target)
        if increment is None or increment.files:
            return None
        since = increment.since
    dt = lake.delta_table(target)
    return SparkModelResult(
        name=inputs.model,
        table=str(TableId.parse(target)),
        status="skipped",
        version=dt.version(),
        rows=dt.count(),
        rows_written=0,
        message=f"up to date: {inputs.source} has no new rows since version {since}"
        if since != inputs.source_version
        else f"up to date: {inputs.source} is still at version {since}",
    )


@dataclass(frozen=True)
class Increment:
    """What an incremental run starts from: the target at ``target_version`` reflects the source
    at ``since``; ``files`` are the data files the source appended after it (relative paths)."""

    since: int
    target_version: int
    files: list[str]


def increment_since(lake: Lake, inputs: ModelInputs, target: str | TableId) -> Increment | None:
    """The source rows ``target`` has not seen, or None when only a full rebuild is correct.

    An increment exists when the target's last commit recorded the same model, code and
    parameters at an OLDER source version, and the source only appended rows since then
    (``ingest.delta.appended_files``) to an unpartitioned table without column mapping, whose
    data files Spark can then read directly.
    """
    from ingest.delta import appended_files

    recorded, target_version = _last_inputs(lake, target)  # the state and what it was built from: one commit
    wanted = json.loads(inputs.to_json())
    if not recorded or {k: v for k, v in recorded.items() if k != "source_version"} != {
        k: v for k, v in wanted.items() if k != "source_version"
    }:
        return None
    since = recorded.get("source_version")
    if not isinstance(since, int) or not isinstance(target_version, int) or since >= inputs.source_version:
        return None  # a pinned older version: rebuild it
    meta = lake.delta_table(inputs.source, version=inputs.source_version).metadata()
    if meta.partition_columns or (meta.configuration or {}).get("delta.columnMapping.mode", "none") != "none":
        return None
    files = appended_files(lake, inputs.source, since=since, until=inputs.source_version)
    if files is None:
        return None
    return Increment(since=since, target_version=target_version, files=files)


def table_exists(spark: SparkSession, lake: Lake, table: str | TableId) -> bool:
    """Whether a Delta table is at the table's location, read from its log by deltalake: Spark's
    own check replays the log in Spark jobs (seconds on a fresh JVM) before any model work."""
    return lake.table_exists(table)


def read_delta(
    spark: SparkSession, lake: Lake, table: str | TableId, *, model: str, version: int | None = None
) -> DataFrame:
    """The table as Spark sees it, as of ``version`` (the one recorded as the model's input).

    When its data files are plain parquet (``plain_files``), Spark reads the files deltalake
    lists for that version: the same rows, without Spark replaying the Delta log in jobs of its
    own (seconds on a fresh JVM).  Otherwise Spark's Delta reader.
    """
    tid = TableId.parse(table)
    if not table_exists(spark, lake, tid):
        raise ConfigError(
            f"{model} needs {tid}, which does not exist in lake {lake.uri}: ingest it first (see `ingest --help`)"
        )
    dt = lake.delta_table(tid, version=version)
    files = plain_files(dt)
    if files is not None:
        return read_files(spark, lake, tid, files.column("path").to_pylist(), schema=_spark_schema(dt))
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", int(version))
    return reader.load(lake.spark_path(str(tid)))


def overwrite_delta(
    spark: SparkSession,
    lake: Lake,
    table: str | TableId,
    df: DataFrame,
    *,
    name: str,
    inputs: ModelInputs | None = None,
) -> SparkModelResult:
    """Replace the table's contents in ONE Delta commit, so readers see old or new, never a mix.

    The schema is replaced too (``overwriteSchema``): a model owns its output table.  The commit
    records ``inputs`` and the run id (as ``userMetadata``), which lets the next run see it has
    nothing to do and lineage name the run that wrote it.
    """
    tid = TableId.parse(table)
    path = lake.spark_path(str(tid))
    user_metadata = commit_user_metadata(name, inputs)
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "true")
        .option("userMetadata", user_metadata)
        .save(path)
    )
    last = _our_commit(lake, tid, user_metadata)
    rows = _metric(last.get("operationMetrics") or {}, "numOutputRows")
    return SparkModelResult(
        name=name, table=str(tid), status="success", version=int(last["version"]), rows=rows, rows_written=rows
    )


def commit_user_metadata(name: str, inputs: ModelInputs | None) -> str:
    """What a model's commit records: its inputs (or name) and the run id, for lineage
    (``ingest.delta.commit_run_id``) and for the next run's up-to-date check."""
    from ingest.runlog import current_run_id

    meta = json.loads(inputs.to_json()) if inputs is not None else {"model": name}
    run_id = current_run_id()
    if run_id is not None:
        meta["run_id"] = run_id
    return json.dumps(meta, sort_keys=True)


def _our_commit(lake: Lake, table: TableId, user_metadata: str) -> dict[str, Any]:
    """Our commit, not a later one by another writer: the newest that carries our metadata
    (read by deltalake from the log: no Spark job)."""
    recent = lake.delta_table(table).history(20)
    return next((c for c in recent if c.get("userMetadata") == user_metadata), recent[0])


def _metric(metrics: dict[str, Any], key: str) -> int | None:
    value = metrics.get(key)
    return int(value) if value is not None else None


# An incremental run's queries handle the new rows and the few stored rows they touch: adaptive
# execution would run each of their many small shuffles and broadcasts as a Spark job of its own
# (each costs seconds on a busy machine), and a few shuffle partitions are plenty.
INCREMENT_CONF = {"spark.sql.adaptive.enabled": "false", "spark.sql.shuffle.partitions": "2"}


@contextmanager
def session_conf(spark: SparkSession, conf: dict[str, str]) -> Iterator[None]:
    """``conf`` set on the session for the block, the previous values restored after it."""
    previous = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in previous.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)


class TargetMovedError(TransientError):
    """Another writer committed to a model's table after an incremental run read it."""


def spark_schema(lake: Lake, table: str | TableId, *, version: int) -> Any:
    """The table's Spark schema at ``version``, from its log through deltalake: Spark's Delta
    reader would replay the log in Spark jobs (seconds each on a busy machine) just to learn it."""
    return _spark_schema(lake.delta_table(table, version=version))


def _spark_schema(dt: Any) -> Any:
    from pyspark.sql.types import StructType

    return StructType.fromJson(json.loads(dt.schema().to_json()))


def plain_files(dt: Any) -> Any:
    """The add actions (``path``, statistics: a pyarrow table) of an opened deltalake table whose
    data files hold exactly its rows as plain parquet, or None when they do not (partition
    values outside the files, column mapping, deletion vectors, types widened since a file was
    written)."""
    import pyarrow as pa

    meta, protocol = dt.metadata(), dt.protocol()
    if (
        meta.partition_columns
        or (meta.configuration or {}).get("delta.columnMapping.mode", "none") != "none"
        or {"deletionVectors", "typeWidening"} & set(protocol.reader_features or [])
    ):
        return None
    actions = pa.table(dt.get_add_actions(flatten=True))
    return actions if files_under_root(actions.column("path").to_pylist()) else None


def files_under_root(paths: list[str]) -> bool:
    """Whether every data file path is a plain name relative to the table root, which is how
    ``read_files`` joins it: an absolute path (a shallow clone's) or a percent-encoded one is
    left to Spark's Delta reader."""
    return all("://" not in p and not p.startswith("/") and "%" not in p for p in paths)


def read_files(spark: SparkSession, lake: Lake, table: str | TableId, files: list[str], *, schema: Any) -> DataFrame:
    """Rows of the given data files of ``table`` (relative paths) read as plain parquet with the
    table's ``schema``: only for files whose rows are all live (no deletion vector, no column
    mapping, no partition values), as ``increment_since`` and ``files_reaching`` check."""
    if not files:
        return spark.createDataFrame([], schema)
    root = lake.spark_path(str(TableId.parse(table))).rstrip("/")
    return spark.read.schema(schema).parquet(*(f"{root}/{f}" for f in files))


def read_appended(
    spark: SparkSession, lake: Lake, table: str | TableId, increment: Increment, *, model: str, version: int
) -> DataFrame:
    """Only the rows ``increment`` appended to ``table`` (its new data files), with the table's
    schema as of ``version``: Delta's own reader cannot skip files by name."""
    return read_files(spark, lake, table, increment.files, schema=spark_schema(lake, table, version=version))


def files_reaching(lake: Lake, table: str | TableId, *, version: int, column: str, low_micros: int) -> list[str] | None:
    """The data files of ``table`` at ``version`` that may hold a row with timestamp ``column``
    >= ``low_micros`` (by their max statistic; a file without one is kept), or None when the
    files cannot be read as plain parquet (deletion vectors, column mapping, partitions).

    Delta stores timestamp statistics truncated to milliseconds, so the max is widened by 1 ms.
    """
    import pyarrow as pa

    actions = plain_files(lake.delta_table(table, version=version))
    if actions is None:
        return None
    paths = actions.column("path").to_pylist()
    stat = f"max.{column}"
    if stat not in actions.column_names:
        return paths
    maxima = actions.column(stat).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
    return [p for p, hi in zip(paths, maxima, strict=True) if hi is None or hi + 1000 >= low_micros]


def merge_delta(
    spark: SparkSession,
    lake: Lake,
    table: str | TableId,
    increment: Increment,
    merge: Callable[[Any], Any],
    *,
    name: str,
    inputs: ModelInputs,
) -> SparkModelResult:
    """Run ``merge(DeltaTable)`` (a ``DeltaMergeBuilder`` with its clauses) as ONE commit that
    records ``inputs`` and the run id, like ``overwrite_delta``.

    The merge was computed from the table at ``increment.target_version``; if another writer
    committed since, ``TargetMovedError`` (a conflict: the run starts over).  A commit after this
    check is Delta's own conflict (``ConcurrentAppendException``...), retried the same way.
    """
    from delta.tables import DeltaTable

    tid = TableId.parse(table)
    path = lake.spark_path(str(tid))
    check_unmoved(tid, increment, head=lake.delta_table(tid).version())
    user_metadata = commit_user_metadata(name, inputs)
    # the models hand MERGE a source computed from pinned inputs and cached on the executors:
    # deterministic, so Delta need not copy it once more before its two passes (a Spark job)
    conf = {"spark.databricks.delta.commitInfo.userMetadata": user_metadata}
    conf["spark.databricks.delta.merge.materializeSource"] = "none"
    with session_conf(spark, conf):
        merge(DeltaTable.forPath(spark, path).alias("t")).execute()
    last = _our_commit(lake, tid, user_metadata)
    metrics = last.get("operationMetrics") or {}
    written = sum(
        _metric(metrics, k) or 0 for k in ("numTargetRowsInserted", "numTargetRowsUpdated", "numTargetRowsDeleted")
    )
    return merged(lake, tid, increment, inputs, version=int(last["version"]), written=written)


def check_unmoved(tid: TableId, increment: Increment, *, head: int | None) -> None:
    """``TargetMovedError`` when the table is no longer at the version the increment was computed from."""
    if head != increment.target_version:
        raise TargetMovedError(f"{tid} moved from version {increment.target_version} to {head} during the run")


def merged(
    lake: Lake, tid: TableId, increment: Increment, inputs: ModelInputs, *, version: int, written: int, where: str = ""
) -> SparkModelResult:
    """The result of an increment merged as ``version`` (``where``: " on the driver", or Spark)."""
    return SparkModelResult(
        name=inputs.model,
        table=str(tid),
        status="success",
        version=version,
        rows=lake.delta_table(tid, version=version).count(),
        rows_written=written,
        mode="merge",
        message=(
            f"incremental{where}: {len(increment.files)} new file(s) of {inputs.source} since version {increment.since}"
        ),
    )
