"""ingest lineage names the run whose Delta commit produced a table version: a later run that
found nothing new (rows_written=0) ended at the same version and used to be named instead."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.delta import write_batch
from ingest.lake import Lake
from ingest.runlog import Run, record
from tests.sources.conftest import run_json


def _events(n: int, start: int = 0) -> str:
    return "".join(json.dumps({"event_id": f"e{i}", "user_id": i % 7}) + "\n" for i in range(start, start + n))


def _writer(node: dict) -> dict:
    (run,) = [c for c in node["children"] if c["kind"] == "run"]
    return run


def _log_source(tmp_path: Path, n: int) -> tuple[Path, Lake]:
    """A folder with one JSON-lines log of ``n`` events, and a new lake beside it."""
    src = tmp_path / "logs"
    src.mkdir()
    (src / "a.jsonl").write_text(_events(n))
    return src, Lake(str(tmp_path / "lake"))


def test_lineage_names_the_run_that_committed_the_version_not_a_later_no_op(tmp_path: Path) -> None:
    src, lake = _log_source(tmp_path, 30)
    first = run_json(lake, "logs", str(src), INGEST_LOG_BATCH_LINES="10")  # 3 commits
    second = run_json(lake, "logs", str(src))  # nothing new: no commit
    assert first["rows_written"] == 30 and second["rows_written"] == 0
    version = lake.delta_table("bronze.events").version()
    assert second["version"] == version
    # a transform that read that version (as `ingest transform` records it)
    res = write_batch(lake, "gold.daily_activity", pa.table({"n": [30]}))
    record(lake, Run(command="transform dbt:daily_activity", source="dbt_project", target="gold.daily_activity",
                     version_after=res.version, rows_written=1, status="success",
                     details={"inputs": {"bronze.events": version}}))
    gold = run_json(lake, "lineage", "gold.daily_activity")
    bronze = _writer(gold)["children"][0]
    assert bronze["name"] == f"bronze.events@v{version}"
    run = _writer(bronze)
    assert run["name"] == first["run_id"]
    assert run["detail"]["rows_written"] == 30
    # a version in the middle of the first run's commits names it too
    middle = run_json(lake, "lineage", f"bronze.events@{version - 1}")
    assert _writer(middle)["name"] == first["run_id"]


def test_lineage_names_a_failed_run_for_the_batches_it_committed(tmp_path: Path) -> None:
    import gzip

    src = tmp_path / "logs"
    src.mkdir()
    (src / "a.jsonl").write_text(_events(20))
    z = bytearray(gzip.compress(_events(500, 100).encode()))
    z[len(z) // 2 : len(z) // 2 + 40] = b"x" * 40
    (src / "b.jsonl.gz").write_bytes(bytes(z))  # the run fails here, after a.jsonl landed
    lake = Lake(str(tmp_path / "lake"))
    from tests.sources.conftest import run_cli

    assert run_cli(lake, "logs", str(src), check=False).returncode != 0
    (failed,) = [r for r in lake.delta_table("_meta.runs").to_pyarrow_table().to_pylist()]
    node = run_json(lake, "lineage", "bronze.events")
    run = _writer(node)
    assert run["name"] == failed["run_id"]
    assert run["detail"]["status"] == "failed" and run["detail"]["rows_written"] == 20


@pytest.mark.integration
def test_gold_lineage_after_a_second_run_with_nothing_new_names_the_first_loads(tmp_path: Path) -> None:
    """The `make run` twice case: the second logs run and the second transform find nothing new;
    gold.photo_features still traces to the transform and the logs run that made its rows."""
    from datetime import datetime, timezone

    from tests.transforms.test_dbt_transform import build, make_images, make_photos

    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    lake = Lake(str(tmp_path / "lake"))
    make_photos(lake, range(1, 6), loaded=t0)
    make_images(lake, range(1, 6), loaded=t0)
    src = tmp_path / "logs"
    src.mkdir()
    (src / "events.jsonl").write_text("".join(
        json.dumps({"event_id": f"e{i}", "ts": f"2026-11-01T{i:02d}:00:00Z", "user_id": i % 3 + 1,
                    "event_type": "view" if i % 2 else "like", "photo_id": i % 5 + 1}) + "\n"
        for i in range(20)
    ))
    logs_first = run_json(lake, "logs", str(src), INGEST_LOG_BATCH_LINES="10")
    build(lake)
    assert run_json(lake, "logs", str(src))["rows_written"] == 0
    build(lake)  # nothing new: no commit
    gold = run_json(lake, "lineage", "gold.photo_features")
    transform = _writer(gold)
    gold_commit = lake.delta_table("gold.photo_features").history(1)[0]
    runs = {r["run_id"]: r for r in lake.delta_table("_meta.runs").to_pyarrow_table().to_pylist()}
    assert json.loads(runs[transform["name"]]["details"])["transform_run"] == gold_commit["run_id"]

    def tables(node: dict) -> list[dict]:
        found = [node] if node["kind"] == "table" else []
        for c in node["children"]:
            found += tables(c)
        return found

    (events,) = [t for t in tables(gold) if t["name"].startswith("bronze.events@")]
    assert events["name"] == f"bronze.events@v{logs_first['version']}"
    assert _writer(events)["name"] == logs_first["run_id"]


def test_history_cli_lists_every_version_with_its_run(tmp_path: Path) -> None:
    """`ingest history TABLE` succeeds: every Delta version, newest first, named by the run that wrote it."""
    from tests.sources.conftest import run_cli

    src, lake = _log_source(tmp_path, 20)
    first = run_json(lake, "logs", str(src), INGEST_LOG_BATCH_LINES="10")  # 2 commits
    with (src / "a.jsonl").open("a") as fh:
        fh.write(_events(5, 20))
    second = run_json(lake, "logs", str(src))
    rows = json.loads(run_cli(lake, "--json", "history", "bronze.events").stdout)
    versions = [r["version"] for r in rows]
    assert versions == sorted(versions, reverse=True) and versions[0] == second["version"]
    assert set(versions) == set(range(versions[0] + 1))
    by_run: dict[str, int] = {}
    for r in rows:
        if r["rows_added"]:
            by_run[r["run_id"]] = by_run.get(r["run_id"], 0) + r["rows_added"]
    assert by_run == {first["run_id"]: 20, second["run_id"]: 5}
    text = run_cli(lake, "history", "bronze.events", COLUMNS="200")  # wide enough for whole run ids
    assert text.returncode == 0 and first["run_id"] in text.stdout and second["run_id"] in text.stdout
    missing = run_cli(lake, "history", "bronze.nope", check=False)
    assert missing.returncode != 0 and missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1


def test_lineage_of_a_shard_set_through_the_cli(tmp_path: Path) -> None:
    """`ingest lineage shards/DATASET/SNAPSHOT`: shard set -> snapshot -> pinned version -> its run -> source."""
    import sys

    from tests.sources.conftest import run_cli

    sys.path.insert(0, str(Path(__file__).parent / "transforms"))
    from shard_data import make_gold

    lake = Lake(str(tmp_path / "lake"))
    pinned = make_gold(lake, list(range(1, 21)))
    run_cli(lake, "snapshot", "create", "s1", "--tables", "gold.photo_features")
    make_gold(lake, list(range(1, 31)))  # a later version the shard set does not use
    run_cli(lake, "shards", "build", "ds", "--table", "gold.photo_features", "--snapshot", "s1", "--key", "photo_id")
    (writer,) = [r for r in lake.delta_table("_meta.runs").to_pyarrow_table().to_pylist()
                 if r["version_after"] == pinned and r["target"] == "gold.photo_features"]
    node = run_json(lake, "lineage", "shards/ds/s1")
    assert node["kind"] == "shard_set" and node["name"] == "shards/ds/s1"
    assert node["detail"]["dataset"] == "ds" and node["detail"]["shards"] >= 1
    (snap,) = node["children"]
    assert (snap["kind"], snap["name"]) == ("snapshot", "s1")
    (table,) = snap["children"]
    pinned_version = json.loads(run_cli(lake, "--json", "snapshot", "show", "s1").stdout)["tables"]["gold.photo_features"]
    assert table["name"] == f"gold.photo_features@v{pinned_version}"
    run = _writer(table)
    assert run["name"] == writer["run_id"] and run["detail"]["rows_written"] == 20
    assert [c["name"] for c in run["children"]] == ["bronze.photos"]
    text = run_cli(lake, "lineage", "shards/ds/s1", COLUMNS="200")
    assert "s1" in text.stdout and f"gold.photo_features@v{pinned_version}" in text.stdout and writer["run_id"] in text.stdout
