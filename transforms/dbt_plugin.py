"""A dbt-duckdb plugin that reads and writes Delta tables in the lake.

Why not the stock ``delta`` plugin: it skips ``as_of_version: 0`` (``if as_of_version:``) and
cannot write Delta.  This plugin

* loads sources (``meta: {plugin: lake, table: bronze.images}``) through ``ingest.lake.Lake``, with
  time travel by ``as_of_version`` (0 included), ``as_of_timestamp`` or a run-wide pin map;
* stores models materialized as ``delta`` (``dbt_project/macros/materializations/delta.sql``) into
  the lake with ``ingest.delta.write_batch`` (overwrite, one atomic commit) or ``merge_batch``
  (incremental upsert by ``unique_key``);
* exposes every existing ``silver.*``/``gold.*`` Delta table as a DuckDB view of the same name, so
  ``{{ this }}`` of an incremental model and upstream models outside ``--select`` resolve to the
  lake, and data tests run against what was actually written.

DuckDB reads Delta through deltalake -> Arrow; an Arrow object registered on one DuckDB cursor
is invisible to the others, so the plugin registers its datasets on every cursor dbt opens.  dbt
opens one cursor per node and a node starts only after the models it reads are stored, so a
dataset (re)registered after a write is needed only on cursors opened later.  Registering on a
cursor another thread is running a query on deadlocks (the register call waits for that cursor
while holding the GIL its Arrow scan needs), so the plugin never touches other nodes' cursors and
dbt can run with several threads.

Run-wide settings come from :func:`configure` (called by ``transforms.dbt_runner``) or, when dbt
is run by hand, from the plugin config ``lake`` or env ``LAKEHOUSE_LAKE``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import SourceConfig, TargetConfig

from ingest.errors import ConfigError, IngestError
from ingest.lake import Lake, TableId, plain_dataset

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

MODEL_LAYERS = ("silver", "gold")
# Model tables are written in files of about this size, sorted by unique key on full builds, so
# an incremental merge rewrites only the files holding the keys it updates (one 1M-row file
# would be rewritten whole for a single updated row).
MODEL_FILE_BYTES = 16 << 20
# DuckDB schema of the per-run change sets the data tests are scoped to (macros/get_where_subquery.sql)
CHANGES_SCHEMA = "lake_changes"


@dataclass
class RunContext:
    """What ``run_transform`` hands the plugin for one dbt invocation (same process)."""

    lake: Lake | None = None
    # pinned source versions, ``{"bronze.events": 3}`` (from --as-of / a snapshot)
    source_versions: dict[str, int | str] = field(default_factory=dict)
    # filled by the plugin: one entry per model table written
    writes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # filled by the plugin: the Delta version each source table was read at (for lineage)
    reads: dict[str, int] = field(default_factory=dict)
    # expose each incremental model's written rows so its data tests check only those; off for
    # full refreshes and after a failed run (its bad rows must be tested again, not forgotten)
    scope_tests: bool = False
    # the source versions the last tested run read: staging tests then check newer rows only
    tested_sources: dict[str, int] = field(default_factory=dict)
    # set by the runner: the project's fingerprint, and whether unit tests run this time
    project_sha: str = ""
    unit_tests: bool = True
    # the transform's run id, for the commits (dbt runs models on its own threads, which do not
    # see ``ingest.runlog.current_run_id``)
    run_id: str | None = None
    # filled by the plugin: model tables another transform committed to while this one ran
    # (the model failed with ``WRITE_CONFLICT``; run again, it computes from their commit)
    conflicts: set[str] = field(default_factory=set)


_CONTEXT = RunContext()
WRITE_CONFLICT = "another transform wrote this table while this one ran; run `ingest transform` again"
_LOCK = threading.Lock()


def configure(
    lake: Lake | None,
    *,
    source_versions: dict[str, int | str] | None = None,
    tested_sources: dict[str, int] | None = None,
) -> RunContext:
    """Set the lake (and source pins) for the next dbt invocation; returns the fresh context.

    ``tested_sources`` (the ``sources`` of ``transforms.dbt_runner.last_tested_run``) turns on scoped data tests.
    """
    from ingest.runlog import current_run_id

    global _CONTEXT
    with _LOCK:
        _CONTEXT = RunContext(
            lake=lake,
            source_versions=dict(source_versions or {}),
            scope_tests=tested_sources is not None,
            tested_sources=dict(tested_sources or {}),
            run_id=current_run_id(),
        )
        return _CONTEXT


def late_arrival_cutoff(lake: Lake) -> datetime | None:
    """How far back incremental models must look again for batches that committed late.

    Incremental models read bronze rows stamped after the newest stamp they hold.  An ingest
    run that was still committing when the last transform started stamped its rows before that
    transform's read but made them visible after it; without this they would be skipped until a
    full refresh.  The run log knows such runs: the cutoff is the earliest start among them
    (None when there are none, the usual case, so a normal run re-reads nothing).
    """
    from datetime import timedelta

    from ingest.runlog import RUNS_TABLE

    if not lake.table_exists(RUNS_TABLE):
        return None
    runs = (
        lake.delta_table(RUNS_TABLE)
        .to_pyarrow_table(columns=["command", "status", "started_at", "duration_s"])
        .to_pylist()
    )
    transforms = [r["started_at"] for r in runs if r["command"] == "transform" and r["status"] == "success"]
    if not transforms:
        return None
    last = max(transforms)
    late = [
        r["started_at"]
        for r in runs
        if r["command"] in INGEST_COMMANDS
        and r["status"] == "success"
        and r["started_at"] < last <= r["started_at"] + timedelta(seconds=r["duration_s"] or 0.0)
    ]
    return min(late) - timedelta(seconds=1) if late else None


INGEST_COMMANDS = ("images", "logs", "tables")


def rows_loaded_since(dt: Any, before: Any, *, column: str) -> str | None:
    """The earliest ``column`` value in files ``dt`` has and ``before`` (an older version of
    the same table) had not, from Delta stats.

    Everything newer than that version is at or after it, so a test filtered on it sees every
    new row without reading old files.  'infinity' when nothing was added; None when a new file
    has no statistics for ``column`` (then nothing can be skipped).
    """
    if dt.version() == before.version():
        return "infinity"
    import pyarrow as pa

    old = set(pa.table(before.get_add_actions(flatten=True)).column("path").to_pylist())
    adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    lows = []
    for a in adds:
        if a["path"] in old:
            continue
        low = a.get(f"min.{column}")
        if low is None:
            return None
        lows.append(low)
    return min(lows).isoformat() if lows else "infinity"


def dataset_name(table: TableId) -> str:
    """The name the Arrow dataset of a lake table is registered under in DuckDB."""
    return f"__lake__{table.layer}__{table.name}"


class Plugin(BasePlugin):
    """Registered in profiles.yml as ``module: transforms.dbt_plugin``, ``alias: lake``."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self._config = dict(plugin_config or {})
        self._datasets: dict[str, Any] = {}
        self._datasets_lock = threading.Lock()
        self._exposed: dict[str, Any] = {}  # table -> the DeltaTable its view reads (what models saw)
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._lake: Lake | None = None

    # -- where ------------------------------------------------------------------------------
    @property
    def lake(self) -> Lake:
        if self._lake is None:
            if _CONTEXT.lake is not None:
                self._lake = _CONTEXT.lake
            else:
                uri = self._config.get("lake") or os.environ.get("LAKEHOUSE_LAKE")
                if not uri:
                    raise ConfigError("the dbt lake plugin has no lake: run `ingest transform`, or set LAKEHOUSE_LAKE")
                self._lake = Lake(str(uri))
        return self._lake

    # -- DuckDB wiring ----------------------------------------------------------------------
    def configure_connection(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Expose the lake's current silver/gold tables before dbt looks at the catalog."""
        self._conn = conn
        _snapshot_registered_sources()
        conn.execute("set TimeZone = 'UTC'")
        # Delta never rewrites a data file in place: footers read once stay true for the run
        conn.execute("set parquet_metadata_cache = true")
        cutoff = late_arrival_cutoff(self.lake)
        literal = "NULL" if cutoff is None else f"'{cutoff.isoformat()}'"
        conn.execute(f"create or replace macro lake_late_cutoff() as {literal}::timestamptz")
        # what this run's data tests may scope to (get_where_subquery.sql): one row per lake
        # model written incrementally (since NULL) or source with rows new since the last run
        conn.execute(f'create schema if not exists "{CHANGES_SCHEMA}"')
        conn.execute(f'create or replace table "{CHANGES_SCHEMA}".scope (name varchar primary key, since varchar)')
        tables = self.lake.list_tables()
        # schemas up front: with dbt threads > 1, two nodes creating one schema at once conflict
        # in DuckDB's catalog ("write-write conflict on create"), e.g. two bronze sources loading
        for layer in sorted({t.layer for t in tables} | set(MODEL_LAYERS)):
            conn.execute(f'create schema if not exists "{layer}"')
        for tid in tables:
            if tid.layer in MODEL_LAYERS:
                self._expose(tid, conn)

    def configure_cursor(self, cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.execute("set TimeZone = 'UTC'")
        # DuckDB's join-filter pushdown stays on: it failed only on string_view files, which
        # pyarrow cannot filter (bench/repro/pyarrow_string_view_filter.py); every dataset the
        # plugin registers is plain (ingest.lake.plain_dataset)
        with self._datasets_lock:
            datasets = list(self._datasets.items())
        for name, ds in datasets:
            cursor.register(name, ds)

    def _publish(self, name: str, ds: Any) -> None:
        """Make ``ds`` the dataset cursors opened from now on see under ``name`` (None: none)."""
        with self._datasets_lock:
            if ds is None:
                self._datasets.pop(name, None)
            else:
                self._datasets[name] = ds

    def _expose(self, tid: TableId, conn: duckdb.DuckDBPyConnection | None = None) -> tuple[int, int]:
        """(Re)point the DuckDB view ``layer.name`` at the table's current Delta version;
        returns that version and the table's row count."""
        from ingest.catalog import parquet_scan

        dt = self.lake.delta_table(tid)
        self._exposed[str(tid)] = dt
        name = dataset_name(tid)
        # a local table is read by DuckDB's parquet reader: it prunes row groups by statistics
        # (incremental models read new rows and the stored rows they touch, not whole tables)
        # and reads wide columns (image bytes) only for rows that pass the filters
        scan = parquet_scan(self.lake, dt)
        ds = plain_dataset(dt.to_pyarrow_dataset()) if scan is None else None
        self._publish(name, ds)
        cur = (conn or self._conn).cursor()  # type: ignore[union-attr]  # set by open() before dbt calls any method
        try:
            if ds is not None:
                cur.register(name, ds)
            cur.execute(f'create schema if not exists "{tid.layer}"')
            cur.execute(f'create or replace view "{tid.layer}"."{tid.name}" as select * from {scan or _quote(name)}')
        finally:
            cur.close()
        return dt.version(), dt.count()

    # -- sources ----------------------------------------------------------------------------
    def load(self, source_config: SourceConfig) -> Any:
        """A bronze (or any lake) table as an Arrow dataset, optionally as of a version."""
        table = TableId.parse(source_config.get("table") or f"{source_config.schema}.{source_config.identifier}")
        version: int | str | None = _CONTEXT.source_versions.get(str(table))
        if version is None:
            raw = source_config.get("as_of_version")
            if raw is not None and str(raw).strip() != "":  # 0 is a real version
                try:
                    version = int(raw)
                except (TypeError, ValueError):
                    raise ConfigError(f"source {table}: as_of_version must be an integer, got {raw!r}") from None
            elif source_config.get("as_of_timestamp"):
                version = self._version_at(table, str(source_config.get("as_of_timestamp")))
        if not self.lake.table_exists(table):
            raise ConfigError(
                f"source {table} does not exist in lake {self.lake.uri}: ingest it first "
                "(`ingest run`, or `ingest images|logs|tables`)"
            )
        dt = self.lake.delta_table(table, version=version)
        _CONTEXT.reads[str(table)] = dt.version()
        self._note_new_rows(table, dt, source_config.get("loaded_at_column"), pinned=version is not None)
        return plain_dataset(dt.to_pyarrow_dataset())

    def _note_new_rows(self, table: TableId, dt: Any, column: str | None, *, pinned: bool) -> None:
        """Record in ``lake_changes.scope`` from when this source's rows are new to the tests."""
        prev = _CONTEXT.tested_sources.get(str(table))
        if not _CONTEXT.scope_tests or pinned or not column or prev is None or prev > dt.version():
            return
        try:
            before = self.lake.delta_table(table, version=prev)
        except Exception:  # noqa: BLE001 - that version's log is gone: test the whole source
            return
        since = rows_loaded_since(dt, before, column=column)
        if since is None:
            return
        self._set_scope(str(table), since)

    def _set_scope(self, name: str, since: str | None, *, drop: bool = False) -> None:
        cur = self._conn.cursor()  # type: ignore[union-attr]  # set by open() before dbt calls any method
        try:
            cur.execute(f'delete from "{CHANGES_SCHEMA}".scope where name = ?', [name])
            if not drop:
                cur.execute(f'insert into "{CHANGES_SCHEMA}".scope values (?, ?)', [name, since])
        finally:
            cur.close()

    def _version_at(self, table: TableId, text: str) -> int:
        """The same as-of-time rule as `ingest sql --as-of` (naive means UTC; before creation fails)."""
        from datetime import datetime

        from ingest.query import version_at

        try:
            ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"source {table}: as_of_timestamp must be an ISO time like 2026-11-01T12:00:00Z, got {text!r}"
            ) from None
        return version_at(self.lake, table, ts if ts.tzinfo else ts.replace(tzinfo=UTC))

    def default_materialization(self) -> str:
        return "view"

    # -- models -----------------------------------------------------------------------------
    def store(self, target_config: TargetConfig) -> None:
        """Write a staged DuckDB relation to its lake table, then point the view at it.

        ``location.format`` is the write mode: ``overwrite`` (one atomic Delta commit replacing
        the table), ``append`` (rows the model guarantees are new) or ``merge`` (upsert by the
        model's ``unique_key``).
        """
        from ingest.delta import is_commit_conflict, merge_batch, next_sequence, write_batch

        if target_config.location is None:
            raise ConfigError("the lake plugin needs a target table (location.path)")
        tid = TableId.parse(target_config.location.path)
        if tid.layer not in MODEL_LAYERS:
            raise ConfigError(f"dbt models write silver.* or gold.* tables, not {tid}")
        mode = target_config.location.format
        if mode not in ("overwrite", "append", "merge"):
            raise ConfigError(f"{tid}: unknown write mode {mode!r} (use overwrite, append or merge)")
        config = target_config.config
        rel = target_config.relation
        keys = _keys(config.get("unique_key") if config is not None else None)
        if mode == "merge" and not keys:
            raise ConfigError(f"{tid}: incremental merge needs unique_key in the model config")
        order = " order by " + ", ".join(_quote(k) for k in keys) if keys and mode == "overwrite" else ""
        cur = self._conn.cursor()  # type: ignore[union-attr]  # set by open() before dbt calls any method
        try:
            data = cur.execute(f"select * from {rel.render()}{order}").to_arrow_table()
        finally:
            cur.close()
        model = str(getattr(rel, "identifier", "")).removesuffix("__delta_stage")
        model_meta = {"writer": "dbt", "model": model, "mode": mode}
        if _CONTEXT.run_id is not None:
            model_meta["run_id"] = _CONTEXT.run_id
        # every dbt write of a table carries one app id: two transforms writing it at once
        # conflict in Delta (or the later one finds its batch number taken) instead of both landing
        app_id = f"dbt:{tid}"
        # an increment is computed from the table as this run exposed it: its batch number and
        # its append come from that version, so another transform's commit since is a conflict
        # (a number read now would be past that commit, and the same rows would land twice)
        read = self._exposed.get(str(tid)) if mode != "overwrite" else None
        written: dict[str, Any] = dict(
            app_id=app_id, batch_version=next_sequence(self.lake, tid, app_id, snapshot=read), metadata=model_meta
        )
        again = IngestError(f"{tid}: {WRITE_CONFLICT}")
        try:
            if mode != "overwrite" and data.num_rows == 0:
                res = None  # nothing new: no empty commit, the table keeps its version
            elif mode == "overwrite":
                res = write_batch(self.lake, tid, data, mode="overwrite", target_file_size=MODEL_FILE_BYTES, **written)
            elif mode == "append" or not self._any_key_stored(tid, data, keys):
                # a merge whose keys are all new is an append, without delta-rs's join over the table
                res = write_batch(
                    self.lake, tid, data, mode="append", target_file_size=MODEL_FILE_BYTES, snapshot=read, **written
                )
            else:
                res = merge_batch(self.lake, tid, data, keys=keys, target_file_size=MODEL_FILE_BYTES, **written)
        except Exception as exc:
            if is_commit_conflict(exc):
                _CONTEXT.conflicts.add(str(tid))
                raise again from None
            raise
        if res is not None and res.skipped:
            _CONTEXT.conflicts.add(str(tid))
            raise again
        version, total = self._expose(tid)
        self._expose_changes(tid, data if mode != "overwrite" and _CONTEXT.scope_tests else None)
        _CONTEXT.writes[str(tid)] = {
            "table": str(tid),
            "version": version if res is None or res.version is None else res.version,
            "rows_written": data.num_rows,
            "rows": total,
            "mode": mode,
        }

    def _any_key_stored(self, tid: TableId, data: Any, keys: list[str]) -> bool:
        """Whether any key of ``data`` is already in the table (then a merge is needed)."""
        cur = self._conn.cursor()  # type: ignore[union-attr]  # set by open() before dbt calls any method
        try:
            cur.register("__lake_keys__", data.select(keys))
            with self._datasets_lock:
                ds = self._datasets.get(dataset_name(tid))
            if ds is not None:  # an Arrow-backed view (S3) needs its dataset on this cursor
                cur.register(dataset_name(tid), ds)
            on = " and ".join(f"t.{_quote(k)} = s.{_quote(k)}" for k in keys)
            # the view of the table as stored (exposed before this write): the keys' range
            # reaches its scan (join-filter pushdown), so files outside it are not read
            row = cur.execute(
                f'select exists (select 1 from "{tid.layer}"."{tid.name}" t semi join __lake_keys__ s on {on})'
            ).fetchone()
            return bool(row and row[0])
        finally:
            cur.close()

    def _expose_changes(self, tid: TableId, data: Any) -> None:
        """``lake_changes.<layer>__<name>``: the rows this run wrote incrementally (None: drop it)."""
        view = f'"{CHANGES_SCHEMA}"."{tid.layer}__{tid.name}"'
        cur = self._conn.cursor()  # type: ignore[union-attr]  # set by open() before dbt calls any method
        try:
            if data is None:
                cur.execute(f"drop view if exists {view}")
            else:
                name = f"__lake_changes__{tid.layer}__{tid.name}"
                self._publish(name, data)
                cur.register(name, data)
                cur.execute(f'create or replace view {view} as select * from "{name}"')
        finally:
            cur.close()
        self._set_scope(f"{tid.layer}__{tid.name}", None, drop=data is None)


class _SnapshotDict(dict):
    """A dict whose ``items()`` is a copy taken at once (under the GIL)."""

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]  # a list, not a view: the copy is the point
        return list(super().items())


def _snapshot_registered_sources() -> None:
    """dbt-duckdb 1.11 re-registers loaded sources on every new cursor by iterating a dict that
    another thread's source load may grow meanwhile ("dictionary changed size during
    iteration" with threads > 1): let it iterate a copy."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    env = DuckDBConnectionManager._ENV
    registered = getattr(env, "_REGISTERED_DF", None)
    if type(registered) is dict:
        env._REGISTERED_DF = _SnapshotDict(registered)  # type: ignore[attr-defined]  # dbt-duckdb's private registry of loaded sources


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _keys(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [k.strip() for k in raw.split(",") if k.strip()]
    return [str(k) for k in raw]
