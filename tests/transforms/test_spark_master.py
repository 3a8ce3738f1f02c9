"""`spark_master` from the settings is where the Spark models and `ingest shards build --engine
spark` run: a fresh process, configured with `spark_master: local[1]`, runs both commands through
the CLI and reports the master of the session each one started."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from shard_data import make_gold
from spark_images import png_bytes, scene

from ingest.delta import write_batch
from ingest.lake import Lake
from ingest.snapshots import create_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[2]

# runs the commands in-process (ingest.cli.main with argv), so the sessions they started can be asked
PROBE = """
import json, os, sys
from pyspark.sql import SparkSession
from ingest.cli import main

masters = {}
for name, argv in json.loads(sys.argv[1]).items():
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    session = SparkSession.getActiveSession()
    masters[name] = [code, session.sparkContext.master if session else None]
    if session:
        session.stop()
print(json.dumps(masters), flush=True)
os._exit(0)
"""


def test_models_and_spark_shard_builds_use_the_configured_master(local_lake: Lake, tmp_path: Path) -> None:
    make_gold(local_lake, list(range(1, 21)))
    picture = png_bytes(scene("sea"))
    write_batch(local_lake, "bronze.images", pa.Table.from_pylist([{
        "source_uri": "file:///src/sea.png", "sha256": hashlib.sha256(picture).hexdigest(), "size_bytes": len(picture),
        "format": "png", "width": 320, "height": 240, "content": picture,
    }]))
    create_snapshot(local_lake, "snap-m")
    config = tmp_path / "lakehouse.yaml"
    config.write_text(f"lake: {local_lake.uri}\nspark_master: local[1]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAKEHOUSE_", "PREFECT_", "SPARK_"))}
    env.update(PYTHONPATH=str(ROOT), LAKEHOUSE_CONFIG=str(config), LAKEHOUSE_LOG_DIR=str(tmp_path / "logs"),
               SPARK_LOCAL_IP="127.0.0.1")
    commands = {
        "shards": ["shards", "build", "ds", "--table", "gold.photo_features", "--snapshot", "snap-m",
                   "--engine", "spark", "--shard-size", "8KB"],
        "transform": ["transform", "--select", "dedup_images"],
    }
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    masters = json.loads(proc.stdout.strip().splitlines()[-1])
    assert masters["shards"] == [0, "local[1]"], (masters, proc.stderr[-2000:])
    assert masters["transform"] == [0, "local[1]"], (masters, proc.stderr[-2000:])
