"""Spark models on local[2] against real Delta tables written by the ingestion code path."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from spark_images import jpeg_bytes, near_copy, png_bytes, scene

from ingest.delta import write_batch
from ingest.errors import ConfigError
from ingest.lake import Lake
from ingest.staging import commit_staged, stage_files
from transforms.spark import run_spark_models
from transforms.spark.dedup_images import DEFAULT_THRESHOLD, dhash, hamming

pytestmark = [pytest.mark.integration, pytest.mark.spark]

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def _image_row(sha: str, data: bytes, fmt: str | None, w: int | None, h: int | None, uri: str, run: str) -> dict:
    return {
        "source_uri": uri, "sha256": sha, "size_bytes": len(data), "format": fmt, "width": w, "height": h,
        "source_mtime": T0, "ingest_run_id": run, "ingested_at": T0, "content": data,
    }


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def images_lake(local_lake: Lake) -> tuple[Lake, dict[str, str]]:
    """bronze.images with an original, a resized+recompressed copy, an exact re-ingested copy,
    two unrelated pictures and one undecodable row."""
    sunset = scene("sunset")
    original = png_bytes(sunset)
    near = near_copy(sunset)
    sea, checker = png_bytes(scene("sea")), jpeg_bytes(scene("checker"), quality=90)
    corrupt = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    shas = {"original": _sha(original), "near": _sha(near), "sea": _sha(sea), "checker": _sha(checker), "corrupt": _sha(corrupt)}
    rows = [
        _image_row(shas["near"], near, "jpeg", 160, 120, "file:///src/photo_00002.jpg", "run-1"),
        _image_row(shas["original"], original, "png", 320, 240, "file:///src/photo_00001.png", "run-1"),
        _image_row(shas["sea"], sea, "png", 320, 240, "file:///src/photo_00003.png", "run-1"),
        _image_row(shas["checker"], checker, "jpeg", 320, 240, "file:///src/photo_00004.jpg", "run-1"),
        _image_row(shas["corrupt"], corrupt, None, None, None, "file:///src/broken.png", "run-1"),
    ]
    write_batch(local_lake, "bronze.images", pa.Table.from_pylist(rows))
    # a later run saw the same bytes under another name (an exact copy)
    again = _image_row(shas["original"], original, "png", 320, 240, "file:///src/copy_of_00001.png", "run-2")
    write_batch(local_lake, "bronze.images", pa.Table.from_pylist([again]))
    return local_lake, shas


# -- dedup_images ------------------------------------------------------------------------------
def _read(lake: Lake, table: str, version: int | None = None) -> list[dict]:
    return lake.delta_table(table, version=version).to_pyarrow_table().sort_by("sha256").to_pylist()


def test_dedup_images_groups_exact_and_near_duplicates(spark, images_lake) -> None:
    from transforms.spark.dedup_images import dedup_images

    lake, shas = images_lake
    result = dedup_images(spark, lake)
    assert (result.table, result.status, result.rows, result.version) == ("silver.image_duplicates", "success", 5, 0)

    rows = {r["sha256"]: r for r in _read(lake, "silver.image_duplicates")}
    assert set(rows) == set(shas.values())  # one row per distinct content
    orig, near = rows[shas["original"]], rows[shas["near"]]
    # the bigger lossless original is canonical for its resized JPEG
    assert orig["is_canonical"] and orig["canonical_sha256"] == shas["original"] and orig["distance"] == 0
    assert not near["is_canonical"] and near["canonical_sha256"] == shas["original"]
    assert 0 <= near["distance"] <= DEFAULT_THRESHOLD
    assert orig["exact_copies"] == 2 and near["exact_copies"] == 1
    assert orig["phash"] == f"{dhash(png_bytes(scene('sunset'))) & (2**64 - 1):016x}"
    for other in ("sea", "checker"):
        r = rows[shas[other]]
        assert r["is_canonical"] and r["canonical_sha256"] == shas[other]
    bad = rows[shas["corrupt"]]
    assert bad["phash"] is None and bad["is_canonical"] and bad["distance"] == 0


def test_dedup_images_is_deterministic_and_overwrites_atomically(spark, images_lake) -> None:
    from transforms.spark.dedup_images import dedup_images

    lake, _ = images_lake
    first = dedup_images(spark, lake)
    second = dedup_images(spark, lake)
    assert (first.version, second.version) == (0, 1)
    assert _read(lake, "silver.image_duplicates", version=0) == _read(lake, "silver.image_duplicates")
    assert lake.delta_table("silver.image_duplicates").to_pyarrow_table().num_rows == 5  # replaced, not appended


def test_dedup_threshold_zero_keeps_near_duplicates_apart(spark, images_lake) -> None:
    from transforms.spark.dedup_images import dedup_images

    lake, shas = images_lake
    assert hamming(dhash(png_bytes(scene("sunset"))), dhash(near_copy(scene("sunset")))) > 0
    dedup_images(spark, lake, threshold=0)
    rows = {r["sha256"]: r for r in _read(lake, "silver.image_duplicates")}
    assert rows[shas["near"]]["is_canonical"]
    with pytest.raises(ValueError, match="threshold must be an integer"):
        dedup_images(spark, lake, threshold=64)


# -- sessionize_events -------------------------------------------------------------------------
def _events(*, typed: bool = False) -> pa.Table:
    """Events as JSON lines land (``ts`` text), or ``typed`` (``ts`` a timestamp, as logs load)."""

    def ev(i: str, minutes: float, user: int | None, kind: str, photo: int | None) -> dict:
        ts = T0 + timedelta(minutes=minutes) if typed else (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
        return {"event_id": i, "ts": ts, "user_id": user, "event_type": kind, "photo_id": photo,
                "_source_file": "events-2026-03-01.jsonl", "_source_line": 0, "_run_id": "r1", "_ingested_at": T0}

    rows = [
        ev("u1-a", 0, 1, "login", None),
        ev("u1-b", 10, 1, "view", 7),
        ev("u1-c", 39, 1, "like", 7),  # 29 min after the last event: same session
        ev("u1-d", 80, 1, "view", 8),  # 41 min gap: new session
        ev("u1-e", 85, 1, "like", 8),
        ev("u2-a", 5, 2, "view", 7),
        ev("u1-b", 10, 1, "view", 7),  # replayed line, counted once
        ev("nouser", 1, None, "view", 3),  # unusable without a user
    ]
    return pa.Table.from_pylist(rows)


def test_sessionize_splits_on_inactivity_gap(spark, local_lake: Lake) -> None:
    from transforms.spark.sessionize import sessionize_events

    write_batch(local_lake, "bronze.events", _events())
    result = sessionize_events(spark, local_lake)
    assert (result.table, result.rows, result.version) == ("silver.user_sessions", 3, 0)

    rows = local_lake.delta_table("silver.user_sessions").to_pyarrow_table().sort_by(
        [("user_id", "ascending"), ("session_start", "ascending")]
    ).to_pylist()
    got = [(r["user_id"], r["session_start"], r["session_end"], r["events"], r["views"], r["likes"]) for r in rows]
    m = lambda n: T0 + timedelta(minutes=n)  # noqa: E731
    assert got == [
        (1, m(0), m(39), 3, 1, 1),
        (1, m(80), m(85), 2, 1, 1),
        (2, m(5), m(5), 1, 1, 0),
    ]
    assert len({r["session_id"] for r in rows}) == 3 and all(len(r["session_id"]) == 32 for r in rows)

    # stable ids across re-runs, and a wider gap merges user 1's sessions
    again = sessionize_events(spark, local_lake)
    assert again.version == 1
    assert sorted(r["session_id"] for r in rows) == sorted(
        local_lake.delta_table("silver.user_sessions").to_pyarrow_table().column("session_id").to_pylist()
    )
    sessionize_events(spark, local_lake, gap_minutes=45)
    assert local_lake.delta_table("silver.user_sessions").to_pyarrow_table().num_rows == 2
    with pytest.raises(ValueError, match="gap_minutes must be a positive"):
        sessionize_events(spark, local_lake, gap_minutes=0)


# -- run_spark_models --------------------------------------------------------------------------
def test_run_spark_models_runs_selected_and_skips_missing_inputs(spark, images_lake) -> None:
    lake, _ = images_lake
    results = run_spark_models(spark, lake)
    by_name = {r["name"]: r for r in results}
    assert by_name["dedup_images"]["status"] == "success" and by_name["dedup_images"]["rows"] == 5
    assert by_name["sessionize_events"]["status"] == "skipped"
    assert "bronze.events" in by_name["sessionize_events"]["message"]
    with pytest.raises(ConfigError, match="needs bronze.events"):
        run_spark_models(spark, lake, select="sessionize_events")
    assert run_spark_models(spark, lake, select="gold.photo_features") == []

    # the result dicts are what the transform stage turns into ModelResult rows
    from transforms.dbt_runner import ModelResult

    dedup = by_name["dedup_images"]
    assert set(dedup) <= set(ModelResult.model_fields), set(dedup) - set(ModelResult.model_fields)  # nothing dropped
    row = ModelResult(**{k: v for k, v in dedup.items() if k != "kind"}, kind="spark")
    assert (row.name, row.kind, row.status, row.table, row.rows) == (
        "dedup_images", "spark", "success", "silver.image_duplicates", 5
    )
    assert (row.version, row.rows_written, row.mode) == (0, 5, "overwrite")  # inputs: added by run_spark_stage


def test_unchanged_inputs_start_no_jvm_and_new_rows_run_again(spark, images_lake, monkeypatch) -> None:
    """`ingest transform` with nothing new in bronze leaves the Spark tables (and the JVM) alone.

    Here the test's JVM is already up, so this checks build_spark is not called; that a fresh
    `ingest` process launches no java at all is test_spark_skip_cli's."""
    import transforms.spark.session as session
    from ingest.settings import Settings
    from transforms.dbt_runner import run_spark_stage

    lake, _ = images_lake
    write_batch(lake, "bronze.events", _events())
    settings = Settings(lake=lake.uri, s3=lake.s3)
    monkeypatch.setattr(session, "build_spark", lambda _settings: spark)
    first = {m.name: m for m in run_spark_stage(settings, lake)}
    assert {m.status for m in first.values()} == {"success"}
    versions = {m.table: lake.delta_table(m.table).version() for m in first.values()}

    def no_jvm(_settings):
        raise AssertionError("a Spark session was started with nothing to do")

    monkeypatch.setattr(session, "build_spark", no_jvm)
    again = {m.name: m for m in run_spark_stage(settings, lake)}
    assert {m.status for m in again.values()} == {"skipped"}
    assert again["dedup_images"].rows == first["dedup_images"].rows == 5
    assert again["dedup_images"].inputs == {"bronze.images": 1} and "version 1" in again["dedup_images"].message
    assert {t: lake.delta_table(t).version() for t in versions} == versions

    # a new image: dedup runs (reading the new version), sessions stay as they are
    png = png_bytes(scene("checker"))  # the checker picture again, as PNG: new content, one row more
    extra = _image_row(_sha(png), png, "png", 320, 240, "file:///src/checker.png", "run-3")
    write_batch(lake, "bronze.images", pa.Table.from_pylist([extra]))
    monkeypatch.setattr(session, "build_spark", lambda _settings: spark)
    third = {m.name: m for m in run_spark_stage(settings, lake)}
    assert (third["dedup_images"].status, third["sessionize_events"].status) == ("success", "skipped")
    assert third["dedup_images"].rows == 6 and third["dedup_images"].inputs == {"bronze.images": 2}

    # --full-refresh rebuilds everything; a pinned source reads (and records) that version
    forced = run_spark_stage(settings, lake, full_refresh=True)
    assert {m.status for m in forced} == {"success"}
    (pinned,) = run_spark_stage(settings, lake, select="dedup_images", source_versions={"bronze.images": 1})
    assert pinned.status == "success" and pinned.rows == 5 and pinned.inputs == {"bronze.images": 1}
    (back,) = run_spark_stage(settings, lake, select="dedup_images")
    assert back.status == "success" and back.rows == 6  # the latest again


@pytest.mark.s3
def test_models_run_against_s3(spark_for, s3_lake: Lake) -> None:
    write_batch(s3_lake, "bronze.events", _events(typed=True))
    spark = spark_for(s3_lake)
    (res,) = run_spark_models(spark, s3_lake, select="sessionize_events")
    assert res["status"] == "success" and res["rows"] == 3
    assert s3_lake.delta_table("silver.user_sessions").version() == 0
    # a small increment on the driver, reading and merging through S3
    late = {**_events(typed=True).slice(0, 1).to_pylist()[0], "event_id": "u2-late", "user_id": 2, "ts": T0 + timedelta(minutes=20)}
    write_batch(s3_lake, "bronze.events", pa.Table.from_pylist([late]))
    (res,) = run_spark_models(spark, s3_lake, select="sessionize_events", driver_max_rows=100)
    assert (res["status"], res["mode"], res["rows"]) == ("success", "merge", 3), res
    assert res["message"].startswith("incremental on the driver")
    rows = _table_rows(s3_lake, "silver.user_sessions", ["user_id", "session_start"])
    assert [(r["user_id"], r["events"]) for r in rows] == [(1, 3), (1, 2), (2, 2)]


# -- commit conflicts --------------------------------------------------------------------------
def test_a_commit_conflict_runs_the_model_again_and_lands_once(spark, local_lake: Lake, monkeypatch, tmp_path) -> None:
    """Another writer appends to the model's table while the Spark job runs (between the
    transaction's read and its commit): Delta refuses the overwrite with ConcurrentAppendException;
    the model runs again from fresh inputs and its result is the only thing in the table."""
    import transforms.spark.sessionize as sessionize

    write_batch(local_lake, "bronze.events", _events())
    write_batch(local_lake, "silver.user_sessions", pa.table({"stale": [1, 2]}))  # an earlier table
    target = local_lake.table_uri("silver.user_sessions")
    marker = str(tmp_path / "appended")
    real_frame = sessionize.sessions_frame

    def sessions_with_a_concurrent_append(events, **kwargs):
        from pyspark.sql import functions as F
        from pyspark.sql.types import BooleanType

        def append_once(_user_id):  # runs in a Python worker while the job writes its files
            import os

            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return True
            from deltalake import DeltaTable, write_deltalake

            write_deltalake(target, DeltaTable(target).to_pyarrow_table().slice(0, 1), mode="append")
            return True

        return real_frame(events, **kwargs).where(F.udf(append_once, BooleanType())(F.col("user_id")))

    monkeypatch.setattr(sessionize, "sessions_frame", sessions_with_a_concurrent_append)
    before = local_lake.delta_table("silver.user_sessions").version()
    (again,) = run_spark_models(spark, local_lake, select="sessionize_events")
    history = local_lake.delta_table("silver.user_sessions").history()
    ops = [c["operation"] for c in sorted(history, key=lambda c: c["version"]) if c["version"] > before]
    assert ops == ["WRITE", "WRITE"], ops  # the concurrent append, then the retried overwrite
    assert (again["status"], again["rows"], again["version"]) == ("success", 3, before + 2)
    assert local_lake.delta_table("silver.user_sessions").to_pyarrow_table().num_rows == 3


# -- incremental runs --------------------------------------------------------------------------
def _table_rows(lake: Lake, table: str, keys: list[str]) -> list[dict]:
    return lake.delta_table(table).to_pyarrow_table().sort_by([(k, "ascending") for k in keys]).to_pylist()


# Spark jobs an incremental run may start (each costs seconds on a busy machine): these tests'
# runs take 12 (sessions) and 20 (duplicates); before the jobs were cut (no Delta log replay in
# Spark, one collect per step, no adaptive-execution jobs) bench_spark_incremental.py's runs of
# the same code paths took 28 and 35
SESSIONIZE_JOBS, DEDUP_JOBS = 16, 22

# each Spark model, with the key its incremental-vs-full-refresh comparison sorts by
COMPARED = {"sessionize_events": ["user_id", "session_start"], "dedup_images": ["sha256"]}


def test_every_spark_model_is_compared_with_a_full_refresh() -> None:
    """A new Spark model needs its incremental run compared with a full refresh (COMPARED)."""
    from transforms.spark import SPARK_MODELS

    assert set(COMPARED) == set(SPARK_MODELS)


def _view_typed_files(lake: Lake, table: str) -> list[str]:
    import pyarrow.parquet as pq

    from ingest.conform import has_view_types

    dt = lake.delta_table(table)
    root = lake.table_uri(table)
    return [p for p in dt.get_add_actions(flatten=True).column("path").to_pylist()
            if has_view_types(pq.read_schema(f"{root}/{p}"))]


def _jobs_so_far(spark) -> int:
    """Spark's job ids are sequential: the newest + 1 is how many jobs the session has run."""
    return max(spark.sparkContext.statusTracker().getJobIdsForGroup(None), default=-1) + 1


# an increment runs on Spark (driver_max_rows 0) or on the driver (transforms/spark/driver.py)
ENGINES = {"spark": 0, "driver": 1_000_000}


def _run_incrementally_then_compare_with_a_full_refresh(
    spark, lake: Lake, name: str, *, engine: str = "spark"
) -> tuple[dict, int]:
    """Run ``name`` on the new rows (it must merge, on ``engine``), then a full refresh (Spark) of
    a copy of the lake: both tables must hold the same rows, every column equal.  Returns the
    incremental result and how many Spark jobs it ran."""
    import shutil
    from pathlib import Path

    from ingest.delta import commit_run_id
    from ingest.runlog import track
    from transforms.spark import SPARK_MODELS

    target, keys = SPARK_MODELS[name][1], COMPARED[name]
    jobs = _jobs_so_far(spark)
    with track(lake, command="transform", source="bronze", target=target) as run:
        (res,) = run_spark_models(spark, lake, select=name, driver_max_rows=ENGINES[engine])
    jobs = _jobs_so_far(spark) - jobs
    if engine == "driver":  # no Spark job at all
        assert (jobs, res["message"].split(":")[0]) == (0, "incremental on the driver"), (jobs, res["message"])
    # the MERGE, then on the driver the write layer's swap of view-typed files (same metadata)
    last, *before = lake.delta_table(target).history(2)
    merged = last if last["operation"] == "MERGE" or engine == "spark" else before[0]
    assert (res["status"], res["mode"], merged["operation"]) == ("success", "merge", "MERGE"), (res, merged)
    assert commit_run_id(merged) == commit_run_id(last) == run.run_id  # lineage names the run that merged
    assert last.get("userMetadata") == merged.get("userMetadata")
    if engine == "driver":  # readers filter the table with pyarrow, which cannot filter view types
        assert not _view_typed_files(lake, target)
    copy = Lake(str(Path(lake.uri).parent / "full-refresh-copy"), s3=lake.s3)
    shutil.copytree(lake.uri, copy.uri)
    (full,) = run_spark_models(spark, copy, select=name, full_refresh=True)
    assert full["mode"] == "overwrite"
    incremental, rebuilt = _table_rows(lake, target, keys), _table_rows(copy, target, keys)
    assert incremental == rebuilt
    assert res["rows"] == len(rebuilt)
    # nothing new since: skipped without touching the table
    (again,) = run_spark_models(spark, lake, select=name)
    assert again["status"] == "skipped"
    return res, jobs


@pytest.mark.parametrize("engine", list(ENGINES))
def test_sessionize_incremental_merges_only_touched_sessions_and_equals_a_full_refresh(
    spark, local_lake: Lake, engine: str
) -> None:
    typed = engine == "driver"  # the driver takes typed timestamps only (text goes to Spark)
    write_batch(local_lake, "bronze.events", _events(typed=typed))
    (first,) = run_spark_models(spark, local_lake, select="sessionize_events")
    assert (first["mode"], first["rows"]) == ("overwrite", 3)

    def ev(i: str, minutes: float, user: int | None, kind: str = "view") -> dict:
        ts = T0 + timedelta(minutes=minutes) if typed else (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
        return {"event_id": i, "ts": ts, "user_id": user, "event_type": kind, "photo_id": 7,
                "_source_file": "events-2026-03-02.jsonl", "_source_line": 0, "_run_id": "r2", "_ingested_at": T0}

    write_batch(local_lake, "bronze.events", pa.Table.from_pylist([
        ev("u1-f", 60, 1, "like"),  # bridges user 1's two sessions (39 -> 60 -> 80): one session now
        ev("u2-gap", 35, 2),  # exactly the gap after user 2's event at 5: the same session
        ev("u2-b", 200, 2),  # user 2: a new session long after
        ev("u2-c", 220, 2, "like"),
        ev("u3-a", -500, 3),  # a new user
        ev("u1-b", 10, 1),  # a replay of a stored event: still counted once
        ev("nouser-2", 3, None),
    ]))
    res, jobs = _run_incrementally_then_compare_with_a_full_refresh(
        spark, local_lake, "sessionize_events", engine=engine
    )
    print(f"sessionize_events incremental: {jobs} Spark jobs")
    assert jobs <= SESSIONIZE_JOBS, jobs  # it was 28: the fixed cost of a small change is per job
    rows = _table_rows(local_lake, "silver.user_sessions", ["user_id", "session_start"])
    m = lambda n: T0 + timedelta(minutes=n)  # noqa: E731 - a short name keeps the expected rows readable
    assert [(r["user_id"], r["session_start"], r["session_end"], r["events"], r["likes"]) for r in rows] == [
        (1, m(0), m(85), 6, 3), (2, m(5), m(35), 2, 0), (2, m(200), m(220), 2, 1), (3, m(-500), m(-500), 1, 0),
    ]
    assert res["rows"] == 4


@pytest.mark.parametrize("engine", list(ENGINES))
def test_dedup_incremental_compares_new_images_with_the_index_and_equals_a_full_refresh(
    spark, images_lake, engine: str
) -> None:
    lake, shas = images_lake
    (first,) = run_spark_models(spark, lake, select="dedup_images")
    assert (first["mode"], first["rows"]) == ("overwrite", 5)
    sunset, sea = scene("sunset"), scene("sea")
    big = png_bytes(sunset.resize((640, 480)))  # the sunset, bigger: the new canonical of its group
    sea_jpeg = jpeg_bytes(sea, quality=70)  # joins the sea group, not its canonical
    near = near_copy(sunset)
    broken = b"GIF89a" + b"\x01" * 30
    new = pa.Table.from_pylist([
        _image_row(_sha(big), big, "png", 640, 480, "file:///src/big.png", "run-3"),
        _image_row(_sha(sea_jpeg), sea_jpeg, "jpeg", 320, 240, "file:///src/sea.jpg", "run-3"),
        _image_row(_sha(near), near, "jpeg", 160, 120, "file:///src/again.jpg", "run-3"),  # an exact copy
        _image_row(_sha(broken), broken, "gif", None, None, "file:///src/broken.gif", "run-3"),
    ])
    # committed as `ingest images` commits a batch: its files staged in a folder of the table
    dt = lake.delta_table("bronze.images")
    staged = stage_files(lake, "bronze.images", new, snapshot=dt)
    commit_staged(lake, staged, snapshot=dt, app_id="images:bronze.images", batch_version=1)
    assert staged.actions[0].path.startswith("staged/")
    res, jobs = _run_incrementally_then_compare_with_a_full_refresh(spark, lake, "dedup_images", engine=engine)
    print(f"dedup_images incremental: {jobs} Spark jobs")
    assert jobs <= DEDUP_JOBS, jobs  # it was 35
    rows = {r["sha256"]: r for r in _read(lake, "silver.image_duplicates")}
    assert res["rows"] == len(rows) == 8
    assert {s for s, r in rows.items() if r["canonical_sha256"] == _sha(big)} == {_sha(big), shas["original"], shas["near"]}
    assert rows[shas["original"]]["distance"] == hamming(dhash(big), dhash(png_bytes(sunset)))
    assert rows[shas["near"]]["exact_copies"] == 2
    assert rows[_sha(sea_jpeg)]["canonical_sha256"] == shas["sea"]
    assert rows[_sha(broken)]["is_canonical"] and rows[_sha(broken)]["phash"] is None


def test_dedup_incremental_of_only_unrelated_images_inserts_and_equals_a_full_refresh(spark, images_lake) -> None:
    """New images that join no stored group: MERGE only inserts (no stored file is rewritten)."""
    import random

    from PIL import Image

    lake, _ = images_lake
    run_spark_models(spark, lake, select="dedup_images")
    noise = [Image.frombytes("L", (32, 32), random.Random(seed).randbytes(32 * 32)) for seed in (1, 2)]
    stored = {r["sha256"]: r for r in _read(lake, "silver.image_duplicates")}
    for im in noise:  # far from everything stored, so no near-duplicate pair
        assert min(hamming(dhash(png_bytes(im)), int(r["phash"], 16)) for r in stored.values() if r["phash"]) > 20
    write_batch(lake, "bronze.images", pa.Table.from_pylist([
        _image_row(_sha(png_bytes(im)), png_bytes(im), "png", 32, 32, f"file:///src/noise{i}.png", "run-3")
        for i, im in enumerate(noise)
    ]))
    res, _ = _run_incrementally_then_compare_with_a_full_refresh(spark, lake, "dedup_images")
    (last,) = lake.delta_table("silver.image_duplicates").history(1)
    metrics = last["operationMetrics"]
    assert (res["rows"], res["rows_written"]) == (7, 2)
    assert (int(metrics["numTargetRowsInserted"]), int(metrics["numTargetFilesRemoved"])) == (2, 0)
    # Delta's insert-only MERGE: no stored file was scanned for matches (the old condition read them all)
    assert int(metrics["scanTimeMs"]) == 0, metrics
    assert {r["sha256"]: r for r in _read(lake, "silver.image_duplicates") if r["sha256"] in stored} == stored


def test_driver_increments_find_stored_rows_through_a_key_index_kept_current(spark, images_lake, monkeypatch) -> None:
    """After every run the target's saved key index (sha256, canonical_sha256) names every file it
    holds, so an increment of unrelated images opens no data file of the target to look them up."""
    import random

    from PIL import Image

    from ingest.sources.keyindex import SavedPrefixes
    from ingest.sources.seen import StoredKeys

    lake, _ = images_lake
    target = "silver.image_duplicates"

    def unsaved_files() -> dict[str, set[str]]:
        dt = lake.delta_table(target)
        live = set(pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist())
        fs, root = lake.pyarrow_filesystem(), lake.fs_path(lake.table_uri(target))
        return {c: live - {p for paths, _, _ in SavedPrefixes(fs, root, c).load(live) for p in paths}
                for c in ("sha256", "canonical_sha256")}

    run_spark_models(spark, lake, select="dedup_images")  # the full build, on Spark
    assert unsaved_files() == {"sha256": set(), "canonical_sha256": set()}
    sunset = scene("sunset")
    bigger = png_bytes(sunset.resize((400, 300)))  # joins a stored group: its files are rewritten
    write_batch(lake, "bronze.images", pa.Table.from_pylist([
        _image_row(_sha(bigger), bigger, "png", 400, 300, "file:///src/bigger.png", "run-3")]))
    (res,) = run_spark_models(spark, lake, select="dedup_images", driver_max_rows=1_000)
    assert res["message"].startswith("incremental on the driver"), res
    assert unsaved_files() == {"sha256": set(), "canonical_sha256": set()}

    import transforms.spark.driver as driver

    opened: list[str] = []
    fragment = StoredKeys._fragment
    monkeypatch.setattr(StoredKeys, "_fragment", lambda self, path: opened.append(path) or fragment(self, path))
    scanned: list[tuple[str, list[str]]] = []  # the driver's filtered reads of whole tables
    read_table = driver.read_table
    monkeypatch.setattr(driver, "read_table", lambda lake_, table, **kw: scanned.append((table, kw["columns"]))
                        or read_table(lake_, table, **kw))
    noise = Image.frombytes("L", (32, 32), random.Random(7).randbytes(32 * 32))
    write_batch(lake, "bronze.images", pa.Table.from_pylist([
        _image_row(_sha(png_bytes(noise)), png_bytes(noise), "png", 32, 32, "file:///src/noise.png", "run-4")]))
    (res,) = run_spark_models(spark, lake, select="dedup_images", driver_max_rows=1_000)
    assert (res["message"].split(":")[0], res["rows_written"]) == ("incremental on the driver", 1)
    # the lookup opened nothing and scanned no column of the target; keeping the index current
    # read the one file the run added
    assert len(opened) == 2 and len(set(opened)) == 1, opened
    assert [t for t, _ in scanned if t == target] == [], scanned
    assert unsaved_files() == {"sha256": set(), "canonical_sha256": set()}


def test_a_key_index_that_cannot_be_saved_leaves_the_run_a_success(spark, images_lake, monkeypatch, caplog) -> None:
    """The model's commit landed before its key index is saved: a failed save is a warning, and
    the next increment finds the stored rows in the data files instead (same table)."""
    import ingest.sources.seen as seen

    lake, shas = images_lake
    real = seen.refresh_saved_keys

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(seen, "refresh_saved_keys", broken)
    (first,) = run_spark_models(spark, lake, select="dedup_images")
    assert first["status"] == "success" and "could not update the key index" in caplog.text
    monkeypatch.setattr(seen, "refresh_saved_keys", real)
    sunset = scene("sunset")
    bigger = png_bytes(sunset.resize((400, 300)))
    write_batch(lake, "bronze.images", pa.Table.from_pylist([
        _image_row(_sha(bigger), bigger, "png", 400, 300, "file:///src/bigger.png", "run-3")]))
    _run_incrementally_then_compare_with_a_full_refresh(spark, lake, "dedup_images", engine="driver")
    rows = {r["sha256"]: r for r in _read(lake, "silver.image_duplicates")}
    assert rows[shas["original"]]["canonical_sha256"] == _sha(bigger)


def test_an_incremental_run_rebuilds_when_the_source_did_more_than_append(spark, local_lake: Lake) -> None:
    """Rows deleted from the source: the merge cannot know which sessions lost events."""
    from ingest.delta import delete_rows

    write_batch(local_lake, "bronze.events", _events())
    run_spark_models(spark, local_lake, select="sessionize_events")
    delete_rows(local_lake, "bronze.events", "event_id = 'u1-e'")
    (res,) = run_spark_models(spark, local_lake, select="sessionize_events")
    assert (res["status"], res["mode"]) == ("success", "overwrite")
    rows = _table_rows(local_lake, "silver.user_sessions", ["user_id", "session_start"])
    assert [r["events"] for r in rows] == [3, 1, 1]


def test_driver_increments_with_nothing_to_delete_or_nothing_usable(spark, local_lake: Lake) -> None:
    """The driver's session increment when no stored session goes away (a new user only), and
    when the new rows hold no usable event (only the new input is recorded)."""
    write_batch(local_lake, "bronze.events", _events(typed=True))
    run_spark_models(spark, local_lake, select="sessionize_events")

    def ev(i: str, minutes: float, user: int | None) -> dict:
        return {"event_id": i, "ts": T0 + timedelta(minutes=minutes), "user_id": user, "event_type": "view",
                "photo_id": 7, "_source_file": "events-2026-03-03.jsonl", "_source_line": 0, "_run_id": "r3",
                "_ingested_at": T0}

    write_batch(local_lake, "bronze.events", pa.Table.from_pylist([ev("u9-a", 0, 9), ev("u9-b", 31, 9)]))
    res, _ = _run_incrementally_then_compare_with_a_full_refresh(spark, local_lake, "sessionize_events", engine="driver")
    assert (res["rows"], res["rows_written"]) == (5, 2)  # user 9's two sessions, nothing else touched

    before = _table_rows(local_lake, "silver.user_sessions", ["user_id", "session_start"])
    write_batch(local_lake, "bronze.events", pa.Table.from_pylist([ev("nobody", 5, None)]))
    (res,) = run_spark_models(spark, local_lake, select="sessionize_events", driver_max_rows=100)
    assert (res["status"], res["rows_written"], res["rows"]) == ("success", 0, 5)
    assert _table_rows(local_lake, "silver.user_sessions", ["user_id", "session_start"]) == before
    (again,) = run_spark_models(spark, local_lake, select="sessionize_events", driver_max_rows=100)
    assert again["status"] == "skipped"
