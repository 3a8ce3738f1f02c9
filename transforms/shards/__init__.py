"""Training shards (WebDataset, MDS, Parquet) cut from a snapshot, with a manifest for sync."""

from transforms.shards.build import MANIFEST, SUMS, ShardSetResult, build_shards, shard_path
from transforms.shards.formats import FORMATS, ShardSpec, escape_key
from transforms.shards.plan import parse_size, split_of

__all__ = [
    "FORMATS", "MANIFEST", "SUMS", "ShardSetResult", "ShardSpec", "build_shards", "escape_key",
    "parse_size", "shard_path", "split_of",
]
