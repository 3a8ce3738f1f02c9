"""README's "Running it as a service", run as written.

The bash block is read from README.md and run by bash in a directory laid out like the project
after `make run` (`.venv`, `prefect.yaml`, `sample_data/`), on its own Prefect server. Only the
server's start and its address differ (the test starts the server on a free port); every other
line runs verbatim: the work pool, `deploy --all` with the README's variables, a worker started
with the database URL in its environment, and `prefect deployment run`. The run must complete,
land the sample photos in `./lake`, and the URL must appear nowhere in Prefect.
(tests/flows/test_worker_runs.py runs every deployment, with a password-protected PostgreSQL.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from prefect_procs import BIN, ROOT, clean_env, running_server

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

SERVER_START = ".venv/bin/prefect server start &"
API_EXPORT = "export PREFECT_API_URL=http://127.0.0.1:4200/api"


def readme_service_block() -> str:
    """The first bash block of README's "Running it as a service" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Running it as a service\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "README's 'Running it as a service' has no bash block"
    return match.group(1)


def script_for(api_url: str) -> str:
    """The README block with the server's start dropped and its address replaced."""
    lines, replaced = [], set()
    for line in readme_service_block().splitlines():
        if line.startswith(SERVER_START):
            replaced.add("start")
            continue
        if line.startswith(API_EXPORT):
            replaced.add("api")
            line = f"export PREFECT_API_URL={api_url}"
        lines.append(line)
    assert replaced == {"start", "api"}, "README changed how the server starts: update this test with it"
    return "set -e\n" + "\n".join(lines) + "\n"


def test_the_readme_service_block_runs_as_written(tmp_path: Path) -> None:
    from ingest.lake import Lake
    from ingest.sample import generate_sample

    home = tmp_path / "project"
    home.mkdir()
    (home / ".venv").symlink_to(BIN.parent)
    (home / "prefect.yaml").write_text((ROOT / "prefect.yaml").read_text())
    sample = generate_sample(home / "sample_data")  # what `make run` generates
    with sqlite3.connect(sample.db_path) as con:
        (photos,) = con.execute("select count(*) from photos").fetchone()
    db_url = f"sqlite:///{sample.db_path}"

    (tmp_path / "prefect").mkdir()
    with running_server(tmp_path / "prefect") as server:
        env = {k: v for k, v in clean_env(**server.env).items() if k != "LAKEHOUSE_CONFIG"}  # ./lakehouse.yaml: none
        env["PREFECT_WORKER_QUERY_SECONDS"] = "1"  # pick the run up at once (polling only)
        log = tmp_path / "readme.log"
        with log.open("wb") as out:
            shell = subprocess.Popen(
                ["bash", "-c", script_for(server.api)], cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # the worker it leaves running is in this process group
            )
        try:
            assert shell.wait(timeout=600) == 0, log.read_text(errors="replace")[-4000:]
            # `prefect deployment run` says "Created flow run '<name>'." then "└── UUID: <id>"
            created = re.search(r"Created flow run .*?UUID: ([0-9a-f-]{36})", log.read_text(errors="replace"), re.S)
            assert created, log.read_text(errors="replace")[-4000:]
            deadline, run = time.monotonic() + 600, {}
            while time.monotonic() < deadline:
                run = server.request("GET", f"/flow_runs/{created.group(1)}")
                if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
                time.sleep(1)
            assert run.get("state_type") == "COMPLETED", (run.get("state"), log.read_text(errors="replace")[-4000:])
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGTERM)  # the worker started in the background
            time.sleep(2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGKILL)

        # the worker ran in the project directory (LAKEHOUSE_HOME): the lake is ./lake
        lake = Lake(str(home / "lake"))
        assert lake.delta_table("bronze.photos").to_pyarrow_table().num_rows == photos

        # the URL (and so any password in it) stayed in the worker's environment
        inspect = server.cli("deployment", "inspect", "ingest-tables/ingest-tables-daily")
        assert inspect.returncode == 0 and "LAKEHOUSE_SOURCE_DB_URL" in inspect.stdout, inspect.stderr
        stored = json.dumps([server.request("POST", "/deployments/filter", {}), run])
        for text in (inspect.stdout, stored):
            assert str(sample.db_path) not in text and db_url not in text
