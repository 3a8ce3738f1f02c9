"""`ingest tables|images|logs --partitions N` as a user runs it (a real process): the source split
into N parts loaded at once on threads of that process, every row in the one table exactly once,
the same table as one unsplit load; a failed part fails the command; a bad N is one line."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ingest.lake import Lake
from ingest.partition import group_of
from tests.sources.conftest import read, run_cli, run_json, sorted_rows
from tests.sources.test_images import _write_images

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
PG_COLS = ["id", "v", "n", "updated_at"]
IMAGE_COLS = ["source_uri", "sha256", "size_bytes", "format", "width", "height", "source_mtime", "content"]


def _pg(url: str):
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@pytest.mark.postgres
def test_tables_in_three_key_ranges_land_every_row_once(postgres_url: str, tmp_path: Path) -> None:
    name = "parts_" + uuid.uuid4().hex[:8]
    with _pg(postgres_url) as con:
        con.execute(f'create table "{name}" (id bigint primary key, v text, n integer, updated_at timestamptz)')
        with con.cursor() as cur, cur.copy(f'copy "{name}" (id, v, n, updated_at) from stdin') as cp:
            for i in range(3000):
                cp.write_row((i, f"v{i}", i % 100, T0 + timedelta(seconds=i)))
        source = sorted(con.execute(f'select id, v, n, updated_at from "{name}"').fetchall())
    lake = Lake(str(tmp_path / "lake"))
    args = ("tables", postgres_url, "--source-table", name, "--table", "bronze.parts", "--primary-key", "id")
    # small batches: each range commits several times, racing the other ranges' commits
    first = run_json(lake, *args, "--partitions", "3", INGEST_TABLE_BATCH_ROWS="400")
    assert (first["partitions"], len(first["run_ids"]), first["rows_written"], first["rows_quarantined"]) == (
        3, 3, 3000, 0,
    ), first
    assert sorted_rows(lake, "bronze.parts", PG_COLS) == source  # every row once, values as stored

    again = run_json(lake, *args, "--partitions", "3", INGEST_TABLE_BATCH_ROWS="400")
    assert (again["rows_written"], again["skipped"]) == (0, 3000), again
    assert sorted_rows(lake, "bronze.parts", PG_COLS) == source


def test_images_in_two_groups_equal_one_unsplit_load(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    _write_images(src, 30)
    _write_images(src / "more", 10, start=30)
    split, single = Lake(str(tmp_path / "split")), Lake(str(tmp_path / "single"))
    res = run_json(split, "images", str(src), "--partitions", "2")
    assert (res["partitions"], res["rows_written"], res["rows_quarantined"]) == (2, 40, 0), res
    assert run_json(single, "images", str(src), "--partitions", "1")["rows_written"] == 40
    rows = sorted_rows(split, "bronze.images", IMAGE_COLS)
    assert len(rows) == 40 == len({r[0] for r in rows})  # each file once
    assert rows == sorted_rows(single, "bronze.images", IMAGE_COLS)
    again = run_json(split, "images", str(src), "--partitions", "2")
    assert (again["rows_written"], again["skipped"]) == (0, 40), again


def test_a_failed_part_fails_the_command_after_the_others_finish(tmp_path: Path) -> None:
    src = tmp_path / "logs"
    src.mkdir()
    for i in range(8):
        (src / f"app{i}.jsonl").write_text("".join(json.dumps({"f": i, "line": j}) + "\n" for j in range(200)))
    bad = src / "broken.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"a": 1}\n' * 100)[:20] + b"not deflate data at all")
    lake = Lake(str(tmp_path / "lake"))
    proc = run_cli(lake, "logs", str(src), "--partitions", "3", check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    # the parts without the broken file ran to their end: their files are loaded, each line once
    others = [p for p in src.glob("*.jsonl") if group_of(str(p), 3) != group_of(str(bad), 3)]
    assert others, "every file hashed into the broken file's group: pick other names"
    loaded = [(r["_source_file"], r["line"]) for r in read(lake, "bronze.events", ["_source_file", "line"])]
    for p in others:
        assert sorted(line for f, line in loaded if f == str(p)) == list(range(200)), p


@pytest.mark.parametrize("command", ["images", "logs", "tables"])
def test_partitions_below_one_is_one_line_and_nothing_written(tmp_path: Path, command: str) -> None:
    lake = Lake(str(tmp_path / "lake"))
    args = {"images": [str(tmp_path)], "logs": [str(tmp_path)],
            "tables": [f"sqlite:///{tmp_path / 'x.db'}", "--source-table", "t", "--table", "bronze.t", "--primary-key", "id"]}
    proc = run_cli(lake, command, *args[command], "--partitions", "0", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["error: --partitions must be between 1 and 4096, got 0"]
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize("partitions", ["1", "2"])
def test_negative_cursor_lag_is_the_same_one_line_split_or_not(tmp_path: Path, partitions: str) -> None:
    lake = Lake(str(tmp_path / "lake"))
    proc = run_cli(lake, "tables", f"sqlite:///{tmp_path / 'x.db'}", "--source-table", "t", "--table", "bronze.t",
                   "--cursor", "ts", "--cursor-lag", "-5", "--partitions", partitions, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["error: --cursor-lag must be >= 0, got -5.0"]
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize("command", ["images", "logs", "tables"])
def test_help_shows_partitions_with_an_example(tmp_path: Path, command: str) -> None:
    proc = run_cli(Lake(str(tmp_path / "lake")), command, "--help")
    options, examples = proc.stdout.split("Examples:")
    assert "--partitions" in options
    assert f"$ ingest {command} " in examples and "--partitions 4" in examples, examples
