"""The one Spark session builder: same code on local[N], a standalone cluster or Kubernetes.

Everything engine-specific (Delta extensions, s3a endpoint and credentials) comes from
``Lake.spark_conf()`` / ``Lake.spark_packages()`` so Spark sees the lake exactly as deltalake does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.lake import HADOOP_AWS_PACKAGE, Lake
from ingest.logfile import native_output_to_log

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ingest.settings import Settings

IVY_DIR_ENV = "LAKEHOUSE_IVY_DIR"
DEFAULT_MASTER = "local[2]"
# the heap of a local-mode JVM, which is driver and executors at once; Spark's default (1g) left
# too little execution memory at 1M rows: a full build once failed with "Could not allocate
# memory to grow BytesToBytesMap" while two tasks sorted and probed a broadcast side by side
LOCAL_DRIVER_MEMORY = "4g"


def ivy_dir() -> Path:
    """Where Maven jars are cached, so only the first start needs the network."""
    return Path(os.environ.get(IVY_DIR_ENV) or Path.home() / ".cache" / "lakehouse" / "ivy")


def spark_session_conf(
    lake: Lake, *, s3a: bool | None = None, extra_conf: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """The (conf, extra Maven packages) a session for ``lake`` needs; ``s3a=True`` adds hadoop-aws
    even for a local lake (tests that later point the same JVM at S3)."""
    conf = dict(lake.spark_conf())
    conf.setdefault("spark.sql.session.timeZone", "UTC")
    conf["spark.jars.ivy"] = str(ivy_dir())
    conf.setdefault("spark.sql.shuffle.partitions", "4")
    conf.setdefault("spark.ui.enabled", "false")
    conf.setdefault("spark.sql.sources.partitionOverwriteMode", "static")
    conf.setdefault("spark.databricks.delta.snapshotPartitions", "2")
    conf.update(extra_conf or {})
    packages = list(lake.spark_packages())
    if s3a and HADOOP_AWS_PACKAGE not in packages:
        packages.append(HADOOP_AWS_PACKAGE)
    return conf, packages


def build_spark(
    settings_or_lake: Settings | Lake,
    *,
    app_name: str = "lakehouse",
    master: str | None = None,
    s3a: bool | None = None,
    extra_conf: Mapping[str, str] | None = None,
    extra_packages: Sequence[str] = (),
) -> SparkSession:
    """Get or create the SparkSession for a lake.

    ``master`` defaults to ``Settings.spark_master`` (``local[2]`` for a bare Lake); on a cluster
    the same model code runs unchanged because locations come from ``lake.spark_path``.
    """
    from delta.pip_utils import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    from ingest.settings import Settings, check_spark_master

    if isinstance(settings_or_lake, Settings):
        lake = Lake.from_settings(settings_or_lake)
        master = master or settings_or_lake.spark_master
    elif isinstance(settings_or_lake, Lake):
        lake = settings_or_lake
    else:
        raise ValueError(f"build_spark needs Settings or a Lake, got {type(settings_or_lake).__name__}")
    master = master or DEFAULT_MASTER
    check_spark_master(master)
    conf, packages = spark_session_conf(lake, s3a=s3a, extra_conf=extra_conf)
    if master.startswith("local"):
        conf.setdefault("spark.driver.memory", LOCAL_DRIVER_MEMORY)  # read by spark-submit at JVM start
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        # Python UDF workers must use this interpreter (the venv with pandas/Pillow), not whatever
        # `python3` is on PATH; pyspark reads only the environment variable for this.
        os.environ["PYSPARK_PYTHON"] = sys.executable
    ivy_dir().mkdir(parents=True, exist_ok=True)
    # stage progress bars would only land in the log file (see below)
    builder = SparkSession.builder.master(master).appName(app_name).config("spark.ui.showConsoleProgress", "false")
    for key, value in conf.items():
        builder = builder.config(key, value)
    wanted = [*packages, *extra_packages]
    jars = resolved_jars(wanted)
    if jars is None:
        builder = configure_spark_with_delta_pip(builder, extra_packages=wanted)
    else:  # resolved before, every jar still cached: no Ivy resolution (~3 s of each start)
        builder = builder.config("spark.jars", ",".join(filter(None, [conf.get("spark.jars"), jars])))
    # the JVM inherits stdout/stderr: Ivy resolution, log4j WARN lines go to the log file, never
    # to the terminal or into --json output
    with native_output_to_log():
        spark = builder.getOrCreate()
    if jars is None:
        record_resolved_jars(wanted, spark.sparkContext.getConf().get("spark.jars", ""))
    return spark


def _resolution_file(packages: Sequence[str]) -> Path:
    """Where the jars Ivy resolved for these packages (and this delta-spark and pyspark) are listed."""
    import hashlib
    from importlib.metadata import version

    key = "|".join([version("delta_spark"), version("pyspark"), *sorted(packages)])
    return ivy_dir() / f"resolved-{hashlib.sha256(key.encode()).hexdigest()[:16]}.txt"


def resolved_jars(packages: Sequence[str]) -> str | None:
    """The jars (``spark.jars`` value) a previous start resolved for ``packages``, or None when
    there is no such record or one of its jars is gone from the cache (then Ivy resolves again)."""
    path = _resolution_file(packages)
    try:
        jars = path.read_text().strip()
    except OSError:
        return None
    files = [j.removeprefix("file://") for j in jars.split(",") if j]
    if not files or not all(Path(f).is_file() for f in files):
        return None
    return jars


def record_resolved_jars(packages: Sequence[str], jars: str) -> None:
    """Remember what Ivy resolved (only local jar files: anything else resolves again next time)."""
    files = [j for j in jars.split(",") if j]
    if not files or not all(j.startswith("file:") for j in files):
        return
    path = _resolution_file(packages)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(",".join(files) + "\n")
    tmp.replace(path)  # atomic: a concurrent start reads the old list or this one


def point_at_lake(spark: SparkSession, lake: Lake) -> SparkSession:
    """Re-point a running session's s3a settings at ``lake`` (one JVM, many lakes: tests, notebooks).

    Hadoop options are global per JVM; s3a FileSystem instances are cached per bucket, so a fresh
    bucket picks up the new endpoint and credentials.
    """
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in lake.spark_conf().items():
        if key.startswith("spark.hadoop."):
            hconf.set(key[len("spark.hadoop.") :], value)
        elif not key.startswith("spark.sql.extensions") and not key.startswith("spark.sql.catalog"):
            spark.conf.set(key, value)
    return spark
