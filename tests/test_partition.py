"""Splitting a file source into groups: every file in exactly one group, stably across processes,
and groups ingested one after another store what one whole ingest stores."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from ingest.lake import Lake
from ingest.partition import FileGroup, KeyRange, file_groups, group_of, key_ranges, merge_results
from ingest.pipeline import ingest_source
from ingest.settings import LogSource, TableSource
from ingest.sources.images import ingest_images
from ingest.sources.logs import ingest_logs
from tests.sources.conftest import sorted_rows
from tests.sources.test_images import _write_images


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_file_is_in_exactly_one_group(count: int) -> None:
    uris = [f"s3://b/p/{i // 50}/img_{i}.png" for i in range(2000)]
    seen = sorted(f.uri for g in file_groups(count) for f in g.select(_files(uris)))
    assert seen == sorted(uris)
    if count > 1:  # and the groups are not lopsided (a hash, not a prefix)
        sizes = [len(g.select(_files(uris))) for g in file_groups(count)]
        assert min(sizes) > 0.7 * 2000 / count, sizes


def test_a_files_group_is_the_same_in_every_process() -> None:
    # fixed values: a change of hash would split one source differently on two worker versions
    assert [group_of(f"/data/img_{i}.png", 4) for i in range(8)] == [2, 3, 3, 0, 3, 0, 3, 3]


def test_bad_partition_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="partitions must be between 1"):
        file_groups(0)
    with pytest.raises(ValueError, match="group index 2 is not in 0..1"):
        FileGroup(2, 2)


def test_results_of_the_groups_add_up() -> None:
    a = {"table": "bronze.x", "version": 4, "rows_written": 3, "rows_quarantined": 1, "skipped": 0, "run_id": "r1",
         "bytes_read": 10, "notes": [], "worker": "h1:10"}
    b = {**a, "version": 6, "rows_written": 5, "skipped": 2, "run_id": "r2", "notes": ["partial line"], "worker": "h2:20"}
    m = merge_results([a, b])
    assert (m["version"], m["rows_written"], m["rows_quarantined"], m["skipped"], m["bytes_read"]) == (6, 8, 2, 2, 20)
    assert m["run_ids"] == ["r1", "r2"] and m["partitions"] == 2 and m["notes"] == ["partial line"]
    assert m["workers"] == ["h1:10", "h2:20"]
    with pytest.raises(ValueError, match="different tables"):
        merge_results([a, {**b, "table": "bronze.y"}])


def test_image_groups_one_after_another_store_what_one_ingest_stores(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_images(src, 60)
    _write_images(src / "sub", 20, start=50)  # 10 contents in both folders
    (src / "bad.png").write_bytes(b"not a png")
    whole, parts = Lake(str(tmp_path / "whole")), Lake(str(tmp_path / "parts"))
    ingest_images(whole, str(src))
    results = [ingest_images(parts, str(src), partition=g).model_dump() for g in file_groups(3)]
    assert all(r["rows_written"] < 70 for r in results)  # each group loaded only a part
    m = merge_results(results)
    assert (m["rows_written"], m["rows_quarantined"], m["skipped"]) == (70, 1, 10)
    cols = ["sha256", "size_bytes", "width", "height", "content"]
    assert sorted_rows(parts, "bronze.images", cols) == sorted_rows(whole, "bronze.images", cols)
    again = [ingest_images(parts, str(src), partition=g) for g in file_groups(3)]
    assert sum(r.rows_written + r.rows_quarantined for r in again) == 0


def test_log_groups_load_each_file_once(tmp_path: Path) -> None:
    src = tmp_path / "logs"
    src.mkdir()
    files = 0  # at least 6, and both groups get some (the group hashes the path, tmp_path's too)
    while files < 6 or len({group_of(str((src / f"app{f}.jsonl").resolve()), 2) for f in range(files)}) < 2:
        files += 1
    for f in range(files):
        (src / f"app{f}.jsonl").write_text("".join(json.dumps({"event_id": f"{f}-{i}", "n": i}) + "\n" for i in range(50)))
    lake = Lake(str(tmp_path / "lake"))
    results = [ingest_logs(lake, str(src), partition=g).model_dump() for g in file_groups(2)]
    assert 0 < results[0]["rows_written"] < 50 * files
    assert merge_results(results)["rows_written"] == 50 * files
    ids = [r[0] for r in sorted_rows(lake, "bronze.events", ["event_id"])]
    assert len(ids) == len(set(ids)) == 50 * files


def test_a_table_is_split_by_key_ranges_not_file_groups(tmp_path: Path) -> None:
    src = TableSource(url="sqlite:///x.db", source_table="t", table="bronze.t")
    with pytest.raises(ValueError, match="not split by FileGroup"):
        ingest_source(Lake(str(tmp_path / "lake")), src, partition=FileGroup(0, 2))
    logs = LogSource(path=str(tmp_path), table="bronze.l")
    with pytest.raises(ValueError, match="not split by KeyRange"):
        ingest_source(Lake(str(tmp_path / "lake")), logs, partition=KeyRange(0, 2, "id", None, 5))


def _in(r: KeyRange, v) -> bool:
    if v is None:
        return r.low is None
    return (r.low is None or r.low <= v) and (r.high is None or v < r.high)


@pytest.mark.parametrize(
    ("low", "high", "values"),
    [
        (0, 999, list(range(-5, 1005))),  # values beyond the split's min/max (arrived since) too
        (Decimal("0.01"), Decimal("9.99"), [Decimal(i) / 100 for i in range(-10, 1100)]),
        (datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 3, tzinfo=timezone.utc),
         [datetime(2025, 12, 31, tzinfo=timezone.utc) + timedelta(minutes=37 * i) for i in range(300)]),
        (date(2026, 1, 1), date(2026, 3, 1), [date(2025, 12, 1) + timedelta(days=i) for i in range(120)]),
    ],
)
def test_key_ranges_hold_every_value_once(low, high, values) -> None:
    ranges = key_ranges("k", low, high, 4)
    assert len(ranges) == 4 and all(r.count == 4 for r in ranges)
    assert ranges[0].low is None and ranges[-1].high is None  # rows that arrive later land somewhere
    for v in [*values, None]:  # NULL keys: the first range
        assert sum(_in(r, v) for r in ranges) == 1, v
    inner = [v for v in values if low <= v <= high]
    sizes = [sum(_in(r, v) for v in inner) for r in ranges]
    assert min(sizes) > 0.6 * len(inner) / 4, sizes  # equal widths


def test_key_ranges_of_a_short_span_and_unsplittable_keys() -> None:
    assert [(r.low, r.high) for r in key_ranges("id", 1, 3, 8)] == [(None, 2), (2, None)]
    assert key_ranges("id", None, None, 4) == [KeyRange(0, 1, "id")]  # an empty table: one range, all rows
    assert str(key_ranges("id", 0, 100, 3)[1]) == "id:2of3"
    with pytest.raises(ValueError, match="numeric, date or timestamp"):
        key_ranges("name", "a", "z", 2)


def _files(uris: list[str]):
    from datetime import datetime, timezone

    from ingest.sources import SourceFile

    return [SourceFile(u, 1, datetime(2026, 1, 1, tzinfo=timezone.utc)) for u in uris]
