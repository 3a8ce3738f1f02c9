"""The one place that knows where tables live and how each engine reaches the lake.

A table identifier is ``layer.name``; it lives at ``<lake>/<layer>/<name>``.  The lake URI is a
local directory or ``s3://bucket/prefix``; this module turns it into options for deltalake,
DuckDB, Spark (s3a) and boto3, so nothing else decides local-vs-S3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from ingest.aws import redact, s3_client
from ingest.errors import ConfigError, classify_storage_error, plain_text, storage_hint

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import pyarrow.fs
    from deltalake import DeltaTable

    from ingest.errors import IngestError
    from ingest.settings import S3Settings, Settings

Layer = Literal["bronze", "silver", "gold", "_meta"]
LAYERS: tuple[str, ...] = ("bronze", "silver", "gold", "_meta")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Layers only the project's own writers fill (run log, snapshots, lineage read them); an ingest
# into one could replace their schema and leave `snapshot`, `vacuum` and `lineage` broken.
RESERVED_LAYERS: tuple[str, ...] = ("_meta",)

# Spark's hadoop-aws must match the Hadoop bundled with pyspark (pyspark 4.2 -> Hadoop 3.5.0).
HADOOP_AWS_PACKAGE = "org.apache.hadoop:hadoop-aws:3.5.0"


@dataclass(frozen=True)
class TableId:
    """A lake table: ``layer.name``."""

    layer: str
    name: str

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ConfigError(
                f"unknown layer {self.layer!r} in table '{self.layer}.{self.name}': "
                f"use one of {', '.join(LAYERS[:3])} (e.g. bronze.images)"
            )
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"bad table name {self.name!r}: use letters, digits and underscores (e.g. bronze.images)")

    @classmethod
    def parse(cls, ident: str | TableId) -> TableId:
        if isinstance(ident, TableId):
            return ident
        parts = str(ident).strip().split(".")
        if len(parts) != 2:
            raise ConfigError(
                f"bad table identifier {ident!r}: write it as layer.name (e.g. bronze.images, gold.photo_features)"
            )
        return cls(parts[0], parts[1])

    def __str__(self) -> str:
        return f"{self.layer}.{self.name}"


def ingest_target(ident: str | TableId) -> TableId:
    """A table a user may load data into: any ``layer.name`` outside the project's own layers."""
    tid = TableId.parse(ident)
    if tid.layer in RESERVED_LAYERS:
        raise ConfigError(
            f"table {tid} is reserved: {tid.layer} holds the project's own metadata (run log, snapshots); "
            f"load into bronze instead (e.g. bronze.{tid.name})"
        )
    return tid


@dataclass(frozen=True)
class LakeLocation:
    scheme: Literal["file", "s3"]
    bucket: str | None
    prefix: str  # for file: absolute path; for s3: key prefix without slashes at the ends

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return self.prefix


def parse_lake_uri(uri: str) -> LakeLocation:
    """Validate a lake URI; raises ``ConfigError`` (a ValueError) with the fix."""
    if not uri or not uri.strip():
        raise ConfigError("lake URI is empty: pass --lake ./lake or --lake s3://bucket/prefix")
    uri = uri.strip()
    if "://" not in uri:
        return LakeLocation("file", None, str(Path(uri).expanduser().resolve()))
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return LakeLocation("file", None, str(Path(parsed.path).resolve()))
    if parsed.scheme in ("s3", "s3a"):
        bucket = parsed.netloc
        if not bucket or not re.match(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", bucket):
            raise ConfigError(
                f"malformed lake URI {uri!r}: the bucket name is missing or invalid (write s3://bucket/prefix)"
            )
        return LakeLocation("s3", bucket, parsed.path.strip("/"))
    raise ConfigError(
        f"malformed lake URI {uri!r}: unsupported scheme {parsed.scheme!r}; use a local path or s3://bucket/prefix"
    )


class Lake:
    """A lake root plus the credentials to reach it."""

    def __init__(self, uri: str, *, s3: S3Settings | None = None) -> None:
        from ingest.settings import S3Settings

        self.location = parse_lake_uri(uri)
        self.s3 = s3 if s3 is not None else S3Settings.from_env()

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        return cls(settings.lake, s3=settings.s3)

    # -- locations --------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return self.location.uri

    @property
    def is_s3(self) -> bool:
        return self.location.scheme == "s3"

    def path(self, *parts: str) -> str:
        """A lake-relative location (e.g. ``shards/ds/snap``) as a URI or local path."""
        clean = [p.strip("/") for p in parts if p and p.strip("/")]
        for p in clean:
            if ".." in p.split("/"):
                raise ConfigError(f"path {p!r} escapes the lake: '..' is not allowed")
        if self.is_s3:
            return "/".join([self.uri.rstrip("/"), *clean])
        return str(Path(self.location.prefix, *clean))

    def table_uri(self, table: str | TableId) -> str:
        t = TableId.parse(table)
        return self.path(t.layer, t.name)

    def spark_path(self, table_or_path: str) -> str:
        """The same location as Spark (s3a) sees it."""
        try:
            uri = self.table_uri(table_or_path)
        except ConfigError:
            uri = table_or_path
        if uri.startswith("s3://"):
            return "s3a://" + uri[len("s3://") :]
        return uri

    def key(self, *parts: str) -> str:
        """An S3 object key under the lake prefix (S3 lakes only)."""
        if not self.is_s3:
            raise ConfigError("object keys only exist for s3:// lakes")
        return "/".join(p.strip("/") for p in (self.location.prefix, *parts) if p and p.strip("/"))

    # -- engine options ---------------------------------------------------------------------
    def storage_options(self) -> dict[str, str]:
        """deltalake (object_store) options: conditional put, never an unsafe rename."""
        if not self.is_s3:
            return {}
        opts: dict[str, str] = {"AWS_REGION": self.s3.region, "conditional_put": "etag"}
        if self.s3.endpoint_url:
            opts["AWS_ENDPOINT_URL"] = self.s3.endpoint_url
            opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
        if self.s3.allow_http:
            opts["AWS_ALLOW_HTTP"] = "true"
        if self.s3.access_key_id:
            opts["AWS_ACCESS_KEY_ID"] = self.s3.access_key_id.get_secret_value()
        if self.s3.secret_access_key:
            opts["AWS_SECRET_ACCESS_KEY"] = self.s3.secret_access_key.get_secret_value()
        if self.s3.session_token:
            opts["AWS_SESSION_TOKEN"] = self.s3.session_token.get_secret_value()
        return opts

    def spark_conf(self) -> dict[str, str]:
        """Spark settings for Delta plus s3a (packages resolved by the session builder)."""
        conf = {
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "spark.sql.session.timeZone": "UTC",
            "spark.databricks.delta.schema.autoMerge.enabled": "false",
        }
        if self.is_s3:
            conf.update(
                {
                    "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
                    "spark.hadoop.fs.s3a.path.style.access": "true",
                    "spark.hadoop.fs.s3a.endpoint.region": self.s3.region,
                    "spark.hadoop.fs.s3a.change.detection.mode": "none",
                }
            )
            if self.s3.endpoint_url:
                conf["spark.hadoop.fs.s3a.endpoint"] = self.s3.endpoint_url
                conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(not self.s3.allow_http).lower()
            if self.s3.access_key_id and self.s3.secret_access_key:
                conf["spark.hadoop.fs.s3a.access.key"] = self.s3.access_key_id.get_secret_value()
                conf["spark.hadoop.fs.s3a.secret.key"] = self.s3.secret_access_key.get_secret_value()
                conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
                    "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
                )
        return conf

    def spark_packages(self) -> list[str]:
        return [HADOOP_AWS_PACKAGE] if self.is_s3 else []

    def boto3_client(self, **config: Any):
        """A boto3 S3 client for this lake's endpoint (credentials from settings or instance role)."""
        return s3_client(self.s3, **config)

    def pyarrow_filesystem(self) -> pyarrow.fs.FileSystem:
        import pyarrow.fs as pafs

        if not self.is_s3:
            return pafs.LocalFileSystem()
        kw: dict[str, Any] = {"region": self.s3.region}
        if self.s3.endpoint_url:
            parsed = urlparse(self.s3.endpoint_url)
            kw["endpoint_override"] = parsed.netloc
            kw["scheme"] = parsed.scheme or "https"
        if self.s3.access_key_id and self.s3.secret_access_key:
            kw["access_key"] = self.s3.access_key_id.get_secret_value()
            kw["secret_key"] = self.s3.secret_access_key.get_secret_value()
            if self.s3.session_token:
                kw["session_token"] = self.s3.session_token.get_secret_value()
        return pafs.S3FileSystem(**kw)

    def fs_path(self, uri: str) -> str:
        """A location as the pyarrow filesystem expects it (no scheme)."""
        return uri[len("s3://") :] if uri.startswith("s3://") else uri

    # -- existence --------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether the lake root holds anything (a local directory, or objects under the prefix).

        Raises ``ConfigError`` for a local path that is a file, and the storage error (see
        :meth:`storage_error`) when S3 cannot be asked.
        """
        if not self.is_s3:
            root = Path(self.location.prefix)
            if root.exists() and not root.is_dir():
                raise ConfigError(f"lake {self.uri} is a file, not a directory: check --lake / LAKEHOUSE_LAKE")
            return root.is_dir()
        try:
            res = self._list_one()
        except Exception as exc:  # noqa: BLE001 - classified into one line
            raise self.storage_error(exc, f"cannot read lake {self.uri}") from None
        return bool(res.get("KeyCount") or res.get("Contents"))

    def _list_one(self) -> dict[str, Any]:
        """One LIST under the prefix (boto3 names the fault: NoSuchBucket, SignatureDoesNotMatch...)."""
        client = self.boto3_client(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=10)
        prefix = f"{self.location.prefix}/" if self.location.prefix else ""
        return client.list_objects_v2(Bucket=self.location.bucket, Prefix=prefix, MaxKeys=1)

    def require_exists(self) -> Lake:
        """Reading a lake that does not exist is an error, not an empty lake (a misspelt --lake)."""
        if not self.exists():
            raise ConfigError(
                f"lake {self.uri} does not exist: check --lake / LAKEHOUSE_LAKE "
                "(commands that load data, e.g. `ingest images`, create a new lake)"
            )
        return self

    # -- Delta access -----------------------------------------------------------------------
    def table_exists(self, table: str | TableId) -> bool:
        from deltalake import DeltaTable

        try:
            return DeltaTable.is_deltatable(self.table_uri(table), storage_options=self.storage_options())
        except OSError as exc:  # object_store: bucket, credentials or endpoint
            raise self.storage_error(exc, f"cannot open {TableId.parse(table)}") from None

    def delta_table(self, table: str | TableId, *, version: int | str | None = None) -> DeltaTable:
        """Open a table, optionally as of a version number or an ISO timestamp."""
        from deltalake.exceptions import TableNotFoundError

        t = TableId.parse(table)
        try:
            dt = _lake_table_class()(self.table_uri(t), storage_options=self.storage_options())
            dt.files_on = (self.fs_path(self.table_uri(t)), self.pyarrow_filesystem)
        except TableNotFoundError:
            raise ConfigError(
                f"table {t} does not exist in lake {self.uri}: run `ingest ls` to see the tables"
            ) from None
        except OSError as exc:
            raise self.storage_error(exc, f"cannot open {t}") from None
        if version is not None:
            try:
                dt.load_as_version(version)  # a number, or an ISO timestamp string
            except Exception as exc:  # noqa: BLE001 - turned into one line for the user
                raise ConfigError(
                    f"{t} has no version {version!r}: see `ingest history {t}` ({_first_line(exc)})"
                ) from None
        return dt

    def dataset(self, table: str | TableId, *, version: int | str | None = None) -> pyarrow.dataset.Dataset:
        """The table as a pyarrow dataset that every filter works on.

        pyarrow cannot filter a file that records ``string_view``/``binary_view`` columns (its
        row-group statistics compare a ``string`` literal with ``string_view`` ones and fail).
        Writes store plain types (``ingest.conform.lake_type``), but lakes written before that, or by
        other engines, hold such files: they are read here in plain types, in memory, while the
        other files stay a lazy, filterable dataset.
        """
        return plain_dataset(self.delta_table(table, version=version).to_pyarrow_dataset())

    def list_tables(self) -> list[TableId]:
        """Every Delta table in the lake, in layer order."""
        fs = self.pyarrow_filesystem()
        import pyarrow.fs as pafs

        found: list[TableId] = []
        for layer in LAYERS:
            base = self.fs_path(self.path(layer))
            try:
                infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
            except OSError as exc:
                raise self.storage_error(exc, "cannot list the lake") from None
            for info in sorted(infos, key=lambda i: i.base_name):
                if info.type != pafs.FileType.Directory or not _NAME_RE.match(info.base_name):
                    continue
                log = fs.get_file_info(f"{info.path}/_delta_log")
                if log.type == pafs.FileType.Directory or self.is_s3:
                    try:
                        tid = TableId(layer, info.base_name)
                    except ConfigError:
                        continue
                    if self.is_s3 and not self.table_exists(tid):
                        continue
                    found.append(tid)
        return found

    def duckdb(
        self, *, tables: list[TableId] | None = None, version: dict[str, int] | None = None
    ) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with one schema per layer and one view per lake table.

        Delta is read through deltalake -> Arrow (no DuckDB extension needed offline).
        ``version`` maps ``layer.name`` to a pinned Delta version.
        """
        import duckdb

        con = duckdb.connect()
        version = version or {}
        for tid in tables if tables is not None else self.list_tables():
            add_view(con, tid, self.dataset(tid, version=version.get(str(tid))))
        return con

    # -- errors -----------------------------------------------------------------------------
    def describe_error(self, exc: BaseException, what: str, *, bucket: str | None = None) -> str:
        """One line, without secrets, that says what to check.

        Classifies on the whole (multi-line) error chain but prints only its first line plus the
        root cause, e.g. ``Generic S3 error: Connection refused (os error 111)``.
        """
        return str(self.storage_error(exc, what, bucket=bucket))

    def storage_error(self, exc: BaseException, what: str, *, bucket: str | None = None) -> IngestError:
        """The typed error for a failed read or write of lake storage: ``TransientError`` when the
        endpoint could not be reached (an orchestrator retries), ``StorageError`` when a local
        lake's disk is full, read-only or not writable, ``ConfigError`` otherwise.

        object_store sometimes says only ``Generic S3 error``; then one LIST through boto3 finds
        out which setting is wrong, so a write fails as clearly as a read.  ``bucket``: the one
        the operation used, when not the lake's (a source bucket).
        """
        from ingest.errors import StorageError, TransientError, disk_fault

        if not self.is_s3 and bucket is None and (fault_text := disk_fault(exc)) is not None:
            return StorageError(f"{what}: {fault_text} (lake {self.uri})")
        if (
            bucket is None
            and self.is_s3
            and classify_storage_error(exc) is None
            and "generic s3 error" in plain_text(str(exc)).lower()
        ):
            try:
                self._list_one()
            except Exception as probe:  # noqa: BLE001 - only used to name the fault
                if classify_storage_error(probe) is not None:
                    exc = probe
        fault = (
            classify_storage_error(exc) if self.is_s3 or bucket else None
        )  # a local lake has no S3 settings to check
        message = f"{what}: {redact(_summary(exc), self)}{storage_hint(fault, endpoint=self.s3.endpoint_url, bucket=bucket or self.location.bucket)}"
        return TransientError(message) if fault == "unreachable" else ConfigError(message)


_LAKE_TABLE: Any = None


def _lake_table_class() -> Any:
    """``DeltaTable`` whose pyarrow datasets read the table's files through pyarrow's own
    filesystem (``Lake.pyarrow_filesystem``), not delta-rs' Python file handler.

    Arrow's I/O threads call that handler from C++, and a process that scanned a table that way
    aborted at exit in about a third of runs here ("terminate called without an active exception",
    delta-rs #2184, apache/arrow #34314): a flow run, a Dask worker or a user's script that
    finished its work ends with SIGABRT.  Native reads are also not copied through Python bytes.
    ``to_pyarrow_table`` reads through ``to_pyarrow_dataset``.  A filesystem given by the caller
    is used as is.  Made on first use: deltalake is imported lazily (start-up time of every
    command)."""
    global _LAKE_TABLE
    if _LAKE_TABLE is None:
        import pyarrow.fs as pafs
        from deltalake import DeltaTable

        class LakeTable(DeltaTable):
            files_on: tuple[str, Any]  # (the table's root as the filesystem names it, the filesystem's factory)

            def to_pyarrow_dataset(
                self,
                partitions: Any = None,
                filesystem: Any = None,
                parquet_read_options: Any = None,
                schema: Any = None,
                as_large_types: bool = False,
                file_pruning_predicate: Any = None,
            ) -> Any:
                if filesystem is None:
                    root, factory = self.files_on
                    filesystem = pafs.SubTreeFileSystem(root, factory())
                return super().to_pyarrow_dataset(
                    partitions,
                    filesystem=filesystem,
                    parquet_read_options=parquet_read_options,
                    schema=schema,
                    as_large_types=as_large_types,
                    file_pruning_predicate=file_pruning_predicate,
                )

        _LAKE_TABLE = LakeTable
    return _LAKE_TABLE


def plain_dataset(ds: pyarrow.dataset.Dataset) -> pyarrow.dataset.Dataset:
    """``ds`` with its view-typed files (see ``Lake.dataset``) read into memory in plain types."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from ingest.conform import has_view_types

    textual = (pa.types.is_string, pa.types.is_binary, pa.types.is_nested)
    if not isinstance(ds, pads.FileSystemDataset) or not any(any(kind(f.type) for kind in textual) for f in ds.schema):
        return ds
    fragments = list(ds.get_fragments())
    if len(fragments) > 8:  # one footer read each (S3: one request): in parallel
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(16) as pool:
            schemas = list(pool.map(lambda f: f.physical_schema, fragments))
    else:
        schemas = [f.physical_schema for f in fragments]
    views = [f for f, s in zip(fragments, schemas, strict=True) if has_view_types(s)]
    if not views:
        return ds
    plain = pads.FileSystemDataset(
        [f for f, s in zip(fragments, schemas, strict=True) if not has_view_types(s)],
        ds.schema,
        ds.format,
        ds.filesystem,
    )
    copied = pa.concat_tables([f.to_table(schema=ds.schema) for f in views])
    return pads.dataset([plain, pads.dataset(copied)])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]


# an S3 error body as object_store passes it on: <Error><Code>NoSuchBucket</Code><Message>...</Message>...</Error>
_S3_XML_ERROR_RE = re.compile(
    r"<Error>\s*<Code>(?P<code>[^<]*)</Code>\s*<Message>(?P<message>[^<]*)</Message>.*?</Error>", re.S
)


def _summary(exc: BaseException) -> str:
    """First line of an error plus its root cause (delta-rs/object_store chain errors with ``↳``)."""
    text = _S3_XML_ERROR_RE.sub(lambda m: f"{m['code']}: {m['message']}", plain_text(str(exc)))
    lines = [ln.strip().lstrip("↳").strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    head = lines[0].removeprefix("Kernel error -> ")
    if len(lines) > 1 and lines[-1] not in head:
        head = f"{head}: {lines[-1]}"
    return head[:400]


def add_view(con: duckdb.DuckDBPyConnection, tid: TableId, dataset: Any) -> None:
    """(Re)point the view ``layer.name`` of ``con`` at ``dataset`` (one version of the table).

    Works on a locked-down connection too, so a long-lived SQL session can follow new commits.
    """
    con.execute(f'create schema if not exists "{tid.layer}"')
    con.register(f"__arrow_{tid.layer}_{tid.name}", dataset)
    con.execute(f'create or replace view "{tid.layer}"."{tid.name}" as select * from "__arrow_{tid.layer}_{tid.name}"')
