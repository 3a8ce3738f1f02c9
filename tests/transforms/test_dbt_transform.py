"""`ingest transform` end to end: real dbt, real DuckDB, real Delta tables (local and SeaweedFS)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pytest

from ingest.delta import write_batch
from ingest.lake import Lake
from ingest.settings import Settings
from transforms.dbt_runner import TransformFailed, run_transform

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
EVENT_TYPES = ("view", "like", "view", "login")


def settings_for(lake: Lake) -> Settings:
    return Settings(lake=lake.uri, s3=lake.s3)


def build(lake: Lake, **kwargs):
    """The dbt half of ``run_transform`` (the Spark models have their own tests)."""
    return run_transform(settings_for(lake), include_spark=False, **kwargs)


def make_photos(lake: Lake, ids: range, *, loaded: datetime, title: str = "t") -> None:
    n = len(ids)
    write_batch(lake, "bronze.photos", pa.table({
        "photo_id": pa.array(list(ids), pa.int64()),
        "user_id": pa.array([i % 5 + 1 for i in ids], pa.int64()),
        "title": [f"{title} {i}" for i in ids],
        "place": ["Oslo" if i % 2 else "Lima" for i in ids],
        "uploaded_at": [(T0 + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in ids],
        "image_file": [f"photo_{i:05d}.{'jpg' if i % 3 == 0 else 'png'}" for i in ids],
        "updated_at": [(loaded - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")] * n,
        "_run_id": ["r"] * n,
        "_ingested_at": pa.array([loaded] * n, pa.timestamp("us", tz="UTC")),
    }))


def make_images(lake: Lake, ids: range, *, loaded: datetime) -> None:
    from ingest.sources.images import IMAGES_SCHEMA

    rows = [
        {
            "source_uri": f"file:///data/images/photo_{i:05d}.{'jpg' if i % 3 == 0 else 'png'}",
            "sha256": f"{i:064x}", "size_bytes": 10 + i, "format": "jpeg" if i % 3 == 0 else "png",
            "width": 64, "height": 48, "source_mtime": T0, "ingest_run_id": "r", "ingested_at": loaded,
            "content": bytes([i % 256]) * (10 + i),
        }
        for i in ids
    ]
    write_batch(lake, "bronze.images", pa.Table.from_pylist(rows, schema=IMAGES_SCHEMA))


def make_events(lake: Lake, events: list[tuple[str, int, str, int | None, datetime]], *, loaded: datetime) -> None:
    """events: (event_id, user_id, event_type, photo_id, ts)."""
    write_batch(lake, "bronze.events", pa.table({
        "event_id": [e[0] for e in events],
        "ts": [e[4].strftime("%Y-%m-%dT%H:%M:%SZ") for e in events],
        "user_id": pa.array([e[1] for e in events], pa.int64()),
        "event_type": [e[2] for e in events],
        "photo_id": pa.array([e[3] for e in events], pa.int64()),
        "_source_file": ["events.jsonl"] * len(events),
        "_source_line": pa.array(range(len(events)), pa.int64()),
        "_run_id": ["r"] * len(events),
        "_ingested_at": pa.array([loaded] * len(events), pa.timestamp("us", tz="UTC")),
    }))


def event_rows(photo_ids: range, *, prefix: str, day: int = 0) -> list[tuple[str, int, str, int | None, datetime]]:
    out = []
    for pid in photo_ids:
        for k in range(pid % 7 + 1):
            etype = EVENT_TYPES[k % len(EVENT_TYPES)]
            out.append((f"{prefix}-{pid}-{k}", k % 4 + 1, etype, None if etype == "login" else pid,
                        T0 + timedelta(days=day, hours=k)))
    return out


def build_bronze(lake: Lake, photos: int = 12) -> list[tuple]:
    make_photos(lake, range(1, photos + 1), loaded=T0)
    make_images(lake, range(1, photos + 1), loaded=T0)
    events = event_rows(range(1, photos + 1), prefix="a")
    make_events(lake, events, loaded=T0)
    return events


def expected_activity(events: list[tuple]) -> dict[int, tuple[int, int, int]]:
    views: dict[int, int] = defaultdict(int)
    likes: dict[int, int] = defaultdict(int)
    viewers: dict[int, set] = defaultdict(set)
    for _eid, user, etype, pid, _ts in {e[0]: e for e in events}.values():
        if pid is None:
            continue
        if etype == "view":
            views[pid] += 1
            viewers[pid].add(user)
        elif etype == "like":
            likes[pid] += 1
    return {p: (views[p], likes[p], len(viewers[p])) for p in set(views) | set(likes)}


def gold(lake: Lake, table: str, order: str) -> list[dict]:
    return lake.delta_table(table).to_pyarrow_table().sort_by(order).to_pylist()


def test_transform_builds_marts_as_delta_tables(local_lake: Lake) -> None:
    events = build_bronze(local_lake)
    result = build(local_lake)

    assert result.ok and not result.tests.failed
    # dbt unit tests ran as part of build, next to the data tests
    assert "test_photo_features_counts_rate_and_label" in result.tests.passed
    assert "unique_photo_features_photo_id" in result.tests.passed
    by_table = {m.table: m for m in result.models if m.table}
    assert set(by_table) == {
        "silver.events", "silver.photos", "silver.images", "gold.photo_features", "gold.daily_activity",
    }
    for table, m in by_table.items():
        assert m.status == "success" and m.mode == "overwrite"
        assert m.version == local_lake.delta_table(table).version() == 0
        assert m.rows == local_lake.delta_table(table).count()

    rows = gold(local_lake, "gold.photo_features", "photo_id")
    assert [r["photo_id"] for r in rows] == list(range(1, 13))
    expect = expected_activity(events)
    for r in rows:
        v, lk, u = expect.get(r["photo_id"], (0, 0, 0))
        assert (r["views"], r["likes"], r["unique_viewers"]) == (v, lk, u), r["photo_id"]
        assert r["like_rate"] == pytest.approx(lk / v if v else 0.0)
        assert r["popularity_label"] == ("popular" if lk >= 3 and r["like_rate"] >= 0.25 else "not_popular")
        # shards are cut from this table: the image bytes and format travel with it
        assert r["image"] == bytes([r["photo_id"]]) * (10 + r["photo_id"])
        assert r["image_format"] == ("jpeg" if r["photo_id"] % 3 == 0 else "png")

    daily = gold(local_lake, "gold.daily_activity", "activity_date")
    assert sum(d["events"] for d in daily) == len(events)
    assert sum(d["logins"] for d in daily) == sum(1 for e in events if e[2] == "login")


def test_incremental_run_merges_only_changes_and_matches_full_refresh(local_lake: Lake) -> None:
    events = build_bronze(local_lake)
    build(local_lake)
    loaded = T0 + timedelta(days=1)
    # a new photo with its image, new activity on photo 3, a re-shipped old event (duplicate id),
    # and an edit of photo 5's title
    make_photos(local_lake, range(13, 14), loaded=loaded)
    make_images(local_lake, range(13, 14), loaded=loaded)
    make_photos(local_lake, range(5, 6), loaded=loaded, title="renamed")
    new_events = event_rows(range(13, 14), prefix="b", day=1) + [
        ("c-1", 9, "like", 3, T0 + timedelta(days=1, hours=2)),
        ("c-2", 9, "view", 3, T0 + timedelta(days=1, hours=3)),
        events[0],  # the same event id again: counted once
    ]
    make_events(local_lake, new_events, loaded=loaded)

    result = build(local_lake)
    by_table = {m.table: m for m in result.models if m.table}
    assert by_table["gold.photo_features"].mode == "merge"
    assert by_table["silver.events"].mode == "append"
    assert by_table["gold.photo_features"].rows_written == 3  # photos 3, 5 and 13
    assert by_table["gold.photo_features"].rows == 13
    assert by_table["silver.events"].rows_written == len(new_events) - 1
    assert by_table["silver.photos"].rows_written == 2  # the new photo and the edit
    assert by_table["silver.images"].rows_written == 1
    assert by_table["gold.daily_activity"].rows_written == 1  # only day 2 changed
    # the merge, then its string_view files swapped for plain copies (ingest.delta.plain_files)
    assert by_table["gold.photo_features"].version == 2

    incremental = gold(local_lake, "gold.photo_features", "photo_id")
    incremental_daily = gold(local_lake, "gold.daily_activity", "activity_date")
    assert incremental[4]["title"] == "renamed 5"
    expect = expected_activity(events + new_events)
    assert (incremental[2]["views"], incremental[2]["likes"], incremental[2]["unique_viewers"]) == expect[3]

    build(local_lake, full_refresh=True)
    assert gold(local_lake, "gold.photo_features", "photo_id") == incremental
    assert gold(local_lake, "gold.daily_activity", "activity_date") == incremental_daily
    # a run with nothing new writes nothing new
    versions = {t: local_lake.delta_table(t).version() for t in by_table}
    again = build(local_lake)
    assert all((m.rows_written or 0) == 0 for m in again.models if m.table)
    assert {t: local_lake.delta_table(t).version() for t in by_table} == versions


def test_source_pinned_at_version_zero(local_lake: Lake) -> None:
    """The stock plugin ignores as_of_version 0 (`if as_of_version:`); ours does not."""
    events = build_bronze(local_lake)
    make_events(local_lake, event_rows(range(1, 5), prefix="late", day=2), loaded=T0 + timedelta(days=2))
    assert local_lake.delta_table("bronze.events").version() == 1

    result = build(local_lake, source_versions={"bronze.events": 0})
    assert result.ok
    assert local_lake.delta_table("silver.events").count() == len({e[0] for e in events})
    build(local_lake)  # unpinned: the later batch arrives
    assert local_lake.delta_table("silver.events").count() > len(events)


def test_sources_pinned_by_a_snapshot(local_lake: Lake) -> None:
    from ingest.snapshots import create_snapshot

    events = build_bronze(local_lake)
    create_snapshot(local_lake, "bronze-day1", tables=["bronze.events", "bronze.photos", "bronze.images"])
    make_events(local_lake, event_rows(range(1, 5), prefix="late", day=2), loaded=T0 + timedelta(days=2))

    result = build(local_lake, snapshot="bronze-day1")
    assert result.ok
    assert local_lake.delta_table("silver.events").count() == len({e[0] for e in events})
    # pinned runs rebuild (watermarks from newer data would skip rows)
    assert {m.mode for m in result.models if m.table} == {"overwrite"}


def test_a_snapshot_pins_the_spark_models_inputs_too(local_lake: Lake, monkeypatch) -> None:
    """`ingest transform --snapshot S` hands S's bronze versions to the Spark stage (which reads
    and records exactly the versions it is given: test_spark_models.py, the pinned dedup run)."""
    import transforms.dbt_runner as runner
    from ingest.snapshots import create_snapshot

    build_bronze(local_lake)
    snap = create_snapshot(local_lake, "bronze-day1", tables=["bronze.events", "bronze.photos", "bronze.images"])
    make_events(local_lake, event_rows(range(1, 5), prefix="late", day=2), loaded=T0 + timedelta(days=2))
    make_images(local_lake, range(13, 15), loaded=T0 + timedelta(days=2))
    handed: list[dict] = []

    def spark_stage(settings, lake, **kwargs):  # the JVM half has its own tests; here: what it is given
        handed.append(kwargs)
        return []

    monkeypatch.setattr(runner, "run_spark_stage", spark_stage)
    result = run_transform(settings_for(local_lake), snapshot="bronze-day1")
    assert result.ok
    (kwargs,) = handed
    assert kwargs["source_versions"] == snap.tables
    assert local_lake.delta_table("bronze.images").version() > snap.tables["bronze.images"]  # newer data was there


def test_failing_data_test_fails_the_command_and_names_it(local_lake: Lake, capsys) -> None:
    build_bronze(local_lake)
    make_events(local_lake, [("bad-1", 1, "share", 1, T0)], loaded=T0 + timedelta(hours=1))

    with pytest.raises(TransformFailed) as err:
        build(local_lake)
    assert "accepted_values_stg_bronze__events_event_type" in str(err.value)
    assert err.value.result.ok is False
    # the models that committed before the failure are counted on the failed run's record
    (failed,) = [r for r in local_lake.delta_table("_meta.runs").to_pyarrow_table().to_pylist()
                 if r["command"] == "transform"]
    written = sum(m.rows_written or 0 for m in err.value.result.models)
    assert failed["status"] == "failed" and failed["rows_written"] == written > 0

    from ingest.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["--lake", local_lake.uri, "--json", "transform"])
    assert ex.value.code != 0
    out, errtext = capsys.readouterr()
    assert "accepted_values_stg_bronze__events_event_type" in errtext
    payload = json.loads(out)  # stdout is only the JSON result: dbt's own logging is off
    assert "accepted_values_stg_bronze__events_event_type__login__view__like" in payload["tests"]["failed"]
    assert errtext.count("\n") == 1  # one line on stderr


def test_missing_sources_say_what_to_ingest(local_lake: Lake, capsys) -> None:
    from ingest.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["--lake", local_lake.uri, "--json", "transform", "--select", "+daily_activity"])
    assert ex.value.code != 0
    out, err = capsys.readouterr()
    payload = json.loads(out)
    assert payload["ok"] is False
    assert "source bronze.events does not exist" in err and "ingest" in err
    assert not local_lake.table_exists("gold.daily_activity")


def test_cli_transform_json_and_partial_select(local_lake: Lake, capsys) -> None:
    from ingest.cli import main

    build_bronze(local_lake)
    with pytest.raises(SystemExit) as ex:
        main(["--lake", local_lake.uri, "--json", "transform", "--select", "+photo_features +daily_activity"])
    assert ex.value.code == 0
    payload = json.loads(capsys.readouterr().out)
    written = {m["table"]: m for m in payload["models"] if m["table"]}
    assert written["gold.photo_features"]["version"] == 0
    assert written["gold.photo_features"]["rows"] == 12
    assert payload["ok"] is True

    # a selection that needs upstream views (staging/intermediate) that are not selected
    with pytest.raises(SystemExit) as ex:
        main(["--lake", local_lake.uri, "--json", "transform", "--select", "photo_features", "--full-refresh"])
    assert ex.value.code == 0
    payload = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in payload["models"]] == ["photo_features"]
    assert payload["models"][0]["version"] == 1


def test_catalog_export_is_queryable_by_duckdb(local_lake: Lake, tmp_path, capsys) -> None:
    from ingest.catalog import export_catalog
    from ingest.errors import ConfigError

    build_bronze(local_lake)
    build(local_lake)
    dest = tmp_path / "lake.duckdb"
    res = export_catalog(local_lake, dest)
    assert {t.table for t in res.tables} >= {"bronze.events", "gold.photo_features", "gold.daily_activity"}
    assert {t.kind for t in res.tables} == {"view"}

    con = duckdb.connect(str(dest), read_only=True)
    got = con.execute("select photo_id, views, image from gold.photo_features order by photo_id").fetchall()
    want = gold(local_lake, "gold.photo_features", "photo_id")
    assert got == [(r["photo_id"], r["views"], r["image"]) for r in want]
    assert con.execute("select count(*) from bronze.events").fetchone()[0] == local_lake.delta_table("bronze.events").count()
    versions = dict(con.execute('select "table", version from _catalog.tables').fetchall())
    assert versions["gold.photo_features"] == 0
    con.close()

    with pytest.raises(ConfigError, match="--force"):
        export_catalog(local_lake, dest)

    from ingest.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["--lake", local_lake.uri, "--json", "catalog", "export", str(dest), "--force", "--materialize"])
    assert ex.value.code == 0
    payload = json.loads(capsys.readouterr().out)
    assert {t["kind"] for t in payload["tables"]} == {"table"}
    con = duckdb.connect(str(dest), read_only=True)
    assert con.execute("select count(*) from gold.photo_features").fetchone()[0] == 12
    con.close()


@pytest.mark.integration
@pytest.mark.s3
def test_transform_and_catalog_on_s3(s3_lake: Lake, tmp_path) -> None:
    from ingest.catalog import export_catalog

    events = build_bronze(s3_lake)
    result = build(s3_lake)
    assert result.ok
    rows = gold(s3_lake, "gold.photo_features", "photo_id")
    expect = expected_activity(events)
    assert [(r["views"], r["likes"], r["unique_viewers"]) for r in rows] == [
        expect.get(p, (0, 0, 0)) for p in range(1, 13)
    ]
    # incremental merge on S3 too
    make_events(s3_lake, [("s3-1", 2, "like", 1, T0 + timedelta(days=1))], loaded=T0 + timedelta(days=1))
    again = build(s3_lake)
    pf = next(m for m in again.models if m.table == "gold.photo_features")
    # version 1 is the merge, 2 swaps its string_view files for plain copies (ingest.delta.plain_files)
    assert (pf.mode, pf.rows_written, pf.version) == ("merge", 1, 2)

    dest = tmp_path / "s3.duckdb"
    res = export_catalog(s3_lake, dest)
    assert {t.kind for t in res.tables} == {"table"}  # S3 lakes are copied (no httpfs offline)
    con = duckdb.connect(str(dest), read_only=True)
    assert con.execute("select likes from gold.photo_features where photo_id = 1").fetchone()[0] == expect.get(1, (0, 0, 0))[1] + 1
    con.close()


def test_incremental_runs_test_only_new_rows_and_still_fail_on_them(local_lake: Lake) -> None:
    build_bronze(local_lake)
    first = build(local_lake)
    assert (first.tests_scoped, first.unit_tests_run) == (False, True)  # a first build tests everything
    assert first.tests.passed and first.sources == {"bronze.events": 0, "bronze.images": 0, "bronze.photos": 0}

    loaded = T0 + timedelta(days=1)
    make_photos(local_lake, range(13, 14), loaded=loaded)
    make_images(local_lake, range(13, 14), loaded=loaded)
    make_events(local_lake, event_rows(range(13, 14), prefix="b", day=1), loaded=loaded)
    second = build(local_lake)
    # the same data tests ran, over the new rows; the project did not change, so no unit tests
    assert (second.tests_scoped, second.unit_tests_run) == (True, False)
    assert set(second.tests.passed) == {t for t in first.tests.passed if not t.startswith("test_")}
    # all keys new: the merge models appended instead of joining the whole table
    ops = {t: local_lake.delta_table(t).history(1)[0]["operation"] for t in ("silver.images", "silver.photos")}
    assert ops == {"silver.images": "WRITE", "silver.photos": "WRITE"}

    make_events(local_lake, [("bad-1", 1, "share", 1, T0)], loaded=loaded + timedelta(hours=1))
    with pytest.raises(TransformFailed) as err:
        build(local_lake)
    assert err.value.result.tests_scoped is True
    assert "accepted_values_stg_bronze__events_event_type" in str(err.value)
    # after a failed run nothing is scoped: the bad row is tested again, not forgotten
    with pytest.raises(TransformFailed) as again:
        build(local_lake)
    assert again.value.result.tests_scoped is False
    assert "accepted_values_stg_bronze__events_event_type" in str(again.value)


def test_scoped_tests_skip_stored_rows_and_test_all_reads_them(local_lake: Lake) -> None:
    """Proof that scoping changes what is read: a bad row already stored (put there behind
    dbt's back) passes a scoped run, and --test-all finds it."""
    build_bronze(local_lake)
    build(local_lake)
    old = local_lake.delta_table("silver.events").to_pyarrow_table().slice(0, 1)
    bad = old.set_column(old.schema.get_field_index("event_id"), "event_id", pa.array(["manual-1"]))
    bad = bad.set_column(bad.schema.get_field_index("event_at"), "event_at",
                         pa.nulls(1, bad.schema.field("event_at").type))
    write_batch(local_lake, "silver.events", bad)

    loaded = T0 + timedelta(days=1)
    make_events(local_lake, event_rows(range(3, 4), prefix="b", day=1), loaded=loaded)
    scoped = build(local_lake)
    assert scoped.tests_scoped and "not_null_int_events_deduplicated_event_at" in scoped.tests.passed
    with pytest.raises(TransformFailed) as err:
        build(local_lake, test_all=True)
    assert "not_null_int_events_deduplicated_event_at" in str(err.value)


def test_unit_tests_rerun_when_the_project_changes(local_lake: Lake, monkeypatch) -> None:
    import transforms.dbt_runner as runner

    build_bronze(local_lake)
    build(local_lake)
    assert build(local_lake).unit_tests_run is False
    forced = build(local_lake, test_all=True)  # `ingest transform --test-all`
    assert (forced.tests_scoped, forced.unit_tests_run) == (False, True)
    monkeypatch.setattr(runner, "project_fingerprint", lambda: "edited")
    rerun = build(local_lake)
    assert rerun.unit_tests_run is True
    assert any(t.startswith("test_") for t in rerun.tests.passed)  # unit tests are named test_*
    assert rerun.project_sha == "edited"


def test_unique_fails_on_an_old_key_repeated_by_an_incremental_run(local_lake: Lake, tmp_path, monkeypatch) -> None:
    """README: a scoped `unique` reads every stored row with the keys this run wrote, so a new
    row that repeats an old key still fails. The bundled model never repeats a key, so a copy of
    the project with a broken model (it no longer skips event ids already in silver.events)
    stands in for a model bug; a log shipped again then appends an old event id."""
    import shutil

    import transforms.dbt_runner as runner

    project = tmp_path / "dbt_project"
    shutil.copytree(runner.PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    model = project / "models" / "intermediate" / "int_events_deduplicated.sql"
    sql = model.read_text()
    skip_old = "      and event_id not in (select event_id from already_loaded)\n"
    assert skip_old in sql
    model.write_text(sql.replace(skip_old, ""))
    monkeypatch.setattr(runner, "PROJECT_DIR", project)

    build_bronze(local_lake)
    build(local_lake)
    loaded = T0 + timedelta(days=1)
    make_photos(local_lake, range(13, 14), loaded=loaded)
    make_images(local_lake, range(13, 14), loaded=loaded)
    make_events(local_lake, event_rows(range(13, 14), prefix="b", day=1), loaded=loaded)
    clean = build(local_lake)
    assert clean.tests_scoped and "unique_int_events_deduplicated_event_id" in clean.tests.passed

    # the first log shipped again: one old event id (a-3-0) comes back with a new load time
    make_events(local_lake, [e for e in event_rows(range(3, 4), prefix="a") if e[0] == "a-3-0"],
                loaded=loaded + timedelta(hours=1))
    with pytest.raises(TransformFailed) as err:
        build(local_lake)
    assert err.value.result.tests_scoped is True
    assert "unique_int_events_deduplicated_event_id" in str(err.value)
    ids = local_lake.delta_table("silver.events").to_pyarrow_table(columns=["event_id"])["event_id"].to_pylist()
    assert ids.count("a-3-0") == 2  # the broken model did store it twice: the test is what caught it


MODEL_KEYS = {
    "silver.events": "event_id", "silver.photos": "photo_id", "silver.images": "image_file",
    "gold.photo_features": "photo_id", "gold.daily_activity": "activity_date",
}


def test_every_model_built_incrementally_equals_a_full_refresh(local_lake: Lake) -> None:
    """Each way an incremental model takes a row (photo_features: a new image, an image looked
    up for an edited photo, the image stored with an unchanged photo) gives what a full
    refresh computes from the same bronze tables, for every dbt model, column for column."""
    from ingest.sources.images import IMAGES_SCHEMA

    events = build_bronze(local_lake)
    build(local_lake)
    loaded = T0 + timedelta(days=1)
    make_photos(local_lake, range(13, 15), loaded=loaded)  # 14's image never arrives
    make_images(local_lake, range(13, 14), loaded=loaded)
    make_photos(local_lake, range(7, 8), loaded=loaded, title="renamed")  # same, older image
    photos = local_lake.delta_table("bronze.photos").to_pyarrow_table()
    edit = [{**r, "image_file": "photo_00001.png", "_ingested_at": loaded}  # now names 1's image
            for r in photos.to_pylist() if r["photo_id"] == 2]
    write_batch(local_lake, "bronze.photos", pa.Table.from_pylist(edit, schema=photos.schema))
    write_batch(local_lake, "bronze.images", pa.Table.from_pylist([{  # photo 4's file, new content
        "source_uri": "file:///data/images/photo_00004.png", "sha256": "f" * 64, "size_bytes": 3, "format": "png",
        "width": 1, "height": 1, "source_mtime": T0, "ingest_run_id": "r", "ingested_at": loaded, "content": b"new",
    }], schema=IMAGES_SCHEMA))
    make_events(local_lake, event_rows(range(6, 7), prefix="b", day=1) + event_rows(range(13, 15), prefix="b", day=1)
                + [events[0]], loaded=loaded)  # new activity on 6 (row unchanged), a re-shipped event

    incremental = build(local_lake)
    assert {m.table: m.mode for m in incremental.models if m.table}["gold.photo_features"] == "merge"
    # every dbt model that writes a table is compared below (a new one needs its key here)
    assert {m.table for m in incremental.models if m.table and m.kind == "dbt"} == set(MODEL_KEYS)
    after = {t: gold(local_lake, t, key) for t, key in MODEL_KEYS.items()}
    by_photo = {r["photo_id"]: r for r in after["gold.photo_features"]}
    assert by_photo[4]["image"] == b"new" and by_photo[2]["image_sha256"] == by_photo[1]["image_sha256"]
    assert by_photo[14]["image"] is None and by_photo[6]["image"] == bytes([6]) * 16

    build(local_lake, full_refresh=True)
    for table, key in MODEL_KEYS.items():
        assert gold(local_lake, table, key) == after[table], table


def test_a_data_test_that_cannot_run_is_an_error_with_its_reason_not_a_failure(local_lake: Lake) -> None:
    """A test that errors (here: its column is gone from the stored table) found no bad rows;
    the message says what went wrong instead of calling it a failed test (issue 16: a pyarrow
    kernel error read as a wrong `unique` result for a while)."""
    build_bronze(local_lake)
    build(local_lake)
    events = local_lake.delta_table("silver.events").to_pyarrow_table().drop_columns(["event_at"])
    write_batch(local_lake, "silver.events", events, mode="overwrite")

    with pytest.raises(TransformFailed) as err:
        build(local_lake, test_all=True)
    message = str(err.value)
    assert message.startswith("dbt failed: test not_null_int_events_deduplicated_event_at: ")
    assert "event_at" in message.split(": ", 2)[2] and "tests failed" not in message
    assert "not_null_int_events_deduplicated_event_at" in err.value.result.tests.failed


def test_a_run_with_nothing_new_does_not_start_dbt(local_lake: Lake, monkeypatch) -> None:
    """No source moved, no model table changed, same project: the last run's result stands
    (dbt's fixed per-node cost is most of a no-op run).  Anything that moved runs dbt again."""
    from dbt.cli.main import dbtRunner

    build_bronze(local_lake)
    first = build(local_lake)
    calls: list[str] = []
    real = dbtRunner.invoke
    monkeypatch.setattr(dbtRunner, "invoke", lambda self, args, **kw: calls.append(args[0]) or real(self, args, **kw))

    noop = build(local_lake)
    assert calls == [] and noop.ok
    assert {m.table: (m.status, m.version, m.rows_written) for m in noop.models if m.table} == {
        m.table: ("skipped", m.version, 0) for m in first.models if m.table}
    assert build(local_lake).models[0].status == "skipped"  # a skipped run is a tested run too

    # a model table written behind dbt's back, new source rows, --test-all: dbt runs
    write_batch(local_lake, "gold.daily_activity", local_lake.delta_table("gold.daily_activity").to_pyarrow_table(),
                mode="overwrite")
    assert build(local_lake).models[0].status != "skipped" and calls == ["build"]
    assert build(local_lake).models[0].status == "skipped"
    make_events(local_lake, event_rows(range(3, 4), prefix="b", day=1), loaded=T0 + timedelta(days=1))
    assert build(local_lake).models[0].status != "skipped"
    build(local_lake, test_all=True)
    assert calls == ["build"] * 3


def test_a_lake_under_a_key_value_directory_gains_no_column(tmp_path) -> None:
    """DuckDB's parquet views (catalog export, the dbt plugin) read `env=prod/` in a lake's
    path as a hive partition unless the table is partitioned."""
    from ingest.catalog import export_catalog

    root = tmp_path / "env=prod" / "lake"
    root.mkdir(parents=True)
    lake = Lake(str(root))
    make_events(lake, event_rows(range(1, 3), prefix="a"), loaded=T0)
    export_catalog(lake, tmp_path / "c.duckdb", tables=["bronze.events"])
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    columns = [r[0] for r in con.execute("describe bronze.events").fetchall()]
    con.close()
    assert columns == lake.delta_table("bronze.events").schema().to_arrow().names


DBT_MODELS = "int_events_deduplicated int_images_deduplicated int_photos_deduplicated photo_features daily_activity"


def test_two_transforms_at_once_store_each_increment_once(local_lake: Lake, tmp_path) -> None:
    """A scheduled `ingest transform` overlapping a manual one (two real processes released
    together): each exits 0, or 4 (may pass on retry) with one line saying to run it again; after
    that re-run every model table is what a full refresh computes - no increment appended twice."""
    from tests.procs import assert_runs_overlapped, race_cli
    from tests.sources.conftest import run_cli

    events = build_bronze(local_lake)
    build(local_lake)
    loaded = T0 + timedelta(days=1)
    make_photos(local_lake, range(13, 16), loaded=loaded)
    make_images(local_lake, range(13, 16), loaded=loaded)
    make_events(local_lake, event_rows(range(13, 16), prefix="b", day=1) + [events[0]], loaded=loaded)

    before = datetime.now(timezone.utc)
    results = race_cli(local_lake, [["transform", "--select", DBT_MODELS]] * 2, tmp_path)
    assert_runs_overlapped(local_lake, "transform", since=before)
    for code, _out, err in results:
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 0 or (code == 4 and len(lines) == 1 and "run `ingest transform` again" in lines[0]), (code, err)
    assert any(code == 0 for code, _, _ in results)

    if any(code != 0 for code, _, _ in results):  # as the message says
        run_cli(local_lake, "transform", "--select", DBT_MODELS)
    after = {t: gold(local_lake, t, key) for t, key in MODEL_KEYS.items()}
    assert len({r["event_id"] for r in after["silver.events"]}) == len(after["silver.events"])

    build(local_lake, full_refresh=True)
    for table, key in MODEL_KEYS.items():
        assert gold(local_lake, table, key) == after[table], table
