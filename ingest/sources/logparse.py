"""Columnar parsing of log lines: pyarrow's JSON reader for JSON lines, RE2
(``pyarrow.compute.extract_regex``) for text patterns.

The fast path must give exactly what the line-by-line path (``json.loads``/``re.match`` +
``fit_rows``) gives, or nothing: ``None`` sends a block back to the line-by-line path, which
quarantines bad lines one by one.  So a block takes the fast path only when every line parses,
one row per non-blank line, every column converts to the table's type (or, for a new column, to
the type ``infer_type`` would give) without loss: no int beyond 2**53 in a float column (pyarrow
reads an int too big for int64 as a double), ISO timestamps only with a zone and at most
microseconds, no nested values (stored as sorted JSON text), text patterns only on ASCII lines
(where RE2's ``\\d \\w \\s`` are Python's) and only patterns whose every group takes part in
every match (RE2 gives "" where Python gives None).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from typing import Any, overload

import pyarrow as pa
import pyarrow.compute as pc

from ingest.sources.coerce import ISO_TS

_FLOAT_EXACT = 2.0**53
_TS = pa.timestamp("us", tz="UTC")
_PLAIN = (pa.int64(), pa.float64(), pa.bool_(), pa.string(), _TS)
_ISO_TS_RE2 = ISO_TS.pattern


def _plain_schema(existing: pa.Schema | None, meta: dict[str, pa.DataType]) -> bool:
    """Whether every data column of the table has a type the fast path converts to."""
    return existing is None or all(f.type in _PLAIN for f in existing if f.name not in meta)


_SPACE = b" \t\n\r\x0b\x0c"  # what bytes.isspace() takes for blank


class Lines(Sequence[bytes]):
    """Complete lines held as one buffer and the offset each line ends at, so a batch costs no
    Python object per line: the columnar path reads the buffer (``joined``, ``binary``), and only
    a chunk that goes line by line makes the lines.  No line is empty (each holds its newline, or
    is a last line without one that is not empty)."""

    __slots__ = ("data", "ends", "start")

    def __init__(self, data: bytes, ends: Any, start: int = 0) -> None:
        self.data, self.ends, self.start = data, ends, start  # ends: int64 ndarray of offsets into data

    def __len__(self) -> int:
        return len(self.ends)

    def _begin(self, i: int) -> int:
        return self.start if i == 0 else int(self.ends[i - 1])

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Lines: ...
    def __getitem__(self, i: int | slice) -> bytes | Lines:
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                raise ValueError("Lines slices have no step")
            hi = max(lo, hi)
            return Lines(self.data, self.ends[lo:hi], self._begin(lo) if lo < len(self) else self.start)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.data[self._begin(i) : int(self.ends[i])]

    def __iter__(self) -> Iterator[bytes]:
        begin = self.start
        for end in self.ends.tolist():
            yield self.data[begin:end]
            begin = end

    def __contains__(self, item: object) -> bool:
        return item != b"" and any(line == item for line in self)

    def joined(self) -> bytes:
        return self.data[self.start : int(self.ends[-1])] if len(self) else b""

    def binary(self) -> pa.Array:
        """The lines as a binary array over the buffer (no copy of the bytes)."""
        import numpy as np

        offsets = np.concatenate([[self.start], self.ends]).astype(np.int32)
        return pa.Array.from_buffers(pa.binary(), len(self), [None, pa.py_buffer(offsets), pa.py_buffer(self.data)])


def joined(lines: Sequence[bytes]) -> bytes:
    return lines.joined() if isinstance(lines, Lines) else b"".join(lines)


def nonblank(lines: Sequence[bytes], data: bytes | None = None) -> pa.Array:
    """Indices (int64) of the lines that hold more than whitespace (the others leave no row),
    found without a Python loop over the lines.  ``data`` is the lines joined, if the caller
    has it.  Fast path: no line starts with a space byte, so none is blank."""
    import numpy as np

    data = joined(lines) if data is None else data
    if data and lines[-1] and b"" not in lines:
        arr = np.frombuffer(data, np.uint8)
        space = np.zeros(256, np.bool_)
        space[list(_SPACE)] = True
        starts = np.flatnonzero(arr[:-1] == ord("\n")) + 1  # every line's first byte but the first line's
        if not space[arr[0]] and not space[arr[starts]].any():
            # from the buffer: pa.array(ndarray) would import pandas (a second of start-up)
            return pa.Array.from_buffers(
                pa.int64(), len(lines), [None, pa.py_buffer(np.arange(len(lines), dtype=np.int64))]
            )
    blank = pa.array(list(map(bytes.isspace, lines)), pa.bool_())
    if b"" in lines:  # never from the line reader, but blank all the same
        blank = pc.or_(blank, pa.array([not line for line in lines], pa.bool_()))
    return pc.indices_nonzero(pc.invert(blank)).cast(pa.int64())


def json_block(
    lines: Sequence[bytes],
    existing: pa.Schema | None,
    meta: dict[str, pa.DataType],
    *,
    data: bytes | None = None,
    keep: pa.Array | None = None,
) -> pa.Table | None:
    """The block's records typed like the table (new columns typed as ``infer_type`` would), or
    None when any line needs the line-by-line path.  Blank lines leave no row.  ``data`` (the
    lines joined) and ``keep`` (``nonblank(lines)``) may be given when the caller has them."""
    import pyarrow.json as pajson

    if not _plain_schema(existing, meta):
        return None
    data = joined(lines) if data is None else data
    if not data or data.isspace():
        return pa.table({})
    explicit = {}
    if existing is not None:  # read text as text: the reader must not turn it into timestamps
        for f in existing:
            if f.name not in meta:
                explicit[f.name] = pa.string() if f.type in (pa.string(), _TS) else f.type
    table = _read_json(pajson, data, explicit)
    if table is None:
        return None
    new_ts = [n for n in table.column_names if n not in explicit and pa.types.is_timestamp(table[n].type)]
    if new_ts:  # a new column the reader took for timestamps: read its text again
        table = _read_json(pajson, data, {**explicit, **{n: pa.string() for n in new_ts}})
        if table is None:
            return None
    if table.num_rows != len(nonblank(lines, data) if keep is None else keep):
        return None  # two objects on one line, or a line the reader skipped
    cols, names = [], []
    for name in table.column_names:
        if name in meta:
            continue  # overwritten by the loader, as on the line-by-line path
        target = existing.field(name).type if existing is not None and name in existing.names else None
        col = _conform(table[name], target)
        if col is None:
            return None
        cols.append(col)
        names.append(name)
    return pa.table(cols, names=names)


def _read_json(pajson: Any, data: bytes, explicit: dict[str, pa.DataType]) -> pa.Table | None:
    try:
        return pajson.read_json(
            io.BytesIO(data),
            read_options=pajson.ReadOptions(
                block_size=1 << 20, use_threads=False
            ),  # a line longer than that: line by line
            parse_options=pajson.ParseOptions(explicit_schema=pa.schema(explicit) if explicit else None),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, UnicodeDecodeError, ValueError):
        return None


def _conform(col: pa.ChunkedArray, target: pa.DataType | None) -> pa.ChunkedArray | None:
    """``col`` as ``target`` (or as the type a new column gets), exactly, or None."""
    t = col.type
    if pa.types.is_null(t):
        return col.cast(target or pa.string())
    if target is None:
        if t == pa.string():
            matches = pc.match_substring_regex(col, _ISO_TS_RE2)
            hits = pc.sum(matches).as_py() or 0
            if hits == 0:
                return col
            if hits != len(col) - col.null_count:
                return None  # mixed: the majority rule and its quarantine are the slow path's
            target = _TS
        elif t in (pa.int64(), pa.float64(), pa.bool_()):
            target = t
        else:
            return None  # nested values, anything else
    if target == pa.string():
        return col if t == pa.string() else None
    if target == _TS:
        if t != pa.string() or pc.all(pc.match_substring_regex(col, _ISO_TS_RE2)).as_py() not in (True, None):
            return None
        try:
            return col.cast(_TS)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None  # more than microseconds: the slow path's rule
    if target == pa.float64():
        if t not in (pa.float64(), pa.int64()):
            return None
        big = pc.greater_equal(pc.abs(col.cast(pa.float64())), _FLOAT_EXACT)
        if pc.any(big).as_py():
            return None  # maybe an int the reader rounded; the slow path decides
        return col.cast(pa.float64())
    return col if t == target else None


# -- text patterns -----------------------------------------------------------------------------
def re2_pattern(regex: re.Pattern[str]) -> str | None:
    """The pattern for RE2, anchored like ``re.match``, or None when RE2 could answer differently
    from Python: flags, groups that may not take part in a match, syntax RE2 lacks."""
    if regex.flags & ~re.UNICODE:
        return None
    try:
        from re import _parser as sre_parse  # type: ignore[attr-defined]  # the stdlib's regex parser, not in typeshed

        parsed = sre_parse.parse(regex.pattern)
    except Exception:  # noqa: BLE001 - a pattern the parser rejects stays on the line-by-line path
        return None
    if not _groups_always_match(list(parsed), optional=False):
        return None
    anchored = "^(?:" + regex.pattern + ")"
    try:
        pc.extract_regex(pa.array([""]), anchored)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # lookarounds, backreferences...
    return anchored


def _groups_always_match(items: list[Any], *, optional: bool) -> bool:
    from re import _constants as c  # type: ignore[attr-defined]  # the stdlib's regex constants, not in typeshed

    for op, av in items:
        if op is c.SUBPATTERN:
            if optional and av[0] is not None:
                return False
            if not _groups_always_match(list(av[3]), optional=optional):
                return False
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            lo, _, sub = av
            if not _groups_always_match(list(sub), optional=optional or lo == 0):
                return False
        elif op is c.BRANCH:
            for alt in av[1]:
                if not _groups_always_match(list(alt), optional=True):
                    return False
        elif op in (c.ASSERT, c.ASSERT_NOT, c.GROUPREF, c.GROUPREF_EXISTS, c.ATOMIC_GROUP):
            return False
    return True


def text_block(
    lines: Sequence[bytes], pattern: str, names: list[str], existing: pa.Schema | None
) -> tuple[pa.Table, pa.Array, pa.Array] | None:
    """The matches of the block's non-blank lines typed like the table (new columns as
    ``infer_type`` would), the indices (into ``lines``) of the rows' lines and of the lines that
    did not match; None for the line-by-line path (a line that is not UTF-8 or not ASCII, a value
    that does not convert exactly)."""
    keep = nonblank(lines)
    try:
        if len(keep) == len(lines):
            raw = lines.binary() if isinstance(lines, Lines) else pa.array(list(lines), pa.binary())
        else:
            raw = pa.array([lines[i] for i in keep.to_pylist()], pa.binary())
        strings = raw.cast(pa.string())
    except pa.ArrowInvalid:
        return None  # not UTF-8: the slow path quarantines the line
    strings = pc.utf8_rtrim(strings, characters="\r\n")
    if len(strings) and not pc.all(pc.string_is_ascii(strings)).as_py():
        return None
    matched = pc.extract_regex(strings, pattern)
    ok = pc.is_valid(matched)
    rows, misses = keep.filter(ok), keep.filter(pc.invert(ok))
    good = matched.filter(ok)
    cols = []
    for n in names:
        target = existing.field(n).type if existing is not None and n in existing.names else None
        col = _conform(pa.chunked_array([good.field(n)], pa.string()), target)
        if col is None:
            return None
        cols.append(col)
    return pa.table(cols, names=names), rows, misses
