"""`ingest sync` on real shard sets from `ingest shards build` (the manifest contract end to end)."""

import hashlib
import json
import sys
from pathlib import Path

import pytest

from ingest.lake import Lake
from ingest.snapshots import create_snapshot
from ingest.sync import sync_shards
from transforms.shards import build_shards

sys.path.insert(0, str(Path(__file__).parent / "transforms"))
from shard_data import make_gold  # noqa: E402


@pytest.mark.parametrize("fmt", ["webdataset", "mds", "parquet"])
def test_ranks_together_receive_the_whole_shard_set(tmp_path, fmt):
    lake = Lake(str(tmp_path / "lake"))
    make_gold(lake, list(range(1, 61)))
    create_snapshot(lake, "s1", tables=["gold.photo_features"])
    built = build_shards(lake, "ds", table="gold.photo_features", snapshot="s1", format=fmt,
                         key="photo_id", shard_size="8KB")
    manifest = built.manifest
    got: dict[str, str] = {}
    shard_paths = {s["path"] for s in manifest["shards"]}
    per_rank: list[set[str]] = []
    for rank in range(2):
        dest = tmp_path / f"node{rank}"
        res = sync_shards("shards/ds/s1", dest, lake=lake, rank=rank, world_size=2)
        assert json.loads((dest / "manifest.json").read_text())["snapshot"] == "s1"
        for f in manifest.get("files", []):  # split-level files (MDS index.json) reach every rank
            assert hashlib.sha256((dest / f["path"]).read_bytes()).hexdigest() == f["sha256"]
        mine: set[str] = set()
        for p in dest.rglob("*"):
            rel = p.relative_to(dest).as_posix()
            if p.is_file() and rel != "manifest.json" and not rel.startswith(".") and "/." not in rel:
                got.setdefault(rel, hashlib.sha256(p.read_bytes()).hexdigest())
                if rel in shard_paths:
                    mine.add(rel)
        assert res.files >= 1
        assert mine, f"rank {rank} received no shard"
        per_rank.append(mine)
    expected = {s["path"]: s["sha256"] for s in manifest["shards"] + manifest.get("files", [])}
    assert got == expected
    # each shard goes to exactly one rank: disjoint, and together the whole split
    assert not per_rank[0] & per_rank[1], f"shards given to both ranks: {sorted(per_rank[0] & per_rank[1])}"
    assert per_rank[0] | per_rank[1] == shard_paths
    if fmt == "mds":
        assert manifest["files"], "MDS shard sets list their index.json files"


@pytest.mark.parametrize("fmt", ["webdataset", "mds"])
def test_the_manifest_written_is_exactly_the_schema_sync_reads(tmp_path, fmt):
    """One contract: every key `ingest shards` writes is a field of ingest.sync.manifest.ShardManifest
    (nothing written that the reader drops, nothing read that the writer leaves out)."""
    from ingest.sync.manifest import MANIFEST_NAME, ShardManifest

    lake = Lake(str(tmp_path / "lake"))
    make_gold(lake, list(range(1, 31)))
    create_snapshot(lake, "s1", tables=["gold.photo_features"])
    built = build_shards(lake, "ds", table="gold.photo_features", snapshot="s1", format=fmt,
                         key="photo_id", shard_size="8KB")
    raw = (Path(built.uri) / MANIFEST_NAME).read_bytes()
    parsed = ShardManifest.parse_bytes(raw, "test")
    assert parsed.to_dict() == json.loads(raw) == built.manifest
    assert parsed.to_bytes() == raw
    assert parsed.format == fmt and parsed.key == "photo_id" and parsed.tables == {"gold.photo_features": 1}
    assert bool(parsed.files) == (fmt == "mds")  # MDS index.json per split, listed for every rank
