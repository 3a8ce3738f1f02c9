"""WebDataset shard sets: read back with the real `webdataset` library, byte for byte."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pytest
from shard_data import make_gold, photo_rows

from ingest.delta import write_batch
from ingest.errors import ConfigError
from ingest.lake import Lake
from ingest.snapshots import create_snapshot
from transforms.shards import build_shards, escape_key, parse_size


def _gold_at(lake: Lake, version: int, key: str = "photo_id") -> dict:
    rows = lake.delta_table("gold.photo_features", version=version).to_pyarrow_table().to_pylist()
    return {str(r[key]): r for r in rows}


def _read_wds(root: Path, manifest: dict) -> list[dict]:
    import webdataset as wds

    urls = [str(root / s["path"]) for s in manifest["shards"]]
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def _check_samples(samples: list[dict], gold: dict) -> None:
    assert len(samples) == len(gold)
    seen = set()
    for s in samples:
        key = unquote(s["__key__"])
        row = gold[key]
        seen.add(key)
        ext = "jpg" if row["image_format"] == "jpeg" else "png"
        assert set(s) - {"__key__", "__url__", "__local_path__"} == {"json", ext}
        assert s[ext] == row["image"]  # the image bytes, exactly
        meta = json.loads(s["json"])
        assert "image" not in meta
        assert meta["photo_id"] == row["photo_id"] and meta["title"] == row["title"]
        assert meta["uploaded_at"] == row["uploaded_at"].isoformat()
        assert meta["like_rate"] == row["like_rate"]
    assert seen == set(gold)


def test_webdataset_round_trip_and_manifest(local_lake: Lake) -> None:
    version = make_gold(local_lake, list(range(1, 61)))
    pinned = create_snapshot(local_lake, "snap-a").tables["gold.photo_features"]
    assert pinned == version + 1  # the log-retention commit comes before the pin
    res = build_shards(local_lake, "photos", table="gold.photo_features", snapshot="snap-a",
                       key="photo_id", shard_size="8KB")
    root = Path(res.uri)
    assert root == Path(local_lake.path("shards", "photos", "snap-a"))
    m = json.loads((root / "manifest.json").read_text())
    assert m == res.manifest
    assert m["dataset"] == "photos" and m["snapshot"] == "snap-a" and m["format"] == "webdataset"
    assert m["tables"] == {"gold.photo_features": pinned}
    assert [r["version_after"] for r in m["source_runs"]] == [version]
    assert m["code_version"] and m["created_at"]
    assert {s["split"] for s in m["shards"]} == {"train", "val"}
    for s in m["shards"]:
        assert not s["path"].startswith("/") and ".." not in s["path"] and "\\" not in s["path"]
        assert s["path"].startswith(s["split"] + "/shard-") and s["path"].endswith(".tar")
        assert (root / s["path"]).stat().st_size == s["bytes"]
    assert sum(s["samples"] for s in m["shards"]) == 60 == res.samples
    # standard tools verify the checksums
    out = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(": OK") == len(m["shards"])

    samples = _read_wds(root, m)
    _check_samples(samples, _gold_at(local_lake, version))
    # the split is in the path: every sample of a val shard hashes to val
    val = [s for s in samples if "/val/" in s["__url__"]]
    assert 0 < len(val) < 30


def test_tar_members_follow_webdataset_rules(local_lake: Lake) -> None:
    make_gold(local_lake, list(range(1, 21)))
    snap = create_snapshot(local_lake, "snap-t")
    res = build_shards(local_lake, "photos", table="gold.photo_features", snapshot="snap-t", shard_size="1MB")
    for s in res.manifest["shards"]:
        with tarfile.open(Path(res.uri) / s["path"]) as tf:
            members = tf.getmembers()
        prefixes = [m.name.split(".", 1)[0] for m in members]
        # members of one sample are adjacent, each sample has unique extensions
        groups: list[list[str]] = []
        for m, p in zip(members, prefixes):
            if not groups or groups[-1][0].split(".", 1)[0] != p:
                groups.append([])
            groups[-1].append(m.name)
        assert len({g[0].split(".", 1)[0] for g in groups}) == len(groups) == s["samples"]
        for g in groups:
            exts = [n.split(".", 1)[1] for n in g]
            assert len(exts) == len(set(exts)) and exts[0] == "json"
        for m in members:
            assert m.mtime == int(snap.created_at.timestamp())
            assert (m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, "", "", 0o644)


def test_two_builds_are_byte_identical(local_lake: Lake) -> None:
    make_gold(local_lake, list(range(1, 41)))
    create_snapshot(local_lake, "snap-d")
    first = build_shards(local_lake, "photos", table="gold.photo_features", snapshot="snap-d", shard_size="8KB")
    blobs = {s["path"]: (Path(first.uri) / s["path"]).read_bytes() for s in first.manifest["shards"]}
    sums = (Path(first.uri) / "SHA256SUMS").read_bytes()
    # the table moves on; the snapshot still pins the old version
    make_gold(local_lake, list(range(1, 80)))
    second = build_shards(local_lake, "photos", table="gold.photo_features", snapshot="snap-d", shard_size="8KB")
    assert [s["sha256"] for s in second.manifest["shards"]] == [s["sha256"] for s in first.manifest["shards"]]
    assert {s["path"]: (Path(second.uri) / s["path"]).read_bytes() for s in second.manifest["shards"]} == blobs
    assert (Path(second.uri) / "SHA256SUMS").read_bytes() == sums
    # another seed reorders samples but keeps every sample in its split
    third = build_shards(local_lake, "photos2", table="gold.photo_features", snapshot="snap-d",
                         shard_size="8KB", seed=7)
    assert [s["sha256"] for s in third.manifest["shards"]] != [s["sha256"] for s in first.manifest["shards"]]
    split_of = lambda res: {  # noqa: E731
        unquote(x["__key__"]): s for s in ("train", "val")
        for x in _read_wds(Path(res.uri), {"shards": [sh for sh in res.manifest["shards"] if sh["split"] == s]})
    }
    assert split_of(first) == split_of(third)


def test_split_is_stable_when_rows_are_added(local_lake: Lake) -> None:
    make_gold(local_lake, list(range(1, 101)))
    create_snapshot(local_lake, "small")
    make_gold(local_lake, list(range(1, 301)))
    create_snapshot(local_lake, "large")
    splits = {}
    for name in ("small", "large"):
        res = build_shards(local_lake, "photos", table="gold.photo_features", snapshot=name,
                           split={"train": 0.8, "val": 0.2}, shard_size="64KB")
        samples = _read_wds(Path(res.uri), res.manifest)
        splits[name] = {unquote(s["__key__"]): s["__url__"].split("/")[-2] for s in samples}
    assert len(splits["small"]) == 100 and len(splits["large"]) == 300
    for key, split in splits["small"].items():
        assert splits["large"][key] == split
    val_share = sum(v == "val" for v in splits["large"].values()) / 300
    assert 0.1 < val_share < 0.3


def test_size_target_and_oversized_sample(local_lake: Lake) -> None:
    # photo 5 is a big image (noise PNG over the target), the rest are tiny
    make_gold(local_lake, list(range(1, 41)), big={5: 400})
    create_snapshot(local_lake, "snap-s")
    target = parse_size("16KB")
    res = build_shards(local_lake, "photos", table="gold.photo_features", snapshot="snap-s",
                       shard_size=target, split={"train": 1.0})
    shards = res.manifest["shards"]
    big = [s for s in shards if s["bytes"] > target]
    assert len(big) == 1 and big[0]["samples"] == 1
    for s in shards:
        if s is not big[0]:
            assert s["bytes"] <= target
    assert sum(s["samples"] for s in shards) == 40
    samples = _read_wds(Path(res.uri), {"shards": big})
    assert unquote(samples[0]["__key__"]) == "5"


def test_keys_with_dots_are_escaped(local_lake: Lake) -> None:
    ids = ["a.b.c", "x/y", "plain", "100%", "ünï"]
    rows = photo_rows(list(range(len(ids)))).drop(["photo_id"]).append_column("name", pa.array(ids))
    write_batch(local_lake, "gold.named", rows)
    create_snapshot(local_lake, "snap-k", tables=["gold.named"])
    res = build_shards(local_lake, "named", table="gold.named", snapshot="snap-k", key="name",
                       split={"train": 1.0})
    samples = _read_wds(Path(res.uri), res.manifest)
    assert sorted(unquote(s["__key__"]) for s in samples) == sorted(ids)
    assert all("." not in s["__key__"] and "/" not in s["__key__"] for s in samples)
    assert escape_key("a.b") == "a%2Eb"


def test_bad_arguments_are_one_line_errors(local_lake: Lake) -> None:
    make_gold(local_lake, list(range(1, 11)))
    create_snapshot(local_lake, "snap-e")
    kw = dict(table="gold.photo_features", snapshot="snap-e")
    with pytest.raises(ValueError, match="sum to"):
        build_shards(local_lake, "d", split={"train": 0.5, "val": 0.1}, **kw)
    with pytest.raises(ValueError, match="bad shard size"):
        build_shards(local_lake, "d", shard_size="lots", **kw)
    with pytest.raises(ConfigError, match="unknown shard format"):
        build_shards(local_lake, "d", format="zip", **kw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no snapshot named"):
        build_shards(local_lake, "d", table="gold.photo_features", snapshot="nope")
    with pytest.raises(ValueError, match="key column 'nope'"):
        build_shards(local_lake, "d", key="nope", **kw)
    with pytest.raises(ValueError, match="unique"):
        build_shards(local_lake, "d", key="user_id", **kw)  # user_id repeats


def test_cli_shards_build_json(local_lake: Lake) -> None:
    from typer.testing import CliRunner

    from ingest.cli import app

    make_gold(local_lake, list(range(1, 11)))
    create_snapshot(local_lake, "snap-c")
    out = CliRunner().invoke(app, ["--lake", local_lake.uri, "--json", "shards", "build", "photos",
                                   "--table", "gold.photo_features", "--snapshot", "snap-c",
                                   "--split", "train=0.5,val=0.5", "--shard-size", "4KB", "--key", "photo_id"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.output)
    assert payload["samples"] == 10 and payload["manifest"]["snapshot"] == "snap-c"
    assert Path(payload["uri"], "manifest.json").exists()


def test_fast_tar_header_matches_tarfile_and_views_are_exact() -> None:
    import tarfile as tf

    from transforms.shards.formats import _binary_views, _ustar_header

    for name, size, mtime in [("a.json", 5, 0), ("x" * 100, 10**9, 1_700_000_000), ("k%2E.jpg", 0, 123)]:
        ti = tf.TarInfo(name)
        ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = size, mtime, 0o644, 0, 0, "", ""
        assert _ustar_header(name, size, mtime) == ti.tobuf(tf.PAX_FORMAT, "utf-8", "surrogateescape")
    assert _ustar_header("ü.json", 1, 0) is None and _ustar_header("y" * 101, 1, 0) is None
    values = [b"abc", None, b"", b"\x00\xff" * 3, b"z"]
    for typ in (pa.binary(), pa.large_binary()):
        arr = pa.chunked_array([pa.array(values, typ).slice(1), pa.array(values, typ)])
        got = [None if v is None else bytes(v) for v in _binary_views(arr)]
        assert got == values[1:] + values
