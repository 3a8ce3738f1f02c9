"""Training shards (WebDataset, MDS, Parquet) cut from a snapshot, with a manifest for sync."""

from ingest.sync.manifest import MANIFEST_NAME, SUMS_NAME
from transforms.shards.build import ShardSetResult, build_shards, shard_path
from transforms.shards.formats import FORMATS, ShardFormat, ShardSpec, escape_key, shard_format
from transforms.shards.plan import parse_size, split_of

__all__ = [
    "FORMATS",
    "MANIFEST_NAME",
    "SUMS_NAME",
    "ShardFormat",
    "ShardSetResult",
    "ShardSpec",
    "build_shards",
    "escape_key",
    "parse_size",
    "shard_format",
    "shard_path",
    "split_of",
]
