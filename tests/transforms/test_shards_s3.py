"""Shard builds on an S3 lake (SeaweedFS): same bytes as on a local lake, readable by webdataset."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import unquote

import pytest
from shard_data import make_gold

from ingest.lake import Lake
from ingest.settings import S3Settings
from ingest.snapshots import create_snapshot, get_snapshot
from transforms.shards import build_shards

pytestmark = [pytest.mark.integration, pytest.mark.s3]


def _download(lake: Lake, uri: str, dest: Path) -> list[str]:
    import pyarrow.fs as pafs

    fs = lake.pyarrow_filesystem()
    base = lake.fs_path(uri)
    got = []
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) + 1 :]
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as src:
            target.write_bytes(src.read())
        got.append(rel)
    return sorted(got)


def test_webdataset_on_s3_matches_local(s3_lake: Lake, tmp_path: Path) -> None:
    import webdataset as wds

    ids = list(range(1, 31))
    version = make_gold(s3_lake, ids)
    create_snapshot(s3_lake, "s3-snap")
    res = build_shards(s3_lake, "photos", table="gold.photo_features", snapshot="s3-snap", shard_size="8KB")
    assert res.uri == s3_lake.path("shards", "photos", "s3-snap") and res.uri.startswith("s3://")
    files = _download(s3_lake, res.uri, tmp_path / "dl")
    m = json.loads((tmp_path / "dl" / "manifest.json").read_text())
    assert set(files) == {"manifest.json", "SHA256SUMS", *(s["path"] for s in m["shards"])}
    for s in m["shards"]:
        assert hashlib.sha256((tmp_path / "dl" / s["path"]).read_bytes()).hexdigest() == s["sha256"]
    gold = {str(r["photo_id"]): r for r in s3_lake.delta_table("gold.photo_features", version=version).to_pyarrow_table().to_pylist()}
    samples = list(wds.WebDataset([str(tmp_path / "dl" / s["path"]) for s in m["shards"]], shardshuffle=False))
    assert len(samples) == len(gold)
    for s in samples:
        row = gold[unquote(s["__key__"])]
        assert s["jpg" if row["image_format"] == "jpeg" else "png"] == row["image"]

    # the same rows and snapshot time in a local lake give the same bytes
    local = Lake(str(tmp_path / "local"), s3=S3Settings())
    local_version = make_gold(local, ids)  # the S3 pin also counts the log-retention commit
    snap = get_snapshot(s3_lake, "s3-snap")
    from ingest.delta import write_batch
    import pyarrow as pa

    write_batch(local, "_meta.snapshots", pa.Table.from_pylist([{
        "name": "s3-snap", "created_at": snap.created_at, "tables": json.dumps({"gold.photo_features": local_version}), "note": None,
        "create_id": "copy"}]))
    local_res = build_shards(local, "photos", table="gold.photo_features", snapshot="s3-snap", shard_size="8KB")
    assert [s["sha256"] for s in local_res.manifest["shards"]] == [s["sha256"] for s in m["shards"]]


def test_mds_on_s3(s3_lake: Lake, tmp_path: Path) -> None:
    from test_shards_mds import read_mds_split

    make_gold(s3_lake, list(range(1, 21)))
    create_snapshot(s3_lake, "s3-mds")
    res = build_shards(s3_lake, "photos", table="gold.photo_features", snapshot="s3-mds",
                       format="mds", shard_size="8KB")
    _download(s3_lake, res.uri, tmp_path / "dl")
    n = sum(len(read_mds_split(tmp_path / "dl" / split)) for split in ("train", "val"))
    assert n == 20 == res.samples
