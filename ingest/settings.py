"""Typed settings, read in one place.

Precedence (highest first): CLI flag > environment (``LAKEHOUSE_*`` and the standard ``AWS_*``
variables) > ``lakehouse.yaml`` > defaults.  Secrets are ``SecretStr`` so they never print.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from ingest.aws import CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE, ENV_PREFIX, AwsEnv
from ingest.errors import ConfigError


def check_spark_master(master: str) -> str:
    """A Spark master URL (local, local[N], spark://, k8s://, yarn) or ValueError with the fix."""
    if not (
        re.fullmatch(r"local(\[(\d+|\*)(,\d+)?\])?", master)
        or master.startswith(("spark://", "k8s://"))
        or master == "yarn"
    ):
        raise ValueError(
            f"spark_master {master!r} is not a Spark master URL: use local[N], spark://HOST:PORT or k8s://..."
        )
    return master


class S3Settings(BaseModel):
    """S3-compatible object storage, configured by the standard AWS variables."""

    endpoint_url: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    region: str = "us-east-1"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> S3Settings:
        return cls.model_validate(AwsEnv.values(environ))

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint_url and self.endpoint_url.startswith("http://"))


class ImageSource(BaseModel):
    kind: Literal["images"] = "images"
    path: str
    table: str = "bronze.images"


class LogSource(BaseModel):
    kind: Literal["logs"] = "logs"
    path: str
    table: str = "bronze.events"
    format: Literal["jsonl", "text"] = "jsonl"
    pattern: str | None = None


# One definition for the CLI (--cursor-lag), lakehouse.yaml sources and the flow parameters.
CURSOR_LAG_DEFAULT = 0.0
CURSOR_LAG_HELP = (
    "Re-read this far below the last cursor value (seconds for timestamps, units for numbers), "
    "so rows committed late with an older cursor value are still loaded."
)
CursorLag = Annotated[float, Field(ge=0, description=CURSOR_LAG_HELP)]


class TableSource(BaseModel):
    kind: Literal["tables"] = "tables"
    url: str
    source_table: str
    table: str
    primary_key: list[str] = Field(default_factory=list)
    cursor: str | None = None
    cursor_lag: CursorLag = CURSOR_LAG_DEFAULT


SourceConfig = ImageSource | LogSource | TableSource


class ShardSettings(BaseModel):
    dataset: str = "photo_popularity"
    table: str = "gold.photo_features"
    format: Literal["webdataset", "mds", "parquet"] = "webdataset"
    key: str = "photo_id"
    shard_size: str = "256MB"
    keep: int = Field(
        default=5, ge=1, description="`ingest run` keeps this many newest shard sets of its own snapshots"
    )


class SyncSettings(BaseModel):
    keep: int = Field(default=5, ge=1, description="`ingest run` keeps this many newest synced copies under sync_dest")


class PrefectSettings(BaseModel):
    api_url: str | None = None
    work_pool: str = "lakehouse-process"


class HealthThresholds(BaseModel):
    """When `ingest health` calls a table unhealthy (exit code 1)."""

    max_age_hours: float = Field(default=36.0, gt=0, description="Freshness: hours since the last successful load")
    min_volume_ratio: float = Field(default=0.5, ge=0, description="Volume: last run's rows / recent average")
    volume_window: int = Field(default=7, ge=1, description="How many earlier runs form the average")
    max_null_rate_drift: float = Field(default=0.2, ge=0, le=1, description="Absolute change in a column's null rate")
    max_distinct_drift: float = Field(default=0.5, ge=0, description="Relative change in a column's distinct count")
    max_quarantined: int = Field(default=-1, description="Quarantined rows allowed; -1 means report only")
    columns: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "bronze.events": ["user_id", "event_type", "photo_id"],
            "bronze.photos": ["user_id", "place"],
        },
        description="Columns whose null rate and distinct count are watched, per table",
    )


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    lake: str = "./lake"
    spark_master: str = "local[2]"
    spark_driver_max_rows: int = Field(
        default=100_000,
        ge=0,
        description=(
            "An incremental run of a Spark model with at most this many new source rows is computed on "
            "the driver (DuckDB, no JVM); 0 sends every run to Spark."
        ),
    )
    sample_dir: str | None = Field(default=None, description="Where `ingest run` generates the bundled sample sources.")
    sources: list[SourceConfig] | None = None
    shards: ShardSettings = Field(default_factory=ShardSettings)
    sync_dest: str | None = None
    sync: SyncSettings = Field(default_factory=SyncSettings)
    prefect: PrefectSettings = Field(default_factory=PrefectSettings)
    health: HealthThresholds = Field(default_factory=HealthThresholds)
    s3: S3Settings = Field(default_factory=S3Settings.from_env)

    @field_validator("lake")
    @classmethod
    def _lake_uri(cls, v: str) -> str:
        from ingest.lake import parse_lake_uri

        parse_lake_uri(v)  # raises ValueError with a useful message
        return v

    @field_validator("spark_master")
    @classmethod
    def _spark_master(cls, v: str) -> str:
        return check_spark_master(v)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _yaml_source(settings_cls))


def _yaml_source(settings_cls: type[BaseSettings]) -> PydanticBaseSettingsSource:
    """The settings file: ``./lakehouse.yaml`` if present, or the one named by ``--config`` /
    ``LAKEHOUSE_CONFIG``, which must exist (a typo must not silently mean "all defaults")."""
    import yaml

    named = os.environ.get(CONFIG_FILE_ENV)
    config_file = Path(named or DEFAULT_CONFIG_FILE)
    if named and (not config_file.exists() or config_file.is_dir()):
        what = "is a directory" if config_file.is_dir() else "does not exist"
        raise ConfigError(f"config file {named} {what}: check --config / {CONFIG_FILE_ENV}")
    try:
        source = YamlConfigSettingsSource(settings_cls, yaml_file=config_file)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"bad configuration: cannot parse {config_file}{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"bad configuration: cannot read {config_file}: {exc}") from None
    except (TypeError, ValueError):  # valid YAML, but a list or a scalar at the top
        source = None
    if source is None or not isinstance(source.yaml_data, dict):
        raise ConfigError(f"bad configuration: {config_file} must be a mapping of settings (e.g. `lake: ./lake`)")
    return source


def load_settings(**overrides: Any) -> Settings:
    """Build settings; ``overrides`` are CLI flags (None means 'not given')."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**given)
