"""Flow parameters as pydantic models (Prefect validates them and shows them in the UI)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingest.errors import ConfigError
from ingest.settings import CURSOR_LAG_DEFAULT, CursorLag, Settings, TableSource, load_settings


def _has_password(url: str) -> bool:
    """Whether a SQLAlchemy URL carries a password (in its user info or as a query argument)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except ArgumentError:
        return False  # not a URL at all: the ingest says so when it runs
    return bool(u.password) or any(k.lower() in ("password", "passwd") for k in u.query)


class LakeParams(BaseModel):
    """Which lake to use; None means the deployment's environment/`lakehouse.yaml`."""

    lake: str | None = Field(default=None, description="Lake root: a directory or s3://bucket/prefix")

    def settings(self) -> Settings:
        return load_settings(lake=self.lake)


class FanoutParams(BaseModel):
    """How a source is split: ``partitions`` groups of files (or key ranges of a table), one task
    each, run by a thread pool in the flow's process (``local``) or by Dask worker processes
    (``dask``) - a local cluster started for the run, or the scheduler at ``dask_address`` whose
    workers see the same lake and source with the same credentials in their environment."""

    partitions: int = Field(
        default=1, ge=1, le=4096, description="Groups of source files, or key ranges of a table, one task each"
    )
    task_runner: Literal["local", "dask"] = Field(
        default="local", description="local: threads in the flow's process; dask: Dask worker processes"
    )
    dask_address: str | None = Field(
        default=None, description="Scheduler of an existing Dask cluster (tcp://host:8786); None starts a local one"
    )
    dask_workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Worker processes of the local cluster; None: one per partition, at most one per CPU",
    )

    @model_validator(mode="after")
    def _dask_only(self) -> FanoutParams:
        if self.task_runner != "dask" and (self.dask_address is not None or self.dask_workers is not None):
            raise ValueError("dask_address and dask_workers only apply with task_runner='dask'")
        if self.dask_address is not None and self.dask_workers is not None:
            raise ValueError("dask_workers sizes a local cluster: leave it unset with dask_address")
        return self


class ImagesParams(LakeParams, FanoutParams):
    src: str
    table: str = "bronze.images"


class LogsParams(LakeParams, FanoutParams):
    src: str
    table: str = "bronze.events"
    format: Literal["jsonl", "text"] = "jsonl"
    pattern: str | None = None


class TablesParams(LakeParams, FanoutParams):
    """A database table, split into ``partitions`` key ranges of its primary key (or cursor) when
    asked; the URL comes from the worker's environment whenever it holds a password.

    Prefect stores flow-run parameters and shows them in the UI, the API and
    `prefect deployment inspect`, so a parameter never carries a credential: ``url_env`` names
    the variable the worker resolves at run time, and a ``url`` with a password is refused.
    """

    model_config = ConfigDict(hide_input_in_errors=True)  # a refused URL is not echoed in the error

    url: str | None = Field(default=None, description="Database URL without a password (SQLite, peer or IAM auth)")
    url_env: str | None = Field(
        default=None,
        description="Environment variable on the worker that holds the database URL (with its password)",
    )
    source_table: str
    table: str
    primary_key: list[str] = Field(default_factory=list)
    cursor: str | None = None
    cursor_lag: CursorLag = CURSOR_LAG_DEFAULT

    @model_validator(mode="after")
    def _reference_not_credential(self) -> TablesParams:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url (no password) and url_env (a variable that holds the URL)")
        if self.url is not None and _has_password(self.url):
            raise ValueError(
                "url carries a password, which Prefect would store and show: put the URL in an "
                "environment variable of the worker and pass its name as url_env"
            )
        return self

    def source(self) -> TableSource:
        """The source, with its URL resolved here (on the worker that runs this)."""
        return TableSource(
            url=self.resolved_url(),
            source_table=self.source_table,
            table=self.table,
            primary_key=self.primary_key,
            cursor=self.cursor,
            cursor_lag=self.cursor_lag,
        )

    def resolved_url(self) -> str:
        """The database URL, read from the worker's environment at run time when ``url_env`` is set."""
        if self.url_env is None:
            return self.url or ""
        value = os.environ.get(self.url_env)
        if not value:
            raise ConfigError(f"url_env: {self.url_env} is not set in the worker's environment")
        return value


class TransformParams(LakeParams):
    select: str | None = None
    full_refresh: bool = False


class ShardsParams(LakeParams):
    snapshot: str | None = Field(default=None, description="Existing snapshot; None creates one")
    dataset: str | None = None
    table: str | None = None
    format: Literal["webdataset", "mds", "parquet"] | None = None


class PipelineParams(LakeParams):
    sync: bool = Field(default=True, description="Stage the shard set to settings.sync_dest")
    health_report: str | None = Field(
        default=None, description="`ingest health --html` output (path or URL) the run's artifact links to"
    )
    docs_site: str | None = Field(
        default=None, description="`ingest docs --out` directory (or URL) the run's artifact links to"
    )
