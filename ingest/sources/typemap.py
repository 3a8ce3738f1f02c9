"""Source column type -> Delta column type, per database dialect (the table is in README.md).

Each dialect is one ``TypeMap``: it reads the declared column types from the database's catalog
and maps each through its ordered ``rules`` (the first pattern that matches the declared type
wins).  A rule gives the Delta (Arrow) type and the SQL expression the column is read with: the
column itself where connectorx reads it exactly, or a cast (usually to the database's own text
form) where connectorx's default is lossy or unsupported.  Both read paths, connectorx and the
SQLAlchemy fallback, run the same expressions, so both see the same values; ``ingest.conform`` /
``fit_rows`` then cast them to the declared types exactly, or refuse a value (quarantine).
A type no rule names is read as text (PostgreSQL) or bytes (MySQL), per column: the rest of the
table stays typed and on the fast path.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import pyarrow as pa

# PostgreSQL date/timestamp infinities have no Delta value: they load as the ends of Python's range
INFINITY_TS, NEG_INFINITY_TS = "9999-12-31 23:59:59.999999", "0001-01-01 00:00:00"
INFINITY_DATE, NEG_INFINITY_DATE = "9999-12-31", "0001-01-01"
MAX_DECIMAL_DIGITS = 38  # Delta/Spark decimal precision limit
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TypeFn = Callable[[re.Match[str]], pa.DataType | None]


@dataclass(frozen=True)
class Rule:
    """Declared types matching ``pattern`` load as ``delta``, read with the SQL ``select``
    (``{c}`` is the quoted column); ``delta`` None means "typed by its values" (untyped SQLite)."""

    pattern: str
    delta: pa.DataType | TypeFn | None
    select: str = "{c}"

    def type_for(self, m: re.Match[str]) -> pa.DataType | None:
        return self.delta(m) if callable(self.delta) else self.delta


@dataclass(frozen=True)
class Column:
    name: str
    declared: str  # the source type as the catalog prints it
    delta: pa.DataType | None
    select: str  # SQL template, ``{c}`` = the quoted column


@dataclass(frozen=True)
class TablePlan:
    """How every column of one source table is read and typed."""

    columns: tuple[Column, ...]

    def declared_schema(self, existing: pa.Schema | None) -> pa.Schema | None:
        """The types to load into: the lake table's own for columns it has (they never change
        silently), otherwise the type map's.  Untyped columns are left to their values."""
        fields = []
        for c in self.columns:
            if existing is not None and existing.get_field_index(c.name) >= 0:
                fields.append(existing.field(c.name))
            elif c.delta is not None:
                fields.append(pa.field(c.name, c.delta))
        return pa.schema(fields) if fields or existing is not None else None


def decimal_or_string(precision: int | None, scale: int | None) -> pa.DataType:
    """decimal(p, s) when every value of the declared type fits Delta's decimal exactly, else
    string (the exact decimal text).  PostgreSQL allows scale < 0 and scale > precision."""
    if precision is None:
        return pa.string()
    scale = scale or 0
    p, s = (precision - scale, 0) if scale < 0 else (max(precision, scale), scale)
    return pa.decimal128(p, s) if p <= MAX_DECIMAL_DIGITS else pa.string()


def _numeric(m: re.Match[str]) -> pa.DataType:
    p, s = m.group("p"), m.group("s")
    return decimal_or_string(int(p) if p else None, int(s) if s else 0)


class TypeMap(ABC):
    """One dialect's rules, plus how to list a table's columns with their declared types."""

    dialect: ClassVar[str]
    rules: ClassVar[tuple[Rule, ...]]
    fallback: ClassVar[Rule]  # for declared types no rule names

    @abstractmethod
    def catalog(
        self, conn: Any, *, schema: str | None, name: str, quote: Callable[[str], str]
    ) -> list[tuple[str, str]]:
        """``[(column, declared type)]`` in table order; empty when the table does not exist."""

    def column(self, name: str, declared: str) -> Column:
        decl = declared.strip().lower()
        for rule in (*self.rules, self.fallback):
            m = re.fullmatch(rule.pattern, decl, re.DOTALL)
            if m:
                return Column(name, declared, rule.type_for(m), rule.select)
        raise ValueError(f"{type(self).__name__}.fallback must match every type, not {declared!r}")

    def plan(self, conn: Any, *, schema: str | None, name: str, quote: Callable[[str], str]) -> TablePlan:
        """Every column of ``schema.name`` with its Delta type and select expression."""
        cols = self.catalog(conn, schema=schema, name=name, quote=quote)
        return TablePlan(tuple(self.column(c, t) for c, t in cols))

    def cursor_at_least(self, col: Any, declared: str, low: Any) -> Any:
        """The SQLAlchemy condition ``col >= low``: a cursor column of type ``declared`` at or
        above the lower bound ``low`` (a value as the lake holds it)."""
        import sqlalchemy as sa

        return col >= sa.literal(low)


def _rows(conn: Any, sql: str, **params: Any) -> list[tuple]:
    import sqlalchemy as sa

    return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


class PostgresTypes(TypeMap):
    dialect = "postgresql"
    _inf_ts = (
        "case when {c} = 'infinity' then '" + INFINITY_TS + "'::timestamp"
        " when {c} = '-infinity' then '" + NEG_INFINITY_TS + "'::timestamp else {c} end"
    )
    _inf_tstz = (
        "case when {c} = 'infinity' then '" + INFINITY_TS + "+00'::timestamptz"
        " when {c} = '-infinity' then '" + NEG_INFINITY_TS + "+00'::timestamptz else {c} end"
    )
    _inf_date = (
        "case when {c} = 'infinity' then '"
        + INFINITY_DATE
        + "'::date when {c} = '-infinity' then '"
        + NEG_INFINITY_DATE
        + "'::date else {c} end"
    )
    # an interval is (months, days, microseconds) in PostgreSQL: all three, exactly, whatever
    # the server's IntervalStyle; extract() is exact numeric since PostgreSQL 14
    _interval = (
        "'P' || (extract(year from {c}) * 12 + extract(month from {c}))::bigint || 'M'"
        " || extract(day from {c})::bigint || 'DT'"
        " || trim_scale((extract(hour from {c}) * 3600000000 + extract(minute from {c}) * 60000000"
        " + extract(microseconds from {c})) / 1000000.0) || 'S'"
    )
    rules = (
        Rule(r"smallint", pa.int16()),
        Rule(r"integer", pa.int32()),
        Rule(r"bigint", pa.int64()),
        Rule(r"real", pa.float32()),
        Rule(r"double precision", pa.float64()),
        Rule(r"boolean", pa.bool_()),
        Rule(r"text|character varying(\(\d+\))?|character(\(\d+\))?|name|citext", pa.string()),
        Rule(r"bytea", pa.binary()),
        # connectorx reads every numeric as decimal(38,10) (rounded) and panics past 28 digits
        Rule(r"numeric(\((?P<p>\d+)(,(?P<s>-?\d+))?\))?", _numeric, "{c}::text"),
        Rule(r"money", pa.decimal128(19, 2), "{c}::numeric::text"),
        Rule(r"date", pa.date32(), _inf_date),
        Rule(r"timestamp(\(\d\))? without time zone", pa.timestamp("us", tz="UTC"), _inf_ts),
        Rule(r"timestamp(\(\d\))? with time zone", pa.timestamp("us", tz="UTC"), _inf_tstz),
        Rule(r"interval.*", pa.string(), _interval),
        Rule(r"uuid", pa.string()),
        # json: connectorx re-serialises it; the stored text is kept as is
    )
    fallback = Rule(r".*", pa.string(), "{c}::text")

    def catalog(self, conn, *, schema, name, quote):
        rel = (quote(schema) + "." if schema else "") + quote(name)
        rows = _rows(
            conn,
            "select a.attname, format_type(coalesce(nullif(t.typbasetype, 0), a.atttypid),"
            " case when t.typtype = 'd' then t.typtypmod else a.atttypmod end)"
            " from pg_attribute a join pg_type t on t.oid = a.atttypid"
            " where a.attrelid = to_regclass(:rel) and a.attnum > 0 and not a.attisdropped order by a.attnum",
            rel=rel,
        )
        return [(_text(n), _text(t)) for n, t in rows]


class MySQLTypes(TypeMap):
    """MySQL and MariaDB (``information_schema.columns.column_type``)."""

    dialect = "mysql"
    _char = "cast({c} as char)"
    # a timestamp is UTC seconds that the server shows in the session's time zone (the server's
    # own, often not UTC): read the seconds as stored (unix_timestamp, exact to the microsecond),
    # not the local wall clock, which also repeats in a DST fall-back hour.  0 is only the zero
    # timestamp: kept as its text, so it is refused like a zero datetime.
    _instant = (
        "case when unix_timestamp({c}) = 0 then cast({c} as char) else concat(cast(timestampadd(microsecond,"
        " cast(unix_timestamp({c}) * 1000000 as signed), timestamp'1970-01-01 00:00:00') as char), 'Z') end"
    )
    rules = (
        Rule(r"tinyint(\(\d+\))?", pa.int8()),  # BOOL is tinyint(1): it holds -128..127, kept as is
        Rule(r"tinyint(\(\d+\))? unsigned( zerofill)?", pa.int16()),
        Rule(r"smallint(\(\d+\))?", pa.int16()),
        Rule(r"smallint(\(\d+\))? unsigned( zerofill)?", pa.int32()),
        Rule(r"(mediumint|int|integer)(\(\d+\))?", pa.int32()),
        Rule(r"(mediumint|int|integer)(\(\d+\))? unsigned( zerofill)?", pa.int64()),
        Rule(r"bigint(\(\d+\))?", pa.int64()),
        Rule(r"bigint(\(\d+\))? unsigned( zerofill)?", pa.decimal128(20, 0), _char),
        # as double: the text protocol (the fallback's) prints a float with 6 digits, 1.0000001 as 1
        Rule(r"float(\(\d+(,\d+)?\))?( unsigned)?( zerofill)?", pa.float32(), "cast({c} as double)"),
        Rule(r"(double|real)( precision)?(\(\d+(,\d+)?\))?( unsigned)?( zerofill)?", pa.float64()),
        Rule(
            r"(decimal|numeric)(\((?P<p>\d+)(,(?P<s>\d+))?\))?( unsigned)?( zerofill)?",
            lambda m: decimal_or_string(int(m.group("p") or 10), int(m.group("s") or 0)),
            _char,
        ),
        Rule(r"bit\(([1-5]?\d|6[0-3])\)", pa.int64(), "cast({c} as unsigned)"),
        Rule(r"bit\(64\)", pa.decimal128(20, 0), "cast(cast({c} as unsigned) as char)"),
        Rule(r"(var)?char(\(\d+\))?|(tiny|medium|long)?text|enum\(.*\)|uuid|inet[46]", pa.string()),
        Rule(r"set\(.*\)|json", pa.string(), _char),
        Rule(r"(var)?binary(\(\d+\))?|(tiny|medium|long)?blob", pa.binary()),
        Rule(r"year(\(\d+\))?", pa.int16()),
        # as text, so zero dates ('0000-00-00', which connectorx panics on) are refused per row
        Rule(r"date", pa.date32(), _char),
        Rule(r"datetime(\(\d\))?", pa.timestamp("us", tz="UTC"), "concat(cast({c} as char), 'Z')"),
        Rule(r"timestamp(\(\d\))?", pa.timestamp("us", tz="UTC"), _instant),
        Rule(r"time(\(\d\))?", pa.string(), _char),  # a duration, -838:59:59 .. 838:59:59
    )
    fallback = Rule(r".*", pa.binary(), "cast({c} as binary)")

    def cursor_at_least(self, col: Any, declared: str, low: Any) -> Any:
        """A timestamp compares in the session's time zone, which reads a UTC bound as local time
        (west of UTC, the rows of the offset's hours were skipped): compare the stored UTC seconds
        (unix_timestamp, exact), behind a bound a day lower that the column's index can serve
        (from_unixtime gives local time, which a DST fall-back repeats).  A datetime bound is its
        UTC wall clock without an offset, which MySQL 8 would convert to the session's zone."""
        decl = declared.strip().lower()
        if not isinstance(low, datetime) or not re.fullmatch(r"(datetime|timestamp)(\(\d\))?", decl):
            return super().cursor_at_least(col, declared, low)
        low = (low if low.tzinfo else low.replace(tzinfo=UTC)).astimezone(UTC)
        if decl.startswith("datetime"):
            return super().cursor_at_least(col, declared, low.replace(tzinfo=None))
        import sqlalchemy as sa

        micros = (low - _EPOCH) // timedelta(microseconds=1)
        seconds = Decimal(micros).scaleb(-6)
        near = max(Decimal(0), seconds - 86400)
        return sa.and_(
            col >= sa.func.from_unixtime(sa.literal_column(format(near, "f"))),
            sa.func.unix_timestamp(col) >= sa.literal_column(format(seconds, "f")),
        )

    def catalog(self, conn, *, schema, name, quote):
        rows = _rows(
            conn,
            "select column_name, column_type from information_schema.columns"
            " where table_schema = coalesce(:schema, database()) and table_name = :name order by ordinal_position",
            schema=schema,
            name=name,
        )
        return [(_text(n), _text(t)) for n, t in rows]


class SQLiteTypes(TypeMap):
    """SQLite's type affinity rules (https://sqlite.org/datatype3.html#affinity_name_examples);
    a column may hold values of any type, so values that do not fit the declared type are refused."""

    dialect = "sqlite"
    rules = (
        Rule(r".*int.*", pa.int64()),
        Rule(r".*(char|clob|text).*", pa.string()),
        Rule(r".*blob.*", pa.binary()),
        Rule(r".*(real|floa|doub).*", pa.float64()),
        Rule(r"date", pa.date32()),
        Rule(r"(datetime|timestamp)(\(\d\))?", pa.timestamp("us", tz="UTC")),
        Rule(r"", None),  # no declared type: typed by the values
    )
    fallback = Rule(r".*", None)  # NUMERIC affinity: integers and reals, typed by the values

    def cursor_at_least(self, col: Any, declared: str, low: Any) -> Any:
        """Date-times are text in SQLite and compare as text: '2026-11-01 10:00:05' sorts below
        the bound '2026-11-01 10:00:05.000000' (a row at the high-water mark was skipped), a
        '-05:00' offset below an earlier UTC time.  Compare SQLite's own UTC reading of the value
        (strftime, to the millisecond) with the bound floored to the millisecond (rows read again
        are dropped as already stored); a value SQLite cannot read is read again, to be refused,
        never skipped."""
        if not (isinstance(low, datetime) and re.fullmatch(r"(datetime|timestamp)(\(\d\))?", declared.strip().lower())):
            return super().cursor_at_least(col, declared, low)
        import sqlalchemy as sa

        utc = (low if low.tzinfo else low.replace(tzinfo=UTC)).astimezone(UTC)
        floor = utc.replace(microsecond=utc.microsecond // 1000 * 1000, tzinfo=None)
        as_utc = sa.func.strftime("%Y-%m-%d %H:%M:%f", col)
        return sa.or_(
            as_utc >= floor.isoformat(sep=" ", timespec="milliseconds"), sa.and_(col.is_not(None), as_utc.is_(None))
        )

    def catalog(self, conn, *, schema, name, quote):
        prefix = quote(schema) + "." if schema else ""
        rows = [tuple(r) for r in conn.exec_driver_sql(f"PRAGMA {prefix}table_info({quote(name)})")]
        return [(_text(r[1]), _text(r[2] or "")) for r in rows]


TYPE_MAPS: dict[str, TypeMap] = {m.dialect: m for m in (PostgresTypes(), MySQLTypes(), SQLiteTypes())}


def type_map(dialect: str) -> TypeMap:
    """The type map of a dialect as named by ``ingest.sources.tables`` (postgresql, mysql, sqlite)."""
    try:
        return TYPE_MAPS[dialect]
    except KeyError:
        raise ValueError(f"no type map for {dialect!r}: expected one of {sorted(TYPE_MAPS)}") from None
