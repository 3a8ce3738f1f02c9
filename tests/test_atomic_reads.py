"""Readers running during a write see the old or the new whole table, never a part.

README: `ingest tables` without a key or cursor is an "atomic full snapshot", and a snapshot
(`ingest snapshot create`) pins its tables as one record. A reader process polls the lake while a
real `ingest` process writes, and records every state it saw.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from ingest.lake import Lake

INGEST = str(Path(sys.executable).parent / "ingest")

READER = r"""
import json, os, sys, time
from pathlib import Path
from ingest.lake import Lake
root, out, stop, table = sys.argv[1:5]
lake = Lake(root)
with open(out, "w") as fh:
    while not Path(stop).exists():
        t = lake.delta_table(table).to_pyarrow_table(columns=["gen"])
        fh.write(json.dumps([t.num_rows, sorted(set(t["gen"].to_pylist()))]) + "\n")
        fh.flush()
os._exit(0)  # skip native teardown (deltalake/duckdb threads can abort the interpreter's exit)
"""


def _rows(gen: int) -> int:
    return 4000 + 500 * gen  # each generation has its own size


def _fill(db: Path, gen: int) -> None:
    con = sqlite3.connect(db)
    con.execute("create table if not exists t (id integer, gen integer, pad text)")
    con.execute("delete from t")
    con.executemany("insert into t values (?, ?, ?)", [(i, gen, "x" * 50) for i in range(_rows(gen))])
    con.commit()
    con.close()


def _start_reader(root: Path, table: str, tmp: Path) -> tuple[subprocess.Popen, Path, Path]:
    out, stop = tmp / "seen.jsonl", tmp / "stop"
    proc = subprocess.Popen([sys.executable, "-c", READER, str(root), str(out), str(stop), table])
    deadline = time.monotonic() + 60
    while not (out.exists() and out.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "the reader did not start"
        time.sleep(0.05)
    return proc, out, stop


def test_a_reader_sees_only_whole_full_snapshots(tmp_path: Path) -> None:
    db, root = tmp_path / "src.db", tmp_path / "lake"
    url = f"sqlite:///{db}"
    args = [INGEST, "--lake", str(root), "tables", url, "--source-table", "t", "--table", "bronze.t"]
    # small batches and files: a load that were not one commit would be visible in many parts
    env = {"INGEST_TABLE_BATCH_ROWS": "500", "INGEST_TABLE_FILE_BYTES": "20000", "PATH": "/usr/bin:/bin"}
    _fill(db, 1)
    subprocess.run(args, check=True, capture_output=True, timeout=300, env=env)
    reader, out, stop = _start_reader(root, "bronze.t", tmp_path)
    try:
        for gen in (2, 3, 4, 5):
            _fill(db, gen)
            done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
            assert done.returncode == 0, done.stderr
            time.sleep(0.3)  # let the reader see the new whole table
    finally:
        stop.touch()
        reader.wait(timeout=60)
    assert reader.returncode == 0
    seen = [tuple(json.loads(line)) for line in out.read_text().splitlines()]
    whole = {(_rows(g), (g,)) for g in range(1, 6)}
    partial = sorted({(n, tuple(gens)) for n, gens in seen} - {(n, tuple(g)) for n, g in whole})
    assert not partial, f"a reader saw a part of a load (rows, generations): {partial[:5]}"
    gens = [tuple(g)[0] for _, g in seen]
    assert set(gens) == {1, 2, 3, 4, 5}, f"the reader did not poll through every load: {sorted(set(gens))}"
    assert len(seen) > 20
    assert Lake(str(root)).delta_table("bronze.t").to_pyarrow_table().num_rows == _rows(5)


SNAP_READER = r"""
import json, os, sys
from pathlib import Path
from ingest.lake import Lake
from ingest.snapshots import list_snapshots
root, out, stop = sys.argv[1:4]
lake = Lake(root)
with open(out, "w") as fh:
    while not Path(stop).exists():
        seen = {}
        for s in list_snapshots(lake):
            seen[s.name] = {t: lake.delta_table(t, version=v).to_pyarrow_table().num_rows for t, v in s.tables.items()}
        fh.write(json.dumps(seen) + "\n")
        fh.flush()
os._exit(0)  # skip native teardown (deltalake/duckdb threads can abort the interpreter's exit)
"""


def test_a_reader_sees_a_snapshot_whole_or_not_at_all(tmp_path: Path) -> None:
    import pyarrow as pa

    from ingest.delta import write_batch

    root = tmp_path / "lake"
    lake = Lake(str(root))
    tables = [f"gold.t{i}" for i in range(6)]
    for i, t in enumerate(tables):
        write_batch(lake, t, pa.table({"gen": [i] * (10 + i)}))
    out, stop = tmp_path / "snaps.jsonl", tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", SNAP_READER, str(root), str(out), str(stop)])
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.read_text().count("\n") >= 3):
            assert reader.poll() is None and time.monotonic() < deadline, "the reader did not start"
            time.sleep(0.05)
        for name in ("s1", "s2", "s3"):
            made = subprocess.run([INGEST, "--lake", str(root), "snapshot", "create", name], capture_output=True,
                                  text=True, timeout=120)
            assert made.returncode == 0, made.stderr
        time.sleep(0.5)
    finally:
        stop.touch()
        reader.wait(timeout=60)
    assert reader.returncode == 0
    whole = {t: 10 + i for i, t in enumerate(tables)}
    seen = [json.loads(line) for line in out.read_text().splitlines()]
    for state in seen:
        for name, pins in state.items():
            assert pins == whole, f"a reader saw snapshot {name} partly made: {pins}"
    assert seen[0] == {} and set(seen[-1]) == {"s1", "s2", "s3"}
