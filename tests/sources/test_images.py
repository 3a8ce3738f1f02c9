"""ingest images: one row per distinct content, quarantine, snapshots keep bytes, exactly-once, S3."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from PIL import Image

from ingest.errors import SourceError
from ingest.lake import Lake
from ingest.sources.images import DecodeBudget, ingest_images, inspect_image
from tests.procs import assert_runs_overlapped, race_cli
from tests.sources.conftest import (
    INGEST,
    cli_env,
    kill_after_commits,
    read,
    run_cli,
    run_json,
    sorted_rows,
    spawn_cli,
)


def _png(seed: int, size: tuple[int, int] = (24, 16)) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    img.putpixel((rng.randrange(size[0]), rng.randrange(size[1])), (seed % 256, seed // 256 % 256, 7))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _write_images(d: Path, n: int, start: int = 0) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (d / f"img_{i:05d}.png").write_bytes(_png(i))


def test_sample_images_one_row_per_content(local_lake: Lake, sample) -> None:
    res = ingest_images(local_lake, str(sample.images))
    assert (res.rows_written, res.rows_quarantined, res.skipped) == (40, 1, 1)  # 40 photos, 1 broken, 1 copy
    rows = read(local_lake, "bronze.images")
    assert len({r["sha256"] for r in rows}) == 40
    by_name = {Path(r["source_uri"]).name: r for r in rows}
    assert "photo_00001.png" in by_name  # the original wins over the copy in a sub-folder
    r = by_name["photo_00003.jpg"]
    data = (sample.images / "photo_00003.jpg").read_bytes()
    assert r["content"] == data and r["sha256"] == hashlib.sha256(data).hexdigest()
    assert (r["format"], r["size_bytes"]) == ("jpeg", len(data))
    with Image.open(io.BytesIO(data)) as im:
        assert (r["width"], r["height"]) == im.size
    assert str(r["source_mtime"]) == "2026-11-01 00:00:00+00:00"
    assert r["ingest_run_id"] == res.run_id
    q = read(local_lake, "bronze.images_quarantine")
    assert len(q) == 1 and q[0]["source"].endswith("photo_broken.jpg")
    assert q[0]["raw"] == (sample.images / "photo_broken.jpg").read_bytes()
    assert "not a readable image" in q[0]["reason"]


def test_rename_copy_rerun_store_nothing_new(local_lake: Lake, sample) -> None:
    ingest_images(local_lake, str(sample.images))
    again = ingest_images(local_lake, str(sample.images))
    assert (again.rows_written, again.rows_quarantined, again.skipped) == (0, 0, 42)
    (sample.images / "photo_00005.png").rename(sample.images / "renamed.png")
    shutil.copy(sample.images / "photo_00007.png", sample.images / "copies" / "again.png")
    third = ingest_images(local_lake, str(sample.images))
    assert (third.rows_written, third.rows_quarantined) == (0, 0)
    assert len(read(local_lake, "bronze.images", ["sha256"])) == 40
    assert len(read(local_lake, "bronze.images_quarantine", ["source"])) == 1


def test_rerun_reads_no_file_it_took_in_before(local_lake: Lake, sample) -> None:
    """The per-source manifest: copies and broken files were re-read by every run before."""
    first = ingest_images(local_lake, str(sample.images))
    again = ingest_images(local_lake, str(sample.images))
    assert (again.rows_written, again.skipped, again.bytes_read) == (0, 42, 0)
    (sample.images / "photo_00002.png").write_bytes(_png(4242))  # changed in place: read again
    third = ingest_images(local_lake, str(sample.images))
    assert (third.rows_written, third.skipped) == (1, 41)
    assert third.bytes_read == (sample.images / "photo_00002.png").stat().st_size
    assert first.rows_written == 40


def test_table_made_again_is_loaded_again(local_lake: Lake, sample) -> None:
    """The manifest belongs to one Delta table: dropping it and loading again stores everything."""
    ingest_images(local_lake, str(sample.images))
    shutil.rmtree(local_lake.table_uri("bronze.images"))
    shutil.rmtree(local_lake.table_uri("bronze.images_quarantine"))
    again = ingest_images(local_lake, str(sample.images))
    assert (again.rows_written, again.rows_quarantined, again.skipped) == (40, 1, 1)


def test_lookups_follow_other_writers_commits_only(local_lake: Lake, tmp_path: Path) -> None:
    """StoredKeys searches the table once as it was, then only the files other writers add;
    keys this run committed come from memory, whatever the table holds."""
    from ingest.sources.seen import StoredKeys

    _write_images(tmp_path / "a", 30)
    ingest_images(local_lake, str(tmp_path / "a"))
    app = "images:bronze.images"
    keys = StoredKeys(local_lake, "bronze.images", "sha256", app_id=app)
    stored = {r["sha256"] for r in read(local_lake, "bronze.images", ["sha256"])}
    assert keys.held([*sorted(stored)[:5], "f" * 64]) == set(sorted(stored)[:5])
    files = len(local_lake.delta_table("bronze.images").file_uris())
    assert len(keys.files) == files
    # our own commit (batch 99 of our app id): not searched again, its keys are in memory
    from ingest.delta import write_batch

    ours = read(local_lake, "bronze.images")[:1]
    ours[0]["sha256"] = "0" * 64
    import pyarrow as pa

    from ingest.sources.images import IMAGES_SCHEMA

    write_batch(
        local_lake, "bronze.images", pa.Table.from_pylist(ours, schema=IMAGES_SCHEMA), app_id=app, batch_version=99
    )
    keys.committed(99, ["0" * 64])
    assert keys.held(["0" * 64]) == {"0" * 64} and len(keys.files) == files
    # another run's commit: only its added files join the search
    _write_images(tmp_path / "b", 3, start=100)
    ingest_images(local_lake, str(tmp_path / "b"))
    theirs = {r["sha256"] for r in read(local_lake, "bronze.images", ["sha256"])} - stored - {"0" * 64}
    assert len(theirs) == 3
    assert keys.held([*theirs, "e" * 64]) == theirs
    assert len(keys.files) == files + 1


def test_lookups_read_each_footer_once(local_lake: Lake, tmp_path: Path) -> None:
    """Every lookup searches the same files again (a batch's random hashes hit every file that
    is not ordered by hash): each file's Parquet footer is read once per run, at its first
    search, and the same fragment serves later batches, including files other writers add."""
    from ingest.sources.seen import StoredKeys

    for i, n in enumerate((4, 5)):
        _write_images(tmp_path / f"s{i}", n, start=100 * i)
        ingest_images(local_lake, str(tmp_path / f"s{i}"))
    keys = StoredKeys(local_lake, "bronze.images", "sha256", app_id="images:bronze.images")
    stored = sorted(r["sha256"] for r in read(local_lake, "bronze.images", ["sha256"]))
    assert keys.held(stored[:2]) == set(stored[:2])
    first = dict(keys._fragments)
    assert len(first) == len(keys.files) == 2 and all(f.metadata is not None for f in first.values())
    assert keys.held([*stored[-2:], "f" * 64]) == set(stored[-2:])
    assert all(keys._fragments[p] is f for p, f in first.items())  # no footer read again
    _write_images(tmp_path / "s2", 2, start=500)
    ingest_images(local_lake, str(tmp_path / "s2"))
    theirs = {r["sha256"] for r in read(local_lake, "bronze.images", ["sha256"])} - set(stored)
    assert keys.held([*theirs, *stored[:1]]) == {*theirs, *stored[:1]}
    assert len(keys._fragments) == 3 and all(keys._fragments[p] is f for p, f in first.items())


def test_run_opens_the_table_it_loads_into_at_most_three_times(local_lake: Lake, tmp_path: Path, monkeypatch) -> None:
    """Each open replays the log since the last checkpoint: a run loads the target for its run
    record, its manifest's table id and its batches, then follows it incrementally (it opened it
    once more per manifest block and again at the end)."""
    _write_images(tmp_path / "a", 3)
    ingest_images(local_lake, str(tmp_path / "a"))
    opened: list[str] = []
    real = Lake.delta_table

    def counting(self: Lake, table: str, **kw: object) -> object:
        opened.append(str(table))
        return real(self, table, **kw)

    monkeypatch.setattr(Lake, "delta_table", counting)
    _write_images(tmp_path / "b", 4, start=50)
    res = ingest_images(local_lake, str(tmp_path / "b"))
    assert res.rows_written == 4
    assert 1 <= opened.count("bronze.images") <= 3, opened


def test_images_table_is_checkpointed_every_ten_commits(local_lake: Lake, tmp_path: Path, monkeypatch) -> None:
    """delta-rs checkpoints every 100 commits by default: opening a table of one commit a batch
    then replays up to 99 JSON commits.  The images table is made with an interval of 10."""
    monkeypatch.setenv("INGEST_IMAGE_BATCH_FILES", "1")
    _write_images(tmp_path / "a", 12)
    assert ingest_images(local_lake, str(tmp_path / "a")).rows_written == 12
    log = Path(local_lake.table_uri("bronze.images")) / "_delta_log"
    assert local_lake.delta_table("bronze.images").metadata().configuration["delta.checkpointInterval"] == "10"
    assert json.loads((log / "_last_checkpoint").read_text())["version"] >= 9
    assert len(read(local_lake, "bronze.images", ["sha256"])) == 12


def test_table_made_without_the_interval_is_checkpointed_by_the_run(local_lake: Lake, tmp_path: Path) -> None:
    """A table made before the interval was set (delta-rs: a checkpoint every 100 commits) gets a
    checkpoint from the next run once it is 10 commits past its last one."""
    import pyarrow as pa

    from ingest.delta import write_batch
    from ingest.sources.images import IMAGES_SCHEMA

    _write_images(tmp_path / "a", 12)
    for i, p in enumerate(sorted((tmp_path / "a").iterdir())):  # 12 commits, as an older build made them
        data = p.read_bytes()
        row = {
            "source_uri": str(p),
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_bytes": len(data),
            "content": data,
        }
        write_batch(
            local_lake,
            "bronze.images",
            pa.Table.from_pylist([row], schema=IMAGES_SCHEMA),
            app_id="images:bronze.images",
            batch_version=i + 1,
        )
    log = Path(local_lake.table_uri("bronze.images")) / "_delta_log"
    assert not (log / "_last_checkpoint").exists()
    _write_images(tmp_path / "b", 2, start=50)
    assert ingest_images(local_lake, str(tmp_path / "b")).rows_written == 2
    assert json.loads((log / "_last_checkpoint").read_text())["version"] >= 11
    assert "delta.checkpointInterval" not in local_lake.delta_table("bronze.images").metadata().configuration
    assert len(read(local_lake, "bronze.images", ["sha256"])) == 14


def test_table_made_without_a_column_gets_it_from_the_next_run(local_lake: Lake, tmp_path: Path) -> None:
    """A table an older build made without ``format``: a batch cannot be staged against it (staged
    files commit no schema change), so it is committed as rows, which adds the column."""
    import pyarrow as pa

    from ingest.delta import write_batch
    from ingest.sources.images import IMAGES_SCHEMA

    old = pa.schema([f for f in IMAGES_SCHEMA if f.name != "format"])
    _write_images(tmp_path / "a", 3)
    rows = []
    for p in sorted((tmp_path / "a").iterdir()):
        data = p.read_bytes()
        rows.append(
            {"source_uri": str(p), "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data), "content": data}
        )
    write_batch(
        local_lake,
        "bronze.images",
        pa.Table.from_pylist(rows, schema=old),
        app_id="images:bronze.images",
        batch_version=1,
    )
    _write_images(tmp_path / "a", 2, start=50)
    assert ingest_images(local_lake, str(tmp_path / "a")).rows_written == 2
    stored = read(local_lake, "bronze.images", ["sha256", "format"])
    assert len(stored) == len({r["sha256"] for r in stored}) == 5
    assert sorted(r["format"] or "-" for r in stored) == ["-", "-", "-", "png", "png"]
    assert not (Path(local_lake.table_uri("bronze.images")) / "staged").exists()
    # the table has every column now: the next run stages its batch
    _write_images(tmp_path / "a", 1, start=80)
    assert ingest_images(local_lake, str(tmp_path / "a")).rows_written == 1
    assert len(list((Path(local_lake.table_uri("bronze.images")) / "staged").iterdir())) == 1


def test_a_check_constraint_on_the_table_is_enforced(local_lake: Lake, tmp_path: Path) -> None:
    """A rule a user put on the table (here with deltalake; Spark's ALTER TABLE does the same) is
    enforced on every batch: staged files would bypass it, so such a table takes rows."""
    from ingest.delta import ensure_table
    from ingest.errors import ConstraintViolation
    from ingest.sources.images import IMAGES_SCHEMA

    ensure_table(local_lake, "bronze.images", IMAGES_SCHEMA)
    local_lake.delta_table("bronze.images").alter.add_constraint({"narrow": "width < 20"})  # ours are 24 wide
    _write_images(tmp_path / "a", 3)
    with pytest.raises(
        ConstraintViolation, match=r"3 row\(s\) of this batch break the table's rules \(narrow: width < 20\)"
    ):
        ingest_images(local_lake, str(tmp_path / "a"))
    assert read(local_lake, "bronze.images", ["sha256"]) == []
    local_lake.delta_table("bronze.images").alter.drop_constraint("narrow")
    local_lake.delta_table("bronze.images").alter.add_constraint({"wide": "width > 0"})
    assert ingest_images(local_lake, str(tmp_path / "a")).rows_written == 3
    assert len(read(local_lake, "bronze.images", ["sha256"])) == 3
    assert not (Path(local_lake.table_uri("bronze.images")) / "staged").exists()  # rows, not staged files


def test_snapshot_keeps_bytes_after_source_changes(local_lake: Lake, tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    _write_images(d, 3)
    original = (d / "img_00000.png").read_bytes()
    v = ingest_images(local_lake, str(d)).version
    (d / "img_00000.png").write_bytes(_png(999))  # changed in place
    (d / "img_00001.png").unlink()  # deleted
    ingest_images(local_lake, str(d))
    pinned = {Path(r["source_uri"]).name: r["content"] for r in read(local_lake, "bronze.images", version=v)}
    assert pinned["img_00000.png"] == original
    assert "img_00001.png" in pinned
    latest = read(local_lake, "bronze.images", ["sha256"])
    assert len(latest) == 4  # the new content of img_00000 is a new row; nothing is lost


@pytest.mark.integration
@pytest.mark.parametrize("kill_at", [1, 4])
def test_killed_run_then_rerun_equals_one_clean_run(tmp_path: Path, new_lake, kill_at: int) -> None:
    d = tmp_path / "imgs"
    _write_images(d, 240)
    (d / "bad.png").write_bytes(_png(1)[:40])
    clean = new_lake("clean")
    run_json(clean, "images", str(d))
    lake = new_lake("killed")
    proc = spawn_cli(lake, "images", str(d), INGEST_IMAGE_BATCH_FILES="20", INGEST_IMAGE_WORKERS="2")
    assert kill_after_commits(proc, lake, "bronze.images", kill_at), "the run finished before it could be killed"
    stored = len(read(lake, "bronze.images", ["sha256"]))
    # the kill landed mid-run: after the empty table's creation (kill_at 1) or after some batches
    assert stored < 240 and (kill_at == 1 or stored > 0), stored
    out = run_json(lake, "images", str(d), INGEST_IMAGE_BATCH_FILES="20")
    assert out["rows_written"] > 0
    got = sorted((r["sha256"], r["content"]) for r in read(lake, "bronze.images", ["sha256", "content"]))
    want = sorted((r["sha256"], r["content"]) for r in read(clean, "bronze.images", ["sha256", "content"]))
    assert got == want and len(got) == 240
    assert len(read(lake, "bronze.images_quarantine", ["source"])) == 1


@pytest.mark.integration
def test_killed_between_quarantine_batches_then_rerun_quarantines_each_once(tmp_path: Path, new_lake) -> None:
    d = tmp_path / "imgs"
    _write_images(d, 120)
    for i in range(0, 120, 2):  # img_00000_bad.png sorts right after img_00000.png: mixed batches
        (d / f"img_{i:05d}_bad.png").write_bytes(b"not a png %d" % i)
    clean = new_lake("clean")
    run_json(clean, "images", str(d))
    lake = new_lake("killed")
    proc = spawn_cli(lake, "images", str(d), INGEST_IMAGE_BATCH_FILES="20", INGEST_IMAGE_WORKERS="2")
    assert kill_after_commits(proc, lake, "bronze.images_quarantine", 3)
    out = run_json(lake, "images", str(d), INGEST_IMAGE_BATCH_FILES="20")
    assert out["rows_quarantined"] < 60
    cols = ["source", "source_ref", "reason", "raw"]
    assert sorted_rows(lake, "bronze.images_quarantine", cols) == sorted_rows(clean, "bronze.images_quarantine", cols)
    assert len(read(lake, "bronze.images_quarantine", ["source"])) == 60
    assert sorted_rows(lake, "bronze.images", ["sha256"]) == sorted_rows(clean, "bronze.images", ["sha256"])


@pytest.mark.integration
def test_a_batch_is_written_in_row_groups_of_bounded_bytes(local_lake: Lake, tmp_path: Path, monkeypatch) -> None:
    """The parquet writer holds a whole row group encoded: a batch's content is split by bytes."""
    import pyarrow.parquet as pq

    import ingest.sources.images as images

    _write_images(tmp_path / "a", 40)
    size = sum(p.stat().st_size for p in (tmp_path / "a").iterdir()) // 40
    monkeypatch.setattr(images, "ROW_GROUP_BYTES", size * 10)
    assert ingest_images(local_lake, str(tmp_path / "a")).rows_written == 40
    [path] = local_lake.delta_table("bronze.images").file_uris()
    meta = pq.ParquetFile(path).metadata
    rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(rows) == 40 and meta.num_row_groups >= 4 and max(rows) <= 10, rows


def _other_writers_rows(seeds: range):
    """Rows of ``_png(seed)`` images as another run would commit them."""
    import pyarrow as pa

    from ingest.sources.images import IMAGES_SCHEMA
    from ingest.sources.util import utcnow

    now = utcnow()
    datas = [_png(i) for i in seeds]
    return pa.Table.from_pylist(
        [
            {
                "source_uri": f"/elsewhere/{i}.png",
                "sha256": hashlib.sha256(d).hexdigest(),
                "size_bytes": len(d),
                "format": "png",
                "width": 24,
                "height": 16,
                "source_mtime": now,
                "ingest_run_id": "other",
                "ingested_at": now,
                "content": d,
            }
            for i, d in zip(seeds, datas, strict=True)
        ],
        schema=IMAGES_SCHEMA,
    )


@pytest.mark.parametrize("overlap", [False, True], ids=["disjoint", "overlapping"])
def test_a_lost_batch_number_commits_the_files_it_wrote(
    local_lake: Lake, tmp_path: Path, monkeypatch, overlap: bool
) -> None:
    """Another run takes our batch number between our snapshot and our commit.  Its contents are
    not ours: the batch's files, written once, are committed under the next number (not encoded
    again).  Some are ours: those files are deleted, and only what is still new is written."""
    import ingest.sources.batches as batches
    import ingest.sources.images as images
    from ingest.delta import commit_actions, write_batch

    _write_images(tmp_path / "a", 20)
    staged: list = []
    stage = images.stage_files
    monkeypatch.setattr(images, "stage_files", lambda *a, **k: staged.append(stage(*a, **k)) or staged[-1])
    commit = batches.commit_staged
    raced: list[int] = []

    def another_run_first(lake, files, *, snapshot, app_id, batch_version, **kw):
        if not raced:  # the first attempt only: then the table moved on, and the retry must win
            raced.append(batch_version)
            theirs = _other_writers_rows(range(15, 25) if overlap else range(100, 110))
            write_batch(lake, "bronze.images", theirs, app_id=app_id, batch_version=batch_version)
        return commit(lake, files, snapshot=snapshot, app_id=app_id, batch_version=batch_version, **kw)

    monkeypatch.setattr(batches, "commit_staged", another_run_first)
    res = ingest_images(local_lake, str(tmp_path / "a"))
    assert raced == [1]
    shas = [r["sha256"] for r in read(local_lake, "bronze.images", ["sha256"])]
    assert len(shas) == len(set(shas)) == (25 if overlap else 30)
    assert res.rows_written == (15 if overlap else 20)
    dt = local_lake.delta_table("bronze.images")
    [ours] = [e["add"]["path"] for e in commit_actions(local_lake, "bronze.images", dt.version()) if "add" in e]
    assert dt.transaction_version("images:bronze.images") == 2
    assert ours == staged[-1].actions[0].path
    assert len(staged) == (2 if overlap else 1)  # written again only when its rows changed
    if overlap:  # the first files, never committed, are gone
        assert not (Path(local_lake.table_uri("bronze.images")) / staged[0].folder).exists()
        assert staged[-1].rows == 15


@pytest.mark.parametrize("overlap", [False, True], ids=["disjoint", "overlapping"])
def test_a_commit_made_while_we_write_is_checked_before_ours_not_after_a_conflict(
    local_lake: Lake, tmp_path: Path, monkeypatch, overlap: bool
) -> None:
    """Another run commits while our batch's files are written (a batch takes ~0.5 s to write,
    so with two writers most batches see one).  The batch is checked against that commit before
    its own is tried: one commit attempt, no conflict and backoff, and still each content once."""
    import ingest.sources.batches as batches
    import ingest.sources.images as images
    from ingest.delta import write_batch

    _write_images(tmp_path / "a", 20)
    staged: list = []
    stage = images.stage_files

    def another_run_commits_meanwhile(lake, tid, rows, *, snapshot, **kw):
        staged.append(stage(lake, tid, rows, snapshot=snapshot, **kw))
        if len(staged) == 1:
            theirs = _other_writers_rows(range(15, 25) if overlap else range(100, 110))
            write_batch(lake, "bronze.images", theirs, app_id="images:bronze.images", batch_version=1)
        return staged[-1]

    monkeypatch.setattr(images, "stage_files", another_run_commits_meanwhile)
    attempts: list[int] = []
    commit = batches.commit_staged

    def counted(lake, files, *, batch_version, **kw):
        attempts.append(batch_version)
        return commit(lake, files, batch_version=batch_version, **kw)

    monkeypatch.setattr(batches, "commit_staged", counted)
    res = ingest_images(local_lake, str(tmp_path / "a"))
    assert attempts == [2]  # the next number, at the first try
    shas = [r["sha256"] for r in read(local_lake, "bronze.images", ["sha256"])]
    assert len(shas) == len(set(shas)) == (25 if overlap else 30)
    assert res.rows_written == (15 if overlap else 20)
    assert len(staged) == (2 if overlap else 1)  # written again only when its rows changed
    if overlap:
        assert not (Path(local_lake.table_uri("bronze.images")) / staged[0].folder).exists()


def test_corrupt_content_quarantined_by_another_run_after_our_lookup_is_quarantined_once(
    local_lake: Lake, tmp_path: Path, monkeypatch
) -> None:
    """Another run quarantines the same corrupt content between our lookup and our commit, under
    a smaller batch number (it read the counter before our last commit: the target and the
    quarantine share it).  Our commit must see it: it is checked against the snapshot the lookup
    read, so it conflicts and the batch is looked up again (CI once stored 10 such twice)."""
    import ingest.sources.images as images
    from ingest.sources.quarantine import Bad, write_quarantine

    _write_images(tmp_path / "first", 3)
    ingest_images(local_lake, str(tmp_path / "first"))  # the target's counter is ahead now
    src = tmp_path / "a"
    _write_images(src, 3, start=10)
    (src / "bad.png").write_bytes(b"not a png")
    sha = hashlib.sha256(b"not a png").hexdigest()
    stored_keys = images.StoredKeys
    lookups: list[str] = []

    class AnotherRunCommitsAfterTheLookup(stored_keys):  # type: ignore[misc,valid-type]
        def held(self, keys, *, snapshot=None):
            found = super().held(keys, snapshot=snapshot)
            lookups.append(str(self.tid))
            if str(self.tid).endswith("_quarantine") and len(lookups) == 1:
                theirs = [Bad("/elsewhere/bad.png", sha, "not a readable image", b"not a png")]
                write_quarantine(
                    local_lake, "bronze.images", theirs, run_id="other", app_id="images:bronze.images", batch_version=1
                )
            return found

    monkeypatch.setattr(images, "StoredKeys", AnotherRunCommitsAfterTheLookup)
    res = ingest_images(local_lake, str(src))
    refs = [r["source_ref"] for r in read(local_lake, "bronze.images_quarantine", ["source_ref"])]
    assert refs == [sha]
    assert (res.rows_written, res.rows_quarantined) == (3, 0)
    assert lookups.count("bronze.images_quarantine") == 2  # looked up again after the conflict


def test_concurrent_ingests_store_each_content_once(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write_images(a, 150)
    _write_images(b, 150, start=100)  # 50 images overlap with a
    for i in range(40):  # corrupt files too: 20 of them in both
        (a / f"bad_{i:02d}.png").write_bytes(b"not a png %d" % i)
        (b / f"bad_{i + 20:02d}.png").write_bytes(b"not a png %d" % (i + 20))
    lake = Lake(str(tmp_path / "lake"))
    env = {"INGEST_IMAGE_BATCH_FILES": "10", "INGEST_IMAGE_WORKERS": "2"}
    results = race_cli(lake, [["images", str(p)] for p in (a, b, a)], tmp_path, **env)
    assert [code for code, _, _ in results] == [0] * 3, [err for _, _, err in results]
    shas = [r["sha256"] for r in read(lake, "bronze.images", ["sha256"])]
    assert len(shas) == len(set(shas)) == 250
    bad = [r["source_ref"] for r in read(lake, "bronze.images_quarantine", ["source_ref"])]
    assert len(bad) == len(set(bad)) == 60
    # the runs overlapped (their commits do not alternate: the run that wins a batch number
    # commits its next batch before a loser's backoff ends, so the batches come in blocks)
    assert_runs_overlapped(lake, "images")


@pytest.mark.integration
@pytest.mark.s3
def test_images_from_s3_into_s3_lake(s3_server, s3_lake: Lake, sample) -> None:
    bucket = s3_lake.location.bucket  # sources beside the lake: fewer SeaweedFS collections
    client = s3_server.client()
    for p in sorted(sample.images.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), bucket, f"raw/{p.relative_to(sample.images)}")
    res = ingest_images(s3_lake, f"s3://{bucket}/raw")
    assert (res.rows_written, res.rows_quarantined, res.skipped) == (40, 1, 1)
    rows = read(s3_lake, "bronze.images", ["source_uri", "content"])
    one = next(r for r in rows if r["source_uri"] == f"s3://{bucket}/raw/photo_00001.png")
    assert one["content"] == (sample.images / "photo_00001.png").read_bytes()
    again = ingest_images(s3_lake, f"s3://{bucket}/raw")
    assert (again.rows_written, again.skipped) == (0, 42)
    runs = read(s3_lake, "_meta.runs")
    assert [r["status"] for r in runs] == ["success", "success"]


@pytest.mark.integration
@pytest.mark.s3
def test_unreadable_s3_source_fails_with_one_line(s3_server, s3_lake: Lake, monkeypatch) -> None:
    with pytest.raises(SourceError) as missing:
        ingest_images(s3_lake, "s3://no-such-bucket-here/raw")
    assert "no-such-bucket-here" in str(missing.value) and "\n" not in str(missing.value)
    bucket = s3_lake.location.bucket  # sources beside the lake: fewer SeaweedFS collections
    proc = run_cli(s3_lake, "images", f"s3://{bucket}/x", check=False, AWS_SECRET_ACCESS_KEY="wrong-secret")
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "AWS_SECRET_ACCESS_KEY" in lines[0]
    assert "wrong-secret" not in proc.stderr


# -- bad input: memory, many corrupt files, odd-but-valid images ---------------------------------
def _noise(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    """Random pixels: they do not compress, so a cut lands in the image data, not in padding."""
    rng = random.Random(seed)
    raw = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    return raw.convert(mode)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


_FORMATS = {
    "png": ("PNG", {}),
    "jpg": ("JPEG", {"quality": 90}),
    "gif": ("GIF", {}),
    "webp": ("WEBP", {"quality": 80}),
    "tif": ("TIFF", {}),
    "bmp": ("BMP", {}),
}


def _corrupt_files() -> dict[str, bytes]:
    """216 truncated images of six formats, plus empty, text, random and bomb files."""
    files: dict[str, bytes] = {}
    for n, (ext, (fmt, kw)) in enumerate(_FORMATS.items()):
        data = _encode(_noise("RGB", (64, 48), n), fmt, **kw)
        for k in range(1, 37):  # cut at 2.5% ... 90% of the file
            files[f"{ext}_cut_{k:02d}.{ext}"] = data[: len(data) * k // 40]
    files["empty.png"] = b""
    for i in range(8):
        files[f"notes_{i}.jpg"] = f"meeting notes {i}: not an image\n".encode()
        files[f"random_{i}.png"] = random.Random(i).randbytes(500 + i)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # 10^10 pixels from 1 KB
    files["bomb.png"] = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + _png_chunk(b"IEND", b"")
    )
    return files


def _odd_valid_files() -> dict[str, tuple[bytes, str, tuple[int, int]]]:
    """Valid images Pillow opens in unusual modes: name -> (bytes, format, stored size)."""
    out: dict[str, tuple[bytes, str, tuple[int, int]]] = {}
    img = _noise("RGB", (40, 30), 99)
    out["palette.png"] = (_encode(img.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "png", (40, 30))
    out["gray16.png"] = (_encode(Image.new("I;16", (41, 31), 40000), "PNG"), "png", (41, 31))
    out["bilevel.png"] = (_encode(img.convert("1"), "PNG"), "png", (40, 30))
    out["gray_alpha.png"] = (_encode(img.convert("LA"), "PNG"), "png", (40, 30))
    out["cmyk.jpg"] = (_encode(img.convert("CMYK"), "JPEG"), "jpeg", (40, 30))
    out["progressive.jpg"] = (_encode(img, "JPEG", progressive=True), "jpeg", (40, 30))
    out["gray.jpg"] = (_encode(img.convert("L"), "JPEG"), "jpeg", (40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display; the stored size stays 40x30
    out["camera.jpg"] = (_encode(img, "MPO", save_all=True, append_images=[img.rotate(180)]), "mpo", (40, 30))
    out["rotated.jpg"] = (_encode(img, "JPEG", exif=exif.tobytes()), "jpeg", (40, 30))
    frames = [_noise("RGB", (33, 22), s).convert("P") for s in range(3)]
    out["animated.gif"] = (
        _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "gif",
        (33, 22),
    )
    out["animated.png"] = (_encode(frames[0], "PNG", save_all=True, append_images=frames[1:]), "png", (33, 22))
    out["lossless_rgba.webp"] = (_encode(img.convert("RGBA"), "WEBP", lossless=True), "webp", (40, 30))
    out["gray16.tif"] = (_encode(Image.new("I;16", (17, 13), 1234), "TIFF"), "tiff", (17, 13))
    out["pages.tif"] = (_encode(img, "TIFF", save_all=True, append_images=[img.rotate(90)]), "tiff", (40, 30))
    out["palette.bmp"] = (_encode(img.convert("P"), "BMP"), "bmp", (40, 30))
    for n, (ext, (fmt, kw)) in enumerate(_FORMATS.items()):  # the complete files the cuts came from
        out[f"whole_{n}.{ext}"] = (_encode(_noise("RGB", (64, 48), n), fmt, **kw), fmt.lower(), (64, 48))
    return out


def test_corrupt_files_quarantined_in_batches_with_stable_reasons(tmp_path: Path, monkeypatch) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    bad = _corrupt_files()
    good = _odd_valid_files()
    for name, data in bad.items():
        (d / name).write_bytes(data)
    for name, (data, _, _) in good.items():
        (d / name).write_bytes(data)
    assert len(bad) >= 200
    monkeypatch.setenv("INGEST_IMAGE_BATCH_FILES", "64")
    batches = -(-(len(bad) + len(good)) // 64)
    reasons = []
    for name in ("a", "b"):
        lake = Lake(str(tmp_path / name))
        res = ingest_images(lake, str(d))
        assert (res.rows_written, res.rows_quarantined) == (len(good), len(bad))
        q = read(lake, "bronze.images_quarantine", ["source", "source_ref", "reason", "raw"])
        assert sorted(Path(r["source"]).name for r in q) == sorted(bad)
        for r in q:
            assert r["raw"] == bad[Path(r["source"]).name]
            assert r["source_ref"] == hashlib.sha256(r["raw"]).hexdigest()
        reasons.append({Path(r["source"]).name: r["reason"] for r in q})
        # one commit per batch (plus the empty creation), not one per file
        assert lake.delta_table("bronze.images_quarantine").version() + 1 <= batches + 1
        rows = {
            Path(r["source_uri"]).name: r
            for r in read(lake, "bronze.images", ["source_uri", "format", "width", "height"])
        }
        assert {n: (r["format"], (r["width"], r["height"])) for n, r in rows.items()} == {
            n: (fmt, size) for n, (_, fmt, size) in good.items()
        }
    assert reasons[0] == reasons[1]  # the same bytes give the same reason
    for name, reason in reasons[0].items():
        assert reason.startswith("not a readable image"), (name, reason)
        assert not re.search(r"0x[0-9a-fA-F]{6,}", reason), (name, reason)  # no object addresses
    assert reasons[0]["empty.png"] == "not a readable image: empty file"
    assert "DecompressionBombError" in reasons[0]["bomb.png"]
    assert reasons[0]["notes_0.jpg"] == "not a readable image: UnidentifiedImageError: cannot identify image file"
    assert "truncated" in reasons[0]["jpg_cut_36.jpg"] and "truncated" in reasons[0]["png_cut_36.png"]
    version = lake.delta_table("bronze.images_quarantine").version()
    again = ingest_images(lake, str(d))
    assert (again.rows_written, again.rows_quarantined, again.skipped) == (0, 0, len(bad) + len(good))
    assert lake.delta_table("bronze.images_quarantine").version() == version


def test_image_larger_than_the_decode_budget_still_decodes() -> None:
    budget = DecodeBudget(1000)  # bytes; the image needs 40 * 30 * 4
    data = _encode(_noise("RGB", (40, 30), 1), "PNG")
    assert inspect_image(data, budget=budget) == ("png", 40, 30)
    assert budget.used == 0
    with pytest.raises(ValueError, match="truncated"):
        inspect_image(data[: len(data) // 2], budget=budget)
    assert budget.used == 0


@pytest.mark.integration
def test_big_images_decode_within_a_memory_bound(tmp_path: Path) -> None:
    side, n = 8000, 16
    d = tmp_path / "big"
    d.mkdir()
    data = _encode(Image.new("RGB", (side, side), (10, 120, 200)), "PNG")  # ~200 KB, 192 MB decoded
    for i in range(n):  # distinct content (a text chunk after IHDR), same pixels
        (d / f"big_{i:02d}.png").write_bytes(data[:33] + _png_chunk(b"tEXt", b"Comment\0%d" % i) + data[33:])
    lake = Lake(str(tmp_path / "lake"))
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        proc = subprocess.Popen(
            [INGEST, "--lake", lake.uri, "--json", "images", str(d)], stdout=out, stderr=err, env=cli_env(lake)
        )
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS (KiB on Linux)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        assert proc.returncode == 0, err.read()
        assert json.loads(out.read().strip().splitlines()[-1])["rows_written"] == n
    rows = read(lake, "bronze.images", ["width", "height"])
    assert rows == [{"width": side, "height": side}] * n
    decoded = side * side * 3  # one image's pixels; all 16 at once would be 3 GB
    # the budget (256 MiB) plus the interpreter and libraries (~0.4 GB measured; 0.8 GB seen on a
    # machine under heavy load, freed pixel blocks returned late); the old code peaked at 3.7 GB
    assert usage.ru_maxrss * 1024 < 6 * decoded, f"peak RSS {usage.ru_maxrss // 1024} MiB"


@pytest.mark.parametrize("limit", [None, 100], ids=["one-buffer", "chunked"])
def test_content_is_stored_byte_for_byte_however_the_column_is_built(
    local_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int | None
) -> None:
    """The content column is copied once into an exact-size buffer, or, past what one binary
    array holds, built by Arrow in chunks: either way every image reads back as its file's bytes."""
    import ingest.sources.images as images

    if limit is not None:
        monkeypatch.setattr(images, "BINARY_ARRAY_BYTES", limit)
    values = [b"", b"\x00", os.urandom(300), b"x" * 5]
    built = images._binary_column(values)
    assert built.to_pylist() == values and built.type == images.IMAGES_SCHEMA.field("content").type
    src = tmp_path / "imgs"
    _write_images(src, 6)
    assert ingest_images(local_lake, str(src)).rows_written == 6
    stored = {Path(r["source_uri"]).name: r["content"] for r in read(local_lake, "bronze.images")}
    assert stored == {p.name: p.read_bytes() for p in src.iterdir()}
