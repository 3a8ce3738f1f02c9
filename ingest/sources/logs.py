"""Log files (JSON lines, or text parsed by a regex) -> a bronze Delta table.

A file is named by its content, not its path, so rotation (rename, copytruncate, gzip) neither
re-reads nor skips lines: each distinct content is an exactly-once stream, app id
``logs:<table>:fp:<hash of its first line>``, batch version = the byte offset the batch ends at
(decompressed offset for ``.gz``), committed with the line count and a hash of the bytes before
the offset (see ``_Streams``).  A file already loaded is not read again; a file that grew is read
from the committed offset; a file that shrank or whose content changed is new and read from 0;
a run killed mid-file resumes at the last committed batch.  Bad lines go to
``<table>_quarantine`` before the batch's good rows.

Commits are made one after another, in order; only reading and parsing run ahead: the next batch
(the next file's first, after a file's last) is parsed in a thread while the one before it
commits, and its commit takes that parse only if the stream and the table's schema are still
what it was made with (``_FileLoader.read_ahead``, ``_write``).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import pyarrow as pa
import pyarrow.compute as pc

from ingest.conform import lake_schema
from ingest.errors import ConfigError
from ingest.lake import Lake, ingest_target
from ingest.progress import progress_bar
from ingest.runlog import track
from ingest.sources import logparse
from ingest.sources.batches import Batch, BatchCommitter
from ingest.sources.coerce import fit_rows
from ingest.sources.files import SourceFile, is_s3, list_source, open_range, s3_client
from ingest.sources.logstate import StreamState, StreamStates, expire_transactions
from ingest.sources.quarantine import Bad, quarantine_table
from ingest.sources.result import IngestResult, Tally
from ingest.sources.util import env_int, utcnow

if TYPE_CHECKING:
    from ingest.partition import FileGroup

LogFormat = Literal["jsonl", "text"]
DEFAULT_TEXT_PATTERN = r"^(?P<message>.*)$"
_META_TYPES = {
    "_source_file": pa.string(),
    "_source_line": pa.int64(),
    "_run_id": pa.string(),
    "_ingested_at": pa.timestamp("us", tz="UTC"),
}


@dataclass
class _Totals(Tally):
    files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def ingest_logs(
    lake: Lake,
    src: str,
    *,
    table: str = "bronze.events",
    format: LogFormat = "jsonl",
    pattern: str | None = None,
    progress: bool = False,
    partition: FileGroup | None = None,
) -> IngestResult:
    """Load new lines of every file under ``src`` (a directory, a file or ``s3://bucket/prefix``),
    or of one ``partition`` of them."""
    if format not in ("jsonl", "text"):
        raise ConfigError(f"unknown log format {format!r}: use --format jsonl or --format text")
    regex = None
    if format == "text":
        try:
            regex = re.compile(pattern or DEFAULT_TEXT_PATTERN)
        except re.error as exc:
            raise ConfigError(f"bad --pattern {pattern!r}: {exc}") from None
        if not regex.groupindex:
            raise ConfigError("--pattern needs named groups, e.g. '(?P<level>\\w+) (?P<msg>.*)' (one column per group)")
    elif pattern:
        raise ConfigError("--pattern only applies to --format text")
    tid = ingest_target(table)
    totals = _Totals()
    with track(lake, command="logs", source=src, target=str(tid), counts=totals) as run:
        files = list_source(lake, src)
        files = partition.select(files) if partition else files
        client = s3_client(lake, pool=4) if is_s3(src) else None  # one for every small read
        # each file's content is its own stream (app id), numbered by the offset a batch ends at
        committer = BatchCommitter(lake, tid, run_id=run.run_id, tally=totals, numbering="offset")
        states = StreamStates(lake, tid, run_id=run.run_id)
        with (
            progress_bar(progress, f"logs -> {tid}", total=sum(f.size for f in files), unit="bytes") as bar,
            ThreadPoolExecutor(
                env_int("INGEST_LOG_PARSE_THREADS", min(4, os.cpu_count() or 1)), thread_name_prefix="logs-parse"
            ) as parser,
        ):
            loaders = [
                _FileLoader(
                    committer, f, regex=regex, totals=totals, bar=bar, client=client, states=states, parser=parser
                )
                for f in files
            ]
            try:
                for i, reader in enumerate(loaders, start=1):
                    reader.where = f"file {i}/{len(files)}"
                    reader.following = loaders[i] if i < len(loaders) else None
                    reader.show_lines()
                    committer.retry(reader.load)
            finally:
                for reader in loaders:
                    reader.drop_ahead()
            bar.note(f"{len(files)} files · {totals.rows + totals.quarantined:,} lines")
        states.flush()  # before the transactions may expire: they are the only record until then
        expire_transactions(lake, tid)
        run.details = {"format": format, "files": totals.files, "notes": totals.notes}
        result = totals.finish(lake, tid, run)
        result.notes = totals.notes
    return result


class _FileLoader:
    """Loads one file from where its content stands in the lake; ``load`` can be re-run after a
    commit conflict (it re-reads the table)."""

    def __init__(
        self,
        committer: BatchCommitter,
        f: SourceFile,
        *,
        regex: re.Pattern[str] | None,
        totals: _Totals,
        bar,
        client: Any,
        states: StreamStates,
        parser: ThreadPoolExecutor,
    ) -> None:
        self.committer, self.f, self.regex, self.parser = committer, f, regex, parser
        self.lake, self.tid, self.run_id = committer.lake, committer.tid, committer.run_id
        self.totals, self.bar, self.client, self.states = totals, bar, client, states
        self.gz = f.uri.endswith(".gz")
        self.re2 = logparse.re2_pattern(regex) if regex is not None else None  # None: Python's re only
        self.batch_lines = env_int("INGEST_LOG_BATCH_LINES", 1 << 18)
        self.batch_bytes = env_int("INGEST_LOG_BATCH_BYTES", 64 << 20)
        self.rows = self.quarantined = 0  # over every attempt (a conflict re-runs ``load``)
        self.first_start: int | None = None
        self.following: _FileLoader | None = None  # the next file's loader (its first batch is read ahead)
        self.ahead: _Reading | None = None  # this file opened and its first batch parsing, before its turn

    where = ""  # "file 3/10": set by the loop over files, shown beside the bar

    def show_lines(self) -> None:
        """The bar counts bytes (for its ETA); people read files and lines beside it."""
        self.bar.note(f"{self.where} · {self.totals.rows + self.totals.quarantined:,} lines")

    def _find(self, snapshot: Any = None) -> tuple[bytes, bytes | None, _Stream | None]:
        """The file's head, its fingerprint key and the stream it continues (as the table stands,
        or as of ``snapshot``, which is not moved)."""
        head = self.read_content(0, FINGERPRINT_BYTES)
        key = fingerprint_key(head, whole=len(head) < FINGERPRINT_BYTES)
        if key is None:
            return head, None, None
        dt = self.committer.snapshot() if snapshot is None else snapshot
        return head, key, _Streams(self, dt, key, head).find()

    def load(self) -> None:
        head, key, found = self._find()
        if key is None or found is None or found.done:
            self.drop_ahead()  # read ahead when it was not done yet (a copy of the file before)
        if key is None or found is None:  # empty, only blank lines, or a first line still being written
            self.totals.skipped += 1
            self.bar.advance(self.f.size)
            if head.strip():
                self.totals.notes.append(f"1 partial line waiting in {self.f.name}")
            self.totals.files.append({"file": self.f.uri, "skipped": True})
            return
        st = found
        if st.done:
            if st.adopt:  # a file loaded by a version that named streams by path: record it by content
                self._write([], st.lines, st.offset, st)
                self.states.record(st.app_id, StreamState(st.offset, st.lines, _check(st.tail)))
            self.bar.advance(self.f.size)
            if self.rows or self.quarantined:  # another run finished what this one started
                self._record_file()
            else:
                self.totals.skipped += 1
                self.totals.files.append({"file": self.f.uri, "skipped": True})
            return
        start, line_no = st.offset, st.lines
        self.first_start = start if self.first_start is None else self.first_start
        reading = self._take_ahead(st) or self._open(st)
        with reading.stack:
            last_bar = 0
            batch = reading.next(line_no, self._schema())
            while batch is not None:
                st.tail = batch.tail
                # the batch after this one (the next file's first, after a file's last) is read
                # and parsed with the schema this commit leaves, while it commits
                ahead = functools.partial(self._read_next, reading, line_no + len(batch.lines))
                r, q = self._write(batch.lines, line_no, batch.end, st, parsed=batch, before_commit=ahead)
                line_no += len(batch.lines)
                st.offset, st.lines = batch.end, line_no
                self.rows, self.quarantined = self.rows + r, self.quarantined + q
                self.bar.advance(reading.counted.n - last_bar)
                self.show_lines()
                last_bar = reading.counted.n
                batch = reading.upcoming.pop() if reading.upcoming else reading.next(line_no, self._schema())
            self.bar.advance(reading.counted.n - last_bar)
        self.states.record(st.app_id, StreamState(st.offset, st.lines, _check(st.tail)))
        if reading.batches.partial:
            self.totals.notes.append(f"1 partial line waiting in {self.f.name}")
        self.totals.bytes_read += reading.counted.n
        self._record_file()

    def _read_next(self, reading: _Reading, line_no: int, schema: pa.Schema, snapshot: Any) -> None:
        reading.upcoming = [reading.next(line_no, schema)]
        if reading.upcoming[0] is None and self.following is not None:
            self.following.read_ahead(schema, snapshot)

    def _schema(self) -> pa.Schema | None:
        dt = self.committer.snapshot()
        return pa.schema(dt.schema().to_arrow()) if dt is not None else None

    def _open(self, st: _Stream) -> _Reading:
        """The file opened at the stream's offset, its batches not read yet."""
        stack = contextlib.ExitStack()
        try:
            raw = stack.enter_context(open_range(self.lake, self.f, 0 if self.gz else st.offset, client=self.client))
            counted = _Counting(raw)
            stream: BinaryIO = gzip.GzipFile(fileobj=counted, mode="rb") if self.gz else counted  # type: ignore[assignment, call-overload]  # _Counting reads like a binary file
            if self.gz and st.offset:
                _discard(stream, st.offset)
        except BaseException:
            stack.close()
            raise
        batches = _LineBatches(
            stream, st.offset, self.batch_lines, self.batch_bytes, complete_tail=self.gz, tail=st.tail
        )
        return _Reading(self, _stream_key(st), stack, counted, batches)

    def read_ahead(self, schema: pa.Schema, snapshot: Any) -> None:
        """Open this file and start parsing its first batch while the file before it commits
        its last (against ``snapshot``, which must not move before that commit).  Only a guess:
        ``load`` takes it when it finds the same stream at the same offset (nothing the other
        commit changed), and parses again if the table's schema moved."""
        self.drop_ahead()
        try:
            _, key, st = self._find(snapshot)
            if key is None or st is None or st.done:
                return
            reading = self._open(st)
        except Exception:  # noqa: BLE001 - a guess: the file's own turn meets the error and reports it
            return
        try:
            reading.first = reading.next(st.lines, schema)
        except Exception:  # noqa: BLE001 - likewise
            reading.stack.close()
            return
        self.ahead = reading

    def _take_ahead(self, st: _Stream) -> _Reading | None:
        reading, self.ahead = self.ahead, None
        if reading is not None and reading.key != _stream_key(st):
            reading.close()
            return None
        return reading

    def drop_ahead(self) -> None:
        if self.ahead is not None:
            self.ahead.close()
            self.ahead = None

    def _record_file(self) -> None:
        self.totals.files.append(
            {"file": self.f.uri, "from": self.first_start, "rows": self.rows, "quarantined": self.quarantined}
        )

    def read_content(self, start: int, n: int) -> bytes:
        """Bytes ``[start, start+n)`` of the file's content (decompressed for .gz)."""
        if not self.gz:
            if start >= self.f.size:
                return b""  # an empty file (and no ranged GET past the end)
            with open_range(self.lake, self.f, start, min(self.f.size, start + n), client=self.client) as fh:
                return _read_exactly(fh, n)
        if start + n <= FINGERPRINT_BYTES < self.f.size:  # the head: its first 64 KiB suffice
            try:
                with open_range(self.lake, self.f, 0, min(self.f.size, 64 << 10), client=self.client) as raw:
                    data = _read_exactly(gzip.GzipFile(fileobj=raw, mode="rb"), start + n)[start:]
                if len(data) == n or self.f.size <= 64 << 10:  # all of it, or the whole file
                    return data
            except EOFError:
                pass  # compressed more than 64x: read on
        with open_range(self.lake, self.f, 0, client=self.client) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            _discard(gz, start)  # type: ignore[arg-type]  # GzipFile reads like a binary file
            return _read_exactly(gz, n)

    def gzip_size(self) -> int:
        """ISIZE: the uncompressed size (mod 2**32) of the last gzip member."""
        with open_range(self.lake, self.f, max(0, self.f.size - 4), client=self.client) as fh:
            tail = fh.read()
        return int.from_bytes(tail, "little") if len(tail) == 4 else -1

    def legacy_lines(self, offset: int) -> int:
        """Lines before ``offset`` of a file loaded by a version that named streams by path: the
        last line number stored for it, plus the blank lines after it (they leave no row)."""
        import pyarrow.dataset as pads  # lazily: it costs every `ingest logs` a second of imports

        best = 0
        for t, col, filt in (
            (self.tid, "_source_line", pads.field("_source_file") == self.f.uri),
            (quarantine_table(self.tid), "source_ref", pads.field("source") == self.f.uri),
        ):
            if not self.lake.table_exists(t):
                continue
            ds = self.lake.dataset(t)
            if col not in ds.schema.names:
                continue
            vals = ds.to_table(columns=[col], filter=filt)[col].to_pylist()
            nums = [int(str(v).removeprefix("line ")) for v in vals if v is not None]
            best = max([best, *nums])
        if self.gz:
            return best
        end, blank, found = offset, b"", False
        while end > 0 and not found:  # walk back over the trailing blank lines
            lo = max(0, end - 4096)
            chunk = self.read_content(lo, end - lo)
            stripped = chunk.rstrip()
            blank, end, found = chunk[len(stripped) :] + blank, lo, bool(stripped)
        newlines = blank.count(b"\n")
        return best + max(0, newlines - 1) if found else newlines

    def _write(
        self,
        lines: Sequence[bytes],
        line_no: int,
        end: int,
        st: _Stream,
        *,
        parsed: _Batch | None = None,
        before_commit: Callable[[pa.Schema, Any], None] | None = None,
    ) -> tuple[int, int]:
        """Commit the lines ``[line_no, line_no + len(lines))`` (ending at offset ``end``): their
        parse read ahead (``parsed``) if it was made with the table's schema as it stands, else
        parsed now.  ``before_commit`` is called with the schema the commit will leave and the
        snapshot it is made against (which it must not move: the checks were made on it)."""
        # one snapshot for the schema, the exactly-once check and the commit (write_batch)
        dt = self.committer.snapshot()
        existing = pa.schema(dt.schema().to_arrow()) if dt is not None else None
        if parsed is not None and parsed.line_no == line_no and _same_schema(parsed.schema, existing):
            rows, bad = parsed.result()
        else:
            rows, bad = self._parse_block(lines, line_no, existing)
        n = rows.num_rows
        meta = {
            "_source_file": pa.repeat(pa.scalar(self.f.uri, pa.string()), n),
            "_source_line": rows["_source_line"] if "_source_line" in rows.column_names else pa.array([], pa.int64()),
            "_run_id": pa.repeat(pa.scalar(self.run_id, pa.string()), n),
            "_ingested_at": pa.repeat(pa.scalar(utcnow(), _META_TYPES["_ingested_at"]), n),
        }
        cols = [c for c in rows.column_names if c != "_source_line"]
        data = pa.table([*(rows[c] for c in cols), *meta.values()], names=[*cols, *meta])
        if before_commit is not None:
            before_commit(_schema_after(existing, data.schema), dt)
        # each commit is counted when it lands: a conflict that re-runs ``load`` must not forget it;
        # the quarantine is followed like the target (not loaded again for each batch)
        quarantine = self.committer.quarantine_snapshot() if bad else None
        done = self.committer.commit(
            Batch(
                end,
                data,
                bad,
                app_id=st.app_id,
                extra_transactions={st.app_id + _LINES: line_no + len(lines), st.app_id + _CHECK: _check(st.tail)},
            ),
            snapshot=dt,
            quarantine=quarantine,
        )
        return done.rows, done.quarantined

    def _parse_block(
        self, lines: Sequence[bytes], line_no: int, existing: pa.Schema | None
    ) -> tuple[pa.Table, list[Bad]]:
        """The batch's rows (data columns and ``_source_line``) and its bad lines."""
        return self._start_parse(lines, line_no, existing).result()

    def _start_parse(self, lines: Sequence[bytes], line_no: int, existing: pa.Schema | None) -> _Parse:
        """Start parsing the batch in the parsing threads, one block of ``_BLOCK_LINES`` each: in
        columns (``logparse``), and line by line only in the chunks that hold a line the columnar
        path cannot take."""
        spans = [(lines[lo : lo + _BLOCK_LINES], line_no + lo) for lo in range(0, len(lines), _BLOCK_LINES)]
        return _Parse(self, existing, spans, [self.parser.submit(self._parse_alone, *span, existing) for span in spans])

    def _parse_alone(
        self, lines: Sequence[bytes], line_no: int, existing: pa.Schema | None
    ) -> tuple[list[pa.Table], list[Bad]]:
        """One block, as if no block came before it in the batch."""
        parts: list[pa.Table] = []
        bad: list[Bad] = []
        self._parse_span(lines, line_no, existing, parts, bad)
        return parts, bad

    def _parse_span(
        self, lines: Sequence[bytes], line_no: int, existing: pa.Schema | None, parts: list[pa.Table], bad: list[Bad]
    ) -> None:
        """``lines`` in columns; if one cannot be, its sixteenths, and so on down to chunks of
        ``_FALLBACK_LINES``, which go line by line: a bad line costs a few re-reads of the lines
        around it, a clean run of lines one columnar read."""
        got = self._parse_columnar(lines, line_no, _merged(existing, parts))
        if got is None and len(lines) <= _FALLBACK_LINES:
            got = self._parse_lines(lines, line_no, _merged(existing, parts))
        if got is not None:
            parts.append(got[0])
            bad += got[1]
            return
        step = max(_FALLBACK_LINES, -(-len(lines) // _SPLIT))
        for lo in range(0, len(lines), step):
            self._parse_span(lines[lo : lo + step], line_no + lo, existing, parts, bad)

    def _parse_columnar(
        self, lines: Sequence[bytes], line_no: int, existing: pa.Schema | None
    ) -> tuple[pa.Table, list[Bad]] | None:
        if self.regex is None:
            data = logparse.joined(lines)
            keep = logparse.nonblank(lines, data)
            table = logparse.json_block(lines, existing, _META_TYPES, data=data, keep=keep)
            if table is None:
                return None
            return _with_lines(table, pc.add(keep, line_no + 1)), []
        if self.re2 is None:
            return None
        got = logparse.text_block(lines, self.re2, [n for n in self.regex.groupindex if n not in _META_TYPES], existing)
        if got is None:
            return None
        table, rows, misses = got
        bad = [
            Bad(self.f.uri, f"line {line_no + 1 + i}", _NO_MATCH, lines[i].rstrip(b"\r\n")) for i in misses.to_pylist()
        ]
        return _with_lines(table, pc.add(rows, line_no + 1)), bad

    def _parse_lines(
        self, lines: Sequence[bytes], line_no: int, existing: pa.Schema | None
    ) -> tuple[pa.Table, list[Bad]]:
        """One line at a time: each bad line is quarantined with its reason."""
        records: list[dict[str, Any]] = []
        bad: list[Bad] = []
        numbers: list[int] = []
        for i, raw in enumerate(lines, start=line_no + 1):
            text = raw.rstrip(b"\r\n")
            if not text.strip():
                continue
            try:
                rec = self._parse(text)
            except ValueError as exc:
                bad.append(Bad(self.f.uri, f"line {i}", str(exc), text))
                continue
            for k in _META_TYPES:
                rec.pop(k, None)
            rec["_source_line"] = i
            records.append(rec)
            numbers.append(i)
        data, misfits = fit_rows(records, existing, fixed={"_source_line": pa.int64()})
        for idx, reason in misfits:
            bad.append(
                Bad(self.f.uri, f"line {numbers[idx]}", reason, lines[numbers[idx] - line_no - 1].rstrip(b"\r\n"))
            )
        return data, bad

    def _parse(self, text: bytes) -> dict[str, Any]:
        try:
            s = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8: {exc}") from None
        if self.regex is None:
            try:
                rec = json.loads(s)
            except json.JSONDecodeError as exc:
                raise ValueError(f"malformed JSON: {exc}") from None
            if not isinstance(rec, dict):
                raise ValueError(f"not a JSON object: {type(rec).__name__}")
            return rec
        m = self.regex.match(s)
        if not m:
            raise ValueError(_NO_MATCH)
        return dict(m.groupdict())


_BLOCK_LINES = (
    16_384  # lines parsed in columns at once (pyarrow parses ~1 MiB blocks; a bad line costs a re-read of its block)
)
_SPLIT = 16  # a block with a bad line is re-read in this many parts, and so on down to...
_FALLBACK_LINES = 64  # ...chunks this long, read line by line
_NO_MATCH = "line does not match --pattern"


def _with_lines(table: pa.Table, numbers: pa.Array) -> pa.Table:
    return table.append_column("_source_line", numbers)


def _agrees(before: pa.Schema | None, parts: list[pa.Table]) -> bool:
    """Whether every column of ``parts`` that ``before`` has is of the type ``before`` gives it."""
    if before is None:
        return True
    for p in parts:
        for f in p.schema:
            i = before.get_field_index(f.name)
            if i >= 0 and before.field(i).type != f.type:
                return False
    return True


def _merged(existing: pa.Schema | None, parts: list[pa.Table]) -> pa.Schema | None:
    """The table's columns plus those earlier chunks of this batch added (their types win for
    the next chunk, so the chunks concatenate)."""
    fields = list(existing or [])
    names = {f.name for f in fields}
    for p in parts:
        for f in p.schema:
            if f.name not in names and f.name != "_source_line":
                fields.append(f)
                names.add(f.name)
    return pa.schema(fields) if fields else None


# -- file identity ---------------------------------------------------------------------------------
FINGERPRINT_BYTES = 1024  # like Filebeat's fingerprint length
_CHECK_BYTES = 64
_LINES, _CHECK = "#lines", "#check"
_FIRST_LINE = re.compile(rb"\s*\S[^\n]*\n")


def fingerprint_key(head: bytes, *, whole: bool) -> bytes | None:
    """The bytes that name a file: its first non-blank line, or its first FINGERPRINT_BYTES when
    that line is longer.  They never change as the file grows, so a file that was short when it
    was first read keeps its name.  None while the first line is still being written (``whole``:
    ``head`` is the entire file)."""
    head = head[:FINGERPRINT_BYTES]
    m = _FIRST_LINE.match(head)
    if m:
        return head[: m.end()]
    if len(head) >= FINGERPRINT_BYTES and not whole:
        return head
    return None


def _check(tail: bytes) -> int:
    """A 62-bit hash of the bytes before the committed offset (fits a Delta txn version)."""
    return int.from_bytes(hashlib.sha256(tail).digest()[:8], "big") >> 2


@dataclass
class _Stream:
    """One file's content in the lake: its app id, committed offset and line count, and the bytes
    before the offset (for the next check)."""

    app_id: str
    offset: int = 0
    lines: int = 0
    tail: bytes = b""
    done: bool = False  # nothing beyond the offset
    adopt: bool = False  # state found under the old path-based app id


class _Streams:
    """Finds which stream a file continues.

    Streams are named by content: ``logs:<table>:fp:<sha256 of the fingerprint key>``, then
    ``…:2``, ``…:3`` for files that share a first line but not their content.  A stream matches
    when the file is at least as long as its committed offset and the bytes before that offset
    hash to the committed check (a .gz whose uncompressed size equals the offset is taken as read
    without decompressing it: rotated archives are many and never change).  No match: a new
    stream, read from 0.
    """

    def __init__(self, loader: _FileLoader, dt: Any, key: bytes, head: bytes) -> None:
        self.loader, self.dt, self.head = loader, dt, head
        self.base = f"logs:{loader.tid}:fp:{hashlib.sha256(key).hexdigest()[:32]}"
        self._isize: int | None = None

    def find(self) -> _Stream:
        known: list[tuple[str, StreamState]] = []  # every generation, oldest first
        while True:
            app_id = self._name(len(known) + 1)
            state = self._state(app_id)
            if state is None:
                break
            known.append((app_id, state))
        for app_id, state in reversed(known):  # a live file is most likely the newest
            st = self._match(app_id, state)
            if st is not None:
                return st
        if not known:
            legacy = self._legacy(self.base)
            if legacy is not None:
                return legacy
        return _Stream(self._name(len(known) + 1))

    def _name(self, gen: int) -> str:
        return self.base if gen == 1 else f"{self.base}:{gen}"

    def _txn(self, app_id: str) -> int | None:
        return None if self.dt is None else self.dt.transaction_version(app_id)

    def _state(self, app_id: str) -> StreamState | None:
        """Where a stream stands: its transaction while it lives (a transaction ahead of the
        stream's record is recorded now: the run that committed it stopped before it could),
        else its record (``logstate``), else None (no such stream)."""
        states = self.loader.states
        recorded = states.get(app_id)
        offset = self._txn(app_id)
        if offset is None or (recorded is not None and recorded.offset >= offset):
            return recorded
        state = StreamState(offset, self._txn(app_id + _LINES) or 0, self._txn(app_id + _CHECK))
        states.record(app_id, state)
        return state

    def _isize_is(self, offset: int) -> bool:
        if self._isize is None:
            self._isize = self.loader.gzip_size()
        return self._isize == offset % (1 << 32)

    def _before(self, offset: int) -> bytes:
        start = max(0, offset - _CHECK_BYTES)
        if offset <= len(self.head):
            return self.head[start:offset]
        return self.loader.read_content(start, offset - start)

    def _match(self, app_id: str, state: StreamState) -> _Stream | None:
        offset, lines = state.offset, state.lines
        f = self.loader.f
        if self.loader.gz and self._isize_is(offset):
            return _Stream(app_id, offset, lines, done=True)
        if not self.loader.gz and offset > f.size:
            return None  # shrank: another file
        tail = self._before(offset)
        if len(tail) != min(offset, _CHECK_BYTES) or _check(tail) != state.check:
            return None
        return _Stream(app_id, offset, lines, tail, done=not self.loader.gz and offset == f.size)

    def _legacy(self, app_id: str) -> _Stream | None:
        """A lake written before streams were named by content: ``logs:<table>:<file uri>``."""
        f = self.loader.f
        offset = self._txn(f"logs:{self.loader.tid}:{f.uri}")
        if offset is None or (not self.loader.gz and offset > f.size):
            return None  # never loaded, or shrank since: a new file
        done = self._isize_is(offset) if self.loader.gz else offset == f.size
        tail = self._before(offset)
        if not self.loader.gz and not done and not tail.endswith(b"\n"):
            return None  # mid-line: the path now holds another file (renamed before this version ran)
        lines = self.loader.legacy_lines(offset)
        return _Stream(app_id, offset, lines, tail, done=done, adopt=True)


@dataclass
class _Parse:
    """A batch's blocks, each parsed in a parsing thread with the table's schema alone.  In order,
    a block would see the columns the blocks before it in the batch added; ``result`` keeps a
    block's parse when every such column got the type those blocks gave it (then the parse is
    the same: the types decide it), and parses the block again in order otherwise."""

    loader: _FileLoader
    existing: pa.Schema | None
    spans: list[tuple[Sequence[bytes], int]]
    alone: list[Future[tuple[list[pa.Table], list[Bad]]]]

    def result(self) -> tuple[pa.Table, list[Bad]]:
        parts: list[pa.Table] = []
        bad: list[Bad] = []
        for (lines, line_no), fut in zip(self.spans, self.alone, strict=True):
            got_parts, got_bad = fut.result()
            if _agrees(_merged(self.existing, parts), got_parts):
                parts += got_parts
                bad += got_bad
            else:
                self.loader._parse_span(lines, line_no, self.existing, parts, bad)
        parts = [p for p in parts if p.num_columns]
        if not parts:
            return pa.table({}), bad
        return pa.concat_tables(parts, promote_options="default"), bad

    def cancel(self) -> None:
        for fut in self.alone:
            fut.cancel()


@dataclass
class _Batch:
    """One batch of a file's lines, read, with its parse under way in the parsing threads (made
    with the table's schema as it stood then)."""

    lines: logparse.Lines
    end: int  # the offset after it
    tail: bytes  # the bytes before that offset (the stream's check)
    line_no: int  # lines before it
    schema: pa.Schema | None
    parse: _Parse

    def result(self) -> tuple[pa.Table, list[Bad]]:
        return self.parse.result()


@dataclass
class _Reading:
    """A file opened at a stream's offset (``key``), and its batches, each parsed in the
    parsing threads once read."""

    loader: _FileLoader
    key: tuple[str, int, int, bytes]
    stack: contextlib.ExitStack
    counted: _Counting
    batches: _LineBatches
    _items: Iterator[tuple[logparse.Lines, int, bytes]] | None = None
    first: _Batch | None = None  # read ahead before ``load`` took this reading
    upcoming: list[_Batch | None] = field(default_factory=list)  # the batch read while the one before commits

    def close(self) -> None:
        """Close the file; a parse read ahead in vain is cancelled where it has not started."""
        if self.first is not None:
            self.first.parse.cancel()
        self.stack.close()

    def next(self, line_no: int, schema: pa.Schema | None) -> _Batch | None:
        """The next batch (None at the end), its parse started with ``schema``."""
        if self.first is not None:
            first, self.first = self.first, None
            return first
        if self._items is None:
            self._items = iter(self.batches)
        item = next(self._items, None)
        if item is None:
            return None
        lines, end, tail = item
        parse = self.loader._start_parse(lines, line_no, schema)
        return _Batch(lines, end, tail, line_no, schema, parse)


def _schema_after(existing: pa.Schema | None, incoming: pa.Schema) -> pa.Schema:
    """The table's schema once ``incoming`` is appended (new columns go last), as far as it can
    be told before the commit: a guess for parsing ahead, which ``_write`` checks."""
    incoming = lake_schema(incoming)
    if existing is None:
        return incoming
    new = [f for f in incoming if f.name not in existing.names]
    return pa.schema([*existing, *new]) if new else existing


def _stream_key(st: _Stream) -> tuple[str, int, int, bytes]:
    return (st.app_id, st.offset, st.lines, st.tail)


def _same_schema(a: pa.Schema | None, b: pa.Schema | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.equals(b))


class _Counting:
    """Counts bytes read from the source (compressed bytes for .gz)."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.n = fh, 0

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.n += len(data)
        return data


def _discard(stream: BinaryIO, n: int) -> None:
    while n > 0:
        chunk = stream.read(min(n, 1 << 20))
        if not chunk:
            return
        n -= len(chunk)


def _read_exactly(fh: Any, n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        chunk = fh.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class _LineBatches:
    """Bounded batches of complete lines, each with the offset after it and the bytes before that
    offset (for the stream's check).

    A last line without a newline is still being written, so it waits for the next run (``partial``
    says one is waiting) - except in a gzip file, which is complete once it is readable.
    """

    def __init__(
        self, stream: BinaryIO, offset: int, max_lines: int, max_bytes: int, *, complete_tail: bool, tail: bytes
    ) -> None:
        self.stream, self.offset, self.max_lines, self.max_bytes = stream, offset, max_lines, max_bytes
        self.complete_tail, self.tail = complete_tail, tail
        self.partial = False

    def _emit(self, pieces: list[bytes], ends: list[Any]) -> tuple[logparse.Lines, int, bytes]:
        import numpy as np

        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        bases = np.cumsum([0, *map(len, pieces[:-1])])
        lines = logparse.Lines(data, np.concatenate([e + b for e, b in zip(ends, bases.tolist(), strict=True)]))
        self.offset += len(data)
        self.tail = (self.tail + data[-_CHECK_BYTES:])[-_CHECK_BYTES:]
        return lines, self.offset, self.tail

    def __iter__(self) -> Iterator[tuple[logparse.Lines, int, bytes]]:
        import numpy as np

        pieces: list[bytes] = []  # the batch's bytes, and the offset each line ends at in its piece
        ends: list[Any] = []
        count = size = 0
        rest = b""
        while True:
            chunk = self.stream.read(1 << 20)
            if not chunk:
                break
            data = rest + chunk
            nl = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n")) + 1  # where each line ends
            rest = data[int(nl[-1]) :] if len(nl) else data
            i = base = 0
            while i < len(nl):  # whole runs of lines at once, cut where a limit falls
                seg = nl[i : i + self.max_lines - count]
                over = int(np.searchsorted(seg - base + size, self.max_bytes, side="left"))
                seg = seg[: over + 1]  # the line that reaches max_bytes ends the batch
                end = int(seg[-1])
                pieces.append(data[base:end])
                ends.append(seg - base)
                count, size, base, i = count + len(seg), size + end - base, end, i + len(seg)
                if count >= self.max_lines or size >= self.max_bytes:
                    yield self._emit(pieces, ends)
                    pieces, ends, count, size = [], [], 0, 0
        if rest and self.complete_tail:
            pieces.append(rest)
            ends.append(np.array([len(rest)], np.int64))
            count += 1
        elif rest:
            self.partial = True
        if count:
            yield self._emit(pieces, ends)
