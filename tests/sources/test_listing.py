"""The shared source listing: symlinks never lead out of SRC, an S3 prefix is a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.lake import Lake
from ingest.sources.logs import ingest_logs
from tests.sources.conftest import read, run_cli
from tests.sources.test_images import _png


def _line(event_id: str) -> str:
    return json.dumps({"event_id": event_id, "user_id": 1}) + "\n"


def test_symlink_out_of_src_is_skipped_with_a_message(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text(_line("secret-1") + _line("secret-2"))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "more.jsonl").write_text(_line("secret-3"))
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "real.jsonl").write_text(_line("in-1"))
    (src / "app.log").symlink_to(secret)  # ln -s /etc/shadow src/app.log
    (src / "linked-dir").symlink_to(outside)
    (src / "inside.jsonl").symlink_to(src / "sub" / "real.jsonl")  # inside SRC: that file, once
    lake = Lake(str(tmp_path / "lake"))
    proc = run_cli(lake, "logs", str(src))
    assert "1 rows written" in proc.stdout
    assert f"skipped {src}/app.log: a symlink to {secret}, outside {src}" in proc.stderr
    assert f"skipped {src}/linked-dir: a symlink to {outside}, outside {src}" in proc.stderr
    rows = read(lake, "bronze.events", ["event_id", "_source_file"])
    assert rows == [{"event_id": "in-1", "_source_file": str(src / "sub" / "real.jsonl")}]


def test_images_do_not_follow_symlinks_out_of_src(tmp_path: Path) -> None:
    (tmp_path / "private.png").write_bytes(_png(1))
    src = tmp_path / "images"
    src.mkdir()
    (src / "a.png").write_bytes(_png(2))
    (src / "b.png").symlink_to(tmp_path / "private.png")
    lake = Lake(str(tmp_path / "lake"))
    proc = run_cli(lake, "images", str(src))
    assert "skipped" in proc.stderr and "outside" in proc.stderr
    assert [Path(r["source_uri"]).name for r in read(lake, "bronze.images", ["source_uri"])] == ["a.png"]


def test_listing_skips_hidden_names_and_special_files_and_lists_each_real_file_once(tmp_path: Path) -> None:
    import os

    from ingest.sources.files import list_source

    src = tmp_path / "src"
    for rel in ("a.log", "x/b.log", "x/y/z/c.log", ".git/config", "x/.cache/d.log", "_tmp/e.log", "x/_f.log",
                "x/.g.log", "inner/h.log"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    os.mkfifo(src / "x" / "pipe.log")  # neither a file to read nor a folder
    (src / "x" / "again.log").symlink_to(src / "a.log")  # the same file: listed once, by its real path
    (src / "x" / "linked").symlink_to(src / "inner")  # a folder inside SRC: walked as itself only
    (src / "x" / "dangling.log").symlink_to(src / "gone.log")
    listed = list_source(Lake(str(tmp_path / "lake")), str(src))
    assert [f.uri for f in listed] == [str(src / r) for r in ("a.log", "inner/h.log", "x/b.log", "x/y/z/c.log")]
    assert [f.size for f in listed] == [len(r) for r in ("a.log", "inner/h.log", "x/b.log", "x/y/z/c.log")]
    one = list_source(Lake(str(tmp_path / "lake")), str(src / "x" / "b.log"))  # a file names itself
    assert [(f.uri, f.size) for f in one] == [(str(src / "x" / "b.log"), 7)]


@pytest.mark.integration
@pytest.mark.s3
def test_s3_prefix_is_a_folder(s3_server, s3_lake: Lake) -> None:
    bucket = s3_lake.location.bucket
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="raw/logs/a.jsonl", Body=_line("a1").encode())
    client.put_object(Bucket=bucket, Key="raw/logs-archive/b.jsonl", Body=_line("b1").encode())
    client.put_object(Bucket=bucket, Key="raw/logs.jsonl", Body=_line("c1").encode())
    res = ingest_logs(s3_lake, f"s3://{bucket}/raw/logs")
    assert res.rows_written == 1
    assert [r["event_id"] for r in read(s3_lake, "bronze.events", ["event_id"])] == ["a1"]
    one = ingest_logs(s3_lake, f"s3://{bucket}/raw/logs.jsonl")  # an object's own key still names it
    assert (one.rows_written, one.skipped) == (1, 0)
    same = ingest_logs(s3_lake, f"s3://{bucket}/raw/logs/")
    assert (same.rows_written, same.skipped) == (0, 1)
