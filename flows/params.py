"""Flow parameters as pydantic models (Prefect validates them and shows them in the UI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ingest.settings import CursorLag, Settings, load_settings


class LakeParams(BaseModel):
    """Which lake to use; None means the deployment's environment/`lakehouse.yaml`."""

    lake: str | None = Field(default=None, description="Lake root: a directory or s3://bucket/prefix")

    def settings(self) -> Settings:
        return load_settings(lake=self.lake)


class ImagesParams(LakeParams):
    src: str
    table: str = "bronze.images"


class LogsParams(LakeParams):
    src: str
    table: str = "bronze.events"
    format: Literal["jsonl", "text"] = "jsonl"
    pattern: str | None = None


class TablesParams(LakeParams):
    url: str
    source_table: str
    table: str
    primary_key: list[str] = Field(default_factory=list)
    cursor: str | None = None
    cursor_lag: CursorLag


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
