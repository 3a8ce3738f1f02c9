"""Every deployment in prefect.yaml, run the way the service runs it.

README's "Running it as a service" on real processes: `prefect server start` (SQLite in tmp),
`prefect work-pool create`, `prefect --no-prompt deploy --all`, then one
`prefect worker start --pool lakehouse-process` that picks up a run of each deployment. The
photos table comes from a real PostgreSQL that asks for a password (scram-sha-256), seeded by
the compose stack's seed job; the password lives only in the worker's environment.

The runs go in a day's order (the three ingests at once, transform, shards, then the whole
pipeline, then table maintenance): the pipeline run then finds nothing new to ingest and its Spark models up to date, so
it stays short while still running every stage (incremental dbt, snapshot, shards, sync). Only
transform-daily starts a JVM.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect_procs import BIN, ROOT, PrefectServer, clean_env, start, stop

pytestmark = [pytest.mark.integration, pytest.mark.prefect, pytest.mark.postgres, pytest.mark.spark]

# (flow name, deployment name) in the order a day's schedule runs them; the ingests run at once
STAGES = [
    [("ingest-logs", "ingest-logs-hourly"), ("ingest-images", "ingest-images-daily"),
     ("ingest-tables", "ingest-tables-daily")],
    [("transform", "transform-daily")],
    [("snapshot-and-shards", "shards-daily")],
    [("pipeline", "pipeline-daily")],
    [("maintenance", "maintenance-weekly")],  # z-orders every table, then compacts nothing more
    [("maintenance", "maintenance-daily")],
]
RUNS = [run for stage in STAGES for run in stage]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT = 420  # the first transform may resolve the Spark jars from Maven Central


@dataclass
class WorkerRuns:
    server: PrefectServer
    runs: dict[str, dict]  # deployment name -> final flow run (REST)
    logs: dict[str, str]  # deployment name -> the run's log messages stored in Prefect
    worker_log: Path
    lake: Path
    synced: Path
    sample: Path
    password: str

    def explain(self, name: str) -> str:
        run = self.runs.get(name) or {}
        state = (run.get("state") or {}).get("message")
        tail = self.worker_log.read_text(errors="replace")[-3000:]
        return f"{name}: {run.get('state_type')} ({state})\n--- run logs\n{self.logs.get(name, '')[-3000:]}\n--- worker\n{tail}"


def _all_logs(server: PrefectServer, flow_run_id: str) -> str:
    lines, offset = [], 0
    while True:
        page = server.request(
            "POST", "/logs/filter",
            {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200, "offset": offset},
        )
        lines += [entry["message"] for entry in page]
        if len(page) < 200:
            return "\n".join(lines)
        offset += 200


def _run_stage(server: PrefectServer, stage: list[tuple[str, str]]) -> dict[str, dict]:
    """Create a run of each deployment (as `prefect deployment run` does) and wait for them all."""
    runs = {}
    for flow, deployment in stage:
        dep = server.request("GET", f"/deployments/name/{flow}/{deployment}")
        runs[deployment] = server.request("POST", f"/deployments/{dep['id']}/create_flow_run", {})
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        runs = {name: server.request("GET", f"/flow_runs/{run['id']}") for name, run in runs.items()}
        if all(run["state_type"] in TERMINAL for run in runs.values()):
            break
        time.sleep(1)
    return runs


@pytest.fixture(scope="module")
def worker_runs(prefect_server: PrefectServer, postgres_url: str, tmp_path_factory) -> WorkerRuns:
    from sqlalchemy.engine import make_url

    from ingest.sample import generate_sample

    tmp = tmp_path_factory.mktemp("worker-runs")
    sample = generate_sample(tmp / "sources")
    seed = subprocess.run(
        [str(BIN / "python"), "infra/compose/seed_sources.py"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=clean_env(LAKEHOUSE_SAMPLE_DIR=str(sample.root), LAKEHOUSE_SOURCE_DB_URL=postgres_url),
    )
    assert seed.returncode == 0, seed.stderr
    lake, synced = tmp / "lake", tmp / "synced"

    # README: create the pool, then deploy with the deploy-time variables (the DB URL exported
    # in the same shell must not end up in Prefect).
    deploy_env = {
        "LAKEHOUSE_HOME": str(ROOT),
        "LAKEHOUSE_LOGS_SRC": str(sample.logs),
        "LAKEHOUSE_IMAGES_SRC": str(sample.images),
        "LAKEHOUSE_SOURCE_DB_URL": postgres_url,
    }
    r = prefect_server.cli("work-pool", "create", "lakehouse-process", "--type", "process", "--overwrite", env=deploy_env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = prefect_server.cli("--no-prompt", "deploy", "--all", env=deploy_env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    # The worker's environment is where the service's settings and credentials live.
    sources = [
        {"kind": "images", "path": str(sample.images), "table": "bronze.images"},
        {"kind": "logs", "path": str(sample.logs), "table": "bronze.events", "format": "jsonl"},
        # the same table ingest-tables-daily merged: the pipeline reloads it through the worker's
        # environment (its URL holds the password, which must not reach Prefect from here either)
        {"kind": "tables", "url": postgres_url, "source_table": "photos", "table": "bronze.photos",
         "primary_key": ["photo_id"], "cursor": "updated_at"},
    ]
    worker_env = {
        **prefect_server.env,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "LAKEHOUSE_LAKE": str(lake),
        "LAKEHOUSE_SYNC_DEST": str(synced),
        "LAKEHOUSE_SOURCE_DB_URL": postgres_url,
        "LAKEHOUSE_SOURCES": json.dumps(sources),
    }
    worker_log = tmp / "worker.log"
    worker = start([str(BIN / "prefect"), "worker", "start", "--pool", "lakehouse-process"], env=worker_env, log=worker_log)
    runs: dict[str, dict] = {}
    logs: dict[str, str] = {}
    try:
        for stage in STAGES:
            runs.update(_run_stage(prefect_server, stage))
            if any(runs[d]["state_type"] != "COMPLETED" for _, d in stage):
                break  # later stages need this one's tables
        logs.update({name: _all_logs(prefect_server, run["id"]) for name, run in runs.items()})
    finally:
        stop(worker)
    for name, run in runs.items():
        print(f"{name}: {run['state_type']} in {run.get('total_run_time')}s, "
              f"{run.get('start_time')} -> {run.get('end_time')} (expected {run.get('expected_start_time')})")
    return WorkerRuns(
        server=prefect_server, runs=runs, logs=logs, worker_log=worker_log, lake=lake, synced=synced,
        sample=sample.root, password=make_url(postgres_url).password,
    )


@pytest.mark.parametrize("deployment", [d for _, d in RUNS])
def test_worker_completes_the_deployment(worker_runs: WorkerRuns, deployment: str) -> None:
    run = worker_runs.runs.get(deployment)
    assert run is not None, worker_runs.explain(deployment) + "\n(not run: an earlier deployment failed)"
    assert run["state_type"] == "COMPLETED", worker_runs.explain(deployment)


def _ingest_json(lake: Path, *args: str):
    r = subprocess.run(
        [str(BIN / "ingest"), "--lake", str(lake), "--json", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env=clean_env(),
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _sample_counts(sample: Path) -> dict[str, int]:
    import gzip
    import sqlite3

    events = 0
    for f in sorted((sample / "logs").iterdir()):
        text = gzip.decompress(f.read_bytes()).decode() if f.suffix == ".gz" else f.read_text()
        for line in text.splitlines():
            try:
                json.loads(line)
                events += 1
            except ValueError:
                pass
    with sqlite3.connect(sample / "photos.db") as con:
        (photos,) = con.execute("select count(*) from photos").fetchone()
    return {"bronze.events": events, "bronze.photos": photos}


def test_the_runs_landed_every_stage_in_the_lake(worker_runs: WorkerRuns) -> None:
    assert all(r["state_type"] == "COMPLETED" for r in worker_runs.runs.values()), "see the run tests"
    tables = {t["table"]: t for t in _ingest_json(worker_runs.lake, "ls")}
    expected = _sample_counts(worker_runs.sample)
    for table, rows in expected.items():
        assert tables[table]["rows"] == rows, (table, tables[table])
    # 40 photos plus an exact copy (deduplicated) and a truncated file (quarantined)
    assert tables["bronze.images"]["rows"] == expected["bronze.photos"]
    for built in ("silver.events", "gold.photo_features", "gold.daily_activity", "silver.user_sessions",
                  "silver.image_duplicates"):
        assert tables.get(built, {}).get("rows"), (built, sorted(tables))
    snapshots = _ingest_json(worker_runs.lake, "snapshot", "list")
    # shards-daily pinned the gold tables; the pipeline run after it changed no gold table (its
    # loads found nothing new), so it reused that snapshot and its shard set instead of a copy
    assert len(snapshots) == 1, snapshots
    assert worker_runs.runs["pipeline-daily"]["state_type"] == "COMPLETED"
    shard_sets = sorted((worker_runs.lake / "shards" / "photo_popularity").iterdir())
    assert [p.name for p in shard_sets] == sorted(s["name"] for s in snapshots)
    synced = list((worker_runs.synced / "photo_popularity").rglob("*.tar"))
    assert synced, "the pipeline run synced no shard"


def test_maintenance_compacted_every_table_and_kept_the_rows(worker_runs: WorkerRuns) -> None:
    from ingest.lake import Lake

    assert worker_runs.runs["maintenance-daily"]["state_type"] == "COMPLETED", "see the run tests"
    lake = Lake(str(worker_runs.lake))
    runs = lake.dataset("_meta.runs").to_table(columns=["command", "status", "details", "started_at"]).to_pylist()
    runs.sort(key=lambda r: r["started_at"])
    optimized = [json.loads(r["details"]) for r in runs if r["command"] == "optimize"]
    assert len(optimized) == 2 and all(r["status"] == "success" for r in runs if r["command"] in ("optimize", "vacuum"))
    weekly, daily = optimized
    assert weekly["files_removed"] > weekly["files_added"] > 0
    images = next(t for t in weekly["tables"] if t["table"] == "bronze.images")
    assert images["z_order"] == ["sha256"]
    # the weekly run left nothing small behind, but in the run log, which its own runs appended to
    assert {t["table"]: t["files_removed"] for t in daily["tables"] if t["files_removed"]}.keys() <= {"_meta.runs"}
    for t in daily["tables"]:
        assert t["files_after"] <= 1 or t["table"].startswith(("silver.", "gold.")), t
    expected = _sample_counts(worker_runs.sample)
    tables = {t["table"]: t for t in _ingest_json(worker_runs.lake, "ls")}
    assert {t: tables[t]["rows"] for t in expected} == expected


def test_the_database_password_never_reaches_prefect(worker_runs: WorkerRuns) -> None:
    secret = worker_runs.password
    assert worker_runs.runs["ingest-tables-daily"]["state_type"] == "COMPLETED", "see the run tests"
    server = worker_runs.server

    r = server.cli("deployment", "inspect", "ingest-tables/ingest-tables-daily")
    assert r.returncode == 0, r.stderr
    assert "LAKEHOUSE_SOURCE_DB_URL" in r.stdout and secret not in r.stdout + r.stderr

    for dep in server.request("POST", "/deployments/filter", {}):
        assert secret not in json.dumps(dep), dep["name"]
    for name, run in worker_runs.runs.items():
        stored = server.request("GET", f"/flow_runs/{run['id']}")
        assert secret not in json.dumps(stored["parameters"]), name
        assert secret not in json.dumps(stored), name
        assert worker_runs.logs[name] and secret not in worker_runs.logs[name], name
    tables_run = server.request("GET", f"/flow_runs/{worker_runs.runs['ingest-tables-daily']['id']}")
    assert tables_run["parameters"]["params"]["url_env"] == "LAKEHOUSE_SOURCE_DB_URL"

    # Nothing Prefect stored anywhere (task runs, events, artifacts...) holds it either.
    for db in server.home.glob("prefect.db*"):
        assert secret.encode() not in db.read_bytes(), db.name
