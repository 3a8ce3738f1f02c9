"""Fitting records to a table's column types, never lossily: a value is stored exactly or its
record comes back with the reason (for the quarantine)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa

__all__ = ["INT64_MAX", "INT64_MIN", "ISO_TS", "Misfit", "coerce", "fit_rows", "fit_table", "infer_type", "parse_ts"]

ISO_TS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Misfit(ValueError):
    """A value that does not fit its column's type (the record is quarantined with this reason)."""


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "ts" if ISO_TS.match(v) else "str"
    if isinstance(v, (dict, list)):
        return "json"
    if isinstance(v, datetime):
        return "ts"
    return "str"


_KIND_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "ts": pa.timestamp("us", tz="UTC"),
    "str": pa.string(),
    "json": pa.string(),
}


def infer_type(values: list[Any]) -> pa.DataType:
    """The type most values of a new column have (int+float is float); the rest are quarantined."""
    counts: dict[str, int] = {}
    for v in values:
        if v is not None:
            k = _kind(v)
            counts[k] = counts.get(k, 0) + 1
    if not counts:
        return pa.string()
    if "int" in counts and "float" in counts:
        counts["float"] += counts.pop("int")
    return _KIND_TYPES[max(counts, key=lambda k: (counts[k], k))]


def parse_ts(v: Any) -> datetime:
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


def fit_rows(
    rows: list[dict[str, Any]], existing: pa.Schema | None, *, fixed: dict[str, pa.DataType] | None = None
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Records -> an Arrow table typed like the target table; records that do not fit are returned
    as ``(index, reason)`` instead of being cast (new columns take the type most values have)."""
    fixed = fixed or {}
    names: list[str] = []
    seen: set[str] = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                names.append(k)
    types: dict[str, pa.DataType] = {}
    for n in names:
        if n in fixed:
            types[n] = fixed[n]
        elif existing is not None and existing.get_field_index(n) >= 0:
            types[n] = existing.field(n).type
        else:
            types[n] = infer_type([r.get(n) for r in rows])
    good: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    for i, r in enumerate(rows):
        out = {}
        try:
            for n in names:
                try:
                    out[n] = coerce(r.get(n), types[n])
                except Misfit as exc:
                    raise Misfit(f"column {n!r} ({types[n]}): {exc}") from None
        except Misfit as exc:
            bad.append((i, str(exc)))
            continue
        good.append(out)
    schema = pa.schema([(n, types[n]) for n in names])
    return pa.Table.from_pylist(good, schema=schema), bad


def fit_table(data: pa.Table, existing: pa.Schema | None) -> tuple[pa.Table, list[tuple[int, str]]]:
    """An Arrow batch cast to the target's column types where that is lossless; rows whose values
    cannot be cast (int64 beyond int32, text into a number column) come back as ``(index, reason)``
    instead of being narrowed.  Columns the target lacks pass through (schema merge adds them)."""
    if existing is None:
        return data, []
    cols: list[pa.ChunkedArray | pa.Array] = []
    conflicts: list[str] = []
    for name in data.column_names:
        col = data[name]
        idx = existing.get_field_index(name)
        if idx >= 0 and not col.type.equals(existing.field(idx).type):
            try:
                cast = col.cast(existing.field(idx).type, safe=True)
                # a "safe" cast that still lost information; text parsed as a decimal, date or
                # timestamp is exact or an error already, and prints back differently ("1.50" ->
                # "1.500", "-1E-15", "...05Z" -> "...05.000000Z")
                exact_parse = pa.types.is_string(col.type) and (
                    pa.types.is_decimal(cast.type) or pa.types.is_date(cast.type) or pa.types.is_timestamp(cast.type)
                )
                if not exact_parse and not cast.cast(col.type).equals(col):
                    raise pa.ArrowInvalid("lossy")
                col = cast
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                conflicts.append(name)
        cols.append(col)
    out = pa.table(cols, names=data.column_names)
    if not conflicts:
        return out, []
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
