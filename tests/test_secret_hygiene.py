"""Secrets never reach logs: an S3 secret key and a database password in play, every log captured.

README: "Secrets are never printed in logs, errors or `--json` output". The Prefect side (flow
parameters, deployments, stored run logs) is checked in tests/flows/test_worker_runs.py; here the
Python logging of an in-process flow run (tests/flows/test_secret_logs.py) and a real `ingest` process: its stdout,
stderr (with --debug tracebacks) and the log file it writes under LAKEHOUSE_LOG_DIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.lake import Lake

pytestmark = [pytest.mark.integration, pytest.mark.s3, pytest.mark.postgres]

INGEST = str(Path(sys.executable).parent / "ingest")


def _seed(postgres_url: str, table: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    with engine.begin() as con:
        con.execute(sa.text(f"drop table if exists {table}"))
        con.execute(sa.text(f"create table {table} (id integer primary key, v text)"))
        con.execute(sa.text(f"insert into {table} select i, 'v' || i from generate_series(1, 20) i"))
    engine.dispose()


def _secrets(s3_server, postgres_url: str) -> list[str]:
    from sqlalchemy.engine import make_url

    password = make_url(postgres_url).password
    assert password and s3_server.secret_key
    return [password, s3_server.secret_key]


def _assert_absent(secrets: list[str], where: str, text: str) -> None:
    for s in secrets:
        assert s not in text, f"a secret reached {where}"


def test_a_real_run_logs_no_secret(s3_server, s3_lake: Lake, postgres_url: str, tmp_path: Path) -> None:
    """`ingest --debug run` (Prefect) with a password-protected source and an S3 lake: its
    output and its log file hold neither secret, the failing run's tracebacks included."""
    _seed(postgres_url, "hygiene_c")
    secrets = _secrets(s3_server, postgres_url)
    logs = tmp_path / "logs"
    sources = [{"kind": "tables", "url": postgres_url, "source_table": "hygiene_c", "table": "bronze.photos",
                "primary_key": ["id"]},
               {"kind": "tables", "url": postgres_url.rsplit("/", 1)[0] + "/no_such_db", "source_table": "x",
                "table": "bronze.events"}]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "PREFECT_", "AWS_"))}
    env.update(s3_server.env(), LAKEHOUSE_LOG_DIR=str(logs), LAKEHOUSE_SOURCES=json.dumps(sources),
               LAKEHOUSE_CONFIG=str(tmp_path / "none.yaml"), LAKEHOUSE_SYNC_DEST=str(tmp_path / "synced"))
    (tmp_path / "none.yaml").write_text("{}\n")
    proc = subprocess.run([INGEST, "--debug", "--lake", s3_lake.uri, "run", "--no-sync"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode != 0  # the second source cannot be read
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert files and any(p.stat().st_size for p in files), "no log file was written: the check would be empty"
    assert "no_such_db" in "".join(p.read_text(errors="replace") for p in files) + proc.stderr
    _assert_absent(secrets, "stdout", proc.stdout)
    _assert_absent(secrets, "stderr", proc.stderr)
    for p in files:
        _assert_absent(secrets, str(p), p.read_text(errors="replace"))
