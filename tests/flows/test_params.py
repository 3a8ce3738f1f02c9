"""Flow parameters are stored and shown by Prefect, so they reference credentials, never carry them."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from flows.params import TablesParams
from ingest.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
KW = {"source_table": "photos", "table": "bronze.photos"}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://reader:s3cret@db:5432/app",
        "mysql://r:s3cret@db/app",
        "postgresql://reader@db/app?password=s3cret",
    ],
)
def test_a_url_with_a_password_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="url_env") as err:
        TablesParams(url=url, **KW)
    assert "s3c" not in str(err.value)  # pydantic would echo (a truncated) input otherwise


def test_a_url_without_a_password_is_kept() -> None:
    for url in ("sqlite:////data/photos.db", "postgresql+psycopg://reader@db/app"):
        assert TablesParams(url=url, **KW).resolved_url() == url


def test_url_env_is_read_from_the_worker_environment_at_run_time(monkeypatch) -> None:
    params = TablesParams(url_env="LAKEHOUSE_SOURCE_DB_URL", **KW)
    assert "s3cret" not in params.model_dump_json()
    monkeypatch.setenv("LAKEHOUSE_SOURCE_DB_URL", "postgresql://reader:s3cret@db/app")
    assert params.resolved_url() == "postgresql://reader:s3cret@db/app"
    monkeypatch.delenv("LAKEHOUSE_SOURCE_DB_URL")
    with pytest.raises(ConfigError, match="LAKEHOUSE_SOURCE_DB_URL is not set"):
        params.resolved_url()


@pytest.mark.parametrize("given", [{}, {"url": "sqlite:///x.db", "url_env": "X"}])
def test_exactly_one_of_url_and_url_env(given: dict) -> None:
    with pytest.raises(ValidationError, match="exactly one of url"):
        TablesParams(**given, **KW)


def test_deployments_name_the_variable_that_holds_the_url() -> None:
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    tables = [d for d in deployments if d["entrypoint"].endswith("ingest_tables_flow")]
    assert tables
    for dep in tables:
        params = TablesParams(**dep["parameters"]["params"])
        assert params.url is None and params.url_env == "LAKEHOUSE_SOURCE_DB_URL"


def test_no_flow_module_shadows_a_top_level_module(tmp_path) -> None:
    """A file-path entrypoint puts flows/ on sys.path: flows/ingest.py then hid the ingest package."""
    names = [mod.name for mod in pkgutil.iter_modules([str(ROOT / "flows")])]
    assert "params" in names
    # what a worker's interpreter can import (not pytest's sys.path, which holds tests/)
    found = subprocess.run(
        [sys.executable, "-c", "import importlib.util, sys\n"
         "print(' '.join(n for n in sys.argv[1:] if n in sys.stdlib_module_names or importlib.util.find_spec(n)))",
         *names],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert found == [], f"flows/ modules shadow top-level modules: {found}"


def test_every_entrypoint_is_a_module_path_to_a_flow() -> None:
    from prefect import Flow
    from prefect.utilities.importtools import import_object

    for dep in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]:
        entrypoint = dep["entrypoint"]
        assert ":" not in entrypoint and not entrypoint.endswith(".py"), entrypoint
        assert isinstance(import_object(entrypoint), Flow), entrypoint


def test_fanout_parameters_are_checked() -> None:
    from flows.params import ImagesParams

    assert ImagesParams(src="/x").partitions == 1  # one task, as before, unless asked
    with pytest.raises(ValidationError, match="only apply with task_runner='dask'"):
        ImagesParams(src="/x", partitions=2, dask_address="tcp://sched:8786")
    with pytest.raises(ValidationError, match="leave it unset with dask_address"):
        ImagesParams(src="/x", partitions=2, task_runner="dask", dask_address="tcp://s:8786", dask_workers=2)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        ImagesParams(src="/x", partitions=0)
