"""`ingest health --html FILE`: the health checks as one self-contained HTML page with charts.

The same report `ingest health` prints (``ingest.health.check_health``) plus the run log it is
computed from, drawn as inline SVG (``ingest.svg``): no script, no CDN, opens from a file.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from html import escape
from typing import Any

from ingest.health import HealthReport, runs_of
from ingest.lake import Lake
from ingest.settings import HealthThresholds
from ingest.svg import BREACH, OK, PALETTE, Bar, bar_chart, time_series

INGEST_COMMANDS = ("images", "logs", "tables")

PAGE_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1f2328}
header{background:#1f2937;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#cbd5e1;font-size:13px}
main{padding:20px 32px;max-width:1000px}
section{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:14px 18px;margin:0 0 18px}
section h2{margin:0 0 4px;font-size:17px} section p.why{margin:0 0 10px;color:#555;font-size:13px}
.badge{display:inline-block;padding:2px 9px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.ok{background:#009E73}.breach{background:#D55E00}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:0 0 18px}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:10px 16px;min-width:150px}
.card b{display:block;font-size:24px} .card small{color:#555;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eceef1} th{background:#f8f9fa}
svg{max-width:100%;height:auto}
"""


def rows_per_run(runs: list[dict[str, Any]], tables: set[str]) -> dict[str, list[tuple[datetime, float]]]:
    """Rows each successful run wrote to each of ``tables``, in time order."""
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for r in sorted(runs, key=lambda r: r["started_at"]):
        if r["status"] == "success" and r["target"] in tables:
            series[r["target"]].append((r["started_at"], float(r["rows_written"] or 0)))
    return dict(sorted(series.items()))


def quarantine_rates(runs: list[dict[str, Any]], tables: set[str]) -> dict[str, tuple[int, int]]:
    """Per ingested table of ``tables``: (rows quarantined, rows read) over every recorded ingest run."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in runs:
        if r["command"] in INGEST_COMMANDS and r["target"] in tables:
            q, w = int(r["rows_quarantined"] or 0), int(r["rows_written"] or 0)
            out[r["target"]][0] += q
            out[r["target"]][1] += q + w
    return {t: (v[0], v[1]) for t, v in sorted(out.items())}


def _check(th_table: Any, name: str) -> Any:
    return next((c for c in th_table.checks if c.name == name), None)


def _colour(check: Any) -> str:
    return BREACH if check is not None and check.status == "breach" else OK


def render_health_html(*, lake: Lake, report: HealthReport, thresholds: HealthThresholds) -> str:
    """The page: summary cards, the charts, then every check in a table."""
    runs = runs_of(lake)
    checked = {t.table for t in report.tables}  # the charts show what was checked (`--table`)
    status_legend = [("ok", OK), ("breach", BREACH)]
    fresh = [
        Bar(label=t.table, value=t.age_hours, colour=_colour(_check(t, "freshness")), note=f"{t.age_hours:.1f} h")
        for t in report.tables
        if t.age_hours is not None
    ]
    volume = [
        Bar(
            label=t.table,
            value=float(c.value),
            colour=_colour(c),
            note=f"×{float(c.value):.2f} ({t.last_rows} vs {t.avg_rows:.0f})",
        )
        for t in report.tables
        for c in t.checks
        if c.name == "volume" and c.value is not None
    ]
    quarantine = [
        Bar(
            label=table,
            value=round(100 * q / n, 2) if n else 0.0,
            colour=PALETTE[1] if q else OK,
            note=f"{100 * q / n:.2f}% ({q:,} of {n:,} rows)" if n else "no rows read",
        )
        for table, (q, n) in quarantine_rates(runs, checked).items()
    ]
    drift = [
        Bar(label=f"{t.table} · {c.name.split(':', 1)[1]}", value=float(c.value or 0), colour=_colour(c), note=c.detail)
        for t in report.tables
        for c in t.checks
        if c.name.startswith("distribution:")
    ]
    charts = [
        (
            "Rows loaded per run",
            "Rows each successful run committed to each table (ingest and per-model transform runs), from _meta.runs.",
            time_series(
                title="Rows written per run, per table", series=rows_per_run(runs, checked), y_label="rows written"
            ),
        ),
        (
            "Freshness",
            f"Hours since each table's last successful load; the dashed line is the limit (health.max_age_hours = {thresholds.max_age_hours:g}).",
            bar_chart(
                title="Hours since last successful load",
                bars=fresh,
                x_label="hours",
                unit=" h",
                limit=thresholds.max_age_hours,
                limit_label=f"max {thresholds.max_age_hours:g} h",
                legend=status_legend,
            ),
        ),
        (
            "Volume",
            f"Rows the last run added against the average of the runs before it (breach below {thresholds.min_volume_ratio:g}).",
            bar_chart(
                title="Last run's rows / recent average",
                bars=volume,
                x_label="ratio",
                limit=thresholds.min_volume_ratio,
                limit_label=f"min {thresholds.min_volume_ratio:g}",
                legend=status_legend,
            ),
        ),
        (
            "Quarantine rate",
            "Share of the rows read by ingest runs that went to <table>_quarantine instead (corrupt images, unparsable lines, values that do not fit).",
            bar_chart(
                title="Quarantined rows, % of rows read",
                bars=quarantine,
                x_label="% quarantined",
                unit="%",
                legend=[("nothing quarantined", OK), ("some rows quarantined", PALETTE[1])],
            ),
        ),
        (
            "Distribution checks",
            f"Change of each watched column's null rate since the last load (breach above {thresholds.max_null_rate_drift:g}; distinct counts in the labels, breach above ×{thresholds.max_distinct_drift:g} change).",
            bar_chart(
                title="Null-rate change per watched column",
                bars=drift,
                x_label="absolute change in null rate",
                limit=thresholds.max_null_rate_drift,
                limit_label=f"max {thresholds.max_null_rate_drift:g}",
                legend=status_legend,
            ),
        ),
    ]
    breaches = sum(1 for t in report.tables for c in t.checks if c.status == "breach")
    overall = "ok" if report.ok else "breach"
    cards = [
        (f"<span class='badge {overall}'>{'OK' if report.ok else 'BREACH'}</span>", "overall"),
        (str(len(report.tables)), "tables checked"),
        (str(breaches), "checks breached"),
        (f"{sum(t.quarantined for t in report.tables):,}", "rows in quarantine"),
        (str(len(runs)), "runs in _meta.runs"),
    ]
    rows = "".join(
        f"<tr><td>{escape(t.table)}</td><td>{escape(c.name)}</td>"
        f"<td><span class='badge {c.status}'>{c.status}</span></td><td>{escape(c.detail)}</td></tr>"
        for t in report.tables
        for c in t.checks
    )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Lake health — {escape(lake.uri)}</title><style>{PAGE_CSS}</style></head><body>",
        f"<header><h1>Lake health <span class='badge {overall}'>{overall.upper()}</span></h1>",
        f"<p>{escape(lake.uri)} · checked {report.checked_at:%Y-%m-%d %H:%M:%S} UTC · `ingest health --html`</p></header><main>",
        "<div class='cards'>"
        + "".join(f"<div class='card'><b>{v}</b><small>{escape(k)}</small></div>" for v, k in cards)
        + "</div>",
    ]
    for heading, why, svg in charts:
        parts.append(f"<section><h2>{escape(heading)}</h2><p class='why'>{escape(why)}</p>{svg}</section>")
    parts.append(
        "<section><h2>Every check</h2><p class='why'>What `ingest health` prints; a breach makes it exit 1.</p>"
        "<table><thead><tr><th>table</th><th>check</th><th>status</th><th>detail</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section></main></body></html>"
    )
    return "".join(parts)
