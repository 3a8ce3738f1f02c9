"""Columnar log parsing (pyarrow's JSON reader, RE2) stores exactly what the line-by-line path
stores: the same rows, types, line numbers and quarantined lines with reasons, on inputs where
the two parsers differ (ints pyarrow rounds to doubles, timestamps it parses, two objects on one
line, duplicate keys, RE2's ASCII ``\\d`` and its "" for a group that took no part)."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.lake import Lake
from ingest.sources import logparse
from ingest.sources import logs as logs_mod
from ingest.sources.logs import ingest_logs
from tests.sources.conftest import read

CLEAN_JSON = [
    b'{"id": 20, "n": 20, "f": 2.5, "ok": true, "ts": "2026-11-03T00:00:00Z", "s": "a"}\n',
    b'{"id": 21, "n": 21, "f": 3, "ok": false, "ts": "2026-11-03T00:00:01.5+01:00", "s": "b", "extra": "new"}\n',
    b"\n",
    b'{"id": 22, "n": -0, "s": "c"}\n',
    b'{"id": 23}\r\n',
    b'{"id": 24, "f": -1.25, "ok": null}\n',
]
JSON_LINES = CLEAN_JSON + [
    b'{"id": 1, "n": 1, "f": 1.5, "ok": true, "ts": "2026-11-01T10:00:00Z", "s": "2026-11-01", "o": {"b": 1, "a": [1]}}\n',
    b'{"id": 2, "n": 2, "f": 9007199254740993, "ok": false, "ts": "2026-11-01T12:00:00.123456+02:00", "s": "x"}\n',
    b"\n",
    b'{"id": 3, "n": 99999999999999999999, "f": 2, "ts": "2026-11-01T10:00:00.123456789Z"}\r\n',
    b'{"id": 4, "n": 4, "_source_line": 999, "_run_id": "forged", "nothing": null}\n',
    b'{"id": 5}{"id": 6}\n',
    b'{"id": 7, "id": 8}\n',
    b'{"id": 9, "ts": "2026-11-01T10:00:00"}\n',
    b'{"id": 10, "s": "caf\xc3\xa9", "n": "12"}\n',
    b'{"id": 11, "bad": \xff}\n',
    b"[1, 2]\n",
    b'{"id": 12, "n": 12, "f": 0.1, "ok": true, "ts": "2026-11-02T00:00:00Z", "s": "y"}\n',
] + [line.replace(b'"id": 2', b'"id": 3') for line in CLEAN_JSON]
CLEAN_TEXT = [
    "2026-11-01T09:00:00Z INFO user=1 started\n",
    "2026-11-01T09:00:01Z WARN user=2 slow: 900 ms\n",
    "not a log line\n",
    "\n",
    "2026-11-01T09:00:02Z ERROR user=3 \n",
    "2026-11-01T09:00:03+02:00 INFO user=4 offset time\r\n",
]
TEXT_LINES = CLEAN_TEXT + [
    "2026-11-01T10:00:00Z INFO user=7 viewed photo 3\n",
    "2026-11-01T10:00:01Z WARN user=\u0663 Arabic-Indic digit\n",  # \d: Unicode in Python, ASCII in RE2
    "no match here\n",
    "   \n",
    "2026-11-01T10:00:02Z DEBUG user=8 caf\u00e9\r\n",
    "2026-11-01T10:00:03Z INFO user=9 \n",
] + CLEAN_TEXT
PATTERNS = [
    r"(?P<ts>\S+) (?P<level>[A-Z]+) user=(?P<user>\d+) (?P<msg>.*)",
    r"(?P<ts>\S+) (?P<level>INFO|WARN)? ?user=(?P<user>\w+)(?P<extra> x)?",  # groups that may not take part
    r"(?P<ts>\S+)(?= INFO) (?P<rest>.*)",  # a lookahead: RE2 has none
    r"(?P<ts>\S+) (?P<_source_line>[A-Z]+) (?P<rest>.*)",  # a group named like a column the loader sets
]


def _load(lake: Lake, src: Path, *, columnar: bool, monkeypatch, **kwargs) -> tuple[list[dict], list[dict], pa.Schema]:
    taken: list[int] = []
    real = logs_mod._FileLoader._parse_columnar

    def counted(self, lines, *args):
        got = real(self, lines, *args)
        taken.extend([len(lines)] if got is not None else [])
        return got

    with monkeypatch.context() as m:
        m.setenv("INGEST_LOG_BATCH_LINES", "6")  # several batches, each re-read in chunks of 3
        m.setattr(logs_mod, "_FALLBACK_LINES", 3)
        m.setattr(logs_mod._FileLoader, "_parse_columnar", counted if columnar else lambda self, *a: None)
        ingest_logs(lake, str(src), table="bronze.ev", **kwargs)
    pattern = kwargs.get("pattern")
    if columnar and (pattern is None or logparse.re2_pattern(re.compile(pattern)) is not None):
        assert sum(taken) >= 9, taken  # the clean runs of lines took the columnar path
    drop = ("_run_id", "_ingested_at", "run_id", "quarantined_at")
    rows = [{k: v for k, v in r.items() if k not in drop} for r in read(lake, "bronze.ev")]
    bad = [{k: v for k, v in r.items() if k not in drop} for r in read(lake, "bronze.ev_quarantine")]
    schema = lake.dataset("bronze.ev").schema
    return sorted(rows, key=lambda r: r["_source_line"]), sorted(bad, key=lambda r: r["source_ref"]), schema


def _same_both_ways(tmp_path: Path, monkeypatch, name: str, data: bytes, **kwargs) -> tuple[list[dict], list[dict]]:
    src = tmp_path / "src" / name
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(data)
    fast = _load(Lake(str(tmp_path / f"fast-{name}"), s3=None), src.parent, columnar=True, monkeypatch=monkeypatch, **kwargs)
    slow = _load(Lake(str(tmp_path / f"slow-{name}"), s3=None), src.parent, columnar=False, monkeypatch=monkeypatch, **kwargs)
    assert fast[2].names == slow[2].names and fast[2].types == slow[2].types
    assert fast[0] == slow[0]
    assert fast[1] == slow[1]
    src.unlink()
    return fast[0], fast[1]


def test_json_lines_in_columns_store_what_line_by_line_stores(tmp_path: Path, monkeypatch) -> None:
    rows, bad = _same_both_ways(tmp_path, monkeypatch, "app.jsonl", b"".join(JSON_LINES))
    by_id = {r["id"]: r for r in rows}
    assert by_id[12]["_source_line"] == 18 and by_id[4]["_source_line"] == 11  # blank lines counted
    assert {b["source_ref"] for b in bad} >= {"line 12", "line 16", "line 17"}  # two objects, not UTF-8, not an object


def test_a_clean_block_takes_the_columnar_path_and_a_rounded_int_does_not() -> None:
    meta = {"_source_line": pa.int64()}
    t = logparse.json_block([b'{"a": 1, "ts": "2026-11-01T10:00:00Z", "f": 0.5}\n', b"\n", b'{"a": 2, "f": 2}\n'], None, meta)
    assert t is not None and t.schema.field("ts").type == pa.timestamp("us", tz="UTC") and t["f"].to_pylist() == [0.5, 2.0]
    assert logparse.json_block([b'{"f": 0.5}\n', b'{"f": 9007199254740993}\n'], None, meta) is None
    assert logparse.json_block([b'{"a": 1}{"a": 2}\n'], None, meta) is None
    existing = pa.schema([("s", pa.string())])
    t = logparse.json_block([b'{"s": "2026-11-01T10:00:00Z"}\n'], existing, meta)
    assert t is not None and t["s"].to_pylist() == ["2026-11-01T10:00:00Z"]  # text stays text


@pytest.mark.parametrize("pattern", PATTERNS)
def test_text_patterns_in_columns_match_python_re(tmp_path: Path, monkeypatch, pattern: str) -> None:
    data = "".join(TEXT_LINES).encode() + b"2026-11-01T10:00:04Z INFO user=1 \xff\n"
    rows, bad = _same_both_ways(tmp_path, monkeypatch, "app.log", data, format="text", pattern=pattern)
    assert rows or bad


def test_re2_only_for_patterns_it_answers_like_python() -> None:
    assert logparse.re2_pattern(re.compile(PATTERNS[0])) is not None
    assert logparse.re2_pattern(re.compile(PATTERNS[1])) is None  # optional groups: None vs ""
    assert logparse.re2_pattern(re.compile(PATTERNS[2])) is None  # lookahead
    assert logparse.re2_pattern(re.compile(r"(?P<a>\w+)", re.IGNORECASE)) is None


# Blocks whose columns disagree: a column an earlier block of the batch added comes back null,
# as a float, as text, as a non-timestamp, so a block parsed apart types it otherwise.
DISAGREEING_JSON = [
    b'{"a": 1}\n',
    b'{"a": 2, "c": 5}\n',
    b'{"a": 3, "c": null}\n',
    b'{"a": 4}\n',
    b'{"a": 5, "c": 1.5}\n',
    b'{"a": 6, "c": 7}\n',
    b'{"a": 7, "c": "x"}\n',
    b'{"a": 8, "d": "2026-11-01T00:00:00Z"}\n',
    b'{"a": 9, "d": "text"}\n',
    b'{"a": 10, "d": "2026-11-01T00:00:01Z", "c": 9}\n',
    b'{"a": 11, "c": 10}\n',
    b'{"a": 12, "e": true}\n',
]
DISAGREEING_TEXT = [
    "2026-11-01T09:00:00Z INFO user=1 a\n",
    "2026-11-01T09:00:01Z INFO user=2 b\n",
    "yesterday INFO user=3 c\n",
    "2026-11-01T09:00:02Z WARN user=4 d\n",
    "now ERROR user=5 e\n",
    "2026-11-01T09:00:03Z INFO user=6 f\n",
]


def _load_in_blocks(lake: Lake, src: Path, *, apart: bool, monkeypatch, **kwargs) -> tuple[list[dict], list[dict], pa.Schema, list[bool]]:
    verdicts: list[bool] = []
    real = logs_mod._agrees

    def agrees(before, parts):
        verdicts.append(real(before, parts) if apart else False)  # False: every block parsed again in order
        return verdicts[-1]

    with monkeypatch.context() as m:
        m.setenv("INGEST_LOG_BATCH_LINES", "12")
        m.setenv("INGEST_LOG_PARSE_THREADS", "2")
        m.setattr(logs_mod, "_BLOCK_LINES", 2)
        m.setattr(logs_mod, "_agrees", agrees)
        ingest_logs(lake, str(src), table="bronze.ev", **kwargs)
    drop = ("_run_id", "_ingested_at", "run_id", "quarantined_at")
    rows = [{k: v for k, v in r.items() if k not in drop} for r in read(lake, "bronze.ev")]
    bad = [{k: v for k, v in r.items() if k not in drop} for r in read(lake, "bronze.ev_quarantine")]
    schema = lake.dataset("bronze.ev").schema
    return sorted(rows, key=lambda r: r["_source_line"]), sorted(bad, key=lambda r: r["source_ref"]), schema, verdicts


@pytest.mark.parametrize(
    ("name", "data", "kwargs"),
    [
        ("app.jsonl", b"".join(DISAGREEING_JSON + JSON_LINES), {}),
        ("app.log", "".join(DISAGREEING_TEXT + TEXT_LINES).encode(), {"format": "text", "pattern": PATTERNS[0]}),
    ],
)
def test_blocks_parsed_apart_store_what_blocks_parsed_in_order_store(
    tmp_path: Path, monkeypatch, name: str, data: bytes, kwargs: dict
) -> None:
    src = tmp_path / "src" / name
    src.parent.mkdir()
    src.write_bytes(data)
    apart = _load_in_blocks(Lake(str(tmp_path / "apart"), s3=None), src.parent, apart=True, monkeypatch=monkeypatch, **kwargs)
    in_order = _load_in_blocks(Lake(str(tmp_path / "order"), s3=None), src.parent, apart=False, monkeypatch=monkeypatch, **kwargs)
    assert True in apart[3] and False in apart[3]  # some blocks kept as parsed apart, some parsed again
    assert apart[2].names == in_order[2].names and apart[2].types == in_order[2].types
    assert apart[0] == in_order[0]
    assert apart[1] == in_order[1]
    assert in_order[1]  # the disagreeing values were quarantined against the type an earlier block gave
