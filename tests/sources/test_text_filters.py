"""Text filters work on every table the sources write, as `ingest sql` runs them (real CLI
processes), and on lakes whose files already hold string_view/binary_view columns (issue #13)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.lake import Lake
from tests.sources.conftest import run_cli, run_json


def sql_rows(lake: Lake, query: str) -> list[dict]:
    proc = run_cli(lake, "--json", "sql", query, check=False)
    assert proc.returncode == 0, f"{query}: {proc.stderr}"
    return json.loads(proc.stdout)


def count_where(lake: Lake, table: str, column: str, value: str) -> int:
    quoted = value.replace("'", "''")
    return sql_rows(lake, f"select count(*) as n from {table} where \"{column}\" = '{quoted}'")[0]["n"]


def view_typed_files(lake: Lake, table: str) -> list[str]:
    """The table's live data files whose Arrow schema records a view type."""
    out = []
    for uri in lake.delta_table(table).file_uris():
        types = pq.read_schema(uri).types
        if any(str(t).endswith("_view") or "_view>" in str(t) for t in types):
            out.append(uri)
    return out


def _sqlite_photos(path: Path) -> str:
    con = sqlite3.connect(path)
    con.execute("create table photos (photo_id integer primary key, place text, updated_at text not null)")
    con.executemany(
        "insert into photos values (?, ?, ?)",
        [(1, "Oslo", "2026-11-01 00:00:01"), (2, "Lima", "2026-11-01 00:00:02"), (3, "Oslo", "2026-11-01 00:00:03")],
    )
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def _sqlite_exec(url: str, *statements: str) -> None:
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    for st in statements:
        con.execute(st)
    con.commit()
    con.close()


def test_text_filters_on_images_and_logs(local_lake: Lake, sample) -> None:
    run_cli(local_lake, "images", str(sample.images), "--table", "bronze.images")
    run_cli(local_lake, "logs", str(sample.logs), "--table", "bronze.events", "--format", "jsonl")
    events = local_lake.delta_table("bronze.events").to_pyarrow_table(columns=["event_type"])["event_type"].to_pylist()
    assert count_where(local_lake, "bronze.events", "event_type", "view") == events.count("view") > 0
    images = local_lake.delta_table("bronze.images").to_pyarrow_table(columns=["format"])["format"].to_pylist()
    assert count_where(local_lake, "bronze.images", "format", "png") == images.count("png") > 0
    # a clean log source still has its (empty) quarantine table
    assert sql_rows(local_lake, "select count(*) as n from bronze.images_quarantine")[0]["n"] >= 1
    assert sql_rows(local_lake, "select count(*) as n from bronze.events_quarantine where reason = 'x'") == [{"n": 0}]


def test_sqlite_merge_and_cursor_runs_keep_text_filterable(local_lake: Lake, tmp_path: Path) -> None:
    url = _sqlite_photos(tmp_path / "src.db")
    for table, extra in (("bronze.merged", ["--primary-key", "photo_id"]), ("bronze.cursored", [])):
        run_cli(local_lake, "tables", url, "--source-table", "photos", "--table", table, "--cursor", "updated_at", *extra)
    _sqlite_exec(
        url,
        "update photos set place = 'Oslo', updated_at = '2026-11-01 00:00:04' where photo_id = 2",
        "insert into photos values (4, 'Kyoto', '2026-11-01 00:00:05')",
    )
    # the second incremental run reads the stored rows back with a text-cursor filter
    for table, extra in (("bronze.merged", ["--primary-key", "photo_id"]), ("bronze.cursored", [])):
        out = run_json(local_lake, "tables", url, "--source-table", "photos", "--table", table, "--cursor", "updated_at", *extra)
        assert out["rows_written"] == 2, out
    assert count_where(local_lake, "bronze.merged", "place", "Oslo") == 3
    assert count_where(local_lake, "bronze.merged", "updated_at", "2026-11-01 00:00:05") == 1
    assert count_where(local_lake, "bronze.cursored", "place", "Oslo") == 3  # 2 first, then photo 2's new row
    assert view_typed_files(local_lake, "bronze.merged") == []  # the merge's files were rewritten plain
    # and a third run (merge of an unchanged window) still works
    out = run_json(local_lake, "tables", url, "--source-table", "photos", "--table", "bronze.merged",
                   "--cursor", "updated_at", "--primary-key", "photo_id")
    assert out["rows_written"] == 0
    # a clean source: its quarantine exists, empty, so queries on it work
    assert sql_rows(local_lake, "select count(*) as n from bronze.merged_quarantine where source = 'x'") == [{"n": 0}]


def test_snapshot_of_an_emptied_source_table_empties_the_table(local_lake: Lake, tmp_path: Path) -> None:
    url = _sqlite_photos(tmp_path / "src.db")
    run_cli(local_lake, "tables", url, "--source-table", "photos", "--table", "bronze.full")
    assert count_where(local_lake, "bronze.full", "place", "Oslo") == 2
    _sqlite_exec(url, "delete from photos")
    out = run_json(local_lake, "tables", url, "--source-table", "photos", "--table", "bronze.full")
    assert out["version"] == 1 and out["rows_written"] == 0
    assert sql_rows(local_lake, "select count(*) as n from bronze.full") == [{"n": 0}]
    # the columns stay: old versions and new rows keep their shape
    assert local_lake.delta_table("bronze.full").schema().to_arrow().field("place") is not None
    assert count_where(local_lake, "bronze.full", "place", "Oslo") == 0
    assert sql_rows(local_lake, "select count(*) as n from bronze.full where place = 'Oslo'" ) == [{"n": 0}]
    proc = run_cli(local_lake, "--json", "sql", "select count(*) as n from bronze.full", "--as-of", "0")
    assert json.loads(proc.stdout) == [{"n": 3}]


def _pg(url: str):
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@pytest.mark.integration
@pytest.mark.postgres
def test_postgres_tables_keep_text_filterable(local_lake: Lake, postgres_url: str) -> None:
    name = "t_" + uuid.uuid4().hex[:8]
    with _pg(postgres_url) as con:
        con.execute(f'create table "{name}" (id bigint primary key, place text, tag varchar(20), updated_at timestamptz not null)')
        con.execute(f"""insert into "{name}" values (1, 'Oslo', 'a', '2026-11-01T00:00:01Z'),
                        (2, 'Lima', 'b', '2026-11-01T00:00:02Z'), (3, 'Oslo', 'a', '2026-11-01T00:00:03Z')""")
    args = ["tables", postgres_url, "--source-table", name, "--cursor", "updated_at"]
    run_cli(local_lake, *args, "--table", "bronze.pg_merged", "--primary-key", "id")
    run_cli(local_lake, *args, "--table", "bronze.pg_cursored")
    run_cli(local_lake, "tables", postgres_url, "--source-table", name, "--table", "bronze.pg_full")
    with _pg(postgres_url) as con:
        con.execute(f"""update "{name}" set place = 'Oslo', updated_at = '2026-11-01T00:00:04Z' where id = 2""")
    run_cli(local_lake, *args, "--table", "bronze.pg_merged", "--primary-key", "id")
    run_cli(local_lake, *args, "--table", "bronze.pg_cursored")
    assert count_where(local_lake, "bronze.pg_merged", "place", "Oslo") == 3
    assert count_where(local_lake, "bronze.pg_merged", "tag", "a") == 2
    assert count_where(local_lake, "bronze.pg_cursored", "place", "Oslo") == 3
    assert count_where(local_lake, "bronze.pg_full", "place", "Oslo") == 2
    assert view_typed_files(local_lake, "bronze.pg_merged") == []
    # an emptied source table empties the full snapshot (connectorx reads it: columns are known)
    with _pg(postgres_url) as con:
        con.execute(f'delete from "{name}"')
    out = run_json(local_lake, "tables", postgres_url, "--source-table", name, "--table", "bronze.pg_full")
    assert out["version"] == 1
    assert sql_rows(local_lake, "select count(*) as n, count(place) as p from bronze.pg_full") == [{"n": 0, "p": 0}]


def test_lake_with_view_typed_files_is_queryable(local_lake: Lake, tmp_path: Path) -> None:
    """Files written before the fix (or by another engine) record string_view/binary_view columns."""
    from deltalake import write_deltalake

    uri = local_lake.table_uri("bronze.legacy")
    views = pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "place": pa.array(["Oslo", "Lima", "Oslo"], pa.string_view()),
        "raw": pa.array([b"a", b"b", b"c"], pa.binary_view()),
        "updated_at": pa.array(["2026-11-01 00:00:01", "2026-11-01 00:00:02", "2026-11-01 00:00:03"], pa.string_view()),
    })
    write_deltalake(uri, views)
    plain = pa.table({"id": pa.array([4], pa.int64()), "place": ["Oslo"], "raw": [b"d"], "updated_at": ["2026-11-01 00:00:04"]})
    write_deltalake(uri, plain, mode="append")
    assert len(view_typed_files(local_lake, "bronze.legacy")) == 1  # the premise: a file records views
    assert count_where(local_lake, "bronze.legacy", "place", "Oslo") == 3
    assert sql_rows(local_lake, "select id from bronze.legacy where place = 'Lima' and raw = 'b'::blob") == [{"id": 2}]
    assert sql_rows(local_lake, "select count(*) as n from bronze.legacy where place = 'Oslo'" ) == [{"n": 3}]
    # and an incremental load on top of it reads the stored rows back with a text-cursor filter
    url = f"sqlite:///{tmp_path / 'src.db'}"
    _sqlite_exec(
        url,
        "create table legacy (id integer primary key, place text, raw blob, updated_at text)",
        "insert into legacy values (4, 'Oslo', x'64', '2026-11-01 00:00:04'), (5, 'Kyoto', x'65', '2026-11-01 00:00:05')",
    )
    out = run_json(local_lake, "tables", url, "--source-table", "legacy", "--table", "bronze.legacy", "--cursor", "updated_at")
    assert (out["rows_written"], out["skipped"]) == (1, 1)
    assert count_where(local_lake, "bronze.legacy", "place", "Kyoto") == 1


def test_sql_json_prints_decimals_exactly(local_lake: Lake) -> None:
    from ingest.delta import write_batch

    value = Decimal("12345678.0123456789")
    write_batch(local_lake, "gold.money", pa.table({"amount": pa.array([value, Decimal("-0.0000000001")], pa.decimal128(18, 10))}))
    rows = sql_rows(local_lake, "select amount from gold.money order by amount desc")
    assert rows == [{"amount": "12345678.0123456789"}, {"amount": "-0.0000000001"}]
    assert Decimal(rows[0]["amount"]) == value


@pytest.mark.integration
@pytest.mark.s3
def test_merges_on_an_s3_lake_keep_text_filterable(s3_lake: Lake, tmp_path: Path) -> None:
    url = _sqlite_photos(tmp_path / "src.db")
    args = ["tables", url, "--source-table", "photos", "--table", "bronze.merged", "--cursor", "updated_at",
            "--primary-key", "photo_id"]
    run_cli(s3_lake, *args)
    _sqlite_exec(url, "update photos set place = 'Oslo', updated_at = '2026-11-01 00:00:04' where photo_id = 2")
    assert run_json(s3_lake, *args)["rows_written"] == 1
    assert count_where(s3_lake, "bronze.merged", "place", "Oslo") == 3
    fs = s3_lake.pyarrow_filesystem()
    for uri in s3_lake.delta_table("bronze.merged").file_uris():
        with fs.open_input_file(s3_lake.fs_path(uri)) as f:
            assert not [t for t in pq.read_schema(f).types if "view" in str(t)], uri


@pytest.mark.integration
@pytest.mark.mysql
def test_mariadb_tables_keep_text_filterable(local_lake: Lake, mysql_url: str) -> None:
    from tests.sources.test_table_types import _mysql

    name = "t_" + uuid.uuid4().hex[:8]
    _mysql(mysql_url, f"create table `{name}` (id bigint primary key, place varchar(20), tag text, raw blob,"
                      " updated_at datetime(6) not null)",
           f"insert into `{name}` values (1, 'Oslo', 'a', x'00', '2026-11-01 00:00:01'),"
           " (2, 'Lima', 'b', x'01', '2026-11-01 00:00:02'), (3, 'Oslo', 'a', x'00', '2026-11-01 00:00:03')")
    url = mysql_url.replace("mysql+pymysql://", "mysql://")
    args = ["tables", url, "--source-table", name, "--cursor", "updated_at"]
    run_cli(local_lake, *args, "--table", "bronze.my_merged", "--primary-key", "id")
    run_cli(local_lake, "tables", url, "--source-table", name, "--table", "bronze.my_full")
    _mysql(mysql_url, f"update `{name}` set place = 'Oslo', updated_at = '2026-11-01 00:00:04' where id = 2")
    assert run_json(local_lake, *args, "--table", "bronze.my_merged", "--primary-key", "id")["rows_written"] == 1
    assert count_where(local_lake, "bronze.my_merged", "place", "Oslo") == 3
    assert count_where(local_lake, "bronze.my_merged", "tag", "a") == 2
    assert count_where(local_lake, "bronze.my_full", "place", "Oslo") == 2
    assert sql_rows(local_lake, "select count(*) as n from bronze.my_full where raw = '\\x00'::blob") == [{"n": 2}]
    assert view_typed_files(local_lake, "bronze.my_merged") == [] == view_typed_files(local_lake, "bronze.my_full")
