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
