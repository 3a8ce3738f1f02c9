"""The compose configuration, run against the non-Docker stand-ins.

Each test takes a service's environment from docker-compose.yml and changes only what Docker
would provide - service host:port (minio -> SeaweedFS, postgres -> a local PostgreSQL), the S3
keys of the stand-in and the /data/sources volume - then runs the same entry points the
containers run: the bucket job, the Postgres init script, the seed job, the worker's ingest of
every configured source, Prefect's database migrations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from stackfiles import (
    ROOT,
    Compose,
    clean_environ,
    load_compose,
    settings_for_env,
    start_process,
    stop_process,
    wait_until,
)

from ingest.lake import Lake

pytestmark = pytest.mark.integration


def standin_env(env: dict[str, str], *, s3=None, pg_hostport: str | None = None, sources: Path | None = None) -> dict[str, str]:
    """``env`` with Docker-provided endpoints swapped for the local stand-ins."""
    out = {}
    for key, value in env.items():
        if pg_hostport:
            value = value.replace("@postgres:5432/", f"@{pg_hostport}/")
        if sources is not None:
            value = value.replace("/data/sources", str(sources))
        out[key] = value
    if s3 is not None:
        assert out["AWS_ENDPOINT_URL"] == "http://minio:9000"
        out.update(s3.env())
    return out


def run_entry(args: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, env=clean_environ(env), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def stack() -> Compose:
    return load_compose()


@pytest.fixture(scope="module")
def pg_admin(postgres_url: str) -> dict[str, str]:
    """libpq variables for the stand-in server's superuser (what the postgres image's entrypoint has)."""
    url = make_url(postgres_url)
    return {"PGHOST": url.host, "PGPORT": str(url.port), "PGPASSWORD": url.password,
            "POSTGRES_USER": url.username, "PATH": os.environ["PATH"]}


@pytest.fixture(scope="module")
def initialised_pg(stack: Compose, pg_admin: dict[str, str]) -> str:
    """Run infra/compose/postgres-init.sh with the postgres service's env, twice (idempotent)."""
    env = {**stack.env("postgres"), **pg_admin}
    env.pop("POSTGRES_PASSWORD", None)
    for _ in range(2):
        run_entry(["bash", str(ROOT / "infra/compose/postgres-init.sh")], env)
    return f"{pg_admin['PGHOST']}:{pg_admin['PGPORT']}"


# -- Postgres -----------------------------------------------------------------------------------
@pytest.mark.postgres
def test_init_script_creates_both_databases_with_their_owners(stack: Compose, initialised_pg: str) -> None:
    import psycopg

    pg = stack.env("postgres")
    for db, user, password in (
        (pg["SOURCES_DB"], pg["SOURCES_DB_USER"], pg["SOURCES_DB_PASSWORD"]),
        (pg["PREFECT_DB"], pg["PREFECT_DB_USER"], pg["PREFECT_DB_PASSWORD"]),
    ):
        host, port = initialised_pg.split(":")
        with psycopg.connect(host=host, port=int(port), user=user, password=password, dbname=db, autocommit=True) as con:
            owner = con.execute("select pg_get_userbyid(datdba) from pg_database where datname = current_database()").fetchone()[0]
            assert owner == user
            con.execute("create table _probe (id int)")
            con.execute("drop table _probe")
    with psycopg.connect(host=host, port=int(port), user=pg["PREFECT_DB_USER"], password=pg["PREFECT_DB_PASSWORD"], dbname=pg["PREFECT_DB"]) as con:
        assert con.execute("select 1 from pg_extension where extname = 'pg_trgm'").fetchone()
    # The source role cannot reach Prefect's database's objects: databases are separate owners.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=host, port=int(port), user=pg["SOURCES_DB_USER"], password="wrong", dbname=pg["SOURCES_DB"])


@pytest.mark.postgres
@pytest.mark.prefect
def test_prefect_server_on_postgres_and_the_deploy_job(
    stack: Compose, initialised_pg: str, free_ports, tmp_path: Path
) -> None:
    """prefect-server with its compose database URL (the init script's database), then the
    prefect-deploy job's exact command registers the pool and every prefect.yaml deployment."""
    import urllib.request

    import psycopg

    (port,) = free_ports(1)
    server_cmd = stack.command("prefect-server")
    server_cmd[server_cmd.index("--host") + 1] = "127.0.0.1"
    server_cmd[server_cmd.index("--port") + 1] = str(port)
    env = standin_env(stack.env("prefect-server"), pg_hostport=initialised_pg)
    env.update({"PREFECT_HOME": str(tmp_path / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_SERVER_API_HOST": "127.0.0.1",
                "PREFECT_SERVER_API_PORT": str(port)})
    log = tmp_path / "server.log"
    server = start_process([str(Path(sys.executable).parent / server_cmd[0]), *server_cmd[1:]], log, clean_environ(env))
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: urllib.request.urlopen(f"{api}/health", timeout=2), "prefect server", server, log)

        url = make_url(env["PREFECT_API_DATABASE_CONNECTION_URL"])
        with psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database) as con:
            tables = {r[0] for r in con.execute("select tablename from pg_tables where schemaname = 'public'")}
        assert {"flow", "flow_run", "deployment", "work_pool"} <= tables, "Prefect did not migrate its Postgres DB"

        deploy_env = standin_env(stack.env("prefect-deploy"), pg_hostport=initialised_pg)
        deploy_env.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client"),
                           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        run_entry(stack.command("prefect-deploy"), deploy_env, timeout=600)

        def post(path: str) -> list[dict]:
            req = urllib.request.Request(f"{api}{path}", data=b"{}", headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.load(resp)

        pools = {p["name"]: p["type"] for p in post("/work_pools/filter")}
        pool = stack.command("prefect-worker")[stack.command("prefect-worker").index("--pool") + 1]
        assert pools.get(pool) == "process"
        deployments = post("/deployments/filter")
        import yaml

        declared = {d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
        assert {d["name"] for d in deployments} == declared
        assert all(d["work_pool_name"] == pool for d in deployments)
        by_name = {d["name"]: d for d in deployments}
        if "ingest-logs-hourly" in by_name:  # parameters templated from the compose env
            assert by_name["ingest-logs-hourly"]["parameters"]["params"]["src"] == deploy_env["LAKEHOUSE_LOGS_SRC"]
        # the deploy job's environment holds the source DB URL; the deployments only name it
        secret = stack.env("postgres")["SOURCES_DB_PASSWORD"]
        assert secret in deploy_env["LAKEHOUSE_SOURCE_DB_URL"] and secret not in json.dumps(deployments)
    finally:
        stop_process(server)


# -- S3 + worker ----------------------------------------------------------------------------------
@pytest.mark.s3
@pytest.mark.postgres
def test_bucket_job_seed_job_and_worker_ingest_on_standins(
    stack: Compose, s3_server, initialised_pg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = tmp_path / "sources"

    # 1. minio-init: the bucket job, as the container runs it.
    job_env = standin_env(stack.env("minio-init"), s3=s3_server)
    out = json.loads(run_entry([sys.executable, *stack.command("minio-init")[1:]], job_env).stdout)
    assert out["bucket"] == "lake" and out["lake"] == "s3://lake/warehouse"
    assert out["versioning"] == "Enabled"
    assert "lake" in {b["Name"] for b in s3_server.client().list_buckets()["Buckets"]}
    again = json.loads(run_entry([sys.executable, *stack.command("minio-init")[1:]], job_env).stdout)
    assert again["created"] is False

    # 2. seed-sources: sample files on the volume, photos in the source database.
    seed_env = standin_env(stack.env("seed-sources"), pg_hostport=initialised_pg, sources=sources)
    seeded = json.loads(run_entry([sys.executable, *stack.command("seed-sources")[1:]], seed_env).stdout)
    assert seeded["rows"] > 0 and (sources / "images").is_dir() and (sources / "logs").is_dir()

    # 3. prefect-worker: its Settings, every configured source ingested into the S3 lake.
    worker_env = standin_env(stack.env("prefect-worker"), s3=s3_server, pg_hostport=initialised_pg, sources=sources)
    settings = settings_for_env(worker_env, monkeypatch)
    lake = Lake.from_settings(settings)
    assert lake.uri == "s3://lake/warehouse" and lake.s3.endpoint_url == s3_server.endpoint_url
    from ingest.pipeline import ingest_source

    written = {}
    for source in settings.sources:
        res = ingest_source(lake, source)
        written[source.table] = res
    assert set(written) == {"bronze.images", "bronze.events", "bronze.photos"}
    con = lake.duckdb()
    photos = con.execute("select count(*) from bronze.photos").fetchone()[0]
    assert photos == seeded["rows"]
    assert con.execute("select count(*) from bronze.images").fetchone()[0] > 0
    assert con.execute("select count(*) from bronze.events").fetchone()[0] > 0
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket="lake", Prefix="warehouse/bronze/photos/")["Contents"]]
    assert any("/_delta_log/" in k for k in keys)
