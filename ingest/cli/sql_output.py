"""How ``ingest sql`` writes a result: streamed batch by batch, so memory stays bounded whatever
the result's size.

Text formats (csv, tsv, table) show binary as ``<N bytes>`` and structs, lists and maps as JSON;
JSON formats carry binary as base64 and decimals as exact strings.  Never a Python repr.  The
table format is for people: it shows the first ``TABLE_ROWS`` rows and says how many it left out.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, BinaryIO, Literal

import pyarrow as pa
import pyarrow.compute as pc

SqlFormat = Literal["table", "csv", "tsv", "json", "jsonl"]
FORMATS: tuple[str, ...] = ("table", "csv", "tsv", "json", "jsonl")
TABLE_ROWS = 100


def default_format(*, json_flag: bool, stdout_is_terminal: bool) -> SqlFormat:
    """``--json`` means json; a person at a terminal gets a table, a pipe or file gets CSV."""
    if json_flag:
        return "json"
    return "table" if stdout_is_terminal else "csv"


def write_result(reader: pa.RecordBatchReader, fmt: SqlFormat, out: BinaryIO, *, err: Any = None) -> int:
    """Write every row of ``reader`` to ``out`` in ``fmt``; returns the number of rows read."""
    if fmt in ("csv", "tsv"):
        return _write_delimited(reader, out, delimiter="," if fmt == "csv" else "\t")
    if fmt in ("json", "jsonl"):
        return _write_json(reader, out, lines=fmt == "jsonl")
    return _write_table(reader, out, err=err or sys.stderr)


# -- text cells ------------------------------------------------------------------------------
def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) and not pa.types.is_dictionary(t)


def _is_binary(t: pa.DataType) -> bool:
    return (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or (pa.types.is_binary_view(t))
    )


def _text_column(col: pa.Array) -> pa.Array:
    """One column ready for a text format: plain values stay typed (Arrow's cast to text prints
    them exactly), binary becomes ``<N bytes>``, nested values JSON, durations and intervals
    their Python text."""
    t = col.type
    if _is_binary(t):
        n = pc.binary_length(col.cast(pa.large_binary()) if pa.types.is_binary_view(t) else col)
        return pc.binary_join_element_wise("<", n.cast(pa.string()), " bytes>", "")
    if _is_nested(t):
        return pa.array([None if v is None else _json(v, binary="text") for v in col.to_pylist()], pa.string())
    if pa.types.is_string_view(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return col.cast(pa.string())
    if pa.types.is_duration(t) or pa.types.is_interval(t) or pa.types.is_null(t):
        return pa.array([None if v is None else _cell(v, binary="text") for v in col.to_pylist()], pa.string())
    return col


def _text_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([_text_column(c) for c in batch.columns], names=batch.schema.names)


_TSV_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def _tsv_escape(col: pa.Array) -> pa.Array:
    """Tabs, line breaks and backslashes in a TSV cell as ``\\t \\n \\r \\\\`` (PostgreSQL's text
    format), so every row is one line and no cell needs quotes."""
    for raw, escaped in _TSV_ESCAPES:
        col = pc.replace_substring(col, raw, escaped)
    return col


def _cell(v: Any, *, binary: Literal["text", "base64"]) -> Any:
    """A value as JSON can hold it, exactly."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        return f"<{len(b)} bytes>" if binary == "text" else base64.b64encode(b).decode("ascii")
    if isinstance(v, Decimal):
        return format(v, "f")  # a string: a JSON number would become a float in most readers
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, timedelta):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _cell(x, binary=binary) for k, x in v.items()}
    if isinstance(v, (list, tuple)):  # lists; maps arrive as lists of (key, value) pairs
        return [_cell(x, binary=binary) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # NaN/Infinity are not JSON
    return v


def _json(v: Any, *, binary: Literal["text", "base64"]) -> str:
    return json.dumps(_cell(v, binary=binary), ensure_ascii=False, separators=(",", ":"))


# -- writers ---------------------------------------------------------------------------------
def _write_delimited(reader: pa.RecordBatchReader, out: BinaryIO, *, delimiter: str) -> int:
    """CSV (RFC 4180, quoted only where a cell needs it, as Python's csv module does) or TSV
    (escaped, never quoted), header first, one batch at a time."""
    cell = _csv_quote if delimiter == "," else _tsv_escape
    out.write(delimiter.join(cell(pa.array([n]))[0].as_py() for n in reader.schema.names).encode() + b"\n")
    n = 0
    for batch in reader:
        if not batch.num_rows:
            continue
        cols = [cell(c.cast(pa.string())) for c in _text_batch(batch).columns]
        lines = (
            cols[0]
            if len(cols) == 1
            else pc.binary_join_element_wise(*cols, delimiter, null_handling="replace", null_replacement="")
        )
        lines = pc.binary_join_element_wise(pc.fill_null(lines, ""), "", "\n")  # each line + "\n"
        _write_values(out, lines)
        n += batch.num_rows
        out.flush()
    out.flush()
    return n


def _write_values(out: BinaryIO, strings: pa.Array) -> None:
    """The bytes of every string of ``strings``, back to back, straight from its data buffer (no
    Python string per cell)."""
    arr = strings.cast(pa.large_string())
    offsets = pa.Array.from_buffers(pa.int64(), len(arr) + 1, [None, arr.buffers()[1]], offset=arr.offset)
    start, end = offsets[0].as_py(), offsets[len(arr)].as_py()
    if end > start:
        out.write(memoryview(arr.buffers()[2])[start:end])


def _csv_quote(col: pa.Array) -> pa.Array:
    """A cell in double quotes (inner quotes doubled) when it holds a comma, a quote or a line break."""
    needs = pc.match_substring_regex(col, '[,"\r\n]')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(col, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, col)


# -- JSON, in columns -----------------------------------------------------------------------
# Each column becomes the JSON text of its values with Arrow's kernels, and a row is those texts
# joined: no Python object per cell (1M rows x 4 columns: 15 s row by row).  The text is what
# ``json.dumps`` makes of ``_cell``'s values; types whose text Arrow does not make the same way
# (decimals, binary, nested, time and interval types, timestamps in ns, in a zone other than
# UTC or outside years 1000-9999) go through ``_cell`` a column at a time.
_UTC_NAMES = ("UTC", "Etc/UTC", "+00:00", "Z")
_JSON_ESCAPED = r'["\\\x00-\x1f]'  # a string with one of these goes through json.dumps


def _json_python(col: pa.Array) -> pa.Array:
    return pa.array(
        [None if v is None else json.dumps(_cell(v, binary="base64"), ensure_ascii=False) for v in col.to_pylist()],
        pa.string(),
    )


def _json_string(col: pa.Array) -> pa.Array:
    col = col.cast(pa.string())
    text = pc.binary_join_element_wise('"', col, '"', "")
    escape = pc.fill_null(pc.match_substring_regex(col, _JSON_ESCAPED), False)
    if not pc.any(escape).as_py():
        return text
    escaped = [json.dumps(v, ensure_ascii=False) for v in col.filter(escape).to_pylist()]
    return pc.replace_with_mask(text, escape, pa.array(escaped, pa.string()))


def _json_float(col: pa.Array) -> pa.Array:
    text = col.cast(pa.float64()).cast(pa.string())
    integral = pc.invert(pc.fill_null(pc.match_substring_regex(text, "[.en]"), True))  # "100": 100.0 in Python
    text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
    finite = pc.fill_null(pc.is_finite(col), True)
    return pc.if_else(finite, text, pc.binary_join_element_wise('"', text, '"', ""))  # "nan", "inf": strings


def _json_timestamp(col: pa.Array) -> pa.Array | None:
    """``datetime.isoformat()``: microseconds only when not 0, ``+00:00`` for UTC.  Other zones go
    through Python: their offsets may have seconds (local mean time before ~1900, Monrovia until
    1972), which Arrow's ``%z`` drops."""
    t = col.type
    years = pc.min_max(pc.year(col))
    if t.unit == "ns" or t.tz not in (None, *_UTC_NAMES):
        return None
    if years["min"].is_valid and not 1000 <= years["min"].as_py() <= years["max"].as_py() <= 9999:
        return None
    seconds = pc.floor_temporal(col, unit="second").cast(pa.timestamp("s", tz=t.tz))
    text = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%S")  # %S of a finer unit prints its fraction
    micros = pc.add(pc.multiply(pc.millisecond(col), 1000), pc.microsecond(col))
    fraction = pc.binary_join_element_wise(".", pc.utf8_lpad(micros.cast(pa.string()), 6, "0"), "")
    text = pc.if_else(pc.equal(micros, 0), text, pc.binary_join_element_wise(text, fraction, ""))
    if t.tz is not None:
        text = pc.binary_join_element_wise(text, "+00:00", "")
    return pc.binary_join_element_wise('"', text, '"', "")


def _json_column(col: pa.Array) -> pa.Array:
    """Each value's JSON text ("null" for a null)."""
    t = col.type
    text: pa.Array | None = None
    if pa.types.is_integer(t):
        text = col.cast(pa.string())
    elif pa.types.is_floating(t):
        text = _json_float(col)
    elif pa.types.is_boolean(t):
        text = pc.if_else(col, "true", "false")
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        text = _json_string(col)
    elif pa.types.is_dictionary(t) and pa.types.is_string(t.value_type):
        text = _json_string(col.cast(pa.string()))
    elif pa.types.is_date32(t):
        text = pc.binary_join_element_wise('"', col.cast(pa.string()), '"', "")
    elif pa.types.is_timestamp(t):
        text = _json_timestamp(col)
    elif pa.types.is_null(t):
        text = pa.nulls(len(col), pa.string())
    if text is None:
        text = _json_python(col)
    return pc.fill_null(text.cast(pa.string()), "null")


def _json_rows(batch: pa.RecordBatch) -> pa.Array:
    """One JSON object per row, as ``json.dumps`` writes it (``", "`` and ``": "``)."""
    parts: list[Any] = []
    for i, (name, col) in enumerate(zip(batch.schema.names, batch.columns, strict=True)):
        parts += [("{" if i == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": ", _json_column(col)]
    if not parts:
        return pa.array(["{}"] * batch.num_rows, pa.string())
    return pc.binary_join_element_wise(*parts, "}", "")


def _write_json(reader: pa.RecordBatchReader, out: BinaryIO, *, lines: bool) -> int:
    n = 0
    if not lines:
        out.write(b"[")
    for batch in reader:
        if not batch.num_rows:
            continue
        rows = _json_rows(batch)
        if lines:
            _write_values(out, pc.binary_join_element_wise(rows, "\n", ""))
        else:
            out.write(b", " if n else b"")
            if len(rows) > 1:
                _write_values(out, pc.binary_join_element_wise(rows[:-1], ", ", ""))
            _write_values(out, rows[-1:])
        n += batch.num_rows
        out.flush()
    if not lines:
        out.write(b"]\n")
    out.flush()
    return n


def _write_table(reader: pa.RecordBatchReader, out: BinaryIO, *, err: Any) -> int:
    """The first TABLE_ROWS rows in a box; the rest are counted (still streamed, not kept)."""
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    shown: list[list[str]] = []
    n = 0
    for batch in reader:
        if len(shown) < TABLE_ROWS:
            text = _text_batch(batch.slice(0, TABLE_ROWS - len(shown)))
            cols = [c.cast(pa.string()).to_pylist() for c in text.columns]
            shown += [["" if v is None else v for v in row] for row in zip(*cols, strict=True)]
        n += batch.num_rows
    wrapper = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    terminal = wrapper.isatty()
    console = Console(file=wrapper, width=None if terminal else 1 << 16, soft_wrap=not terminal)
    if not shown:
        console.print("(no rows)")
    else:
        t = Table()
        for name in reader.schema.names:
            t.add_column(name)
        for row in shown:
            t.add_row(*(Text(v) for v in row))  # Text: a value is never read as rich markup
        console.print(t)
    wrapper.flush()
    wrapper.detach()
    if n > len(shown):
        print(
            f"showing the first {len(shown):,} of {n:,} rows; --format csv, tsv or jsonl writes them all",
            file=err,
        )
    return n
