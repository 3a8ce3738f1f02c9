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
    history = local_lake.delta_table("gold.photo_features").history(1)
    assert history[0]["operation"] == "OPTIMIZE" and commit_run_id(history[0])
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


def test_optimize_while_logs_load_keeps_every_line_once(local_lake: Lake, tmp_path: Path) -> None:
    """The maintenance deployment's optimize overlapping a scheduled `ingest logs` (two real
    processes released together): both succeed, every line is stored once, and the next run
    finds nothing new."""
    from datetime import timedelta

    from tests.procs import race_cli

    src = tmp_path / "logs"
    src.mkdir()
    for f in range(24):
        (src / f"app-{f:02d}.log").write_text("".join(f'{{"f": {f}, "i": {i}}}\n' for i in range(40)))
    first = _ingest(local_lake, "logs", str(src), "--table", "bronze.events", INGEST_LOG_BATCH_LINES="10")
    assert first.returncode == 0, first.stderr
    for f in range(24, 48):  # more to load while optimize rewrites what is there
        (src / f"app-{f:02d}.log").write_text("".join(f'{{"f": {f}, "i": {i}}}\n' for i in range(40)))
    results = race_cli(
        local_lake, [["logs", str(src), "--table", "bronze.events"], ["optimize", "bronze.events"]], tmp_path,
        INGEST_LOG_BATCH_LINES="10",
    )
    assert [code for code, _, _ in results] == [0, 0], results
    assert json.loads(results[1][1])["tables"][0]["files_removed"] > 1  # it did compact
    runs = {r["command"]: r for r in local_lake.delta_table("_meta.runs").to_pyarrow_table().to_pylist()
            if r["started_at"] > _first_run_end(local_lake)}
    spans = {c: (r["started_at"], r["started_at"] + timedelta(seconds=r["duration_s"])) for c, r in runs.items()}
    assert spans["optimize"][0] < spans["logs"][1] and spans["logs"][0] < spans["optimize"][1], spans  # at once
    rows = local_lake.delta_table("bronze.events").to_pyarrow_table(columns=["f", "i"]).to_pylist()
    assert sorted((r["f"], r["i"]) for r in rows) == [(f, i) for f in range(48) for i in range(40)]
    again = _json(local_lake, "logs", str(src), "--table", "bronze.events")
    assert again["rows_written"] == 0


def _first_run_end(lake: Lake):
    """When the first `ingest logs` run ended (the race's runs start after it)."""
    from datetime import timedelta

    first = min((r for r in lake.delta_table("_meta.runs").to_pyarrow_table().to_pylist() if r["command"] == "logs"),
                key=lambda r: r["started_at"])
    return first["started_at"] + timedelta(seconds=first["duration_s"])
