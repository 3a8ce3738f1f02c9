"""`ingest optimize`: small files compacted, snapshots and time travel intact, dedup still exact."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
from PIL import Image

from ingest.delta import commit_run_id, write_batch
from ingest.lake import Lake

INGEST = str(Path(sys.executable).parent / "ingest")


def _ingest(lake: Lake, *args: str, **env: str) -> subprocess.CompletedProcess:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAKEHOUSE_"))} | env
    return subprocess.run([INGEST, "--lake", lake.uri, *args], capture_output=True, text=True, timeout=300, env=full_env)


def _json(lake: Lake, *args: str, **env: str):
    r = _ingest(lake, "--json", *args, **env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _images(d: Path, n: int, start: int = 0) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (i % 256, i // 256 % 256, 3)).save(buf, format="PNG")
        (d / f"img_{i:04d}.png").write_bytes(buf.getvalue())


def _sql(lake: Lake, query: str, *as_of: str) -> list:
    return [r["n"] for r in _json(lake, "sql", query, *as_of)]


def test_optimize_compacts_and_pinned_snapshots_still_read(local_lake: Lake, tmp_path: Path) -> None:
    for i in range(6):  # six small files
        write_batch(local_lake, "gold.photo_features", pa.table({"photo_id": [i], "title": [f"t{i}"]}))
    _json(local_lake, "snapshot", "create", "pin", "--tables", "gold.photo_features")
    write_batch(local_lake, "gold.photo_features", pa.table({"photo_id": [6], "title": ["t6"]}))
    count = "select count(*) as n from gold.photo_features"

    out = _json(local_lake, "optimize", "gold.photo_features")
    (t,) = out["tables"]
    assert (t["table"], t["files_before"], t["files_after"], t["files_removed"], t["files_added"]) == (
        "gold.photo_features", 7, 1, 7, 1
    )
    assert out["files_removed"] == 7 and out["files_added"] == 1
    assert _sql(local_lake, count) == [7]
    assert _sql(local_lake, count, "--as-of", "pin") == [6]
    # vacuum deletes the compacted-away files, except those the pin reads
    _json(local_lake, "vacuum", "--retain-hours", "0", "--force")
    assert _sql(local_lake, count) == [7]
    assert _sql(local_lake, count, "--as-of", "pin") == [6]
    # the commit names the run that made it, like every other writer's
    release, optimized, claim = local_lake.delta_table("gold.photo_features").history(3)  # newest first
    assert optimized["operation"] == "OPTIMIZE" and commit_run_id(optimized)
    assert commit_run_id(claim) == commit_run_id(optimized) == commit_run_id(release)  # its claim and release
    # a second optimize has nothing to do
    again = _json(local_lake, "optimize", "gold.photo_features")
    assert again["tables"][0]["files_removed"] == 0 and again["tables"][0]["files_after"] == 1


def test_z_order_images_then_ingest_still_stores_each_content_once(local_lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    _images(src, 60)
    first = _json(local_lake, "images", str(src), INGEST_IMAGE_BATCH_FILES="10")
    assert first["rows_written"] == 60
    assert len(local_lake.delta_table("bronze.images").file_uris()) == 6
    staged = Path(local_lake.table_uri("bronze.images")) / "staged"
    assert len(list(staged.iterdir())) == 6  # each batch's files were written in a folder of their own
    index = Path(local_lake.table_uri("bronze.images")) / "_ingest_keyindex"
    assert index.is_dir()  # the hashes' prefixes, saved for the next run
    out = _json(local_lake, "optimize", "--z-order", "bronze.images")
    (t,) = out["tables"]
    assert (t["z_order"], t["files_before"], t["files_after"]) == (["sha256"], 6, 1)
    from ingest.sources.seen import StoredKeys

    keys = StoredKeys(local_lake, "bronze.images", "sha256", app_id="test")
    keys.index_all()
    assert keys._indexed and keys._fragments == {}  # optimize saved the new file's hashes: none read
    _json(local_lake, "vacuum", "--retain-hours", "0", "--force")  # the compacted-away files go
    assert list(staged.iterdir()) == []  # and so do their emptied folders
    assert index.is_dir() and len(list(index.rglob("*.parquet"))) == 1  # (the saved index stays, merged)
    # new images, some copies of stored ones under new names: only the new content is stored
    _images(tmp_path / "more", 20, start=50)
    more = _json(local_lake, "images", str(tmp_path / "more"), INGEST_IMAGE_BATCH_FILES="10")
    assert (more["rows_written"], more["skipped"]) == (10, 10)
    shas = [r["sha256"] for r in local_lake.dataset("bronze.images").to_table(columns=["sha256"]).to_pylist()]
    assert len(shas) == len(set(shas)) == 70


def test_optimize_unknown_table_fails_with_one_line(local_lake: Lake) -> None:
    write_batch(local_lake, "gold.x", pa.table({"a": [1]}))
    r = _ingest(local_lake, "optimize", "gold.nope")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "gold.nope" in lines[0], r.stderr



def _optimize_mid_run(lake: Lake, table: str, proc, *args: str) -> dict:
    """Run ``ingest optimize ARGS TABLE`` once ``proc`` (a loading run) has made 3 more commits to
    ``table``, and check the optimize's transaction spanned some of its commits: it read a version
    older than the one before its own (the loader committed meanwhile) or the loader committed
    after it (the loader went on against a table rewritten under it)."""
    import time

    from tests.sources.conftest import commits

    start = commits(lake, table)
    deadline = time.monotonic() + 120
    while commits(lake, table) < start + 3:
        assert proc.poll() is None, f"the loading run ended first: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    optimized = _json(lake, "optimize", *args, table)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    history = lake.delta_table(table).history()
    (opt,) = [c for c in history if c.get("operation") == "OPTIMIZE" and c["version"] > start]
    last = max(c["version"] for c in history)
    assert opt["readVersion"] < opt["version"] - 1 or last > opt["version"], (opt, last)
    return {"optimize": optimized, "loaded": json.loads(out.strip().splitlines()[-1])}


def test_optimize_while_logs_load_keeps_every_line_once(local_lake: Lake, tmp_path: Path) -> None:
    """The maintenance deployment's optimize in the middle of a scheduled `ingest logs` (two real
    processes): both succeed, every line is stored once, and the next run finds nothing new."""
    from tests.sources.conftest import spawn_cli

    src = tmp_path / "logs"
    src.mkdir()
    for f in range(24):
        (src / f"app-{f:02d}.log").write_text("".join(f'{{"f": {f}, "i": {i}}}\n' for i in range(40)))
    first = _ingest(local_lake, "logs", str(src), "--table", "bronze.events", INGEST_LOG_BATCH_LINES="10")
    assert first.returncode == 0, first.stderr
    for f in range(24, 72):  # more to load while optimize rewrites what is there
        (src / f"app-{f:02d}.log").write_text("".join(f'{{"f": {f}, "i": {i}}}\n' for i in range(40)))
    proc = spawn_cli(local_lake, "logs", str(src), "--table", "bronze.events", INGEST_LOG_BATCH_LINES="10")
    got = _optimize_mid_run(local_lake, "bronze.events", proc)
    assert got["optimize"]["tables"][0]["files_removed"] > 1  # it did compact
    assert got["loaded"]["rows_written"] == 48 * 40
    rows = local_lake.delta_table("bronze.events").to_pyarrow_table(columns=["f", "i"]).to_pylist()
    assert sorted((r["f"], r["i"]) for r in rows) == [(f, i) for f in range(72) for i in range(40)]
    again = _json(local_lake, "logs", str(src), "--table", "bronze.events")
    assert again["rows_written"] == 0


def test_z_order_while_images_load_stores_each_content_once(local_lake: Lake, tmp_path: Path) -> None:
    """`ingest optimize --z-order` rewriting every file (and the saved hash index) in the middle of
    an `ingest images` of new pictures and copies of stored ones: both succeed, every content is
    stored once."""
    import shutil

    from tests.sources.conftest import spawn_cli

    src = tmp_path / "imgs"
    _images(src, 150)
    assert _json(local_lake, "images", str(src), INGEST_IMAGE_BATCH_FILES="10")["rows_written"] == 150
    _images(src / "new", 300, start=150)
    (src / "copies").mkdir()
    for i in range(0, 150, 3):  # stored contents under new names: must not be stored again
        shutil.copy(src / f"img_{i:04d}.png", src / "copies" / f"copy_{i:04d}.png")
    proc = spawn_cli(local_lake, "images", str(src), INGEST_IMAGE_BATCH_FILES="2")
    got = _optimize_mid_run(local_lake, "bronze.images", proc, "--z-order")
    assert got["optimize"]["tables"][0]["z_order"] == ["sha256"]
    assert (got["loaded"]["rows_written"], got["loaded"]["skipped"]) == (300, 200)  # 150 stored, 50 copies
    shas = [r["sha256"] for r in local_lake.dataset("bronze.images").to_table(columns=["sha256"]).to_pylist()]
    assert len(shas) == len(set(shas)) == 450


def test_optimize_while_a_table_merges_keeps_every_key_once(local_lake: Lake, tmp_path: Path) -> None:
    """`ingest optimize` in the middle of an `ingest tables --primary-key` run whose batches merge
    updates of stored keys and new keys (delta-rs MERGE against files the optimize removes):
    both succeed, every key is stored once with its latest value."""
    import sqlite3

    from tests.sources.conftest import spawn_cli

    db = tmp_path / "shop.db"
    con = sqlite3.connect(db)
    con.execute("create table t (id integer primary key, v text)")
    con.executemany("insert into t values (?, ?)", [(i, f"v{i}") for i in range(2000)])
    con.commit()
    url = f"sqlite:///{db}"
    args = ("tables", url, "--source-table", "t", "--table", "bronze.t", "--primary-key", "id")
    assert _json(local_lake, *args, INGEST_TABLE_BATCH_ROWS="50")["rows_written"] == 2000
    con.execute("update t set v = v || '-new' where id % 2 = 0")
    con.executemany("insert into t values (?, ?)", [(i, f"v{i}") for i in range(2000, 4000)])
    con.commit()
    con.close()
    proc = spawn_cli(local_lake, *args, INGEST_TABLE_BATCH_ROWS="50")
    _optimize_mid_run(local_lake, "bronze.t", proc)
    rows = local_lake.delta_table("bronze.t").to_pyarrow_table(columns=["id", "v"]).to_pylist()
    assert sorted((r["id"], r["v"]) for r in rows) == [(i, f"v{i}-new" if i % 2 == 0 and i < 2000 else f"v{i}") for i in range(4000)]


def test_two_optimizes_at_once_compact_once(local_lake: Lake, tmp_path: Path) -> None:
    """A manual `ingest optimize` while the scheduled one runs (two real processes released
    together): one compacts, the other exits 4 saying another optimize is running, and every row
    is there once (delta-rs lets two compactions of the same files both commit, every row then
    twice: bench/repro/swap_after_compaction.py).  The claim is released after the run."""
    from tests.procs import race_cli

    for k in range(30):
        write_batch(local_lake, "bronze.many", pa.table({"id": pa.array(range(k * 2000, (k + 1) * 2000), pa.int64())}))
    outcomes = []
    for _ in range(3):  # the race may go either way; a claim must never be held by both
        results = race_cli(local_lake, [["optimize", "bronze.many"], ["optimize", "--z-order", "bronze.many"]], tmp_path)
        outcomes.append(sorted(code for code, _, _ in results))
        for code, _, err in results:
            assert code == 0 or (code == 4 and "another `ingest optimize` of it is running" in err), err
        ids = local_lake.delta_table("bronze.many").to_pyarrow_table()["id"].to_pylist()
        assert sorted(ids) == list(range(60_000))
        for k in range(2):  # more small files for the next round
            write_batch(local_lake, "bronze.many", pa.table({"id": pa.array([60_000 + k], pa.int64())}))
        local_lake.delta_table("bronze.many").delete("id >= 60000")
    assert [4, 4] not in outcomes, outcomes  # (both refused: a claim left behind)
    from ingest.optimize import CLAIM_APP_ID

    assert local_lake.delta_table("bronze.many").transaction_version(CLAIM_APP_ID) % 2 == 1  # released
    assert _json(local_lake, "optimize", "bronze.many")["tables"][0]["table"] == "bronze.many"  # and claimable
