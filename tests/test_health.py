"""`ingest health` flags stale tables, volume drops, schema and distribution drift."""

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
from typer.testing import CliRunner

from ingest.cli import app
from ingest.delta import current_version, write_batch
from ingest.health import check_health
from ingest.lake import Lake
from ingest.lineage import lineage
from ingest.runlog import Run, record
from ingest.settings import HealthThresholds

NOW = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)


def _load(lake, table, rows, *, when, user_nulls=False, command="logs"):
    before = current_version(lake, table)
    data = pa.table({"user_id": [None if user_nulls else i % 5 for i in range(rows)], "event_type": ["view"] * rows})
    res = write_batch(lake, table, data)
    record(lake, Run(command=command, source="file:///logs", target=table, started_at=when,
                     version_before=before, version_after=res.version, rows_written=rows, status="success"))


def _checks(report, table):
    (t,) = [t for t in report.tables if t.table == table]
    return {c.name: c.status for c in t.checks}, t


def test_fresh_steady_table_is_ok(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    for d in range(4):
        _load(lake, "bronze.events", 100, when=NOW - timedelta(days=3 - d, hours=1))
    report = check_health(lake, HealthThresholds(columns={"bronze.events": ["user_id"]}), now=NOW)
    checks, t = _checks(report, "bronze.events")
    assert report.ok, report
    assert checks["freshness"] == "ok" and checks["volume"] == "ok"
    assert checks["schema"] == "ok" and checks["distribution:user_id"] == "ok"
    assert t.last_rows == 100 and t.avg_rows == 100


def test_stale_table_and_volume_drop_are_flagged(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    for d in range(3):
        _load(lake, "bronze.events", 100, when=NOW - timedelta(days=5 - d))
    _load(lake, "bronze.events", 10, when=NOW - timedelta(days=2))  # a volume drop, 2 days ago
    report = check_health(lake, HealthThresholds(max_age_hours=36, min_volume_ratio=0.5), now=NOW)
    checks, t = _checks(report, "bronze.events")
    assert not report.ok
    assert checks["freshness"] == "breach" and t.age_hours == 48
    assert checks["volume"] == "breach" and t.last_rows == 10


def test_null_rate_drift_is_flagged(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    _load(lake, "bronze.events", 100, when=NOW - timedelta(hours=3))
    _load(lake, "bronze.events", 300, when=NOW - timedelta(hours=1), user_nulls=True)
    report = check_health(lake, HealthThresholds(columns={"bronze.events": ["user_id"]}), now=NOW)
    checks, _ = _checks(report, "bronze.events")
    assert checks["distribution:user_id"] == "breach"


def test_health_cli_exit_code_and_json(tmp_path):
    lake_dir = tmp_path / "lake"
    lake = Lake(str(lake_dir))
    _load(lake, "bronze.events", 5, when=datetime.now(timezone.utc) - timedelta(days=10))
    r = CliRunner().invoke(app, ["--lake", str(lake_dir), "--json", "health"])
    assert r.exit_code == 1
    payload = json.loads(r.stdout)
    assert payload["ok"] is False and payload["tables"][0]["table"] == "bronze.events"


def test_lineage_follows_transform_inputs_to_sources(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    _load(lake, "bronze.events", 10, when=NOW - timedelta(hours=2))
    res = write_batch(lake, "gold.daily_activity", pa.table({"n": [10]}))
    record(lake, Run(command="transform", source="dbt", target="gold.daily_activity", started_at=NOW,
                     version_after=res.version, status="success", details={"inputs": {"bronze.events": 0}}))
    text = "\n".join(lineage(lake, "gold.daily_activity").render())
    assert "table gold.daily_activity@v0" in text
    assert "table bronze.events@v0" in text
    assert "source file:///logs" in text


def _rerun(lake, table, data, *, when, mode="overwrite"):
    before = current_version(lake, table)
    res = write_batch(lake, table, data, mode=mode)
    record(lake, Run(command="tables", source="sqlite:///db", target=table, started_at=when,
                     version_before=before, version_after=res.version, rows_written=data.num_rows, status="success"))


def test_schema_drift_is_flagged(tmp_path):
    """A column dropped or retyped by the last run is a breach (CLI exit 1); an added one is not."""
    lake_dir = tmp_path / "lake"
    lake = Lake(str(lake_dir))
    th = HealthThresholds(max_age_hours=10_000, min_volume_ratio=0.0)
    _load(lake, "bronze.events", 100, when=NOW - timedelta(hours=3))
    _rerun(lake, "bronze.events", pa.table({"user_id": [i % 5 for i in range(100)], "event_type": ["view"] * 100, "extra": [1] * 100}),
           when=NOW - timedelta(hours=2))
    checks, t = _checks(check_health(lake, th, now=NOW), "bronze.events")
    assert checks["schema"] == "ok" and t.status == "ok", t.checks
    assert [c.detail for c in t.checks if c.name == "schema"] == ["added ['extra'], removed -, retyped -"]

    _rerun(lake, "bronze.events", pa.table({"user_id": [str(i) for i in range(100)], "extra": [1] * 100}),
           when=NOW - timedelta(hours=1))
    report = check_health(lake, th, now=NOW)
    checks, t = _checks(report, "bronze.events")
    assert not report.ok and checks["schema"] == "breach"
    assert [c.detail for c in t.checks if c.name == "schema"] == ["added -, removed ['event_type'], retyped ['user_id']"]

    exe = Path(sys.executable).parent / "ingest"
    r = subprocess.run([str(exe), "--lake", str(lake_dir), "--json", "health"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    (events,) = [x for x in json.loads(r.stdout)["tables"] if x["table"] == "bronze.events"]
    assert {c["name"]: c["status"] for c in events["checks"]}["schema"] == "breach"
