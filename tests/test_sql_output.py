"""`ingest sql` output as scripts and pipes see it: plain CSV when stdout is not a terminal,
binary as ``<N bytes>`` (base64 in JSON), structs and lists as JSON, results streamed, and a
reader that stops early (``| head``) ends the command quietly.

Every check runs `ingest` as a real process with stdout on a pipe."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.delta import write_batch
from ingest.lake import Lake

INGEST = str(Path(sys.executable).parent / "ingest")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAKEHOUSE_", "PREFECT_"))}
    env["LAKEHOUSE_CONFIG"] = os.devnull
    return env


def sql(lake: Lake, query: str, *args: str) -> subprocess.CompletedProcess:
    """``ingest [--json] sql QUERY [args]`` with stdout on a pipe."""
    glob = [a for a in args if a == "--json"]
    rest = [a for a in args if a != "--json"]
    return subprocess.run(
        [INGEST, "--lake", lake.uri, *glob, "sql", query, *rest], env=_env(), capture_output=True, timeout=120
    )


@pytest.fixture
def typed(local_lake: Lake) -> Lake:
    """gold.typed: binary, a struct, a list, an exact decimal, text that looks like markup."""
    write_batch(
        local_lake,
        "gold.typed",
        pa.table(
            {
                "id": pa.array([1, 2], pa.int64()),
                "name": ["a,b", "[bold]x[/bold]"],
                "img": [b"\x00\x01\x02", None],
                "tags": pa.array([["x", "y"], []], pa.list_(pa.string())),
                "meta": pa.array(
                    [{"w": 640, "src": "cam"}, None], pa.struct([("w", pa.int64()), ("src", pa.string())])
                ),
                "price": pa.array([Decimal("12345678.0123456789"), Decimal("-1.5000000000")], pa.decimal128(20, 10)),
                "at": pa.array([datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    return local_lake


Q = "select * from gold.typed order by id"


def test_a_pipe_gets_plain_csv_with_readable_cells(typed: Lake) -> None:
    proc = sql(typed, Q)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout.decode())))
    assert rows[0] == ["id", "name", "img", "tags", "meta", "price", "at"]
    assert rows[1][:6] == ["1", "a,b", "<3 bytes>", '["x","y"]', '{"w":640,"src":"cam"}', "12345678.0123456789"]
    assert rows[2][:6] == ["2", "[bold]x[/bold]", "", "[]", "", "-1.5000000000"]
    assert rows[1][6].startswith("2024-01-02 03:04:05")
    assert b"\\x" not in proc.stdout and b"{'" not in proc.stdout  # no Python reprs
    assert "\u2501" not in proc.stdout.decode() and len(rows) == 3  # no box
    assert proc.stdout.decode().splitlines()[2].startswith("2,[bold]x[/bold],,[],,")  # quotes only where needed


def test_tsv_is_one_line_per_row(typed: Lake) -> None:
    proc = sql(
        typed,
        "select id, 'a' || chr(9) || 'b' || chr(10) || 'c\\' as t, img from gold.typed order by id",
        "--format",
        "tsv",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == ["id\tt\timg", "1\ta\\tb\\nc\\\\\t<3 bytes>", "2\ta\\tb\\nc\\\\\t"]


@pytest.mark.parametrize("args", [("--format", "json"), ("--json",), ("--format", "jsonl")])
def test_json_formats_carry_bytes_as_base64_and_decimals_exactly(typed: Lake, args: tuple[str, ...]) -> None:
    proc = sql(typed, Q, *args)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    rows = [json.loads(line) for line in text.splitlines()] if "jsonl" in args else json.loads(text)
    assert base64.b64decode(rows[0]["img"]) == b"\x00\x01\x02" and rows[1]["img"] is None
    assert rows[0]["meta"] == {"w": 640, "src": "cam"} and rows[0]["tags"] == ["x", "y"]
    assert rows[0]["price"] == "12345678.0123456789" and rows[1]["price"] == "-1.5000000000"
    assert rows[0]["at"] == "2024-01-02T03:04:05+00:00"


def test_table_format_shows_whole_cells_and_says_what_it_left_out(typed: Lake) -> None:
    proc = sql(typed, "select range as n, repeat('x', 150) as wide from range(250)", "--format", "table")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "x" * 150 in out  # a pipe is not 80 columns wide: nothing cut
    assert "│ 99 " in out and "│ 100 " not in out
    assert (
        proc.stderr.decode().strip() == "showing the first 100 of 250 rows; --format csv, tsv or jsonl writes them all"
    )
    proc = sql(typed, Q, "--format", "table")
    assert "[bold]x[/bold]" in proc.stdout.decode() and "<3 bytes>" in proc.stdout.decode()


def test_empty_result_still_has_its_header(typed: Lake) -> None:
    for fmt, expected in (("csv", "id,img\n"), ("tsv", "id\timg\n"), ("json", "[]\n"), ("jsonl", "")):
        proc = sql(typed, "select id, img from gold.typed where id > 5", "--format", fmt)
        assert proc.returncode == 0 and proc.stdout.decode() == expected, (fmt, proc)


def test_reader_that_stops_early_ends_the_command_quietly(typed: Lake) -> None:
    """`ingest sql ... | head -n 3`: exit 0, no traceback, no error line."""
    proc = subprocess.Popen(
        [INGEST, "--lake", typed.uri, "sql", "select range as n, 'row ' || range as t from range(3000000)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    head = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()  # what `head` does once it has its lines
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert err == b""
    assert head == [b"n,t\n", b"0,row 0\n", b"1,row 1\n"]


def _same(a, b) -> bool:
    """Equal as JSON values, floats by value and sign (100.0 is not 100, -0.0 is not 0.0)."""
    import math

    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_json_rows_built_in_columns_say_what_the_row_by_row_encoder_said() -> None:
    """The columnar JSON writer against ``json.dumps`` of ``_cell`` per row, on values shaped to
    break it: escapes, control characters, non-ASCII, float edge cases, zones with half-hour
    offsets and offsets with seconds, zero and non-zero fractions, and the types that go through Python."""
    import random
    from datetime import date

    from ingest.cli.sql_output import _cell, _json_rows

    rng = random.Random(5)
    n = 400
    floats = [
        0.1,
        100.0,
        -0.0,
        1e16,
        1e15,
        5e-324,
        1e-5,
        1e-7,
        1.7976931348623157e308,
        float("nan"),
        float("inf"),
        -float("inf"),
        None,
    ]
    floats += [rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-30, 30) for _ in range(n - len(floats))]
    texts = ['a"b', "back\\slash", "line\nbreak", "tab\t", "\x01\x1f", "del\x7f", "é ü 日本 🎉", "\u2028", "", None]
    texts += ["".join(rng.choice('ab"\\\n\x02é ') for _ in range(rng.randint(0, 8))) for _ in range(n - len(texts))]
    moments = [
        datetime(2024, 1, 2, 3, 4, 5, rng.choice([0, 1, 999_999, 120_000]), tzinfo=UTC)
        + (datetime(2024, 6, 1, tzinfo=UTC) - datetime(2024, 1, 1, tzinfo=UTC)) * rng.random()
        for _ in range(n)
    ]
    moments = [m.replace(microsecond=0) if i % 3 == 0 else m for i, m in enumerate(moments)]
    batch = pa.RecordBatch.from_pydict(
        {
            "i8": pa.array([rng.randint(-128, 127) if i % 7 else None for i in range(n)], pa.int8()),
            "u64": pa.array([2**64 - 1 - i for i in range(n)], pa.uint64()),
            "f64": pa.array(floats, pa.float64()),
            "f32": pa.array([None if f is None else f for f in floats], pa.float64()).cast(pa.float32(), safe=False),
            "ok": pa.array([None if i % 5 == 0 else i % 2 == 0 for i in range(n)], pa.bool_()),
            "s": pa.array(texts, pa.string()),
            "ls": pa.array(texts, pa.large_string()),
            "cat": pa.array(texts, pa.string()).dictionary_encode(),
            "day": pa.array([date(2024, 1, 1 + i % 28) for i in range(n)], pa.date32()),
            "naive": pa.array([m.replace(tzinfo=None) for m in moments], pa.timestamp("us")),
            "utc": pa.array(moments, pa.timestamp("us", tz="UTC")),
            "paris_ms": pa.array(moments, pa.timestamp("us", tz="UTC")).cast(
                pa.timestamp("ms", tz="Europe/Paris"), safe=False
            ),
            "st_johns_s": pa.array(moments, pa.timestamp("us", tz="UTC")).cast(
                pa.timestamp("s", tz="America/St_Johns"), safe=False
            ),
            "monrovia_1960": pa.array([m.replace(year=1960) for m in moments], pa.timestamp("us", tz="UTC")).cast(
                pa.timestamp("us", tz="Africa/Monrovia")  # -00:44:30: an offset with seconds
            ),
            "ns": pa.array(moments, pa.timestamp("us", tz="UTC")).cast(pa.timestamp("ns", tz="UTC")),
            "price": pa.array([Decimal(i) / 10**10 for i in range(n)], pa.decimal128(20, 10)),
            "blob": pa.array([bytes([i % 256]) * (i % 4) if i % 6 else None for i in range(n)], pa.binary()),
            "tags": pa.array([["x", 'y"'][: i % 3] for i in range(n)], pa.list_(pa.string())),
            "nothing": pa.nulls(n),
        }
    )
    got = _json_rows(batch).to_pylist()
    cols = {name: batch.column(name).to_pylist() for name in batch.schema.names}
    for i, text in enumerate(got):
        want = json.dumps({k: _cell(v[i], binary="base64") for k, v in cols.items()}, ensure_ascii=False)
        assert _same(json.loads(text), json.loads(want)), (i, text, want)
    exact = [k for k in batch.schema.names if not k.startswith("f")]
    for i, text in enumerate(_json_rows(batch.select(exact)).to_pylist()):  # without floats, the very same text
        assert text == json.dumps({k: _cell(cols[k][i], binary="base64") for k in exact}, ensure_ascii=False)
