"""The walking skeleton end to end: `ingest --lake DIR --json run` on a fresh directory.

Runs the Prefect pipeline flow (temporary local server) over the bundled sample sources, then
checks the lake with `ingest ls` / `ingest sql` and the synced shard set on disk.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.prefect]

BIN = Path(sys.executable).parent


def _ingest(cwd, *args, env=None):
    return subprocess.run(
        [str(BIN / "ingest"), *args], cwd=cwd, capture_output=True, text=True, timeout=1200,
        env={**os.environ, **(env or {})},
    )


def test_run_builds_bronze_gold_shards_and_sync(tmp_path):
    env = {"LAKEHOUSE_SAMPLE_DIR": str(tmp_path / "sample"), "LAKEHOUSE_SYNC_DEST": str(tmp_path / "synced")}
    r = _ingest(tmp_path, "--lake", "./l", "--json", "run", env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    summary = json.loads(r.stdout)
    # the JVM's (Ivy, log4j) and Prefect's own output go to a log file, not the terminal
    for noise in (":: resolving dependencies", "Ivy", "WARN", "log4j", "Traceback", "| INFO", "| ERROR"):
        assert noise not in r.stderr, r.stderr[-4000:]
    assert summary["snapshot"] and summary["shards"] >= 1

    r = _ingest(tmp_path, "--lake", "./l", "--json", "ls")
    assert r.returncode == 0, r.stderr
    tables = {t["table"]: t for t in json.loads(r.stdout)}
    for name in ("bronze.images", "bronze.events", "bronze.photos", "gold.photo_features", "gold.daily_activity"):
        assert tables[name]["rows"] > 0, name

    r = _ingest(tmp_path, "--lake", "./l", "--json", "sql", "select count(*) as n from gold.photo_features")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"n": tables["gold.photo_features"]["rows"]}]

    # the synced copy verifies against its manifest
    dest = Path(summary["synced_to"])
    manifest = json.loads((dest / "manifest.json").read_text())
    for shard in manifest["shards"]:
        assert hashlib.sha256((dest / shard["path"]).read_bytes()).hexdigest() == shard["sha256"]

    # a second run (the same Prefect orchestrator) loads nothing twice: every table holds the same rows
    before = _contents(tmp_path / "l")
    r = _ingest(tmp_path, "--lake", "./l", "--json", "run", env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    again = json.loads(r.stdout)
    assert all(i["rows_written"] == 0 for i in again["ingested"] if i["table"] != "bronze.photos")
    r = _ingest(tmp_path, "--lake", "./l", "--json", "ls")
    after = {t["table"]: t["rows"] for t in json.loads(r.stdout)}
    for name in ("bronze.images", "bronze.events", "bronze.photos"):
        assert after[name] == tables[name]["rows"], name
    now = _contents(tmp_path / "l")
    assert set(now) == set(before)
    changed = sorted(t for t in before if now[t] != before[t])
    assert not changed, f"tables whose rows changed on a run with nothing new: {changed}"


# when a row was loaded or built, and by which run: a reload of an unchanged source may differ there
_VOLATILE = ("_run_id", "_ingested_at", "ingest_run_id", "ingested_at", "loaded_at", "_loaded_at")


def _contents(lake_dir: Path) -> dict[str, str]:
    """Per lake table (not _meta): a hash of its sorted rows, without load-time/run columns."""
    from ingest.lake import Lake

    lake = Lake(str(lake_dir))
    out = {}
    for tid in lake.list_tables():
        if tid.layer == "_meta":
            continue
        t = lake.delta_table(tid).to_pyarrow_table()
        t = t.drop_columns([c for c in t.column_names if c in _VOLATILE])
        rows = sorted(json.dumps(r, default=repr, sort_keys=True) for r in t.to_pylist())
        out[str(tid)] = hashlib.sha256("\n".join(rows).encode()).hexdigest() + f" ({len(rows)} rows)"
    return out
