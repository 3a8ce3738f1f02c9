"""The lake plugin on its own: source time travel (version 0 included), writes, hand-run dbt."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ingest.delta import write_batch
from ingest.errors import ConfigError
from ingest.lake import Lake
from transforms import dbt_plugin
from transforms.dbt_plugin import Plugin
from transforms.dbt_runner import PROJECT_DIR
from dbt.adapters.duckdb.utils import SourceConfig


def source(meta: dict) -> SourceConfig:
    return SourceConfig(name="t", identifier="t", schema="bronze", database=None, meta=meta, tags=[])


@pytest.fixture
def plugin(local_lake: Lake):
    dbt_plugin.configure(local_lake)
    yield Plugin(name="lake", plugin_config={})
    dbt_plugin.configure(None)


@pytest.fixture
def three_versions(local_lake: Lake) -> Lake:
    for v in range(3):
        write_batch(local_lake, "bronze.t", pa.table({"v": pa.array([v] * (v + 1), pa.int64())}))
    return local_lake


def rows(ds) -> list[int]:
    return sorted(ds.to_table().column("v").to_pylist())


def test_source_time_travel_includes_version_zero(plugin: Plugin, three_versions: Lake) -> None:
    assert rows(plugin.load(source({"table": "bronze.t"}))) == [0, 1, 1, 2, 2, 2]
    assert rows(plugin.load(source({"table": "bronze.t", "as_of_version": 0}))) == [0]
    assert rows(plugin.load(source({"table": "bronze.t", "as_of_version": "1"}))) == [0, 1, 1]
    with pytest.raises(ConfigError, match="must be an integer"):
        plugin.load(source({"table": "bronze.t", "as_of_version": "latest"}))
    with pytest.raises(ConfigError, match="no version 9"):
        plugin.load(source({"table": "bronze.t", "as_of_version": 9}))


def test_source_as_of_timestamp(plugin: Plugin, three_versions: Lake) -> None:
    from datetime import datetime, timedelta, timezone

    hist = sorted((h["version"], h["timestamp"]) for h in three_versions.delta_table("bronze.t").history())
    at1 = datetime.fromtimestamp(hist[1][1] / 1000, timezone.utc)
    assert rows(plugin.load(source({"table": "bronze.t", "as_of_timestamp": at1.isoformat()}))) == [0, 1, 1]
    with pytest.raises(ConfigError, match="did not exist"):
        plugin.load(source({"table": "bronze.t", "as_of_timestamp": (at1 - timedelta(days=1)).isoformat()}))
    with pytest.raises(ConfigError, match="ISO time"):
        plugin.load(source({"table": "bronze.t", "as_of_timestamp": "yesterday"}))


def test_run_wide_pins_override_source_config(three_versions: Lake) -> None:
    dbt_plugin.configure(three_versions, source_versions={"bronze.t": 0})
    try:
        p = Plugin(name="lake", plugin_config={})
        assert rows(p.load(source({"table": "bronze.t", "as_of_version": 2}))) == [0]
    finally:
        dbt_plugin.configure(None)


def test_plugin_without_a_lake_says_how_to_set_one(monkeypatch) -> None:
    monkeypatch.delenv("LAKEHOUSE_LAKE", raising=False)
    dbt_plugin.configure(None)
    with pytest.raises(ConfigError, match="LAKEHOUSE_LAKE"):
        Plugin(name="lake", plugin_config={}).lake  # noqa: B018


def test_exposes_existing_model_tables_on_every_cursor(plugin: Plugin, local_lake: Lake) -> None:
    write_batch(local_lake, "gold.g", pa.table({"k": pa.array([1, 2], pa.int64())}))
    write_batch(local_lake, "bronze.b", pa.table({"k": pa.array([1], pa.int64())}))
    con = duckdb.connect()
    plugin.configure_connection(con)
    cur = con.cursor()
    plugin.configure_cursor(cur)
    assert cur.execute("select count(*) from gold.g").fetchone()[0] == 2
    # bronze is read through dbt sources, not exposed wholesale
    assert cur.execute("select count(*) from duckdb_views() where schema_name = 'bronze'").fetchone()[0] == 0


def test_dbt_run_by_hand_with_the_env_var(local_lake: Lake, tmp_path: Path, monkeypatch) -> None:
    """dbt-duckdb loads the plugin by module path from profiles.yml; LAKEHOUSE_LAKE names the lake."""
    from dbt.cli.main import dbtRunner

    from test_dbt_transform import build_bronze  # the shared bronze builder (same directory)
    from transforms.dbt_runner import _reset_duckdb_env

    build_bronze(local_lake)
    monkeypatch.setenv("LAKEHOUSE_LAKE", local_lake.uri)
    dbt_plugin.configure(None)
    _reset_duckdb_env()
    try:
        res = dbtRunner().invoke([
            "run", "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
            "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
            "--quiet", "--select", "+daily_activity",
        ])
    finally:
        _reset_duckdb_env()
    assert res.success, res.exception
    assert local_lake.delta_table("gold.daily_activity").count() > 0


def test_rows_loaded_since_reads_only_file_statistics(local_lake: Lake) -> None:
    from datetime import datetime, timezone

    ts = pa.timestamp("us", tz="UTC")
    day = lambda d: datetime(2026, 11, d, tzinfo=timezone.utc)  # noqa: E731
    write_batch(local_lake, "bronze.t", pa.table({"id": [1, 2], "at": pa.array([day(1), day(2)], ts)}))
    write_batch(local_lake, "bronze.t", pa.table({"id": [3, 4], "at": pa.array([day(5), day(4)], ts)}))
    write_batch(local_lake, "bronze.t", pa.table({"id": [5], "at": pa.array([day(3)], ts)}))
    # the data files are garbage from here on: only the Delta log (file statistics) is readable
    data_files = list(Path(local_lake.uri, "bronze", "t").glob("*.parquet"))
    assert len(data_files) == 3
    for f in data_files:
        f.write_bytes(b"not parquet")
    now = local_lake.delta_table("bronze.t")
    v0 = local_lake.delta_table("bronze.t", version=0)
    # the earliest load time among files added after version 0 (a late batch counts too)
    assert dbt_plugin.rows_loaded_since(now, v0, column="at") == day(3).isoformat()
    assert dbt_plugin.rows_loaded_since(now, local_lake.delta_table("bronze.t", version=1), column="at") == day(3).isoformat()
    assert dbt_plugin.rows_loaded_since(now, now, column="at") == "infinity"


def test_scoped_tests_read_only_new_source_rows(local_lake: Lake) -> None:
    """The staging tests of an incremental run filter the source on its load-time column."""
    from datetime import datetime, timezone

    ts = pa.timestamp("us", tz="UTC")
    write_batch(local_lake, "bronze.t", pa.table({"id": [1], "at": pa.array([datetime(2026, 11, 1, tzinfo=timezone.utc)], ts)}))
    write_batch(local_lake, "bronze.t", pa.table({"id": [2], "at": pa.array([datetime(2026, 11, 2, tzinfo=timezone.utc)], ts)}))
    dbt_plugin.configure(local_lake, tested_sources={"bronze.t": 0})
    try:
        p = Plugin("lake", {})
        conn = duckdb.connect()
        p.configure_connection(conn)
        p.load(source({"table": "bronze.t", "loaded_at_column": "at"}))
        assert conn.execute("select name, since from lake_changes.scope").fetchall() == [
            ("bronze.t", "2026-11-02T00:00:00+00:00")
        ]
    finally:
        dbt_plugin.configure(None)


class _Relation:
    """A staged DuckDB relation as dbt hands it to the plugin's ``store``."""

    def __init__(self, name: str, identifier: str) -> None:
        self.name, self.identifier = name, identifier

    def render(self) -> str:
        return self.name


def test_an_increment_computed_before_another_transform_appended_is_refused_not_stored_twice(
    plugin: Plugin, local_lake: Lake
) -> None:
    """An incremental model computes its new rows from the table as the run exposed it.  When
    another transform run appends the same rows before ours is stored, ours must not land beside
    them: the append is committed against the version the model read, so it conflicts (the
    batch number alone let it land: it was read after the other run's commit)."""
    from dbt.adapters.duckdb.utils import TargetConfig, TargetLocation

    from ingest.errors import IngestError

    write_batch(local_lake, "silver.s", pa.table({"k": pa.array([1], pa.int64())}), app_id="dbt:silver.s", batch_version=1)
    con = duckdb.connect()
    plugin.configure_connection(con)  # the run exposes silver.s at its version now
    con.execute("create table s__delta_stage as select k + 1 as k from silver.s")  # the increment
    theirs = pa.table({"k": pa.array([2], pa.int64())})  # another `ingest transform` run of the model
    write_batch(local_lake, "silver.s", theirs, app_id="dbt:silver.s", batch_version=2)
    target = TargetConfig(
        relation=_Relation("s__delta_stage", "s__delta_stage"),
        column_list=[],
        config=None,
        location=TargetLocation(path="silver.s", format="append"),
    )
    with pytest.raises(IngestError, match="another transform wrote this table while this one ran"):
        plugin.store(target)
    assert sorted(local_lake.delta_table("silver.s").to_pyarrow_table()["k"].to_pylist()) == [1, 2]
