"""The compose Spark master and worker commands, run locally: a standalone cluster from the
pip-installed pyspark (what the project image has), and a driver built with the worker's
Settings writing Delta over s3a to the S3 stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from stackfiles import ROOT, clean_environ, load_compose, start_process, stop_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.spark]

VENV_BIN = Path(sys.executable).parent

DRIVER = r"""
import json
from ingest.lake import Lake
from ingest.settings import load_settings
from transforms.spark.session import build_spark

settings = load_settings()
lake = Lake.from_settings(settings)
spark = build_spark(settings, app_name="compose-standin", extra_conf={
    "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
    "spark.executor.memory": "512m", "spark.cores.max": "1", "spark.ui.enabled": "false",
})
try:
    path = lake.spark_path("silver.standin_probe")
    spark.range(0, 100).selectExpr("id", "id % 7 as k").repartition(2).write.format("delta").mode("overwrite").save(path)
    n = spark.read.format("delta").load(path).count()
    hosts = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size()  # driver + executors
    print(json.dumps({"count": n, "master": spark.sparkContext.master, "jvms": hosts}))
finally:
    spark.stop()
"""


def swap_host(cmd: list[str], mapping: dict[str, str]) -> list[str]:
    out = []
    for arg in cmd:
        for old, new in mapping.items():
            arg = arg.replace(old, new)
        out.append(arg)
    return out


@pytest.mark.s3
def test_compose_spark_cluster_runs_delta_over_s3a(s3_server, free_ports, tmp_path: Path) -> None:
    from ingest.lake import Lake
    from ingest.settings import S3Settings

    compose = load_compose()
    port, ui, worker_ui, worker_port = free_ports(4)
    base_env = clean_environ({
        "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1", "SPARK_LOG_DIR": str(tmp_path),
        "SPARK_WORKER_DIR": str(tmp_path / "work"), "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    })

    master_cmd = compose.command("spark-master")
    master_cmd = swap_host(master_cmd, {"spark-master": "127.0.0.1"})
    master_cmd[master_cmd.index("--port") + 1] = str(port)
    master_cmd[master_cmd.index("--webui-port") + 1] = str(ui)
    worker_cmd = swap_host(compose.command("spark-worker"), {"spark-master:7077": f"127.0.0.1:{port}"})
    worker_cmd[worker_cmd.index("--cores") + 1] = "1"
    worker_cmd[worker_cmd.index("--memory") + 1] = "1g"
    worker_cmd[worker_cmd.index("--webui-port") + 1] = str(worker_ui)
    worker_cmd[-1:-1] = ["--host", "127.0.0.1", "--port", str(worker_port)]
    assert master_cmd[0] == worker_cmd[0] == "spark-class"

    master_log, worker_log = tmp_path / "master.log", tmp_path / "worker.log"
    master = start_process([str(VENV_BIN / master_cmd[0]), *master_cmd[1:]], master_log, base_env)
    worker = None
    try:
        def alive_workers() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as resp:
                return int(json.load(resp).get("aliveworkers", 0))

        wait_until(lambda: alive_workers() >= 0, "spark master", master, master_log)
        worker = start_process([str(VENV_BIN / worker_cmd[0]), *worker_cmd[1:]], worker_log, base_env)
        wait_until(lambda: alive_workers() >= 1, "spark worker registration", worker, worker_log)

        # The driver runs with the prefect-worker's environment; only Docker-provided values change.
        env = dict(compose.env("prefect-worker"))
        assert env["LAKEHOUSE_SPARK_MASTER"] == "spark://spark-master:7077"
        env["LAKEHOUSE_SPARK_MASTER"] = f"spark://127.0.0.1:{port}"
        env.pop("LAKEHOUSE_IVY_DIR")  # /opt/lakehouse/ivy exists in the image; locally the default cache
        # The image's spark-defaults (infra/spark) apply to this driver too; Settings override them.
        env["SPARK_CONF_DIR"] = str(ROOT / Path(env["SPARK_CONF_DIR"]).relative_to(env["LAKEHOUSE_HOME"]))
        assert (Path(env["SPARK_CONF_DIR"]) / "spark-defaults.conf").is_file()
        env.update(s3_server.env())
        run_env = {**base_env, **env}
        bucket = subprocess.run([sys.executable, "infra/compose/create_bucket.py"], env=run_env, cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert bucket.returncode == 0, bucket.stderr
        proc = subprocess.run([sys.executable, "-c", DRIVER], env=run_env, cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["count"] == 100
        assert result["master"] == f"spark://127.0.0.1:{port}"
        assert result["jvms"] >= 2, "no executor joined from the standalone worker"

        # Another engine reads what the cluster wrote: the same table, in the compose lake.
        lake = Lake("s3://lake/warehouse", s3=S3Settings.from_env(s3_server.env()))
        dt = lake.delta_table("silver.standin_probe")
        assert dt.to_pyarrow_table().num_rows == 100
    finally:
        if worker is not None:
            stop_process(worker)
        stop_process(master)


def test_image_build_step_caches_delta_and_hadoop_aws_jars(tmp_path: Path) -> None:
    """The Dockerfile's `python infra/docker/warm_spark_jars.py` resolves the jars the driver uses."""
    import re
    from importlib.metadata import version

    from ingest.lake import HADOOP_AWS_PACKAGE
    from transforms.spark.session import IVY_DIR_ENV, ivy_dir

    # The shared cache: it already holds the jars once any Spark test has run.
    env = clean_environ({IVY_DIR_ENV: str(ivy_dir()), "SPARK_LOCAL_IP": "127.0.0.1"})
    proc = subprocess.run([sys.executable, "infra/docker/warm_spark_jars.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    _, artifact, hadoop_version = HADOOP_AWS_PACKAGE.split(":")
    assert f"{artifact}-{hadoop_version}.jar" in out
    assert re.search(rf"io\.delta_delta-spark[\w.]*_2\.13-{re.escape(version('delta-spark'))}\.jar", out), out
    assert str(ivy_dir()) in out
