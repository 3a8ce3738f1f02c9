"""Every column type of PostgreSQL, MariaDB and SQLite, cell-exact through ``ingest tables``.

Each case is ``(column type, [(SQL literal, value read back from Delta), ...])``: the values are
what the type map in README.md says (``ingest/sources/typemap.py``).  Row ``i`` holds the ``i``-th
literal of every column (NULL where a column has fewer) and a last row is all NULL.  The same
table is read on the fast path (connectorx) and on the SQLAlchemy fallback.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingest.lake import Lake
from ingest.sources.tables import ingest_table
from tests.sources.conftest import read, run_cli

TS_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
TS_MIN = datetime(1, 1, 1, tzinfo=UTC)
NAN = float("nan")
INF = float("inf")
Case = tuple[str, list[tuple[str, Any]], pa.DataType]

PG_SETUP = [
    "create type mood as enum ('happy', 'sad')",
    "create domain price as numeric(5,2)",
]
PG_CASES: list[Case] = [
    ("smallint", [("-32768", -32768), ("32767", 32767)], pa.int16()),
    ("integer", [("-2147483648", -(2**31)), ("2147483647", 2**31 - 1)], pa.int32()),
    ("bigint", [("-9223372036854775808", -(2**63)), ("9223372036854775807", 2**63 - 1)], pa.int64()),
    ("real", [("1.5", 1.5), ("'Infinity'", INF), ("'-Infinity'", -INF), ("'NaN'", NAN), ("1.0000001", 1.0000001192092896)],
     pa.float32()),
    ("double precision", [("1e308", 1e308), ("0.1", 0.1), ("'-Infinity'", -INF), ("'NaN'", NAN),
                          ("0.30000000000000004", 0.30000000000000004)], pa.float64()),
    ("numeric(17,15)", [("45.123456789012345", Decimal("45.123456789012345")), ("-1e-15", Decimal("-1E-15"))],
     pa.decimal128(17, 15)),
    ("numeric(10,2)", [("1.5", Decimal("1.50")), ("-99999999.99", Decimal("-99999999.99"))], pa.decimal128(10, 2)),
    ("numeric(38,0)", [("99999999999999999999999999999999999999", Decimal("9" * 38))], pa.decimal128(38, 0)),
    ("numeric(3,5)", [("0.00123", Decimal("0.00123"))], pa.decimal128(5, 5)),
    ("numeric(2,-3)", [("12345", Decimal("12000"))], pa.decimal128(5, 0)),
    ("numeric(40,5)", [("12345678901234567890123456789012345.12345", "12345678901234567890123456789012345.12345")],
     pa.string()),
    ("numeric", [("0.99", "0.99"), ("1.50", "1.50"), ("123456789012345678901234567890.123456789",
                 "123456789012345678901234567890.123456789"), ("'NaN'", "NaN"), ("'Infinity'", "Infinity"),
                 ("-1e-20", "-0.00000000000000000001")], pa.string()),
    ("price", [("9.99", Decimal("9.99"))], pa.decimal128(5, 2)),
    ("money", [("1234.56", Decimal("1234.56")), ("'-92233720368547758.08'", Decimal("-92233720368547758.08"))],
     pa.decimal128(19, 2)),
    ("boolean", [("true", True), ("false", False)], pa.bool_()),
    ("text", [("'héllo'", "héllo"), ("''", ""), ("E'two\\nlines'", "two\nlines")], pa.string()),
    ("varchar(5)", [("'abc'", "abc")], pa.string()),
    ("char(4)", [("'ab'", "ab  ")], pa.string()),
    ("bytea", [("'\\x00ff'", b"\x00\xff"), ("''", b"")], pa.binary()),
    ("date", [("'2024-02-29'", date(2024, 2, 29)), ("'infinity'", date(9999, 12, 31)),
              ("'-infinity'", date(1, 1, 1))], pa.date32()),
    ("timestamp", [("'2024-01-02 03:04:05.123456'", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
                   ("'infinity'", TS_MAX), ("'-infinity'", TS_MIN)], pa.timestamp("us", tz="UTC")),
    ("timestamptz", [("'2024-01-02 03:04:05+02'", datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)),
                     ("'infinity'", TS_MAX), ("'-infinity'", TS_MIN)], pa.timestamp("us", tz="UTC")),
    ("time", [("'12:34:56.5'", "12:34:56.5"), ("'24:00:00'", "24:00:00")], pa.string()),
    ("timetz", [("'12:34:56+02'", "12:34:56+02")], pa.string()),
    ("interval", [("'1 year 2 mons 3 days 04:05:06.5'", "P14M3DT14706.5S"), ("'-1 day'", "P0M-1DT0S"),
                  ("'1 mon -1 sec'", "P1M0DT-1S")], pa.string()),
    ("uuid", [("'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")], pa.string()),
    ("json", [("'{\"a\": 1,  \"b\":[1,2]}'", '{"a": 1,  "b":[1,2]}')], pa.string()),
    ("jsonb", [("'{\"b\": 2, \"a\": 1}'", '{"a": 1, "b": 2}')], pa.string()),
    ("inet", [("'192.168.0.1/24'", "192.168.0.1/24"), ("'::1'", "::1/128")], pa.string()),
    ("cidr", [("'10.0.0.0/8'", "10.0.0.0/8")], pa.string()),
    ("macaddr", [("'08:00:2b:01:02:03'", "08:00:2b:01:02:03")], pa.string()),
    ("tsvector", [("'a fat cat'", "'a' 'cat' 'fat'")], pa.string()),
    ("integer[]", [("'{1,NULL,3}'", "{1,NULL,3}"), ("'{{1,2},{3,4}}'", "{{1,2},{3,4}}")], pa.string()),
    ("text[]", [("'{a,\"b c\"}'", '{a,"b c"}')], pa.string()),
    ("mood", [("'happy'", "happy")], pa.string()),
    ("xml", [("'<a>1</a>'", "<a>1</a>")], pa.string()),
    ("bit(3)", [("B'101'", "101")], pa.string()),
    ("point", [("'(1,2)'", "(1,2)")], pa.string()),
    ("int4range", [("'[1,5)'", "[1,5)")], pa.string()),
]

MYSQL_CASES: list[Case] = [
    ("tinyint", [("-128", -128), ("127", 127)], pa.int8()),
    ("boolean", [("1", 1), ("0", 0), ("-5", -5)], pa.int8()),
    ("tinyint unsigned", [("255", 255)], pa.int16()),
    ("smallint", [("-32768", -32768)], pa.int16()),
    ("smallint unsigned", [("65535", 65535)], pa.int32()),
    ("mediumint", [("-8388608", -8388608)], pa.int32()),
    ("mediumint unsigned", [("16777215", 16777215)], pa.int64()),
    ("int", [("-2147483648", -(2**31))], pa.int32()),
    ("int unsigned", [("4294967295", 2**32 - 1)], pa.int64()),
    ("bigint", [("-9223372036854775808", -(2**63)), ("9223372036854775807", 2**63 - 1)], pa.int64()),
    ("bigint unsigned", [("18446744073709551615", Decimal(2**64 - 1))], pa.decimal128(20, 0)),
    ("float", [("1.5", 1.5), ("1.0000001", 1.0000001192092896), ("0.1", 0.10000000149011612),
               ("3.4e38", 3.3999999521443642e38)], pa.float32()),  # every float32 bit
    ("double", [("1e308", 1e308), ("0.1", 0.1), ("0.30000000000000004", 0.30000000000000004)], pa.float64()),
    ("decimal(17,15)", [("45.123456789012345", Decimal("45.123456789012345")), ("-1e-15", Decimal("-1E-15"))],
     pa.decimal128(17, 15)),
    ("decimal(10,2) unsigned", [("1.5", Decimal("1.50"))], pa.decimal128(10, 2)),
    ("decimal(65,30)", [("12345678901234567890123456789012345.123456789012345678901234567891",
                         "12345678901234567890123456789012345.123456789012345678901234567891")], pa.string()),
    ("varchar(10)", [("'héllo'", "héllo"), ("''", "")], pa.string()),
    ("char(4)", [("'ab'", "ab")], pa.string()),
    ("varchar(10) character set latin1", [("'héllo'", "héllo")], pa.string()),
    ("text", [("'two\\nlines'", "two\nlines")], pa.string()),
    ("longtext", [("'x'", "x")], pa.string()),
    ("blob", [("x'00ff'", b"\x00\xff"), ("x''", b"")], pa.binary()),
    ("binary(3)", [("x'0102'", b"\x01\x02\x00")], pa.binary()),
    ("varbinary(5)", [("x'ff'", b"\xff")], pa.binary()),
    ("date", [("'2024-02-29'", date(2024, 2, 29)), ("'1000-01-01'", date(1000, 1, 1))], pa.date32()),
    ("datetime(6)", [("'2024-01-02 03:04:05.123456'", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
                     ("'9999-12-31 23:59:59.999999'", TS_MAX)], pa.timestamp("us", tz="UTC")),
    ("timestamp(6) null", [("'2024-01-02 03:04:05.5'", datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC))],
     pa.timestamp("us", tz="UTC")),
    ("time(6)", [("'-838:59:59.5'", "-838:59:59.500000"), ("'12:00:00'", "12:00:00.000000")], pa.string()),
    ("time", [("'23:59:59'", "23:59:59")], pa.string()),
    ("year", [("2024", 2024)], pa.int16()),
    ("json", [("'{\"a\": 1}'", '{"a": 1}')], pa.string()),
    ("enum('a','b')", [("'b'", "b")], pa.string()),
    ("set('x','y')", [("'x,y'", "x,y"), ("''", "")], pa.string()),
    ("bit(8)", [("b'10101010'", 170)], pa.int64()),
    ("bit(64)", [("x'ffffffffffffffff'", Decimal(2**64 - 1))], pa.decimal128(20, 0)),
    ("uuid", [("'123e4567-e89b-12d3-a456-426614174000'", "123e4567-e89b-12d3-a456-426614174000")], pa.string()),
    ("inet6", [("'::1'", "::1")], pa.string()),
    ("inet4", [("'10.0.0.1'", "10.0.0.1")], pa.string()),
    ("point", [("ST_GeomFromText('POINT(1 2)')", bytes.fromhex("00000000" "0101000000" "000000000000f03f"
                                                                 "0000000000000040"))], pa.binary()),
]

SQLITE_CASES: list[Case] = [
    ("integer", [("-9223372036854775808", -(2**63)), ("42", 42)], pa.int64()),
    ("bigint", [("7", 7)], pa.int64()),
    ("real", [("1.5", 1.5), ("9e999", INF), ("-9e999", -INF), ("0.1", 0.1)], pa.float64()),
    ("double precision", [("2.5", 2.5)], pa.float64()),
    ("text", [("'héllo'", "héllo"), ("''", ""), ("'2024-01-02T03:04:05Z'", "2024-01-02T03:04:05Z")], pa.string()),
    ("varchar(5)", [("'abc'", "abc")], pa.string()),
    ("blob", [("x'00ff'", b"\x00\xff"), ("x''", b"")], pa.binary()),
    ("date", [("'2024-02-29'", date(2024, 2, 29))], pa.date32()),
    ("datetime", [("'2024-01-02 03:04:05'", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
                  ("'2024-01-02T03:04:05.5+02:00'", datetime(2024, 1, 2, 1, 4, 5, 500000, tzinfo=UTC))],
     pa.timestamp("us", tz="UTC")),
    ("", [("1", 1), ("2", 2)], pa.int64()),  # no declared type: typed by the values
    ("numeric", [("1.25", 1.25)], pa.float64()),  # NUMERIC affinity: SQLite holds a real
    ("boolean", [("1", 1), ("0", 0)], pa.int64()),  # SQLite has no boolean: 0 and 1
]


def _col(i: int) -> str:
    return f"c{i:02d}"


def _create(cases: list[Case], quote: str = '"') -> tuple[str, list[str]]:
    cols = ", ".join(f"{quote}{_col(i)}{quote} {t}" for i, (t, _, _) in enumerate(cases))
    rows = max(len(v) for _, v, _ in cases) + 1
    inserts = []
    for r in range(rows):
        vals = ", ".join(v[r][0] if r < len(v) else "NULL" for _, v, _ in cases)
        inserts.append(f"({r + 1}, {vals})")
    return cols, inserts


def _mysql(url: str, *statements: str) -> None:
    import pymysql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    con = pymysql.connect(host=u.host, port=u.port, user=u.username, password=u.password, database=u.database,
                          autocommit=True)
    try:
        with con.cursor() as cur:
            for stmt in statements:
                cur.execute(stmt)
    finally:
        con.close()


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    return type(got) is type(want) and got == want


def _check(lake: Lake, table: str, cases: list[Case]) -> None:
    schema = pa.schema(lake.delta_table(table).schema().to_arrow())
    wrong_types = {f"{_col(i)} {t}": (str(schema.field(_col(i)).type), str(want))
                   for i, (t, _, want) in enumerate(cases) if schema.field(_col(i)).type != want}
    assert wrong_types == {}
    rows = {r["id"]: r for r in read(lake, table)}
    rows_expected = max(len(v) for _, v, _ in cases) + 1
    assert sorted(rows) == list(range(1, rows_expected + 1))
    wrong = {}
    for i, (t, values, _) in enumerate(cases):
        for r in range(rows_expected):
            want = values[r][1] if r < len(values) else None
            got = rows[r + 1][_col(i)]
            if not _same(got, want):
                wrong[f"{t} row {r + 1}"] = (got, want)
    assert wrong == {}
    # the quarantine table exists from the first run: nothing was refused
    assert lake.delta_table(f"{table}_quarantine").to_pyarrow_dataset().count_rows() == 0


@pytest.fixture(params=["connectorx", "sqlalchemy"])
def reader(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fast path, or the SQLAlchemy fallback (connectorx made to fail as on a type it lacks)."""
    if request.param == "sqlalchemy":
        import connectorx

        def unsupported(*a: Any, **k: Any) -> Any:
            raise RuntimeError("no conversion rule found")  # what connectorx says of a type it lacks

        monkeypatch.setattr(connectorx, "read_sql", unsupported)
    return request.param


@pytest.mark.integration
@pytest.mark.postgres
def test_postgres_every_type_round_trips(local_lake: Lake, postgres_url: str, reader: str) -> None:
    import psycopg

    name = "types_" + uuid.uuid4().hex[:8]
    cols, inserts = _create(PG_CASES)
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as con:
        for stmt in PG_SETUP:
            con.execute(f"do $$ begin {stmt}; exception when duplicate_object then null; end $$")
        con.execute(f'create table "{name}" (id int primary key, {cols})')
        con.execute(f'insert into "{name}" values {", ".join(inserts)}')
    r = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.pg_types")
    assert (r.rows_written, r.rows_quarantined) == (len(inserts), 0)
    _check(local_lake, "bronze.pg_types", PG_CASES)
    again = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.pg_types", primary_key=("id",))
    assert (again.rows_written, again.rows_quarantined, again.skipped) == (0, 0, len(inserts))


@pytest.mark.integration
@pytest.mark.mysql
def test_mariadb_every_type_round_trips(local_lake: Lake, mysql_url: str, reader: str) -> None:
    name = "types_" + uuid.uuid4().hex[:8]
    cols, inserts = _create(MYSQL_CASES, quote="`")
    _mysql(mysql_url, f"create table `{name}` (id int primary key, {cols})",
           f"insert into `{name}` values {', '.join(inserts)}")
    plain = mysql_url.replace("mysql+pymysql://", "mysql://")  # as users write it
    r = ingest_table(local_lake, plain, source_table=name, table="bronze.my_types")
    assert (r.rows_written, r.rows_quarantined) == (len(inserts), 0)
    _check(local_lake, "bronze.my_types", MYSQL_CASES)
    again = ingest_table(local_lake, plain, source_table=name, table="bronze.my_types", primary_key=("id",))
    assert (again.rows_written, again.rows_quarantined, again.skipped) == (0, 0, len(inserts))


def test_sqlite_every_type_round_trips(local_lake: Lake, tmp_path: Path) -> None:
    db = tmp_path / "types.db"
    cols, inserts = _create(SQLITE_CASES)
    con = sqlite3.connect(db)
    con.execute(f"create table t (id integer primary key, {cols})")
    con.execute(f"insert into t values {', '.join(inserts)}")
    con.commit()
    con.close()
    r = ingest_table(local_lake, f"sqlite:///{db}", source_table="t", table="bronze.lite_types")
    assert (r.rows_written, r.rows_quarantined) == (len(inserts), 0)
    _check(local_lake, "bronze.lite_types", SQLITE_CASES)


@pytest.mark.integration
@pytest.mark.postgres
def test_postgres_types_connectorx_lacks_load_by_cli(tmp_path: Path, postgres_url: str) -> None:
    """The types that made connectorx panic and the fallback quarantine every row now load on the
    fast path: exit 0, nothing on stderr (no Rust backtrace), nothing quarantined."""
    import psycopg

    name = "lacks_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as con:
        con.execute(f'create table "{name}" (id int primary key, i interval, m money, v tsvector, n numeric,'
                    ' big numeric(40,2), t time, tz timestamptz, d date)')
        con.execute(f"""insert into "{name}" values
            (1, '1 day', 0.99, 'a b', 0.99, 12345678901234567890123456789012345678.91, '01:02:03', 'infinity', 'today'),
            (2, '-1 mon', 1.5, '', 1.5, -1, '23:59:59.999999', '-infinity', '-infinity'),
            (3, null, null, null, 12345678901234567890123456789.5, null, null, '2024-01-01', null)""")
    lake = Lake(str(tmp_path / "lake"))
    proc = run_cli(lake, "--json", "tables", postgres_url, "--source-table", name, "--table", "bronze.lacks")
    assert proc.stderr == ""
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["rows_written"], out["rows_quarantined"]) == (3, 0)
    rows = {r["id"]: r for r in read(lake, "bronze.lacks")}
    assert [rows[i]["n"] for i in (1, 2, 3)] == ["0.99", "1.5", "12345678901234567890123456789.5"]
    assert rows[1]["big"] == "12345678901234567890123456789012345678.91" and rows[2]["big"] == "-1.00"
    assert (rows[1]["i"], rows[2]["i"], rows[1]["m"]) == ("P0M1DT0S", "P-1M0DT0S", Decimal("0.99"))
    assert (rows[1]["tz"], rows[2]["tz"], rows[2]["d"]) == (TS_MAX, TS_MIN, date(1, 1, 1))


@pytest.mark.integration
@pytest.mark.postgres
def test_postgres_value_without_delta_value_is_refused_not_rounded(local_lake: Lake, postgres_url: str) -> None:
    import psycopg

    name = "nan_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as con:
        con.execute(f'create table "{name}" (id int primary key, x numeric(10,2))')
        con.execute(f"insert into \"{name}\" values (1, 1.25), (2, 'NaN'), (3, null)")
    r = ingest_table(local_lake, postgres_url, source_table=name, table="bronze.nan")
    assert (r.rows_written, r.rows_quarantined) == (2, 1)
    assert {x["id"]: x["x"] for x in read(local_lake, "bronze.nan")} == {1: Decimal("1.25"), 3: None}
    q = read(local_lake, "bronze.nan_quarantine")
    assert len(q) == 1 and "'x'" in q[0]["reason"] and b'"id": 2' in q[0]["raw"]


@pytest.mark.integration
@pytest.mark.mysql
def test_mariadb_zero_dates_are_refused_per_row_by_cli(tmp_path: Path, mysql_url: str) -> None:
    """MySQL's zero dates have no date value: their rows go to the quarantine, the rest load on the
    fast path (connectorx used to panic on them, with a Rust backtrace on stderr)."""
    name = "zero_" + uuid.uuid4().hex[:8]
    _mysql(mysql_url, f"create table `{name}` (id int primary key, d date, t datetime)",
           f"insert into `{name}` values (1, '2024-01-02', '2024-01-02 03:04:05'),"
           " (2, '0000-00-00', '2024-01-02 00:00:00'), (3, '2024-01-03', '0000-00-00 00:00:00'), (4, null, null)")
    lake = Lake(str(tmp_path / "lake"))
    plain = mysql_url.replace("mysql+pymysql://", "mysql://")
    proc = run_cli(lake, "--json", "tables", plain, "--source-table", name, "--table", "bronze.zero")
    assert proc.stderr == ""
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["rows_written"], out["rows_quarantined"]) == (2, 2)
    rows = {r["id"]: (r["d"], r["t"]) for r in read(lake, "bronze.zero")}
    assert rows == {1: (date(2024, 1, 2), datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)), 4: (None, None)}
    reasons = sorted(r["reason"].split(":")[0] for r in read(lake, "bronze.zero_quarantine"))
    assert reasons == ["column 'd' (date32[day])", "column 't' (timestamp[us, tz=UTC])"]


@contextlib.contextmanager
def _server_time_zone(url: str, tz: str) -> Iterator[None]:
    """The MariaDB server's global time zone is ``tz`` (new sessions, the ingest's, use it), as on
    most installs (SYSTEM, the host's zone); the session fixture's UTC again afterwards."""
    import pymysql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    root = pymysql.connect(host=u.host, port=u.port, user="root", password="", autocommit=True)
    try:
        with root.cursor() as cur:
            cur.execute(f"set global time_zone = '{tz}'")
        yield
    finally:
        with root.cursor() as cur:
            cur.execute("set global time_zone = '+00:00'")
        root.close()


@pytest.mark.integration
@pytest.mark.mysql
@pytest.mark.parametrize("declared", ["timestamp(6)", "datetime(6)"])
def test_mariadb_cursor_runs_load_every_row_once_in_any_server_time_zone(
    local_lake: Lake, mysql_url: str, declared: str, reader: str
) -> None:
    """The cursor's lower bound is compared in the database: west of UTC, a bound read as local
    time skips the rows of the offset's hours.  Rows at and just past the stored maximum, and
    a row committed late inside the lag, all load once."""
    name = "cur_" + uuid.uuid4().hex[:8]
    _mysql(mysql_url, "set time_zone = '+00:00'",
           f"create table `{name}` (id int primary key, u {declared} null)",
           f"insert into `{name}` values (1, '2026-11-01 10:00:00'), (2, '2026-11-01 10:00:00.5'), (3, null)")
    args = dict(source_table=name, table="bronze.cur", cursor="u", cursor_lag=60)
    with _server_time_zone(mysql_url, "-05:00"):
        first = ingest_table(local_lake, mysql_url, **args)
        _mysql(mysql_url, "set time_zone = '+00:00'",
               f"insert into `{name}` values (4, '2026-11-01 10:00:00.5'), (5, '2026-11-01 10:00:01'),"
               " (6, '2026-11-01 11:00:00'), (7, '2026-11-01 09:59:30'), (8, '2026-11-01 09:58:00')")
        second = ingest_table(local_lake, mysql_url, **args)
        third = ingest_table(local_lake, mysql_url, **args)
    assert (first.rows_written, second.rows_written, third.rows_written) == (3, 4, 0)
    got = {r["id"]: r["u"] for r in read(local_lake, "bronze.cur")}
    at = lambda *hms: datetime(2026, 11, 1, *hms, tzinfo=UTC)  # noqa: E731 - a short local helper
    assert got == {1: at(10, 0, 0), 2: at(10, 0, 0, 500000), 3: None, 4: at(10, 0, 0, 500000), 5: at(10, 0, 1),
                   6: at(11, 0, 0), 7: at(9, 59, 30)}  # 8: committed later than the lag allows


@pytest.mark.integration
@pytest.mark.mysql
def test_mariadb_timestamp_is_the_same_instant_whatever_the_server_time_zone(
    local_lake: Lake, mysql_url: str, reader: str
) -> None:
    """A MySQL ``timestamp`` is an instant (stored as UTC seconds) that the server shows in the
    session's time zone, the server's own on most installs: it loads as that instant, not the
    local wall clock labelled UTC.  ``datetime`` has no zone and keeps its wall clock."""
    name = "tz_" + uuid.uuid4().hex[:8]
    _mysql(mysql_url, "set time_zone = '+00:00'",  # the literals below are UTC
           f"create table `{name}` (id int primary key, ts timestamp(6) null, t0 timestamp null, dt datetime)",
           f"insert into `{name}` values (1, '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05',"
           " '2024-01-02 03:04:05'), (2, '2038-01-19 03:14:07.999999', '1970-01-01 00:00:01', null),"
           " (3, '0000-00-00 00:00:00', null, null), (4, null, null, null)")
    with _server_time_zone(mysql_url, "+05:30"):
        r = ingest_table(local_lake, mysql_url, source_table=name, table="bronze.tz")
    assert (r.rows_written, r.rows_quarantined) == (3, 1)  # the zero timestamp has no instant
    rows = {x["id"]: (x["ts"], x["t0"], x["dt"]) for x in read(local_lake, "bronze.tz")}
    assert rows == {
        1: (datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        2: (datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC), datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), None),
        4: (None, None, None),
    }
    (bad,) = read(local_lake, "bronze.tz_quarantine")
    assert bad["reason"].startswith("column 'ts'") and b'"id": 3' in bad["raw"]


def test_sqlite_text_cursor_incremental(local_lake: Lake, tmp_path: Path) -> None:
    """An ISO-8601 text column (SQLite TEXT) stays text and still works as a cursor."""
    db = tmp_path / "events.db"
    con = sqlite3.connect(db)
    con.execute("create table e (id integer primary key, updated_at text not null)")
    con.executemany("insert into e values (?, ?)", [(i, f"2026-11-{i:02d}T00:00:00Z") for i in range(1, 21)])
    con.commit()
    args = dict(source_table="e", table="bronze.e", primary_key=("id",), cursor="updated_at")
    assert ingest_table(local_lake, f"sqlite:///{db}", **args).rows_written == 20
    con.execute("insert into e values (21, '2026-11-21T00:00:00Z')")
    con.execute("update e set updated_at = '2026-11-22T00:00:00Z' where id = 5")
    con.commit()
    con.close()
    r = ingest_table(local_lake, f"sqlite:///{db}", **args)
    assert (r.rows_written, r.rows_quarantined) == (2, 0)
    rows = {x["id"]: x["updated_at"] for x in read(local_lake, "bronze.e")}
    assert len(rows) == 21 and rows[5] == "2026-11-22T00:00:00Z"


def test_sqlite_datetime_cursor_loads_every_row_once(local_lake: Lake, tmp_path: Path) -> None:
    """A DATETIME cursor's values are text as the application wrote them: a row at the stored
    maximum written later, written without fractional seconds, or with an offset west of UTC is
    not skipped; a value that is no date-time is refused once, not skipped."""
    db = tmp_path / "events.db"
    con = sqlite3.connect(db)
    con.execute("create table e (id integer primary key, u datetime)")
    con.execute("insert into e values (1, '2026-11-01 10:00:00'), (2, '2026-11-01T10:00:05-05:00')")
    con.commit()
    args = dict(source_table="e", table="bronze.e", cursor="u")
    assert ingest_table(local_lake, f"sqlite:///{db}", **args).rows_written == 2
    con.execute("insert into e values (3, '2026-11-01 15:00:05'), (4, '2026-11-01 15:00:05.5Z'),"
                " (5, '2026-11-01T10:00:07-05:00'), (6, 'soon')")  # 3: the maximum's instant
    con.commit()
    con.close()
    r = ingest_table(local_lake, f"sqlite:///{db}", **args)
    assert (r.rows_written, r.rows_quarantined) == (3, 1)
    again = ingest_table(local_lake, f"sqlite:///{db}", **args)
    assert (again.rows_written, again.rows_quarantined) == (0, 0)
    at = lambda *hms: datetime(2026, 11, 1, *hms, tzinfo=UTC)  # noqa: E731 - a short local helper
    assert {x["id"]: x["u"] for x in read(local_lake, "bronze.e")} == {
        1: at(10, 0, 0), 2: at(15, 0, 5), 3: at(15, 0, 5), 4: at(15, 0, 5, 500000), 5: at(15, 0, 7)
    }
    (bad,) = read(local_lake, "bronze.e_quarantine")
    assert "'soon' is not an ISO-8601 timestamp" in bad["reason"]


@pytest.mark.parametrize(("dialect", "declared", "delta", "select"), [
    ("postgresql", "numeric(17,15)", pa.decimal128(17, 15), "{c}::text"),
    ("postgresql", "numeric(39,2)", pa.string(), "{c}::text"),
    ("postgresql", "numeric", pa.string(), "{c}::text"),
    ("postgresql", "numeric(2,-3)", pa.decimal128(5, 0), "{c}::text"),
    ("postgresql", "integer[]", pa.string(), "{c}::text"),
    ("postgresql", "some_extension_type", pa.string(), "{c}::text"),
    ("postgresql", "text", pa.string(), "{c}"),
    ("mysql", "decimal(65,30)", pa.string(), "cast({c} as char)"),
    ("mysql", "bigint(20) unsigned", pa.decimal128(20, 0), "cast({c} as char)"),
    ("mysql", "int(10) unsigned", pa.int64(), "{c}"),
    ("mysql", "bit(63)", pa.int64(), "cast({c} as unsigned)"),
    ("mysql", "enum('a\nb','c')", pa.string(), "{c}"),
    ("sqlite", "VARCHAR(20)", pa.string(), "{c}"),
    ("sqlite", "DECIMAL(10,2)", None, "{c}"),
])
def test_type_map_rules(dialect: str, declared: str, delta: pa.DataType | None, select: str) -> None:
    from ingest.sources.typemap import type_map

    col = type_map(dialect).column("c", declared)
    assert (col.delta, col.select) == (delta, select)


def test_text_parsed_as_decimal_is_exact_or_refused() -> None:
    from ingest.conform import conform
    from ingest.sources import fit_rows

    t = pa.decimal128(17, 15)
    good, bad = conform(pa.table({"x": pa.array(["45.123456789012345", "-1e-15", "NaN", "1.0000000000000001", None])}),
                        pa.schema([("x", t)]), policy="quarantine")
    assert good["x"].to_pylist() == [Decimal("45.123456789012345"), Decimal("-1E-15"), None]
    assert [i for i, _ in bad] == [2, 3]
    good, bad = fit_rows([{"x": "0.5"}, {"x": Decimal("NaN")}, {"x": Decimal("1.25")}], pa.schema([("x", t)]))
    assert good["x"].to_pylist() == [Decimal("0.5"), Decimal("1.25")] and [i for i, _ in bad] == [1]
