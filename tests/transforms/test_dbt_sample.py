"""The demo domain end to end: sample sources -> real ingestion -> dbt marts (and the Spark models)."""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections import defaultdict
from pathlib import Path

import pytest

from ingest.lake import Lake
from ingest.settings import Settings
from transforms.dbt_runner import run_transform


def ingest_sample(tmp_path: Path) -> tuple[Settings, Lake, Path]:
    from ingest.pipeline import default_sources, ingest_source

    settings = Settings(lake=str(tmp_path / "lake"), sample_dir=str(tmp_path / "sample"))
    lake = Lake.from_settings(settings)
    for src in default_sources(settings):
        ingest_source(lake, src)
    return settings, lake, tmp_path / "sample"


def activity_from_logs(logs: Path) -> dict[int, tuple[int, int, int]]:
    """Per photo (views, likes, unique viewers), read straight from the JSON-lines files."""
    events: dict[str, dict] = {}
    for f in sorted(logs.iterdir()):
        text = gzip.decompress(f.read_bytes()).decode() if f.suffix == ".gz" else f.read_text()
        for line in text.splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            events.setdefault(ev["event_id"], ev)
    views: dict[int, int] = defaultdict(int)
    likes: dict[int, int] = defaultdict(int)
    viewers: dict[int, set] = defaultdict(set)
    for ev in events.values():
        if ev["event_type"] == "view":
            views[ev["photo_id"]] += 1
            viewers[ev["photo_id"]].add(ev["user_id"])
        elif ev["event_type"] == "like":
            likes[ev["photo_id"]] += 1
    return {p: (views[p], likes[p], len(viewers[p])) for p in set(views) | set(likes)}


def test_sample_sources_build_the_marts(tmp_path: Path) -> None:
    settings, lake, sample = ingest_sample(tmp_path)
    result = run_transform(settings, include_spark=False)
    assert result.ok and not result.tests.failed

    features = {r["photo_id"]: r for r in lake.delta_table("gold.photo_features").to_pyarrow_table().to_pylist()}
    con = sqlite3.connect(sample / "photos.db")
    photos = dict(con.execute("select photo_id, image_file from photos").fetchall())
    con.close()
    assert set(features) == set(photos)
    expect = activity_from_logs(sample / "logs")
    for pid, r in features.items():
        assert (r["views"], r["likes"], r["unique_viewers"]) == expect.get(pid, (0, 0, 0)), pid
        # the image the photo row names, byte for byte
        assert r["image"] == (sample / "images" / photos[pid]).read_bytes()
        assert r["image_format"] == ("jpeg" if photos[pid].endswith(".jpg") else "png")
    assert {r["popularity_label"] for r in features.values()} == {"popular", "not_popular"}

    daily = lake.delta_table("gold.daily_activity").to_pyarrow_table().to_pylist()
    assert len(daily) == 3
    assert sum(d["events"] for d in daily) == lake.delta_table("silver.events").count()


@pytest.mark.integration
@pytest.mark.spark
def test_transform_runs_spark_models_after_dbt(tmp_path: Path, spark) -> None:
    """The full `ingest transform`: dbt first, then the Spark models, all reported.

    (``spark``: the JVM can start once per process, so the shared session with hadoop-aws must
    be the one `run_transform` gets; otherwise later S3 Spark tests in this process fail.)
    """
    from transforms.spark import SPARK_MODELS

    settings, lake, _ = ingest_sample(tmp_path)
    result = run_transform(settings)
    kinds = [m.kind for m in result.models]
    assert kinds == sorted(kinds)  # every dbt model before every spark model
    spark = {m.name: m for m in result.models if m.kind == "spark"}
    assert set(spark) == set(SPARK_MODELS)
    for name, m in spark.items():
        assert m.status == "success", (name, m.message)
        assert m.version == lake.delta_table(m.table).version()
    assert lake.table_exists("gold.photo_features")


def test_lineage_reaches_from_a_gold_table_to_the_ingest_runs_and_sources(tmp_path: Path) -> None:
    from ingest.lineage import lineage

    settings, lake, sample = ingest_sample(tmp_path)
    result = run_transform(settings, include_spark=False)
    (features,) = [m for m in result.models if m.table == "gold.photo_features"]
    assert set(features.inputs) >= {"silver.photos", "silver.images", "silver.events"}

    tree = lineage(lake, "gold.photo_features")
    text = "\n".join(tree.render())
    assert text.startswith(f"table gold.photo_features@v{features.version}")
    for table in ("silver.events", "bronze.events", "bronze.images", "bronze.photos"):
        assert f"table {table}@v" in text, text
    assert f"source {sample / 'logs'}" in text, text
    assert "command=logs" in text and "command=transform dbt:photo_features" in text


def test_batch_that_committed_after_a_transform_read_is_picked_up_next_run(tmp_path: Path) -> None:
    """An ingest still committing when a transform started stamped its rows before that read."""
    from datetime import timedelta

    import pyarrow as pa

    from ingest.delta import write_batch
    from ingest.runlog import RUNS_TABLE, Run, record

    settings, lake, _ = ingest_sample(tmp_path)
    run_transform(settings, include_spark=False)
    runs = lake.delta_table(RUNS_TABLE).to_pyarrow_table().to_pylist()
    transform_start = max(r["started_at"] for r in runs if r["command"] == "transform")
    bronze = lake.delta_table("bronze.events").to_pyarrow_table()
    watermark = max(bronze["_ingested_at"].to_pylist())

    # the late batch: stamped before the newest stamp the transform saw, committed after it read
    late = bronze.slice(0, 3).to_pylist()
    for i, row in enumerate(late):
        row.update(event_id=f"late{i}", _ingested_at=watermark - timedelta(seconds=1), _run_id="late-run")
    write_batch(lake, "bronze.events", pa.Table.from_pylist(late, schema=bronze.schema))
    started = watermark - timedelta(seconds=2)
    record(lake, Run(command="logs", source="late-source", target="bronze.events", started_at=started,
                     duration_s=(transform_start - started).total_seconds() + 0.01, status="success",
                     rows_written=3))

    run_transform(settings, include_spark=False)
    silver = set(lake.delta_table("silver.events").to_pyarrow_table(columns=["event_id"])["event_id"].to_pylist())
    assert {"late0", "late1", "late2"} <= silver
    assert len(silver) == len(set(lake.delta_table("bronze.events").to_pyarrow_table()["event_id"].to_pylist()))

    # once picked up, the next run does not reach back again (no overlap with the last transform)
    from transforms.dbt_plugin import late_arrival_cutoff

    assert late_arrival_cutoff(lake) is None
