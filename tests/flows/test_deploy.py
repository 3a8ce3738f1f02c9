"""`prefect --no-prompt deploy --all` registers every deployment against a real local server."""

from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

ROOT = Path(__file__).resolve().parents[2]


def test_deploy_all_registers_every_deployment(prefect_server, tmp_path):
    env = {
        "LAKEHOUSE_HOME": str(ROOT),
        "LAKEHOUSE_LOGS_SRC": str(tmp_path / "logs"),
        "LAKEHOUSE_IMAGES_SRC": str(tmp_path / "images"),
    }
    r = prefect_server.cli("work-pool", "create", "lakehouse-process", "--type", "process", "--overwrite", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = prefect_server.cli("--no-prompt", "deploy", "--all", env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    got = {d["name"]: d for d in prefect_server.request("POST", "/deployments/filter", {})}
    assert set(got) == {d["name"] for d in declared}
    for d in declared:
        dep = got[d["name"]]
        assert dep["work_pool_name"] == "lakehouse-process"
        crons = [s["schedule"]["cron"] for s in dep["schedules"]]
        assert crons == [s["cron"] for s in d["schedules"]]
        assert dep["concurrency_limit"] == 1 or (dep.get("global_concurrency_limit") or {}).get("limit") == 1
    assert got["ingest-tables-daily"]["parameters"]["params"]["cursor_lag"] == 600  # late rows still load
    logs = got["ingest-logs-hourly"]["parameters"]["params"]
    assert logs["src"] == str(tmp_path / "logs")
    tables = got["ingest-tables-daily"]["parameters"]["params"]
    assert tables["url_env"] == "LAKEHOUSE_SOURCE_DB_URL" and "url" not in tables
