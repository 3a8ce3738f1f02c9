"""MDS shard sets: index.json plus shard files in the layout mosaicml-streaming documents.

`streaming` needs torch (several GB of CUDA wheels from PyPI), so the project does not depend on
it: the format is checked here by a reader of the documented layout, and by
`streaming.StreamingDataset` itself whenever it is installed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from shard_data import make_gold

from ingest.lake import Lake
from ingest.snapshots import create_snapshot
from transforms.shards import build_shards


def _decode(enc: str, data: bytes) -> Any:
    if enc == "bytes":
        return data
    if enc == "str":
        return data.decode("utf-8")
    if enc == "int":
        return struct.unpack("<q", data)[0]
    if enc == "float64":
        return struct.unpack("<d", data)[0]
    if enc == "json":
        return json.loads(data.decode("utf-8"))
    raise AssertionError(f"unexpected encoding {enc}")


def read_mds_split(split_dir: Path) -> list[dict[str, Any]]:
    """Decode every sample of one split from index.json and its shard files (MDS v2, uncompressed)."""
    index = json.loads((split_dir / "index.json").read_text())
    assert index["version"] == 2
    out = []
    for shard in index["shards"]:
        assert shard["format"] == "mds" and shard["compression"] is None and shard["zip_data"] is None
        raw = (split_dir / shard["raw_data"]["basename"]).read_bytes()
        assert len(raw) == shard["raw_data"]["bytes"]
        n = struct.unpack_from("<I", raw, 0)[0]
        assert n == shard["samples"]
        offsets = struct.unpack_from(f"<{n + 1}I", raw, 4)
        header_end = 4 + 4 * (n + 1)
        config = json.loads(raw[header_end : offsets[0]])
        assert config["column_names"] == shard["column_names"]
        assert offsets[-1] == len(raw)
        names, encs, sizes = shard["column_names"], shard["column_encodings"], shard["column_sizes"]
        n_var = sum(s is None for s in sizes)
        for i in range(n):
            blob = raw[offsets[i] : offsets[i + 1]]
            var_sizes = list(struct.unpack_from(f"<{n_var}I", blob, 0))
            pos = 4 * n_var
            sample = {}
            for name, enc, size in zip(names, encs, sizes):
                size = size if size is not None else var_sizes.pop(0)
                sample[name] = _decode(enc, blob[pos : pos + size])
                pos += size
            assert pos == len(blob)
            out.append(sample)
    return out


def test_mds_round_trip(local_lake: Lake) -> None:
    version = make_gold(local_lake, list(range(1, 51)))
    pinned = create_snapshot(local_lake, "snap-m").tables["gold.photo_features"]
    assert pinned == version + 1  # the log-retention commit comes before the pin
    res = build_shards(local_lake, "photos", table="gold.photo_features", snapshot="snap-m",
                       format="mds", shard_size="8KB")
    root = Path(res.uri)
    m = res.manifest
    assert m["format"] == "mds" and m["tables"] == {"gold.photo_features": pinned}
    assert {f["path"] for f in m["files"]} == {"train/index.json", "val/index.json"}
    assert all(s["path"].endswith(".mds") for s in m["shards"])
    assert all(s["bytes"] <= 8 * 1024 for s in m["shards"])
    sums = (root / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == len(m["shards"]) + 2

    gold = {r["photo_id"]: r for r in local_lake.delta_table("gold.photo_features", version=version).to_pyarrow_table().to_pylist()}
    seen = {}
    for split in ("train", "val"):
        for sample in read_mds_split(root / split):
            row = gold[sample["photo_id"]]
            assert sample["image"] == row["image"]
            assert sample["title"] == row["title"]  # nullable column: json encoding keeps None
            assert sample["uploaded_at"] == row["uploaded_at"].isoformat()
            assert sample["like_rate"] == row["like_rate"] and sample["views"] == row["views"]
            seen[sample["photo_id"]] = split
    assert set(seen) == set(gold)

    again = build_shards(local_lake, "photos", table="gold.photo_features", snapshot="snap-m",
                         format="mds", shard_size="8KB")
    assert [s["sha256"] for s in again.manifest["shards"]] == [s["sha256"] for s in m["shards"]]
    assert again.manifest["files"] == m["files"]


_STREAMING_CHECK = """
import json, sys, streaming
root, expected = sys.argv[1], json.load(open(sys.argv[2]))
n = 0
for split in ("train", "val"):
    ds = streaming.StreamingDataset(local=root, split=split, shuffle=False, batch_size=1)
    for i in range(len(ds)):
        s = ds[i]
        want = expected[str(s["photo_id"])]
        assert s["image"].hex() == want["image"], s["photo_id"]
        assert s["title"] == want["title"] and s["uploaded_at"] == want["uploaded_at"]
        n += 1
print(n)
"""


def test_mds_with_streaming_reader(local_lake: Lake, tmp_path: Path) -> None:
    """The real `streaming.StreamingDataset` reads every sample: in this interpreter if it has
    `streaming`, else in the one named by LAKEHOUSE_STREAMING_PYTHON (a venv with torch)."""
    import importlib.util
    import os
    import subprocess
    import sys

    python = sys.executable if importlib.util.find_spec("streaming") else os.environ.get("LAKEHOUSE_STREAMING_PYTHON")
    if not python:
        pytest.skip("mosaicml-streaming (needs torch) not installed; set LAKEHOUSE_STREAMING_PYTHON to a venv that has it")
    version = make_gold(local_lake, list(range(1, 31)))
    create_snapshot(local_lake, "snap-ms")
    res = build_shards(local_lake, "photos", table="gold.photo_features", snapshot="snap-ms",
                       format="mds", shard_size="8KB")
    rows = local_lake.delta_table("gold.photo_features", version=version).to_pyarrow_table().to_pylist()
    expected = {str(r["photo_id"]): {"image": r["image"].hex(), "title": r["title"],
                                     "uploaded_at": r["uploaded_at"].isoformat()} for r in rows}
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    out = subprocess.run([python, "-c", _STREAMING_CHECK, res.uri, str(tmp_path / "expected.json")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip().splitlines()[-1]) == len(rows)
