"""What the flow artifacts say (built from a run's results; publishing is tested against a real
Prefect server in test_fanout.py): counts per table and nothing else, what a pipeline produced,
links only to reports that exist."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from flows.artifacts import artifact_key, produced_markdown, report_links, rows_table
from ingest.pipeline import PipelineSummary


def test_rows_table_keeps_counts_only() -> None:
    res = {"table": "bronze.photos", "version": 3, "rows_written": 5, "rows_quarantined": 1, "skipped": 2,
           "run_id": "r", "bytes_read": 9, "notes": ["postgresql://u:hunter2@db/x said hello"]}
    assert rows_table([res]) == [{"table": "bronze.photos", "version": 3, "rows_written": 5, "rows_quarantined": 1,
                                  "skipped": 2, "partitions": 1}]


def test_keys_fit_prefects_alphabet() -> None:
    assert artifact_key("ingest", "bronze.images", "Silver.X_y") == "ingest-bronze-images-silver-x-y"


def test_report_links_only_to_reports_that_exist(tmp_path: Path) -> None:
    html = tmp_path / "health.html"
    html.write_text("<html></html>")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.html").write_text("<html></html>")
    assert report_links(health_report=str(html), docs_site=str(docs)) == {
        "health report": html.resolve().as_uri(), "docs site": (docs / "index.html").resolve().as_uri(),
    }
    assert report_links(health_report=str(tmp_path / "missing.html"), docs_site=str(tmp_path)) == {}
    assert report_links(docs_site="https://docs.example/lake/") == {"docs site": "https://docs.example/lake/"}


def test_produced_markdown_names_snapshot_shards_and_reports() -> None:
    s = PipelineSummary(
        lake="/l", started_at=datetime(2026, 12, 1, tzinfo=timezone.utc), snapshot="ds-20261201T000000Z",
        snapshot_tables={"gold.b": 4, "gold.a": 7}, shard_set="/l/_shards/ds/ds-20261201T000000Z", shards=3,
        synced_to="/gpu/ds/ds-20261201T000000Z", synced_files=4, pruned={"shard sets": ["old-1"]},
    )
    md = produced_markdown(s, {"health report": "file:///r/health.html"})
    assert "**Snapshot** `ds-20261201T000000Z`" in md
    assert md.index("| gold.a | 7 |") < md.index("| gold.b | 4 |")
    assert "**Shard set** `/l/_shards/ds/ds-20261201T000000Z` (3 shards)" in md
    assert "**Synced** 4 files to `/gpu/ds/ds-20261201T000000Z`" in md
    assert "Removed 1 old shard sets: `old-1`" in md
    assert "[health report](file:///r/health.html)" in md
    assert "(reused" not in md and "(reused: no table changed)" in produced_markdown(s.model_copy(update={"reused": True}), {})
