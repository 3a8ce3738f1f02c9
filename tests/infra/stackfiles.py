"""Readers for the stack files (docker-compose.yml, Dockerfile, env files, requirements.lock).

They resolve a service's environment the way Compose does (env_file, then ``environment``,
with ``${VAR:-default}`` interpolation), so tests check what a container would really see.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
PROJECT_IMAGE_SERVICES = (
    "minio-init",
    "seed-sources",
    "prefect-deploy",
    "prefect-worker",
    "spark-master",
    "spark-worker",
)

_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, shell: Mapping[str, str]) -> str:
    """Compose's variable substitution: ${X}, ${X:-default}, ${X-default}, ${X:?err}, $X, $$."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        val = shell.get(name)
        if op in (":-", ":?") and not val:
            if op == ":?":
                raise ValueError(f"compose requires ${name}: {arg}")
            return arg
        if op in ("-", "?") and val is None:
            if op == "?":
                raise ValueError(f"compose requires ${name}: {arg}")
            return arg
        return val or ""

    return _VAR.sub(sub, value)


def _interpolate_tree(node, shell: Mapping[str, str]):
    if isinstance(node, str):
        return interpolate(node, shell)
    if isinstance(node, list):
        return [_interpolate_tree(n, shell) for n in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, shell) for k, v in node.items()}
    return node


@dataclass
class Compose:
    raw: dict
    shell: dict[str, str]

    @property
    def services(self) -> dict[str, dict]:
        return _interpolate_tree(self.raw["services"], self.shell)

    def service(self, name: str) -> dict:
        return self.services[name]

    def env(self, name: str) -> dict[str, str]:
        """The container environment of a service: env_file values, overridden by ``environment``."""
        svc = self.service(name)
        env: dict[str, str] = {}
        files = svc.get("env_file") or []
        for f in [files] if isinstance(files, str) else files:
            path = f if isinstance(f, str) else f["path"]
            env.update({k: v or "" for k, v in dotenv_values(ROOT / path, interpolate=False).items()})
        environment = svc.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        env.update({k: "" if v is None else str(v) for k, v in environment.items()})
        return env

    def command(self, name: str) -> list[str]:
        cmd = self.service(name).get("command")
        return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def example_env() -> dict[str, str]:
    """``.env.example`` filled in as its header says: every empty password set (test values)."""
    values = dotenv_values(ENV_EXAMPLE, interpolate=False)
    return {k: v or f"test-{k.lower().replace('_', '-')}-0123" for k, v in values.items()}


def load_compose(shell: Mapping[str, str] | None = None, *, with_example: bool = True) -> Compose:
    """docker-compose.yml with the filled-in ``.env.example`` (unless not ``with_example``),
    ``shell`` overriding it."""
    base = example_env() if with_example else {}
    return Compose(yaml.safe_load(COMPOSE_FILE.read_text()), {**base, **(shell or {})})


def lock_versions() -> dict[str, str]:
    """Package -> pinned version from requirements.lock."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", line)
        if m:
            pins[re.sub(r"\[.*\]", "", m.group(1)).lower().replace("_", "-")] = m.group(2)
    return pins


@dataclass
class Instruction:
    op: str
    args: tuple[str, ...]
    json: bool

    @property
    def text(self) -> str:
        return " ".join(self.args)


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Dockerfile instructions as BuildKit's own parser reads them (the ``dockerfile`` package)."""
    import dockerfile

    return [Instruction(c.cmd.upper(), tuple(c.value), bool(c.json)) for c in dockerfile.parse_file(str(path))]


# -- running the stack's entry points locally ----------------------------------------------------
_STACK_PREFIXES = ("LAKEHOUSE_", "AWS_", "PREFECT_")


def clean_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any LAKEHOUSE_/AWS_/PREFECT_ value, plus ``extra``:
    what a container with ``extra`` as its environment sees (no lakehouse.yaml either)."""
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(_STACK_PREFIXES)}
    return {**base, "LAKEHOUSE_CONFIG": os.devnull, **extra}  # an empty settings file


def settings_for_env(env: Mapping[str, str], monkeypatch):
    """``Settings()`` exactly as a container whose environment is ``env`` builds them."""
    import os

    from ingest.settings import Settings

    for key in list(os.environ):
        if key.startswith(_STACK_PREFIXES):
            monkeypatch.delenv(key)
    for key, value in clean_environ(env).items():
        monkeypatch.setenv(key, value)
    return Settings()


def start_process(cmd: list[str], log: Path, env: Mapping[str, str]):
    """A server in its own process group, output to ``log``."""
    import subprocess

    with log.open("wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True)


def wait_until(check, what: str, proc, log: Path, timeout: float = 180) -> None:
    """Poll ``check()`` until true; fail with the log tail if ``proc`` dies or time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")


def stop_process(proc, timeout: float = 30) -> None:
    """SIGTERM the process group, SIGKILL if it lingers."""
    import os
    import signal
    import subprocess

    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
