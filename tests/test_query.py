"""`ingest sql`: layer.name tables, --as-of version/timestamp/snapshot, --format, read-only."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.delta import write_batch
from ingest.errors import ConfigError, IngestError
from ingest.lake import Lake, TableId
from ingest.query import check_read_only, referenced_tables, run_sql


def batch(ids: list[int], label: str) -> pa.Table:
    return pa.table({
        "photo_id": pa.array(ids, pa.int64()),
        "label": [label] * len(ids),
        "image": [bytes([i]) * 3 for i in ids],
    })


@pytest.fixture
def versioned(local_lake: Lake) -> Lake:
    """gold.features at versions 0 (2 rows), 1 (+1 row), 2 (overwritten with 1 row); bronze.x at 0."""
    write_batch(local_lake, "gold.features", batch([1, 2], "v0"))
    time.sleep(0.05)  # distinct commit timestamps (milliseconds)
    write_batch(local_lake, "gold.features", batch([3], "v1"))
    time.sleep(0.05)
    write_batch(local_lake, "gold.features", batch([9], "v2"), mode="overwrite")
    write_batch(local_lake, "bronze.x", pa.table({"photo_id": pa.array([1, 9], pa.int64()), "n": [10, 90]}))
    return local_lake


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from ingest.cli import main

    with pytest.raises(SystemExit) as ex:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(ex.value.code or 0), out, err


def ids(lake: Lake, as_of=None) -> list[int]:
    t = run_sql(lake, "select photo_id from gold.features order by photo_id", as_of=as_of)
    return t.column("photo_id").to_pylist()


def test_as_of_versions_including_zero(versioned: Lake) -> None:
    assert ids(versioned) == [9]
    assert ids(versioned, 0) == [1, 2]
    assert ids(versioned, "0") == [1, 2]
    assert ids(versioned, 1) == [1, 2, 3]
    assert ids(versioned, 2) == [9]
    with pytest.raises(ConfigError, match="no version"):
        ids(versioned, 7)


def test_as_of_timestamp(versioned: Lake) -> None:
    hist = sorted((h["version"], h["timestamp"]) for h in versioned.delta_table("gold.features").history())
    at = {v: datetime.fromtimestamp(ms / 1000, UTC) for v, ms in hist}
    assert ids(versioned, at[0].isoformat()) == [1, 2]
    assert ids(versioned, at[1].isoformat()) == [1, 2, 3]
    # between two commits: the older one; a trailing Z and a naive time are UTC
    between = at[1] + (at[2] - at[1]) / 2
    assert ids(versioned, between.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == [1, 2, 3]
    assert ids(versioned, between.replace(tzinfo=None).isoformat()) == [1, 2, 3]
    assert ids(versioned, (at[2] + timedelta(days=1)).isoformat()) == [9]
    # before the table existed is an error, not silently version 0
    with pytest.raises(ConfigError, match="did not exist"):
        ids(versioned, (at[0] - timedelta(days=1)).date().isoformat())


def test_as_of_snapshot(versioned: Lake) -> None:
    from ingest.snapshots import create_snapshot

    create_snapshot(versioned, "before-more", tables=["gold.features"])
    write_batch(versioned, "gold.features", batch([10], "later"))
    assert ids(versioned) == [9, 10]
    assert ids(versioned, "before-more") == [9]
    # a snapshot that does not pin a referenced table says which it does pin
    with pytest.raises(ConfigError, match="does not pin bronze.x"):
        run_sql(versioned, "select * from bronze.x", as_of="before-more")


def test_every_table_resolvable_and_joins_across_layers(versioned: Lake) -> None:
    q = 'select f.photo_id, x.n from "gold"."features" f join bronze . x as x using (photo_id)'
    assert [str(t) for t in referenced_tables(q)] == ["gold.features", "bronze.x"]
    assert run_sql(versioned, q).to_pylist() == [{"photo_id": 9, "n": 90}]
    # pins apply per table: gold.features@0 has photo 1, bronze.x has only version 0
    assert run_sql(versioned, q + " order by 1", as_of=0).to_pylist() == [{"photo_id": 1, "n": 10}]
    for tid in versioned.list_tables():
        assert run_sql(versioned, f"select count(*) as n from {tid}").column("n")[0].as_py() >= 1
    with pytest.raises(ConfigError, match="does not exist"):
        run_sql(versioned, "select * from gold.nope")


@pytest.mark.parametrize(
    "statement",
    [
        "insert into gold.features values (1, 'x', null)",
        "create table t as select 1",
        "drop view gold.features",
        "copy (select 1) to 'OUT'",
        "explain analyze copy (select 1) to 'OUT'",
        "attach 'OUT' as other",
        "select 1; delete from gold.features",
        "pragma threads = 1",
        "set threads = 1",
        "export database 'OUT'",
    ],
)
def test_writes_are_refused(versioned: Lake, tmp_path: Path, statement: str) -> None:
    out = tmp_path / "written"
    with pytest.raises(IngestError, match="refused|read-only"):
        run_sql(versioned, statement.replace("OUT", str(out)))
    assert not out.exists()
    assert ids(versioned) == [9]


def test_reads_are_allowed(versioned: Lake) -> None:
    """Every kind of read passes the check and runs: the rows come back."""
    reads = {
        "select label from gold.features": [{"label": "v2"}],
        "with a as (select 1 as n) select * from a": [{"n": 1}],
        "from (select 2 as n)": [{"n": 2}],
    }
    for q, rows in reads.items():
        check_read_only(q)
        assert run_sql(versioned, q).to_pylist() == rows, q
    described = {"describe gold.features": "column_name", "pragma table_info('gold.features')": "name"}
    for q, column in described.items():
        check_read_only(q)
        assert run_sql(versioned, q).column(column).to_pylist() == ["photo_id", "label", "image"], q
    check_read_only("explain select 1")
    assert run_sql(versioned, "explain select 1").column("explain_key").to_pylist() == ["physical_plan"]


def test_queries_cannot_reach_files(versioned: Lake, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(IngestError, match="query failed"):
        run_sql(versioned, f"select * from read_csv('{secret}')")


def test_cli_formats(versioned: Lake, capsys) -> None:
    q = "select photo_id, label, image from gold.features order by photo_id"
    code, out, _ = cli(capsys, "--lake", versioned.uri, "--json", "sql", q, "--as-of", "1")
    assert code == 0
    assert json.loads(out) == [
        {"photo_id": 1, "label": "v0", "image": "AQEB"},  # binary as base64
        {"photo_id": 2, "label": "v0", "image": "AgIC"},
        {"photo_id": 3, "label": "v1", "image": "AwMD"},
    ]
    code, out, _ = cli(capsys, "--lake", versioned.uri, "sql", "select photo_id, label from gold.features", "--format", "csv", "--as-of", "0")
    assert code == 0
    assert list(csv.reader(io.StringIO(out))) == [["photo_id", "label"], ["1", "v0"], ["2", "v0"]]
    code, out, _ = cli(capsys, "--lake", versioned.uri, "sql", "select label from gold.features", "--format", "table")
    assert code == 0 and "label" in out and "v2" in out
    code, out, _ = cli(capsys, "--lake", versioned.uri, "sql", "select 1", "--format", "xml")
    assert code != 0


def test_cli_errors_are_one_line(versioned: Lake, capsys) -> None:
    code, out, err = cli(capsys, "--lake", versioned.uri, "sql", "drop table gold.features")
    assert code != 0 and out == ""
    assert err.startswith("error: refused") and err.count("\n") == 1
    code, _, err = cli(capsys, "--lake", versioned.uri, "sql", "select * from gold.features", "--as-of", "42")
    assert code != 0 and "no version 42" in err and err.count("\n") == 1


def test_stream_reads_each_file_once_in_pyarrow_filesystem(local_lake: Lake) -> None:
    """`ingest sql` reads tables one file at a time through pyarrow's own filesystem (bounded
    memory): every file of a multi-file table, a partition value that needs escaping in its
    path, a self-join (the table scanned twice) and a pushed-down filter all come back exact."""
    from ingest.query import _stream_dataset, stream_sql

    for i, day in enumerate(["2024-01-01 00:00", "a b/c%d", "plain"]):
        rows = pa.table({"id": pa.array([i, i + 10], pa.int64()), "day": [day] * 2})
        write_batch(local_lake, "bronze.parts", rows, partition_by=["day"])
    ds = _stream_dataset(local_lake, TableId.parse("bronze.parts"), None)
    assert type(ds).__name__ == "OneFileAhead" and len(list(ds.get_fragments())) == 3
    query = "select a.id, a.day from bronze.parts a join bronze.parts b using (id) where a.id >= 1 order by a.id"
    with stream_sql(local_lake, query) as reader:
        got = reader.read_all().to_pylist()
    assert got == [
        {"id": 1, "day": "a b/c%d"},
        {"id": 2, "day": "plain"},
        {"id": 10, "day": "2024-01-01 00:00"},
        {"id": 11, "day": "a b/c%d"},
        {"id": 12, "day": "plain"},
    ]


@pytest.mark.s3
def test_stream_reads_an_s3_table(s3_lake: Lake) -> None:
    """The streamed read goes through pyarrow's S3 filesystem (the lake's settings), not delta-rs'."""
    from ingest.query import stream_sql

    write_batch(s3_lake, "bronze.parts", pa.table({"id": pa.array([2, 1], pa.int64()), "day": ["a b", "c"]}))
    write_batch(s3_lake, "bronze.parts", pa.table({"id": pa.array([3], pa.int64()), "day": ["d%20e"]}))
    with stream_sql(s3_lake, "select * from bronze.parts order by id") as reader:
        assert reader.read_all().to_pylist() == [
            {"id": 1, "day": "c"},
            {"id": 2, "day": "a b"},
            {"id": 3, "day": "d%20e"},
        ]
