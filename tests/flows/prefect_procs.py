"""Real Prefect processes for the flow tests: a server, the `prefect` CLI, a worker."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Variables of this shell that would point a subprocess at another Prefect or another lake.
_FOREIGN = ("PREFECT_", "LAKEHOUSE_")


@dataclass(frozen=True)
class PrefectServer:
    """A real `prefect server start` on a loopback port, its database and PREFECT_HOME in tmp."""

    env: dict[str, str]
    home: Path

    @property
    def api(self) -> str:
        return self.env["PREFECT_API_URL"]

    def request(self, method: str, path: str, body: dict | None = None):
        """The REST API as any client sees it (JSON in, JSON out)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.api}{path}", data=data, headers={"Content-Type": "application/json"}, method=method
        )
        for attempt in range(6):
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return json.load(resp)
            except urllib.error.HTTPError as exc:
                # 503/429 say "try again" (SQLite busy on a loaded machine): Prefect's own client
                # retries them too (PREFECT_CLIENT_RETRY_EXTRA_CODES aside, 429/502/503 by default)
                if exc.code in (429, 502, 503) and attempt < 5:
                    time.sleep(1 + attempt)
                    continue
                raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')[:2000]}") from None

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
        """The `prefect` command, run from the project root as README shows."""
        return subprocess.run(
            [str(BIN / "prefect"), *args], env={**self.env, **(env or {})}, cwd=ROOT,
            capture_output=True, text=True, timeout=timeout,
        )


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without PREFECT_*/LAKEHOUSE_* values, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN) or k == "LAKEHOUSE_IVY_DIR"}
    return {**base, "LAKEHOUSE_CONFIG": os.devnull, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen:
    """A long-running command in its own process group, output to ``log``."""
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group (a worker's flow-run subprocesses too), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


@contextlib.contextmanager
def running_server(home: Path) -> Iterator[PrefectServer]:
    """A real `prefect server start` on a free loopback port, SQLite and PREFECT_HOME in ``home``."""
    port = free_port()
    env = clean_env(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
    )
    log = home / "server.log"
    proc = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env, log=log)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("prefect server did not start: " + log.read_text(errors="replace")[-2000:])
                time.sleep(0.5)
        # clients (deploy, worker) need no database: only the server has one
        client_env = {k: v for k, v in env.items() if k != "PREFECT_API_DATABASE_CONNECTION_URL"}
        yield PrefectServer(env=client_env, home=home)
    finally:
        stop(proc)
