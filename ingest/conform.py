"""Lossless fitting of values to a table's column types: the one cast every writer uses.

A value is stored exactly or refused, never rounded.  ``conform`` casts a batch to the types the
target already has; what cannot be cast exactly either stops the write (``policy="raise"``: a
model or a maintenance table whose schema must not drift) or comes back row by row for the
quarantine (``policy="quarantine"``: a source whose records are checked one by one).
``coerce`` is the same rule for one Python value (records the ingesters parse themselves).

Also the lake's storage types (``lake_type``): what a Delta file records for an Arrow type.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

import pyarrow as pa

from ingest.errors import SchemaConflict

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "Misfit",
    "Policy",
    "coerce",
    "conform",
    "has_view_types",
    "lake_schema",
    "lake_type",
    "parse_ts",
]

Policy = Literal["raise", "quarantine"]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Misfit(ValueError):
    """A value that does not fit a column's type without loss; the message says why."""


# -- storage types ------------------------------------------------------------------------------
def lake_type(t: pa.DataType) -> pa.DataType:
    """The Arrow type a lake file stores for ``t``: timestamps as UTC microseconds
    (timestampNtz tables are rejected by Spark 3.5 readers), and plain string/binary/list instead
    of their large and view variants, at any depth.  pyarrow (through 26) cannot filter a
    ``string_view`` column, so a file that records one breaks every filtered read of the table.
    """
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_map(t):
        return pa.map_(lake_type(t.key_type), lake_type(t.item_type), t.keys_sorted)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return pa.list_(t.value_field.with_type(lake_type(t.value_type)))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(lake_type(t.value_type)), t.list_size)
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(lake_type(f.type)) for f in t])
    return t


def lake_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every column in its lake type (see ``lake_type``)."""
    return pa.schema([f.with_type(lake_type(f.type)) for f in schema], metadata=schema.metadata)


def has_view_types(schema: pa.Schema) -> bool:
    """Whether a column (at any depth) is a string/binary/list view: see ``lake_type``."""
    return any(_holds_view(f.type) for f in schema)


def _holds_view(t: pa.DataType) -> bool:
    if (
        pa.types.is_string_view(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    ):
        return True
    return any(_holds_view(t.field(i).type) for i in range(t.num_fields))


# -- batches ------------------------------------------------------------------------------------
def conform(
    data: pa.Table, existing: pa.Schema | None, *, policy: Policy, table: str = "the table"
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """``data`` in lake types, cast to ``existing``'s column types where that is lossless.

    Columns ``existing`` lacks pass through (schema merge adds them).  A column that cannot be
    cast exactly raises ``SchemaConflict`` under ``policy="raise"``; under ``"quarantine"`` each
    of its values is fitted alone, and the rows with a value that does not fit (int64 beyond
    int32, text into a number column) come back as ``(index, reason)`` instead of being
    narrowed.  Under ``"raise"`` the list is always empty.
    """
    data = data.cast(lake_schema(data.schema))
    if existing is None:
        return data, []
    cols: list[pa.ChunkedArray | pa.Array] = []
    conflicts: list[str] = []
    for name in data.column_names:
        col = data[name]
        idx = existing.get_field_index(name)
        if idx >= 0 and not col.type.equals(existing.field(idx).type):
            try:
                col = _cast_exactly(col, existing.field(idx).type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                conflicts.append(name)
        cols.append(col)
    out = pa.table(cols, names=data.column_names)
    if not conflicts:
        return out, []
    if policy == "raise":
        raise SchemaConflict(table, {c: (str(existing.field(c).type), str(data[c].type)) for c in conflicts})
    return _fit_cells(data, out, existing, conflicts)


def _cast_exactly(col: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """``col`` as ``target``, or ``ArrowInvalid`` when the cast would lose anything."""
    cast = col.cast(target, safe=True)
    # a "safe" cast that still lost information (int64 -> int32 is "safe" only when values fit);
    # text parsed as a decimal, date or timestamp is exact or an error already, and prints back
    # differently ("1.50" -> "1.500", "-1E-15", "...05Z" -> "...05.000000Z")
    exact_parse = pa.types.is_string(col.type) and (
        pa.types.is_decimal(target) or pa.types.is_date(target) or pa.types.is_timestamp(target)
    )
    if not exact_parse and not pa.types.is_null(col.type) and not cast.cast(col.type).equals(col):
        raise pa.ArrowInvalid("lossy")
    return cast


def _fit_cells(
    data: pa.Table, out: pa.Table, existing: pa.Schema, conflicts: list[str]
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The columns that would not cast whole, value by value: rows with a misfit are dropped
    and reported."""
    bad: dict[int, str] = {}
    fixed_cols: dict[str, list[Any]] = {}
    for name in conflicts:
        target = existing.field(name).type
        fixed: list[Any] = []
        for i, v in enumerate(data[name].to_pylist()):
            try:
                fixed.append(_coerce_cell(v, target))
            except Misfit as e:
                bad.setdefault(i, f"column {name!r} ({target}): {e}")
                fixed.append(None)
        fixed_cols[name] = fixed
    keep = [i for i in range(data.num_rows) if i not in bad]
    out = out.take(pa.array(keep, pa.int64()))
    for name, fixed in fixed_cols.items():
        out = out.set_column(
            out.column_names.index(name),
            name,
            pa.array([fixed[i] for i in keep], type=existing.field(name).type),
        )
    return out, sorted(bad.items())


# -- single values --------------------------------------------------------------------------------
def parse_ts(v: Any) -> datetime:
    """An ISO-8601 text or a datetime as an aware UTC datetime (naive means UTC)."""
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.strip())
        except ValueError:
            raise Misfit(f"{v!r} is not an ISO-8601 timestamp") from None
    else:
        raise Misfit(f"{v!r} is not a timestamp")
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def coerce(v: Any, t: pa.DataType) -> Any:
    """``v`` as a value of arrow type ``t``, or ``Misfit`` - never a lossy conversion."""
    if v is None:
        return None
    if pa.types.is_integer(t):
        if isinstance(v, bool) or not isinstance(v, int):
            raise Misfit(f"{v!r} is not an integer")
        info = (INT64_MIN, INT64_MAX) if t == pa.int64() else None
        if info and not (info[0] <= v <= info[1]):
            raise Misfit(f"{v} does not fit {t}")
        if not info:
            try:
                pa.scalar(v, type=t)
            except (pa.ArrowInvalid, OverflowError):
                raise Misfit(f"{v} does not fit {t}") from None
        return v
    if pa.types.is_floating(t):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise Misfit(f"{v!r} is not a number")
        if isinstance(v, int) and abs(v) > 2**53:
            raise Misfit(f"{v} loses precision as a float")
        return float(v)
    if pa.types.is_boolean(t):
        if not isinstance(v, bool):
            raise Misfit(f"{v!r} is not a boolean")
        return v
    if pa.types.is_timestamp(t):
        return parse_ts(v)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if isinstance(v, str):
            return v
        if isinstance(v, (dict, list)):
            return json.dumps(v, sort_keys=True)
        if isinstance(v, uuid.UUID):  # the database's own text form (lower case, hyphens)
            return str(v)
        raise Misfit(f"{v!r} is not a string")
    if pa.types.is_decimal(t) and isinstance(v, (str, Decimal)) and not isinstance(v, bool):
        v = _decimal(v)  # exact text of a numeric column, read as text (see sources/typemap.py)
    elif pa.types.is_date(t):
        v = _date(v)
    try:
        pa.scalar(v, type=t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError):
        raise Misfit(f"{v!r} does not fit {t}") from None
    return v


def _decimal(v: str | Decimal) -> Decimal:
    try:
        d = Decimal(v.strip()) if isinstance(v, str) else v
    except ArithmeticError:
        raise Misfit(f"{v!r} is not a decimal number") from None
    if not d.is_finite():
        raise Misfit(f"{v} has no decimal value")
    return d


def _date(v: Any) -> date:
    if isinstance(v, datetime):  # a date column never takes a time of day
        raise Misfit(f"{v!r} is not a date")
    if isinstance(v, str):
        try:
            return date.fromisoformat(v.strip())
        except ValueError:
            raise Misfit(f"{v!r} is not an ISO-8601 date") from None
    return v


def _coerce_cell(v: Any, t: pa.DataType) -> Any:
    """Like ``coerce`` but for values that came from a typed source (numbers, dates, decimals)."""
    if isinstance(v, Decimal):
        if pa.types.is_integer(t) and v == v.to_integral_value():
            v = int(v)
        elif pa.types.is_floating(t):
            if float(v) != v:
                raise Misfit(f"{v} loses precision as {t}")
            return float(v)
    if isinstance(v, str) and pa.types.is_integer(t) and re.fullmatch(r"-?\d{1,19}", v.strip()):
        v = int(v)  # "30" -> 30 is exact; "30.5" or "many" is not
    if isinstance(v, date) and not isinstance(v, datetime) and pa.types.is_timestamp(t):
        v = datetime(v.year, v.month, v.day, tzinfo=UTC)
    return coerce(v, t)
