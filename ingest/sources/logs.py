"""Log files (JSON lines, or text parsed by a regex) -> a bronze Delta table.

Each file is its own exactly-once stream: app id ``logs:<table>:<file uri>``, batch version = the
byte offset the batch ends at (decompressed offset for ``.gz``).  A file already loaded is not
read again; a file that grew is read from the committed offset; a run killed mid-file resumes at
the last committed batch.  Bad lines go to ``<table>_quarantine`` before the batch's good rows.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator, Literal

import pyarrow as pa
import pyarrow.dataset as pads

from ingest.delta import committed_version, write_batch
from ingest.errors import ConfigError
from ingest.lake import Lake, TableId, ingest_target
from ingest.runlog import track
from ingest.sources import (
    Bad,
    IngestResult,
    SourceFile,
    Tally,
    ensure_table,
    env_int,
    fit_rows,
    list_source,
    open_range,
    progress_bar,
    quarantine_table,
    utcnow,
    with_commit_retry,
    write_quarantine,
)

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


def ingest_logs(
    lake: Lake,
    src: str,
    *,
    table: str = "bronze.events",
    format: LogFormat = "jsonl",
    pattern: str | None = None,
    progress: bool = False,
) -> IngestResult:
    """Load new lines of every file under ``src`` (a directory, a file or ``s3://bucket/prefix``)."""
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
    with track(lake, command="logs", source=src, target=str(tid)) as run:
        files = list_source(lake, src)
        with progress_bar(progress, f"logs -> {tid}", total=sum(f.size for f in files)) as bar:
            for f in files:
                reader = _FileLoader(lake, tid, f, regex=regex, run_id=run.run_id, totals=totals, bar=bar)
                with_commit_retry(reader.load)
        run.details = {"format": format, "files": totals.files}
        result = totals.finish(lake, tid, run)
    return result


class _FileLoader:
    """Loads one file from its committed offset; ``load`` can be re-run after a commit conflict."""

    def __init__(self, lake: Lake, tid: TableId, f: SourceFile, *, regex, run_id: str, totals: _Totals, bar) -> None:
        self.lake, self.tid, self.f, self.regex, self.run_id = lake, tid, f, regex, run_id
        self.totals, self.bar = totals, bar
        self.app_id = f"logs:{tid}:{f.uri}"
        self.gz = f.uri.endswith(".gz")
        self.batch_lines = env_int("INGEST_LOG_BATCH_LINES", 100_000)
        self.batch_bytes = env_int("INGEST_LOG_BATCH_BYTES", 64 << 20)

    def load(self) -> None:
        start = committed_version(self.lake, self.tid, self.app_id) or 0
        if self._already_loaded(start):
            self.totals.skipped += 1
            self.bar.advance(self.f.size)
            self.totals.files.append({"file": self.f.uri, "skipped": True})
            return
        line_no = self._lines_before(start) if start else 0
        rows = quarantined = 0
        with open_range(self.lake, self.f, 0 if self.gz else start) as raw:
            counted = _Counting(raw)
            stream: BinaryIO = gzip.GzipFile(fileobj=counted, mode="rb") if self.gz else counted  # type: ignore[assignment]
            if self.gz and start:
                _discard(stream, start)
            offset = start
            last_bar = 0
            for batch, end in _line_batches(stream, offset, self.batch_lines, self.batch_bytes, complete_tail=self.gz):
                r, q = self._write(batch, line_no, end)
                line_no += len(batch)
                rows, quarantined = rows + r, quarantined + q
                self.bar.advance(counted.n - last_bar)
                last_bar = counted.n
            self.bar.advance(counted.n - last_bar)
        self.totals.rows += rows
        self.totals.quarantined += quarantined
        self.totals.bytes_read += counted.n
        self.totals.files.append({"file": self.f.uri, "from": start, "rows": rows, "quarantined": quarantined})

    def _already_loaded(self, start: int) -> bool:
        if not self.gz:
            return start >= self.f.size  # a file that shrank was replaced: never re-read its prefix
        if not start:
            return False
        with open_range(self.lake, self.f, max(0, self.f.size - 4)) as fh:
            tail = fh.read()
        # ISIZE: the uncompressed size (mod 2**32) of the last gzip member
        return len(tail) == 4 and int.from_bytes(tail, "little") == start % (1 << 32)

    def _lines_before(self, offset: int) -> int:
        """Line numbering continues where the committed batches stopped."""
        best = 0
        for t, col, filt in (
            (self.tid, "_source_line", pads.field("_source_file") == self.f.uri),
            (quarantine_table(self.tid), "source_ref", pads.field("source") == self.f.uri),
        ):
            if not self.lake.table_exists(t):
                continue
            ds = self.lake.delta_table(t).to_pyarrow_dataset()
            if col not in ds.schema.names:
                continue
            vals = ds.to_table(columns=[col], filter=filt)[col].to_pylist()
            nums = [int(str(v).removeprefix("line ")) for v in vals if v is not None]
            best = max([best, *nums])
        return best

    def _write(self, lines: list[bytes], line_no: int, end: int) -> tuple[int, int]:
        now = utcnow()
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
            rec.update(_source_file=self.f.uri, _source_line=i, _run_id=self.run_id, _ingested_at=now)
            records.append(rec)
            numbers.append(i)
        existing = None
        if self.lake.table_exists(self.tid):
            existing = pa.schema(self.lake.delta_table(self.tid).schema().to_arrow())
        data, misfits = fit_rows(records, existing, fixed=_META_TYPES)
        for idx, reason in misfits:
            bad.append(Bad(self.f.uri, f"line {numbers[idx]}", reason, lines[numbers[idx] - line_no - 1].rstrip(b"\r\n")))
        if data.num_columns == 0:
            data = pa.table({k: pa.array([], t) for k, t in _META_TYPES.items()})
        q = write_quarantine(self.lake, self.tid, bad, run_id=self.run_id, app_id=self.app_id, batch_version=end)
        ensure_table(self.lake, self.tid, data.schema)
        res = write_batch(self.lake, self.tid, data, app_id=self.app_id, batch_version=end)
        return (0 if res.skipped else res.rows), q

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
            raise ValueError("line does not match --pattern")
        return dict(m.groupdict())


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


def _line_batches(
    stream: BinaryIO, offset: int, max_lines: int, max_bytes: int, *, complete_tail: bool
) -> Iterator[tuple[list[bytes], int]]:
    """Bounded batches of complete lines and the offset after each batch.

    A last line without a newline is still being written, so it waits for the next run - except in
    a gzip file, which is complete once it is readable.
    """
    batch: list[bytes] = []
    size = 0
    rest = b""
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for p in parts:
            batch.append(p + b"\n")
            size += len(p) + 1
            if len(batch) >= max_lines or size >= max_bytes:
                offset += size
                yield batch, offset
                batch, size = [], 0
    if rest and complete_tail:
        batch.append(rest)
        size += len(rest)
    if batch:
        yield batch, offset + size
