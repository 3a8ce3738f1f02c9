"""`prefect --no-prompt deploy --all` registers every deployment against a real local server."""

from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

ROOT = Path(__file__).resolve().parents[2]


def _deploy(prefect_server, tmp_path, *which: str) -> None:
    """README's steps: create the work pool, then `prefect --no-prompt deploy` (``--all`` or ``--name N``)."""
    env = {
        "LAKEHOUSE_HOME": str(ROOT),
        "LAKEHOUSE_LOGS_SRC": str(tmp_path / "logs"),
        "LAKEHOUSE_IMAGES_SRC": str(tmp_path / "images"),
    }
    r = prefect_server.cli("work-pool", "create", "lakehouse-process", "--type", "process", "--overwrite", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = prefect_server.cli("--no-prompt", "deploy", *which, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_deploy_all_registers_every_deployment(prefect_server, tmp_path):
    _deploy(prefect_server, tmp_path, "--all")

    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    got = {d["name"]: d for d in prefect_server.request("POST", "/deployments/filter", {})}
    assert set(got) == {d["name"] for d in declared}
    for d in declared:
        dep = got[d["name"]]
        assert dep["work_pool_name"] == "lakehouse-process"
        crons = [s["schedule"]["cron"] for s in dep["schedules"]]
        assert crons == [s["cron"] for s in d["schedules"]]
        assert dep["concurrency_limit"] == 1 or (dep.get("global_concurrency_limit") or {}).get("limit") == 1
        assert (dep.get("concurrency_options") or {}).get("collision_strategy") == "ENQUEUE", d["name"]
    assert got["ingest-tables-daily"]["parameters"]["params"]["cursor_lag"] == 600  # late rows still load
    logs = got["ingest-logs-hourly"]["parameters"]["params"]
    assert logs["src"] == str(tmp_path / "logs")
    tables = got["ingest-tables-daily"]["parameters"]["params"]
    assert tables["url_env"] == "LAKEHOUSE_SOURCE_DB_URL" and "url" not in tables


def test_a_second_run_of_a_deployment_waits_while_the_first_runs(prefect_server, tmp_path):
    """prefect.yaml's `limit: 1, collision_strategy: ENQUEUE` as the server applies it: a second
    run that would start while the first runs is queued (AwaitingConcurrencySlot), not cancelled,
    and gets the slot once the first has finished."""
    _deploy(prefect_server, tmp_path, "--name", "ingest-logs-hourly")
    dep = prefect_server.request("GET", "/deployments/name/ingest-logs/ingest-logs-hourly")
    assert (dep.get("concurrency_options") or {}).get("collision_strategy") == "ENQUEUE", dep.get("concurrency_options")

    def set_state(run: dict, state_type: str, force: bool = False) -> dict:
        return prefect_server.request("POST", f"/flow_runs/{run['id']}/set_state",
                                      {"state": {"type": state_type}, "force": force})

    first = prefect_server.request("POST", f"/deployments/{dep['id']}/create_flow_run", {})
    second = prefect_server.request("POST", f"/deployments/{dep['id']}/create_flow_run", {})
    try:
        # what a worker does: propose PENDING (the server takes the deployment's slot), then RUNNING
        assert set_state(first, "PENDING")["status"] == "ACCEPT"
        assert set_state(first, "RUNNING")["status"] == "ACCEPT"
        queued = set_state(second, "PENDING")
        assert queued["status"] == "REJECT", queued
        assert (queued["state"]["type"], queued["state"]["name"]) == ("SCHEDULED", "AwaitingConcurrencySlot"), queued
        assert set_state(first, "COMPLETED")["status"] == "ACCEPT"  # the slot is free again
        assert set_state(second, "PENDING")["status"] == "ACCEPT"
    finally:
        # leave nothing for the worker tests to pick up on this shared server
        for run in (first, second):
            set_state(run, "CANCELLED", force=True)
