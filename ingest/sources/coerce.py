"""Fitting parsed records to a table's column types, never lossily: a value is stored exactly or
its record comes back with the reason (for the quarantine).  The value rule itself is
``ingest.conform.coerce``; this module adds type inference for new columns."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pyarrow as pa

from ingest.conform import Misfit, coerce

__all__ = ["ISO_TS", "fit_rows", "infer_type"]

ISO_TS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$")


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
