"""`ingest docs --out DIR`: dbt's site with the Spark models and the lake's lineage, rendered in
headless Chromium from file:// and checked by what it shows (screenshot pixels, rendered DOM)."""

from __future__ import annotations

import json
import re

import pytest

from tests.pictures import (
    colour_near,
    ingest,
    ink,
    lake_dir_fixture,  # noqa: F401 - the `lake_dir` fixture
    rendered_dom,
    screenshot,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(lake_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "docs"
    r = ingest("--lake", str(lake_dir), "--json", "docs", "--out", str(out), cwd=lake_dir.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, json.loads(r.stdout)


def _visible(dom: str) -> str:
    """The DOM without script bodies: dbt inlines its manifest in one, which names everything."""
    return re.sub(r"<script\b.*?</script>", "", dom, flags=re.S | re.I)


def test_docs_reports_what_it_built(site):
    out, summary = site
    assert summary["index"] == str(out / "index.html")
    assert {"photo_features", "daily_activity", "stg_bronze__events"} <= set(summary["models"])
    assert summary["spark_models"] == ["dedup_images", "sessionize_events"]
    for name in ("index.html", "lake.html", "manifest.json", "catalog.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    exposure = manifest["exposures"]["exposure.lakehouse.spark_dedup_images"]
    assert exposure["depends_on"]["nodes"] == ["source.lakehouse.bronze.images"]
    assert manifest["exposures"]["exposure.lakehouse.shards_photo_popularity"]["depends_on"]["nodes"] == [
        "model.lakehouse.photo_features"]
    # the catalog was read from the lake: gold columns carry their types
    catalog = json.loads((out / "catalog.json").read_text())
    assert "popularity_label" in catalog["nodes"]["model.lakehouse.photo_features"]["columns"]


def test_dbt_model_page_renders_from_file_url(site, tmp_path):
    out, _ = site
    page = out / "index.html"
    model = "!/model/model.lakehouse.photo_features"
    img = screenshot(page, tmp_path / "model.png", size="1280,1600", fragment=model)
    dark, colours = ink(img)
    assert dark > 0.03 and colours > 200, (dark, colours)
    dom = _visible(rendered_dom(page, tmp_path, fragment=model))
    # dbt's app rendered the model (columns with catalog types) and our link to the lake page
    for text in ("photo_features", "popularity_label", "like_rate", "BIGINT", "lake-lineage-link", "lake.html"):
        assert text in dom, text
    dom = _visible(rendered_dom(page, tmp_path, fragment="!/exposure/exposure.lakehouse.spark_dedup_images"))
    assert "Spark: dedup_images → silver.image_duplicates" in dom
    assert "near-duplicate" in dom


def test_lake_page_draws_the_lineage_graph(site, lake_dir, tmp_path):
    from ingest.lake import Lake
    from ingest.snapshots import list_snapshots

    out, _ = site
    (snap,) = list_snapshots(Lake(str(lake_dir)))
    img = screenshot(out / "lake.html", tmp_path / "lake.png", size="1280,1000")
    dark, colours = ink(img)
    assert dark > 0.05 and colours > 200, (dark, colours)
    # node outlines in their kind's colour: bronze, gold, snapshot, shard set
    for rgb in ((0xB7, 0x79, 0x1F), (0xC9, 0xA2, 0x27), (0x00, 0x72, 0xB2), (0x00, 0x9E, 0x73)):
        assert colour_near(img, rgb, tol=10) > 150, rgb
    dom = rendered_dom(out / "lake.html", tmp_path)
    assert "<script" not in dom  # plain SVG, nothing to load
    for text in ("sample/images", "bronze.images", "bronze.events", "silver.events", "gold.photo_features",
                 "silver.image_duplicates", "silver.user_sessions", "not built yet", snap.name, "photo_popularity",
                 "webdataset", "sessionize_events", "gap_minutes=30"):
        assert text in dom, text


def test_lake_graph_follows_runs_snapshots_and_shards(lake_dir):
    from ingest.lake import Lake
    from ingest.lineage import lake_graph

    graph = lake_graph(Lake(str(lake_dir)), static_edges=[("bronze.events", "silver.user_sessions", "spark")])
    edges = {(s, d) for s, d, _ in graph.edges}
    kinds = {n.id: n.kind for n in graph.nodes}
    assert ("bronze.events", "silver.events") in edges  # a dbt model's recorded inputs
    assert ("silver.events", "gold.daily_activity") in edges
    assert ("bronze.events", "silver.user_sessions") in edges  # known from code, not built
    sources = [s for s, d in edges if d == "bronze.photos"]
    assert len(sources) == 1 and kinds[sources[0]] == "source" and "photos.db" in sources[0]
    snaps = [d for s, d in edges if s == "gold.photo_features" and kinds[d] == "snapshot"]
    assert len(snaps) == 1
    assert any(s == snaps[0] and kinds[d] == "shard_set" for s, d in edges)
    assert not any(k.startswith("_meta") or k.endswith("_quarantine") for k in kinds)


def test_docs_out_that_is_a_file_is_one_line_error(lake_dir, tmp_path):
    target = tmp_path / "site"
    target.write_text("not a directory")
    r = ingest("--lake", str(lake_dir), "docs", "--out", str(target), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {target} is a file: --out names a directory for the site"]
