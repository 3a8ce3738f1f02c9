"""What a flow run did, as Prefect artifacts: rows written / quarantined / skipped per table, the
health checks of those tables, and the snapshot and shard set a pipeline run produced, with links
to the lake's reports.  Operators see them in the run's Artifacts tab and, by key, over time.

Artifacts hold only table names, counts, versions, check results, snapshot and shard-set names and
report paths: never settings, source URLs or anything from the environment, so no credential can
reach Prefect (it stores and shows artifacts to everyone with access to the workspace).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ingest.errors import IngestError
from ingest.health import HealthReport, check_health
from ingest.lake import Lake
from ingest.pipeline import PipelineSummary
from ingest.settings import Settings

COUNTS = ("rows_written", "rows_quarantined", "skipped")


def artifact_key(*parts: str) -> str:
    """Prefect's key alphabet (lower-case letters, digits, dashes): ``bronze.images`` -> ``bronze-images``."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def rows_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per table: what the run committed there (only these fields, never notes or URLs)."""
    return [
        {
            "table": r["table"],
            "version": r.get("version"),
            **{k: int(r.get(k) or 0) for k in COUNTS},
            "partitions": int(r.get("partitions") or 1),
        }
        for r in results
    ]


def health_rows(report: HealthReport) -> list[dict[str, Any]]:
    return [
        {"table": t.table, "check": c.name, "status": c.status, "detail": c.detail}
        for t in report.tables
        for c in t.checks
    ]


def report_links(*, health_report: str | None = None, docs_site: str | None = None) -> dict[str, str]:
    """Links to the reports that exist: a URL as given, a local path as ``file://`` (a missing one
    is left out rather than linked broken)."""
    links: dict[str, str] = {}
    for label, where in (("health report", health_report), ("docs site", docs_site)):
        if not where:
            continue
        if re.match(r"^[a-z][a-z0-9+.-]*://", where):
            links[label] = where
            continue
        p = Path(where).expanduser().resolve()
        if p.is_dir():
            p = p / "index.html"
        if p.is_file():
            links[label] = p.as_uri()
    return links


def produced_markdown(summary: PipelineSummary, links: dict[str, str]) -> str:
    """The snapshot, its pinned versions, the shard set and the synced copy, then report links."""
    out = ["## What this run produced", ""]
    if summary.snapshot:
        again = " (reused: no table changed)" if summary.reused else ""
        out += [f"**Snapshot** `{summary.snapshot}`{again}", "", "| table | version |", "|---|---|"]
        out += [f"| {t} | {v} |" for t, v in sorted(summary.snapshot_tables.items())]
        out.append("")
    if summary.shard_set:
        out += [f"**Shard set** `{summary.shard_set}` ({summary.shards} shards)", ""]
    if summary.synced_to:
        out += [f"**Synced** {summary.synced_files} files to `{summary.synced_to}`", ""]
    for what, names in summary.pruned.items():
        if names:
            out += [f"Removed {len(names)} old {what}: " + ", ".join(f"`{n}`" for n in names), ""]
    if links:
        out += ["**Reports**: " + " · ".join(f"[{label}]({url})" for label, url in links.items()), ""]
    return "\n".join(out)


def _health(settings: Settings, tables: list[str]) -> HealthReport | None:
    """The checks of ``tables`` (those that exist: a source with nothing yet creates none)."""
    try:
        lake = Lake.from_settings(settings)
        return check_health(lake, settings.health, tables=[t for t in tables if lake.table_exists(t)])
    except IngestError:  # the lake is unreadable now: the run's own result already says so
        return None


def publish_ingest(settings: Settings, results: list[dict[str, Any]]) -> None:
    """The rows table and the health checks of the tables the run wrote."""
    from prefect.artifacts import create_table_artifact

    tables = sorted({r["table"] for r in results})
    create_table_artifact(
        rows_table(results),
        key=artifact_key("ingest", *tables),
        description="Rows written, quarantined and skipped per table by this run",
    )
    report = _health(settings, tables)
    if report is not None:
        create_table_artifact(
            health_rows(report),
            key=artifact_key("health", *tables),
            description=f"Health checks after this run: {'ok' if report.ok else 'BREACH'}",
        )


def publish_pipeline(settings: Settings, summary: PipelineSummary, links: dict[str, str]) -> None:
    """Rows per ingested table, the health of every loaded table, and what the run produced."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    dataset = settings.shards.dataset
    create_table_artifact(
        rows_table(summary.ingested),
        key=artifact_key("pipeline-ingest", dataset),
        description="Rows written, quarantined and skipped per table by this run",
    )
    report = _health(settings, sorted({r["table"] for r in summary.ingested}))
    if report is not None:
        create_table_artifact(
            health_rows(report),
            key=artifact_key("pipeline-health", dataset),
            description=f"Health checks after this run: {'ok' if report.ok else 'BREACH'}",
        )
    create_markdown_artifact(
        produced_markdown(summary, links),
        key=artifact_key("pipeline-produced", dataset),
        description="Snapshot, shard set and synced copy of this run, with links to the reports",
    )
