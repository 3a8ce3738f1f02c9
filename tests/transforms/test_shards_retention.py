"""`ingest run` reuses its last snapshot when nothing changed, and keeps N shard sets / synced copies.

The pipeline stages run as `ingest run` calls them, on a local lake with a small gold table; the
whole `ingest run` twice is in tests/e2e/test_run_reuse.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from shard_data import make_gold

from ingest.lake import Lake
from ingest.pipeline import shards_stage, snapshot_stage, sync_stage
from ingest.settings import Settings
from ingest.snapshots import create_snapshot, drop_snapshot, list_snapshots
from transforms.shards import build_shards


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)  # no lakehouse.yaml here
    for var in [v for v in __import__("os").environ if v.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(var)
    return Settings(
        lake=str(tmp_path / "lake"),
        shards={"dataset": "ds", "table": "gold.photo_features", "keep": 2, "shard_size": "20KB"},
        sync={"keep": 2},
        sync_dest=str(tmp_path / "synced"),
    )


def _dirs(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()} if path.exists() else set()


def _run(settings: Settings, name: str) -> tuple[dict, dict, dict]:
    """snapshot -> shards -> sync, as run_pipeline calls them."""
    snap = snapshot_stage(settings, name=name)
    shards = shards_stage(settings, snap["name"])
    return snap, shards, sync_stage(settings, shards["uri"])


def test_a_run_with_nothing_new_reuses_snapshot_shard_set_and_synced_copy(settings: Settings, tmp_path: Path) -> None:
    lake = Lake.from_settings(settings)
    make_gold(lake, list(range(1, 41)))
    snap1, shards1, sync1 = _run(settings, "ds-1")
    assert not snap1["reused"] and not shards1["reused"] and sync1["downloaded"] == sync1["files"] > 0
    manifest = Path(shards1["uri"]) / "manifest.json"
    built = manifest.stat().st_mtime_ns

    snap2, shards2, sync2 = _run(settings, "ds-2")
    assert snap2["reused"] and snap2["name"] == "ds-1" and snap2["tables"] == snap1["tables"]
    assert shards2["reused"] and shards2["uri"] == shards1["uri"] and manifest.stat().st_mtime_ns == built
    assert sync2["downloaded"] == 0 and sync2["dest"] == sync1["dest"]
    assert [s.name for s in list_snapshots(lake)] == ["ds-1"]
    assert _dirs(tmp_path / "lake" / "shards" / "ds") == {"ds-1"}
    assert _dirs(tmp_path / "synced" / "ds") == {"ds-1"}

    # other shard options: the same snapshot, its set rebuilt
    smaller = settings.model_copy(update={"shards": settings.shards.model_copy(update={"shard_size": "10KB"})})
    rebuilt = shards_stage(smaller, "ds-1")
    assert not rebuilt["reused"] and rebuilt["shards"] > shards1["shards"]
    # new data: a new snapshot
    make_gold(lake, list(range(1, 51)))
    assert not snapshot_stage(settings, name="ds-3")["reused"]


def test_keep_removes_the_oldest_shard_sets_and_synced_copies_not_hand_pinned_ones(settings: Settings, tmp_path: Path) -> None:
    lake = Lake.from_settings(settings)
    make_gold(lake, list(range(1, 21)))
    create_snapshot(lake, "by-hand")
    build_shards(lake, "ds", table="gold.photo_features", snapshot="by-hand", shard_size="20KB")
    pruned = []
    for i in range(4):
        make_gold(lake, list(range(1, 22 + i)))
        _, shards, synced = _run(settings, f"ds-{i}")
        pruned.append((shards["pruned"], synced["pruned"]))
    assert pruned == [([], []), ([], []), (["ds-0"], ["ds-0"]), (["ds-1"], ["ds-1"])]
    shard_root = tmp_path / "lake" / "shards" / "ds"
    assert _dirs(shard_root) == {"by-hand", "ds-2", "ds-3"}  # a hand-made pin's set neither counts nor goes
    assert {s.name for s in list_snapshots(lake)} == {"by-hand", "ds-2", "ds-3"}  # pipeline pins go with their sets
    assert _dirs(tmp_path / "synced" / "ds") == {"ds-2", "ds-3"}
    for name in ("ds-2", "ds-3"):
        assert json.loads((tmp_path / "synced" / "ds" / name / "manifest.json").read_text())["snapshot"] == name

    # once its snapshot is dropped, the hand-made set is an ordinary old set
    drop_snapshot(lake, "by-hand")
    make_gold(lake, list(range(1, 30)))
    _, shards, _ = _run(settings, "ds-4")
    assert sorted(shards["pruned"]) == ["by-hand", "ds-2"]
    assert _dirs(shard_root) == {"ds-3", "ds-4"}


def test_keep_must_be_positive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings().shards.keep == 5 and Settings().sync.keep == 5
    monkeypatch.setenv("LAKEHOUSE_SYNC__KEEP", "3")
    assert Settings().sync.keep == 3
    for bad in ({"shards": {"keep": 0}}, {"sync": {"keep": 0}}):
        with pytest.raises(ValidationError, match="keep"):
            Settings(**bad)
