"""Lake locations, identifiers and per-engine options (unit), plus the unreachable-endpoint CLI error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.errors import ConfigError
from ingest.lake import HADOOP_AWS_PACKAGE, Lake, TableId, parse_lake_uri
from ingest.settings import S3Settings

SECRET = "sEcReT-value-that-must-not-leak"


def _s3(endpoint: str | None = "http://127.0.0.1:8333", **kw) -> S3Settings:
    return S3Settings(
        endpoint_url=endpoint,
        access_key_id=kw.get("access", "AKIDLAKETEST"),
        secret_access_key=kw.get("secret", SECRET),
        region=kw.get("region", "eu-central-1"),
    )


# -- identifiers and URIs ----------------------------------------------------------------------
def test_table_id_roundtrip() -> None:
    t = TableId.parse(" gold.photo_features ")
    assert (t.layer, t.name, str(t)) == ("gold", "photo_features", "gold.photo_features")
    assert TableId.parse(t) is t


@pytest.mark.parametrize(
    ("ident", "fragment"),
    [
        ("platinum.images", "unknown layer 'platinum'"),
        ("images", "write it as layer.name"),
        ("bronze.images.extra", "write it as layer.name"),
        ("bronze.bad-name", "bad table name"),
        ("bronze.", "bad table name"),
    ],
)
def test_table_id_errors_say_how_to_fix(ident: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        TableId.parse(ident)
    msg = str(info.value)
    assert fragment in msg
    assert "bronze.images" in msg  # every message shows a valid example
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("", "lake URI is empty"),
        ("   ", "lake URI is empty"),
        ("s3://", "bucket name is missing or invalid"),
        ("s3://Bad_Bucket/x", "bucket name is missing or invalid"),
        ("gs://bucket/x", "unsupported scheme 'gs'"),
        ("http://host/lake", "unsupported scheme 'http'"),
    ],
)
def test_malformed_lake_uris(uri: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_lake_uri(uri)


def test_lake_uri_forms(tmp_path: Path) -> None:
    assert parse_lake_uri("s3://bkt/a/b/").prefix == "a/b"
    assert parse_lake_uri("s3a://bkt/a").uri == "s3://bkt/a"
    assert parse_lake_uri("s3://bkt").uri == "s3://bkt"
    assert parse_lake_uri(f"file://{tmp_path}/l").uri == str(tmp_path / "l")
    assert parse_lake_uri(str(tmp_path / "x" / ".." / "l")).uri == str(tmp_path / "l")


def test_locations_local_and_s3(tmp_path: Path) -> None:
    local = Lake(str(tmp_path / "lake"), s3=S3Settings())
    assert local.table_uri("bronze.images") == str(tmp_path / "lake" / "bronze" / "images")
    assert local.spark_path("bronze.images") == str(tmp_path / "lake" / "bronze" / "images")
    assert local.path("shards", "ds/", "/snap") == str(tmp_path / "lake" / "shards" / "ds" / "snap")

    s3 = Lake("s3://bkt/root", s3=_s3())
    assert s3.table_uri("silver.user_sessions") == "s3://bkt/root/silver/user_sessions"
    assert s3.spark_path("silver.user_sessions") == "s3a://bkt/root/silver/user_sessions"
    assert s3.spark_path("s3://bkt/root/shards/x") == "s3a://bkt/root/shards/x"
    assert s3.key("shards", "x") == "root/shards/x"
    assert s3.fs_path(s3.table_uri("bronze.images")) == "bkt/root/bronze/images"
    with pytest.raises(ConfigError, match="escapes the lake"):
        s3.path("shards", "../../etc")
    with pytest.raises(ConfigError, match="only exist for s3"):
        local.key("x")


# -- engine options ----------------------------------------------------------------------------
def test_deltalake_storage_options() -> None:
    opts = Lake("s3://bkt/root", s3=_s3()).storage_options()
    assert opts["conditional_put"] == "etag"  # safe concurrent commits without a lock table
    assert opts["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    assert opts["AWS_ALLOW_HTTP"] == "true"
    assert opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] == "false"
    assert opts["AWS_REGION"] == "eu-central-1"
    assert opts["AWS_SECRET_ACCESS_KEY"] == SECRET
    aws = Lake("s3://bkt/root", s3=_s3(endpoint=None)).storage_options()
    assert "AWS_ENDPOINT_URL" not in aws and "AWS_ALLOW_HTTP" not in aws
    assert Lake("/tmp/x", s3=_s3()).storage_options() == {}


def test_spark_conf_local_has_delta_but_no_s3a() -> None:
    lake = Lake("/tmp/x", s3=_s3())
    conf = lake.spark_conf()
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert not any(k.startswith("spark.hadoop.fs.s3a") for k in conf)
    assert lake.spark_packages() == []


def test_spark_conf_s3a() -> None:
    conf = Lake("s3://bkt/root", s3=_s3(endpoint="https://minio.internal:9000")).spark_conf()
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "https://minio.internal:9000"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-central-1"
    assert conf["spark.hadoop.fs.s3a.secret.key"] == SECRET
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith("SimpleAWSCredentialsProvider")
    assert Lake("s3://bkt/root", s3=_s3()).spark_packages() == [HADOOP_AWS_PACKAGE]
    # no static keys: leave the provider chain (instance role, web identity) to Hadoop's default
    role = Lake("s3://bkt/root", s3=S3Settings()).spark_conf()
    assert "spark.hadoop.fs.s3a.access.key" not in role
    assert "spark.hadoop.fs.s3a.aws.credentials.provider" not in role


def test_hadoop_aws_matches_bundled_hadoop() -> None:
    """hadoop-aws must be the exact Hadoop version pyspark ships, or s3a fails at class load."""
    pyspark = pytest.importorskip("pyspark")
    jars = Path(pyspark.__file__).parent / "jars"
    bundled = sorted(p.name for p in jars.glob("hadoop-client-api-*.jar"))
    assert bundled, "pyspark ships hadoop-client-api"
    version = bundled[0].removeprefix("hadoop-client-api-").removesuffix(".jar")
    assert HADOOP_AWS_PACKAGE.endswith(":" + version)


def test_spark_session_conf_from_lake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from transforms.spark.session import spark_session_conf

    monkeypatch.setenv("LAKEHOUSE_IVY_DIR", str(tmp_path / "ivy"))
    conf, packages = spark_session_conf(Lake("s3://bkt/root", s3=_s3()), extra_conf={"spark.x": "1"})
    assert conf["spark.jars.ivy"] == str(tmp_path / "ivy")
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:8333"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.x"] == "1"
    assert packages == [HADOOP_AWS_PACKAGE]
    _, local_pkgs = spark_session_conf(Lake(str(tmp_path), s3=S3Settings()))
    assert local_pkgs == []
    _, forced = spark_session_conf(Lake(str(tmp_path), s3=S3Settings()), s3a=True)
    assert forced == [HADOOP_AWS_PACKAGE]


def test_build_spark_rejects_bad_inputs() -> None:
    from transforms.spark.session import build_spark

    with pytest.raises(ValueError, match="needs Settings or a Lake"):
        build_spark("s3://bkt/x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a Spark master URL"):
        build_spark(Lake("/tmp/x", s3=S3Settings()), master="localhost:7077")


def test_pyarrow_and_boto3_point_at_endpoint() -> None:
    lake = Lake("s3://bkt/root", s3=_s3())
    fs = lake.pyarrow_filesystem()
    assert fs.region == "eu-central-1"
    client = lake.boto3_client()
    assert client.meta.endpoint_url == "http://127.0.0.1:8333"
    assert client.meta.config.s3["addressing_style"] == "path"


# -- errors ------------------------------------------------------------------------------------
def test_describe_error_hints() -> None:
    lake = Lake("s3://bkt/root", s3=_s3())
    chain = OSError(
        "Kernel error -> Generic S3 error\n  \x1b[31m↳\x1b[0m error sending request\n"
        "  \x1b[31m↳\x1b[0m Connection refused (os error 111)"
    )
    msg = lake.describe_error(chain, "cannot open bronze.images")
    assert msg == (
        "cannot open bronze.images: Generic S3 error: Connection refused (os error 111)"
        " - check AWS_ENDPOINT_URL (http://127.0.0.1:8333) is reachable"
    )
    assert lake.describe_error(OSError("NoSuchBucket: nope"), "x").endswith("check that bucket 'bkt' exists")
    assert "check AWS_ACCESS_KEY_ID" in lake.describe_error(OSError("AccessDenied"), "x")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv", [["ls"], ["history", "bronze.images"]])
def test_unreachable_s3_endpoint_is_one_clear_line(argv: list[str], tmp_path: Path) -> None:
    """Nothing listens on the endpoint: the CLI prints one `error:` line naming it, no traceback, no secret."""
    endpoint = f"http://127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAKEHOUSE_"))}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="AKIDUNREACHABLE",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_REGION="us-east-1",
        LAKEHOUSE_CONFIG=os.devnull,  # no settings file
    )
    ingest = Path(sys.executable).parent / "ingest"
    cmd = [str(ingest)] if ingest.exists() else [sys.executable, "-m", "ingest.cli"]
    proc = subprocess.run(
        [*cmd, "--lake", "s3://unreachable-bucket/lake", *argv],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert f"check AWS_ENDPOINT_URL ({endpoint}) is reachable" in lines[0]
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_cluster_spark_defaults_agree_with_lake_spark_conf() -> None:
    """infra/spark/spark-defaults.conf is what build_spark sets for the compose stack (minio)."""
    from transforms.spark.session import spark_session_conf

    path = Path(__file__).resolve().parents[1] / "infra" / "spark" / "spark-defaults.conf"
    defaults: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            defaults[key] = value.strip()
    lake = Lake("s3://lake/warehouse", s3=S3Settings(endpoint_url="http://minio:9000", region="us-east-1"))
    conf, packages = spark_session_conf(lake)
    for key, value in conf.items():
        if key in ("spark.jars.ivy", "spark.ui.enabled", "spark.sql.shuffle.partitions") or "snapshotPartitions" in key:
            continue  # local/test tuning, not cluster settings
        if key == "spark.sql.sources.partitionOverwriteMode":
            continue
        assert defaults.get(key) == value, (
            f"{key}: spark-defaults.conf has {defaults.get(key)!r}, Lake.spark_conf() {value!r}"
        )
    jars = defaults["spark.jars.packages"].split(",")
    assert packages[0] in jars
    from importlib.metadata import version

    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    assert f"io.delta:delta-spark_{spark_minor}_2.13:{version('delta-spark')}" in jars
    for secret_key in ("spark.hadoop.fs.s3a.access.key", "spark.hadoop.fs.s3a.secret.key"):
        assert secret_key not in defaults


RACERS, APPENDS = 4, 8


def _append_after_reading(lake: Lake, racer: int, out: str, barrier) -> None:
    """Append APPENDS rows, one commit each. The first meets the other racers right before its
    commit, after reading the table: every racer commits on top of version 0 at once, and all but
    one must be refused by S3; the later appends keep racing each other."""
    import deltalake
    import pyarrow as pa

    from ingest.delta import write_batch

    real, met = deltalake.write_deltalake, []

    def write_after_barrier(table, *args, **kwargs):
        if not met:
            met.append(True)
            Path(out).write_text(str(table.version()))  # the version this racer builds on
            barrier.wait(timeout=120)
        return real(table, *args, **kwargs)

    deltalake.write_deltalake = write_after_barrier
    for j in range(APPENDS):
        row = pa.table({"n": pa.array([racer * 100 + j], pa.int64())})
        write_batch(lake, "bronze.concurrent", row, metadata={"racer": racer})


@pytest.mark.integration
@pytest.mark.s3
def test_seaweedfs_gives_deltalake_safe_concurrent_commits(s3_lake: Lake, tmp_path: Path) -> None:
    """deltalake commits with conditional put (If-None-Match) - SeaweedFS must refuse the second
    writer of a log entry, so concurrent appends each get their own version and none is lost.
    The appenders are processes that all read version 0 before any of them commits."""
    import botocore.exceptions
    import pyarrow as pa

    from ingest.delta import write_batch
    from tests.procs import assert_interleaved, race

    client = s3_lake.boto3_client()
    key = s3_lake.key("probe", "once")
    client.put_object(Bucket=s3_lake.location.bucket, Key=key, Body=b"1", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.put_object(Bucket=s3_lake.location.bucket, Key=key, Body=b"2", IfNoneMatch="*")
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"

    write_batch(s3_lake, "bronze.concurrent", pa.table({"n": pa.array([0], pa.int64())}))
    outs = [str(tmp_path / f"racer{i}") for i in range(1, RACERS + 1)]
    assert race(_append_after_reading, [(s3_lake, i, o) for i, o in enumerate(outs, start=1)]) == [0] * RACERS
    assert [Path(o).read_text() for o in outs] == ["0"] * RACERS  # all inside their first commit at once
    assert_interleaved(s3_lake, "bronze.concurrent", writer=lambda c: c.get("racer"))  # and kept racing
    dt = s3_lake.delta_table("bronze.concurrent")
    assert dt.version() == RACERS * APPENDS
    expected = [0] + [r * 100 + j for r in range(1, RACERS + 1) for j in range(APPENDS)]
    assert sorted(dt.to_pyarrow_table().column("n").to_pylist()) == expected


# -- reading tables from a user's script ---------------------------------------------------------
READER = """
import sys
from ingest.lake import Lake
lake = Lake(sys.argv[1])
counted = lake.dataset("bronze.t").count_rows()
print(counted, lake.delta_table("bronze.t").to_pyarrow_table().num_rows)  # a scan, then the exit
"""


def test_a_script_that_reads_tables_exits_zero_every_time(local_lake: Lake, tmp_path: Path) -> None:
    """Read through delta-rs' Python file handler, Arrow's I/O threads left a process that had
    scanned a table aborting at exit about every other time (SIGABRT, "terminate called without
    an active exception"): a finished flow run or script counted as failed.  Sixteen runs of a
    script that reads a table of several files two ways all exit 0 (before: 4 of 12 aborted)."""
    import pyarrow as pa

    from ingest.delta import write_batch

    for i in range(4):  # files of a few MB: with a handful of ints the threads were done in time
        rows = range(i * 1000, (i + 1) * 1000)
        write_batch(local_lake, "bronze.t", pa.table({"v": list(rows), "b": [os.urandom(2000) for _ in rows]}))
    script = tmp_path / "read.py"
    script.write_text(READER)
    for _ in range(16):
        proc = subprocess.run(
            [sys.executable, str(script), local_lake.uri], capture_output=True, text=True, timeout=120
        )
        assert (proc.returncode, proc.stdout.split()) == (0, ["4000", "4000"]), proc.stderr[-500:]
        assert "terminate called" not in proc.stderr
