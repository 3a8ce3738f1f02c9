"""Helpers for the source-ingestion tests: the sample sources, the CLI as a subprocess (so a run
can be killed with SIGKILL), and reading tables back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from ingest.lake import Lake

INGEST = str(Path(sys.executable).parent / "ingest")


@pytest.fixture
def sample(tmp_path: Path):
    from ingest.sample import generate_sample

    return generate_sample(tmp_path / "src")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def new_lake(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Lake]:
    """Makes lakes by name, on local disk or (the ``s3`` param) in one fresh SeaweedFS bucket:
    the same test then proves a guarantee on both kinds of lake."""
    if request.param == "local":
        return lambda name: Lake(str(tmp_path / name))
    server = request.getfixturevalue("s3_server")
    bucket = server.make_bucket()
    return lambda name: Lake(f"s3://{bucket}/{name}", s3=server.s3_settings())


def cli_env(lake: Lake, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAKEHOUSE_"))}
    if lake.is_s3:
        s3 = lake.s3
        env.update(
            AWS_ENDPOINT_URL=s3.endpoint_url or "",
            AWS_ACCESS_KEY_ID=s3.access_key_id.get_secret_value() if s3.access_key_id else "",
            AWS_SECRET_ACCESS_KEY=s3.secret_access_key.get_secret_value() if s3.secret_access_key else "",
            AWS_REGION=s3.region,
        )
    env.update(extra)
    return env


def run_cli(lake: Lake, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [INGEST, "--lake", lake.uri, *args], capture_output=True, text=True, env=cli_env(lake, **env), timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ingest {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def run_json(lake: Lake, *args: str, **env: str) -> dict[str, Any]:
    proc = run_cli(lake, "--json", *args, **env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def spawn_cli(lake: Lake, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [INGEST, "--lake", lake.uri, "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=cli_env(lake, **env), start_new_session=True,
    )


def _count_files(lake: Lake, folder: str, suffix: str) -> int:
    """Files ending in ``suffix`` directly in ``folder`` (a local path or an s3:// URI)."""
    import pyarrow.fs as pafs

    fs = lake.pyarrow_filesystem()
    infos = fs.get_file_info(pafs.FileSelector(lake.fs_path(folder), allow_not_found=True))
    return sum(1 for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix))


def commits(lake: Lake, table: str) -> int:
    """Number of commits in a table's log (local or S3)."""
    return _count_files(lake, f"{lake.table_uri(table)}/_delta_log", ".json")


def data_files(lake: Lake, table: str) -> int:
    """Number of parquet files in an unpartitioned table's folder, committed or not (local or S3)."""
    return _count_files(lake, lake.table_uri(table), ".parquet")


def kill_after_commits(proc: subprocess.Popen, lake: Lake, table: str, n: int, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` once ``table`` has at least ``n`` commits; False if it finished first."""
    return kill_when(proc, lambda: commits(lake, table) >= n, f"{table} never reached {n} commits", timeout=timeout)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise AssertionError(what)


def read(lake: Lake, table: str, columns: list[str] | None = None, *, version: int | None = None) -> list[dict]:
    t = lake.delta_table(table, version=version).to_pyarrow_table(columns=columns)
    return t.to_pylist()


def sorted_rows(lake: Lake, table: str, columns: list[str]) -> list[tuple]:
    return sorted(tuple(r[c] for c in columns) for r in read(lake, table, columns))
