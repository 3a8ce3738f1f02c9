"""Parquet shard sets: one file per shard, every row equal to the gold table at the snapshot."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from shard_data import make_gold

from ingest.lake import Lake
from ingest.snapshots import create_snapshot
from transforms.shards import build_shards


def test_parquet_round_trip(local_lake: Lake) -> None:
    version = make_gold(local_lake, list(range(1, 41)))
    create_snapshot(local_lake, "snap-p")
    make_gold(local_lake, list(range(100, 120)))  # later version, not pinned
    res = build_shards(local_lake, "photos", table="gold.photo_features", snapshot="snap-p",
                       format="parquet", shard_size="8KB")
    root = Path(res.uri)
    shards = res.manifest["shards"]
    assert len(shards) > 2 and all(s["path"].endswith(".parquet") for s in shards)
    gold = local_lake.delta_table("gold.photo_features", version=version).to_pyarrow_table()
    parts = []
    for s in shards:
        t = pq.read_table(root / s["path"])
        assert t.num_rows == s["samples"]
        parts.append(t)
    import pyarrow as pa

    back = pa.concat_tables(parts).sort_by("photo_id")
    assert back.equals(gold.sort_by("photo_id").select(back.column_names))
    again = build_shards(local_lake, "photos", table="gold.photo_features", snapshot="snap-p",
                         format="parquet", shard_size="8KB")
    assert [s["sha256"] for s in again.manifest["shards"]] == [s["sha256"] for s in shards]
