"""ingest images: one row per distinct content, quarantine, snapshots keep bytes, exactly-once, S3."""

from __future__ import annotations

import hashlib
import io
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ingest.errors import SourceError
from ingest.lake import Lake
from ingest.sources.images import ingest_images
from tests.sources.conftest import kill_after_commits, read, run_cli, run_json, spawn_cli


def _png(seed: int, size: tuple[int, int] = (24, 16)) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    img.putpixel((rng.randrange(size[0]), rng.randrange(size[1])), (seed % 256, seed // 256 % 256, 7))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _write_images(d: Path, n: int, start: int = 0) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (d / f"img_{i:05d}.png").write_bytes(_png(i))


def test_sample_images_one_row_per_content(local_lake: Lake, sample) -> None:
    res = ingest_images(local_lake, str(sample.images))
    assert (res.rows_written, res.rows_quarantined, res.skipped) == (40, 1, 1)  # 40 photos, 1 broken, 1 copy
    rows = read(local_lake, "bronze.images")
    assert len({r["sha256"] for r in rows}) == 40
    by_name = {Path(r["source_uri"]).name: r for r in rows}
    assert "photo_00001.png" in by_name  # the original wins over the copy in a sub-folder
    r = by_name["photo_00003.jpg"]
    data = (sample.images / "photo_00003.jpg").read_bytes()
    assert r["content"] == data and r["sha256"] == hashlib.sha256(data).hexdigest()
    assert (r["format"], r["size_bytes"]) == ("jpeg", len(data))
    with Image.open(io.BytesIO(data)) as im:
        assert (r["width"], r["height"]) == im.size
    assert str(r["source_mtime"]) == "2026-11-01 00:00:00+00:00"
    assert r["ingest_run_id"] == res.run_id
    q = read(local_lake, "bronze.images_quarantine")
    assert len(q) == 1 and q[0]["source"].endswith("photo_broken.jpg")
    assert q[0]["raw"] == (sample.images / "photo_broken.jpg").read_bytes()
    assert "not a readable image" in q[0]["reason"]


def test_rename_copy_rerun_store_nothing_new(local_lake: Lake, sample) -> None:
    ingest_images(local_lake, str(sample.images))
    again = ingest_images(local_lake, str(sample.images))
    assert (again.rows_written, again.rows_quarantined, again.skipped) == (0, 0, 42)
    (sample.images / "photo_00005.png").rename(sample.images / "renamed.png")
    shutil.copy(sample.images / "photo_00007.png", sample.images / "copies" / "again.png")
    third = ingest_images(local_lake, str(sample.images))
    assert (third.rows_written, third.rows_quarantined) == (0, 0)
    assert len(read(local_lake, "bronze.images", ["sha256"])) == 40
    assert len(read(local_lake, "bronze.images_quarantine", ["source"])) == 1


def test_snapshot_keeps_bytes_after_source_changes(local_lake: Lake, tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    _write_images(d, 3)
    original = (d / "img_00000.png").read_bytes()
    v = ingest_images(local_lake, str(d)).version
    (d / "img_00000.png").write_bytes(_png(999))  # changed in place
    (d / "img_00001.png").unlink()  # deleted
    ingest_images(local_lake, str(d))
    pinned = {Path(r["source_uri"]).name: r["content"] for r in read(local_lake, "bronze.images", version=v)}
    assert pinned["img_00000.png"] == original
    assert "img_00001.png" in pinned
    latest = read(local_lake, "bronze.images", ["sha256"])
    assert len(latest) == 4  # the new content of img_00000 is a new row; nothing is lost


@pytest.mark.integration
@pytest.mark.parametrize("kill_at", [1, 4])
def test_killed_run_then_rerun_equals_one_clean_run(tmp_path: Path, kill_at: int) -> None:
    d = tmp_path / "imgs"
    _write_images(d, 240)
    (d / "bad.png").write_bytes(_png(1)[:40])
    clean = Lake(str(tmp_path / "clean"))
    run_json(clean, "images", str(d))
    lake = Lake(str(tmp_path / "killed"))
    proc = spawn_cli(lake, "images", str(d), INGEST_IMAGE_BATCH_FILES="20", INGEST_IMAGE_WORKERS="2")
    assert kill_after_commits(proc, lake, "bronze.images", kill_at)
    out = run_json(lake, "images", str(d), INGEST_IMAGE_BATCH_FILES="20")
    assert out["rows_written"] > 0
    got = sorted((r["sha256"], r["content"]) for r in read(lake, "bronze.images", ["sha256", "content"]))
    want = sorted((r["sha256"], r["content"]) for r in read(clean, "bronze.images", ["sha256", "content"]))
    assert got == want and len(got) == 240
    assert len(read(lake, "bronze.images_quarantine", ["source"])) == 1


@pytest.mark.integration
def test_concurrent_ingests_store_each_content_once(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write_images(a, 150)
    _write_images(b, 150, start=100)  # 50 images overlap with a
    lake = Lake(str(tmp_path / "lake"))
    env = {"INGEST_IMAGE_BATCH_FILES": "10", "INGEST_IMAGE_WORKERS": "2"}
    procs = [spawn_cli(lake, "images", str(p), **env) for p in (a, b, a)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    shas = [r["sha256"] for r in read(lake, "bronze.images", ["sha256"])]
    assert len(shas) == len(set(shas)) == 250


@pytest.mark.integration
@pytest.mark.s3
def test_images_from_s3_into_s3_lake(s3_server, s3_lake: Lake, sample) -> None:
    bucket = s3_lake.location.bucket  # sources beside the lake: fewer SeaweedFS collections
    client = s3_server.client()
    for p in sorted(sample.images.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), bucket, f"raw/{p.relative_to(sample.images)}")
    res = ingest_images(s3_lake, f"s3://{bucket}/raw")
    assert (res.rows_written, res.rows_quarantined, res.skipped) == (40, 1, 1)
    rows = read(s3_lake, "bronze.images", ["source_uri", "content"])
    one = next(r for r in rows if r["source_uri"] == f"s3://{bucket}/raw/photo_00001.png")
    assert one["content"] == (sample.images / "photo_00001.png").read_bytes()
    again = ingest_images(s3_lake, f"s3://{bucket}/raw")
    assert (again.rows_written, again.skipped) == (0, 42)
    runs = read(s3_lake, "_meta.runs")
    assert [r["status"] for r in runs] == ["success", "success"]


@pytest.mark.integration
@pytest.mark.s3
def test_unreadable_s3_source_fails_with_one_line(s3_server, s3_lake: Lake, monkeypatch) -> None:
    with pytest.raises(SourceError) as missing:
        ingest_images(s3_lake, "s3://no-such-bucket-here/raw")
    assert "no-such-bucket-here" in str(missing.value) and "\n" not in str(missing.value)
    bucket = s3_lake.location.bucket  # sources beside the lake: fewer SeaweedFS collections
    proc = run_cli(s3_lake, "images", f"s3://{bucket}/x", check=False, AWS_SECRET_ACCESS_KEY="wrong-secret")
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "AWS_SECRET_ACCESS_KEY" in lines[0]
    assert "wrong-secret" not in proc.stderr
