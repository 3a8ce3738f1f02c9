"""`ingest health --html FILE`: the health checks as a page with charts, rendered in headless
Chromium and checked by what it shows (screenshot pixels, rendered DOM)."""

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

BREACH = (0xD5, 0x5E, 0x00)
OK = (0x00, 0x9E, 0x73)
FIRST_SERIES = (0x00, 0x72, 0xB2)


def test_health_html_renders_charts(lake_dir, tmp_path):
    page = tmp_path / "health.html"
    r = ingest("--lake", str(lake_dir), "health", "--html", str(page), cwd=tmp_path)
    # the second log load added fewer rows than the first: a volume breach, exit 1 as without --html
    assert r.returncode == 1, r.stderr[-3000:]
    assert r.stderr.strip() == f"wrote {page}"
    html = page.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*['"]?(?:https?:)?//""", html), "the page must not load anything"
    img = screenshot(page, tmp_path / "health.png", size="1280,2600")
    dark, colours = ink(img)
    assert dark > 0.05 and colours > 200, (dark, colours)
    assert colour_near(img, BREACH) > 500  # the BREACH badges and the volume bar
    assert colour_near(img, OK) > 100  # ok freshness and distribution bars
    assert colour_near(img, FIRST_SERIES) > 50  # the first table's line in the rows-per-run chart
    dom = rendered_dom(page, tmp_path)
    for text in ("Rows written per run, per table", "Hours since last successful load", "Last run's rows / recent average",
                 "Quarantined rows, % of rows read", "Null-rate change per watched column", "run started (UTC)",
                 "rows written", "bronze.events", "bronze.images", "gold.photo_features", "BREACH",
                 "bronze.events · event_type"):
        assert text in dom, text
    assert re.search(r"\d+\.\d\d% \(1 of \d+ rows\)", dom)  # the sample's one truncated image among its images


def test_health_html_keeps_json_on_stdout(lake_dir, tmp_path):
    page = tmp_path / "h.html"
    r = ingest("--lake", str(lake_dir), "--json", "health", "--html", str(page), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr == ""
    report = json.loads(r.stdout)
    assert report["ok"] is False and page.is_file()
    breached = [c["name"] for t in report["tables"] for c in t["checks"] if c["status"] == "breach"]
    assert breached == ["volume"]
    assert "<title>Lake health" in page.read_text()


def test_health_html_into_missing_directory_is_one_line_error(lake_dir, tmp_path):
    page = tmp_path / "nowhere" / "health.html"
    r = ingest("--lake", str(lake_dir), "health", "--html", str(page), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {page.parent} does not exist: create it first"]


def test_empty_lake_report_says_so(tmp_path):
    """No run recorded yet: the page still renders, and says there is nothing to chart."""
    from ingest.health import check_health
    from ingest.health_html import render_health_html
    from ingest.lake import Lake
    from ingest.settings import HealthThresholds

    (tmp_path / "lake").mkdir()
    lake = Lake(str(tmp_path / "lake"))
    th = HealthThresholds()
    html = render_health_html(lake=lake, report=check_health(lake, th), thresholds=th)
    assert "no runs recorded yet" in html and "nothing to show" in html
