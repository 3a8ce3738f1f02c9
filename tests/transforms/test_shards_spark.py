"""The Spark path writes the same shard bytes as the single-process path."""

from __future__ import annotations

import pytest
from shard_data import make_gold

from ingest.lake import Lake
from ingest.snapshots import create_snapshot
from transforms.shards import build_shards

pytestmark = [pytest.mark.integration, pytest.mark.spark]


@pytest.mark.parametrize("fmt", ["webdataset", "mds", "parquet"])
def test_spark_build_matches_local(spark, local_lake: Lake, fmt: str) -> None:
    make_gold(local_lake, list(range(1, 61)), big={7: 200})
    create_snapshot(local_lake, "snap-x")
    make_gold(local_lake, list(range(1, 5)))  # the table moves on after the pin
    kw = dict(table="gold.photo_features", snapshot="snap-x", format=fmt, shard_size="16KB", seed=3)
    local = build_shards(local_lake, "local", engine="local", **kw)
    dist = build_shards(local_lake, "spark", engine="spark", **kw)
    assert dist.shards == local.shards > 3
    assert dist.samples == 60
    for a, b in zip(local.manifest["shards"], dist.manifest["shards"]):
        assert (a["path"], a["samples"], a["bytes"], a["sha256"]) == (b["path"], b["samples"], b["bytes"], b["sha256"])
    assert local.manifest["files"] == dist.manifest["files"]


@pytest.mark.s3
def test_spark_build_on_s3_matches_local_engine(spark_for, s3_lake: Lake) -> None:
    """Executors read the pinned version over s3a and write shards through the lake's filesystem."""
    make_gold(s3_lake, list(range(1, 31)))
    create_snapshot(s3_lake, "snap-s3")
    spark_for(s3_lake)
    kw = dict(table="gold.photo_features", snapshot="snap-s3", shard_size="8KB")
    local = build_shards(s3_lake, "local", engine="local", **kw)
    dist = build_shards(s3_lake, "spark", engine="spark", **kw)
    assert dist.uri.startswith("s3://") and dist.samples == 30
    assert [s["sha256"] for s in dist.manifest["shards"]] == [s["sha256"] for s in local.manifest["shards"]]
