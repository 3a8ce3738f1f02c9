"""`ingest run --orchestrator local` twice with nothing new: the second run reuses the first's
snapshot, shard set and synced copy (same name, no new directory, nothing rebuilt or copied)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.spark]

BIN = Path(sys.executable).parent


def _run(cwd: Path, env: dict[str, str]) -> dict:
    r = subprocess.run(
        [str(BIN / "ingest"), "--lake", "./l", "--json", "run", "--orchestrator", "local"],
        cwd=cwd, capture_output=True, text=True, timeout=1800, env={**os.environ, **env},
    )
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-4000:]
    return json.loads(r.stdout)


def test_second_run_with_nothing_new_reuses_snapshot_shards_and_sync(tmp_path: Path) -> None:
    env = {"LAKEHOUSE_SAMPLE_DIR": str(tmp_path / "sample"), "LAKEHOUSE_SYNC_DEST": str(tmp_path / "synced")}
    first = _run(tmp_path, env)
    shard_root = tmp_path / "l" / "shards" / "photo_popularity"
    manifest = shard_root / first["snapshot"] / "manifest.json"
    built = manifest.stat().st_mtime_ns
    assert not first["reused"] and [p.name for p in shard_root.iterdir()] == [first["snapshot"]]

    second = _run(tmp_path, env)
    assert second["reused"] and second["snapshot"] == first["snapshot"]
    assert second["snapshot_tables"] == first["snapshot_tables"]
    assert second["shard_set"] == first["shard_set"] and second["synced_to"] == first["synced_to"]
    assert [p.name for p in shard_root.iterdir()] == [first["snapshot"]]  # no new shard directory
    assert manifest.stat().st_mtime_ns == built  # not rebuilt
    assert [p.name for p in (tmp_path / "synced" / "photo_popularity").iterdir()] == [first["snapshot"]]
    listed = subprocess.run([str(BIN / "ingest"), "--lake", "./l", "--json", "snapshot", "list"],
                            cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env})
    assert [s["name"] for s in json.loads(listed.stdout)] == [first["snapshot"]]
