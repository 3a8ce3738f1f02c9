"""One class per shard format, in one registry: everything format-specific is asked of it."""

import pyarrow as pa
import pytest

from ingest.errors import ConfigError
from transforms.shards import FORMATS, ShardFormat, ShardSpec, shard_format, shard_path


def test_each_format_is_one_registered_class():
    assert set(FORMATS) == {"webdataset", "mds", "parquet"}
    for name, fmt in FORMATS.items():
        assert isinstance(fmt, ShardFormat) and fmt.name == name and shard_format(name) is fmt
    assert len({f.ext for f in FORMATS.values()}) == len(FORMATS)
    assert shard_path("webdataset", "train", 3) == "train/shard-000003.tar"
    assert shard_path("mds", "val", 0) == "val/shard-000000.mds"


def test_an_unknown_format_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError, match="unknown shard format 'tfrecord': use one of webdataset, mds, parquet"):
        shard_format("tfrecord")
    with pytest.raises(ConfigError, match="unknown shard format"):
        ShardSpec.from_schema(pa.schema([("id", pa.int64())]), format="tfrecord", key="id", mtime=0, size_limit=1)


def test_format_rules_live_in_their_class():
    schema = pa.schema([("id", pa.int64()), ("image", pa.binary())])
    with pytest.raises(ConfigError, match="32-bit offsets"):
        shard_format("mds").check_size(2**32)
    shard_format("webdataset").check_size(2**40)  # tar has no such limit
    with pytest.raises(ConfigError, match="MDS 'bytes' cannot store null"):
        ShardSpec.from_schema(schema, format="mds", key="id", mtime=0, size_limit=1 << 20, nullable={"image"})
    mds = ShardSpec.from_schema(schema, format="mds", key="id", mtime=0, size_limit=1 << 20)
    assert mds.mds_encodings == {"id": "int", "image": "bytes"} and mds.codec is FORMATS["mds"]
    wds = ShardSpec.from_schema(schema, format="webdataset", key="id", mtime=0, size_limit=1 << 20)
    assert wds.mds_encodings == {} and wds.shard_overhead() == 1024
    rows = pa.table({"id": [1, 2], "image": [b"\x89PNG....", b"\xff\xd8\xff..."]})
    sizes, prepared = wds.codec.prepare(wds, rows)
    assert [k for k, _ in sizes] == ["1", "2"] and prepared is not None
    assert [s for _, s in sizes] == [s for _, s in wds.sample_sizes(rows)]
    assert FORMATS["parquet"].prepare(ShardSpec.from_schema(
        schema, format="parquet", key="id", mtime=0, size_limit=1 << 20), rows)[1] is None
