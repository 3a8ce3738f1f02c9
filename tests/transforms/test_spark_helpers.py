"""The Spark models' pure helpers (dHash, LSH bands, grouping, selection): no JVM, no markers."""

from __future__ import annotations

from spark_images import near_copy, png_bytes, scene

from transforms.spark import SPARK_MODELS, selected_models
from transforms.spark.dedup_images import DEFAULT_THRESHOLD, bands, dhash, group_pairs, hamming


def test_dhash_sees_resize_and_recompression_but_not_other_pictures() -> None:
    sunset = scene("sunset")
    a, b = dhash(png_bytes(sunset)), dhash(near_copy(sunset))
    c = dhash(png_bytes(scene("sea")))
    assert a is not None and b is not None and c is not None
    assert 0 < hamming(a, b) <= DEFAULT_THRESHOLD
    assert hamming(a, c) > 2 * DEFAULT_THRESHOLD
    assert dhash(b"not an image") is None and dhash(None) is None
    assert -(2**63) <= a < 2**63  # fits a Spark bigint


def test_bands_cover_64_bits_and_guarantee_a_shared_band() -> None:
    for t in (0, 3, 10, 20):
        bs = bands(t)
        assert len(bs) == t + 1 and sum(w for _, w in bs) == 64
        assert [s for s, _ in bs] == sorted(s for s, _ in bs)


def test_group_pairs_is_transitive_and_order_independent() -> None:
    g1 = group_pairs([("c", "d"), ("b", "c"), ("x", "y")])
    g2 = group_pairs([("x", "y"), ("d", "c"), ("c", "b")])
    assert g1 == g2 == {"b": "b", "c": "b", "d": "b", "x": "x", "y": "x"}


def test_selection_matches_names_and_tables() -> None:
    assert selected_models(None) == list(SPARK_MODELS)
    assert selected_models("silver.user_sessions") == ["sessionize_events"]
    assert selected_models("+dedup_images tag:x") == ["dedup_images"]
    assert selected_models("gold.photo_features") == []


def test_files_reaching_keeps_only_files_whose_max_time_reaches_the_watermark(local_lake) -> None:
    """The event window of an incremental sessionize run reads the files that can hold a row at
    or after the watermark, chosen from the log's statistics (no Spark log replay); a max
    truncated to milliseconds by the statistics still counts as reaching a later microsecond."""
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa

    from ingest.delta import write_batch
    from transforms.spark.common import files_reaching

    t0 = datetime(2026, 3, 1, tzinfo=UTC)

    def batch(*times: datetime) -> pa.Table:
        ids = [f"e{t.timestamp()}" for t in times]
        return pa.table({"event_id": ids, "ts": pa.array(times, pa.timestamp("us", tz="UTC"))})

    write_batch(local_lake, "bronze.events", batch(t0, t0 + timedelta(hours=1)))  # before the mark
    # its max is stored truncated to milliseconds: day 1, 00:00:00.000
    write_batch(local_lake, "bronze.events", batch(t0 + timedelta(days=1, microseconds=999)))
    write_batch(local_lake, "bronze.events", batch(t0 + timedelta(days=2)))
    first = pa.table(local_lake.delta_table("bronze.events", version=0).get_add_actions())
    (before,) = first.column("path").to_pylist()
    mark = int((t0 + timedelta(days=1, microseconds=999)).timestamp() * 1_000_000)
    kept = files_reaching(local_lake, "bronze.events", version=2, column="ts", low_micros=mark)
    assert kept is not None and len(kept) == 2 and before not in kept
    assert len(files_reaching(local_lake, "bronze.events", version=2, column="ts", low_micros=0) or []) == 3
    assert files_reaching(local_lake, "bronze.events", version=0, column="ts", low_micros=mark) == []


def test_only_plain_relative_file_paths_are_read_directly() -> None:
    from transforms.spark.common import files_under_root

    assert files_under_root(["part-00000-a.snappy.parquet", "sub/part-1.parquet"])
    assert not files_under_root(["part-0.parquet", "s3://other-bucket/t/part-1.parquet"])
    assert not files_under_root(["/mnt/elsewhere/part-1.parquet"])
    assert not files_under_root(["part%20with%20space.parquet"])
