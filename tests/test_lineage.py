"""ingest lineage names the run whose Delta commit produced a table version: a later run that
found nothing new (rows_written=0) ended at the same version and used to be named instead."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from ingest.delta import write_batch
from ingest.lake import Lake
from ingest.runlog import Run, record
from tests.sources.conftest import run_json


def _events(n: int, start: int = 0) -> str:
    return "".join(json.dumps({"event_id": f"e{i}", "user_id": i % 7}) + "\n" for i in range(start, start + n))


def _writer(node: dict) -> dict:
    (run,) = [c for c in node["children"] if c["kind"] == "run"]
    return run


def test_lineage_names_the_run_that_committed_the_version_not_a_later_no_op(tmp_path: Path) -> None:
    src = tmp_path / "logs"
    src.mkdir()
    (src / "a.jsonl").write_text(_events(30))
    lake = Lake(str(tmp_path / "lake"))
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
