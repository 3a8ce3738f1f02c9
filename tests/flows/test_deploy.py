"""`prefect --no-prompt deploy --all` registers every deployment against a real local server."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("prefect server did not start: " + (home / "server.log").read_text()[-2000:])
                time.sleep(0.5)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _prefect(env, *args):
    return subprocess.run(
        [str(BIN / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_deploy_all_registers_every_deployment(prefect_server, tmp_path):
    env = {
        **prefect_server,
        "LAKEHOUSE_HOME": str(ROOT),
        "LAKEHOUSE_LOGS_SRC": str(tmp_path / "logs"),
        "LAKEHOUSE_IMAGES_SRC": str(tmp_path / "images"),
        "LAKEHOUSE_SOURCE_DB_URL": f"sqlite:///{tmp_path / 'photos.db'}",
    }
    r = _prefect(env, "work-pool", "create", "lakehouse-process", "--type", "process")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _prefect(env, "--no-prompt", "deploy", "--all")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    api = env["PREFECT_API_URL"]
    req = urllib.request.Request(
        f"{api}/deployments/filter", data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
    )
    got = {d["name"]: d for d in json.load(urllib.request.urlopen(req, timeout=30))}
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
