"""Dockerfile and .dockerignore: what the image is built from exists and is what the project pins."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib

from stackfiles import ROOT, dockerfile_instructions, load_compose

INSTRUCTIONS = dockerfile_instructions()


def ops(name: str) -> list[str]:
    return [i.args for i in INSTRUCTIONS if i.op == name]


def env_vars() -> dict[str, str]:
    out: dict[str, str] = {}
    for args in ops("ENV"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            out[key] = value
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
    runs = ops("RUN")
    copies = ops("COPY")
    lock_copy = next(i for i, c in enumerate(INSTRUCTIONS) if c.op == "COPY" and "requirements.lock" in c.args)
    lock_install = next(i for i, c in enumerate(INSTRUCTIONS)
                        if c.op == "RUN" and "uv pip install" in c.args and "-r requirements.lock" in c.args)
    project_copy = next(i for i, c in enumerate(INSTRUCTIONS) if c.op == "COPY" and c.args.split()[0] == ".")
    assert lock_copy < lock_install < project_copy, "dependencies must be installed from the lock before the source is copied"
    assert any("--no-deps" in r and "uv pip install" in r for r in runs), "the project must not re-resolve dependencies"
    uv_pin = re.search(r"UV_VERSION=([\d.]+)", " ".join(ops("ARG")))
    makefile_pin = re.search(r"uv==([\d.]+)", (ROOT / "Makefile").read_text())
    assert uv_pin and makefile_pin and uv_pin.group(1) == makefile_pin.group(1)
    assert copies


def test_copy_sources_exist_and_reach_the_build_context() -> None:
    for args in ops("COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"COPY source {src} does not exist"
            if src != ".":
                assert not dockerignore_excludes(src), f".dockerignore drops COPY source {src}"


def test_context_keeps_what_the_image_runs_and_drops_local_state() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["requirements.lock", "pyproject.toml", "prefect.yaml", "dbt_project", "infra/docker/warm_spark_jars.py"]
    needed += [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    compose = load_compose()
    for service in compose.services:
        needed += [a for a in compose.command(service) if re.match(r"^[\w./-]+\.(py|sh)$", a)]
    for rel in needed:
        assert (ROOT / rel).exists(), rel
        assert not dockerignore_excludes(rel), f".dockerignore drops {rel}, which the image needs"
    for local_state in (".venv", ".git", "lake", "sample_data", ".env", "ingest/__pycache__", "lakehouse_ingest.egg-info"):
        assert dockerignore_excludes(local_state), f"{local_state} would be sent to the Docker daemon"


def test_runs_as_a_non_root_user_created_in_the_image() -> None:
    users = ops("USER")
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, c in enumerate(INSTRUCTIONS) if c.op == "USER")
    assert not any(c.op == "RUN" for c in INSTRUCTIONS[last_user:]), "RUN after USER would need root"
    assert any(f"useradd" in r and users[-1] in r for r in ops("RUN"))
    assert any(f"chown -R {users[-1]}" in r for r in ops("RUN")), "the app user must own /app and the jar cache"


def test_runtime_paths_match_the_compose_env() -> None:
    env = env_vars()
    compose_env = load_compose().env("prefect-worker")
    assert env["LAKEHOUSE_HOME"] == ops("WORKDIR")[-1] == compose_env["LAKEHOUSE_HOME"]
    # Jars warmed at build time are where the driver looks at run time.
    assert env["LAKEHOUSE_IVY_DIR"] == compose_env["LAKEHOUSE_IVY_DIR"]
    assert any(r.startswith("python infra/docker/warm_spark_jars.py") for r in ops("RUN"))


def test_default_command_is_the_compose_worker() -> None:
    import json

    (cmd,) = ops("CMD")
    assert json.loads(cmd) == load_compose().command("prefect-worker")
