"""Data health: freshness, volume, schema, distribution and quarantine per table.

Reads the run log (`_meta.runs`) and Delta history; a breached threshold makes `ingest health`
exit non-zero so a scheduled deployment can alert.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from ingest.lake import Lake, TableId
from ingest.runlog import RUNS_TABLE
from ingest.settings import HealthThresholds

Status = Literal["ok", "breach"]


class Check(BaseModel):
    name: str
    status: Status
    detail: str
    value: float | int | str | None = None


class TableHealth(BaseModel):
    table: str
    status: Status = "ok"
    last_success: datetime | None = None
    age_hours: float | None = None
    last_rows: int | None = None
    avg_rows: float | None = None
    quarantined: int = 0
    checks: list[Check] = Field(default_factory=list)

    def add(self, check: Check) -> None:
        self.checks.append(check)
        if check.status == "breach":
            self.status = "breach"


class HealthReport(BaseModel):
    checked_at: datetime
    ok: bool
    tables: list[TableHealth]


def runs_of(lake: Lake) -> list[dict[str, Any]]:
    """Every row of the run log (empty before the first run)."""
    if not lake.table_exists(RUNS_TABLE):
        return []
    return lake.delta_table(RUNS_TABLE).to_pyarrow_table().to_pylist()


def _profile(table: pa.Table, columns: list[str]) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    n = max(table.num_rows, 1)
    for c in columns:
        if c in table.column_names:
            col = table[c]
            out[c] = (col.null_count / n, len(pc.unique(col.drop_null())))
    return out


def check_table(lake: Lake, table: str, runs: list[dict[str, Any]], th: HealthThresholds, now: datetime) -> TableHealth:
    h = TableHealth(table=table)
    mine = sorted(
        (r for r in runs if r["target"] == table and r["status"] == "success"),
        key=lambda r: r["started_at"],
    )
    # freshness
    if mine:
        last = mine[-1]
        h.last_success = last["started_at"]
        h.age_hours = round((now - last["started_at"]).total_seconds() / 3600, 3)
        ok = h.age_hours <= th.max_age_hours
        h.add(
            Check(
                name="freshness",
                status="ok" if ok else "breach",
                value=h.age_hours,
                detail=f"last load {h.age_hours:.1f} h ago (max {th.max_age_hours:g} h)",
            )
        )
    else:
        h.add(Check(name="freshness", status="breach", detail="no successful load recorded in _meta.runs"))
    # volume: rows added by the last run that added anything vs the recent average
    loads = [r for r in mine if (r["rows_written"] or 0) > 0 or (r["skipped"] or 0) == 0]
    if len(loads) >= 2:
        h.last_rows = int(loads[-1]["rows_written"] or 0)
        window = loads[-1 - th.volume_window : -1]
        h.avg_rows = sum(int(r["rows_written"] or 0) for r in window) / len(window)
        ratio = h.last_rows / h.avg_rows if h.avg_rows else 1.0
        ok = ratio >= th.min_volume_ratio
        h.add(
            Check(
                name="volume",
                status="ok" if ok else "breach",
                value=round(ratio, 3),
                detail=f"last run added {h.last_rows} rows vs average {h.avg_rows:.1f} (min ratio {th.min_volume_ratio:g})",
            )
        )
    # schema and distribution: the table now vs before the last run
    dt = lake.delta_table(table)
    before = mine[-1]["version_before"] if mine else None
    if before is not None and before >= 0 and before < dt.version():
        old = lake.delta_table(table, version=before)
        new_schema, old_schema = pa.schema(dt.schema().to_arrow()), pa.schema(old.schema().to_arrow())
        added = [f.name for f in new_schema if old_schema.get_field_index(f.name) < 0]
        removed = [f.name for f in old_schema if new_schema.get_field_index(f.name) < 0]
        changed = [
            f.name
            for f in new_schema
            if old_schema.get_field_index(f.name) >= 0 and not old_schema.field(f.name).type.equals(f.type)
        ]
        detail = (
            "unchanged"
            if not (added or removed or changed)
            else (f"added {added or '-'}, removed {removed or '-'}, retyped {changed or '-'}")
        )
        h.add(Check(name="schema", status="breach" if (removed or changed) else "ok", detail=detail))
        cols = th.columns.get(table, [])
        if cols:
            cur = _profile(dt.to_pyarrow_table(columns=[c for c in cols if new_schema.get_field_index(c) >= 0]), cols)
            prev = _profile(old.to_pyarrow_table(columns=[c for c in cols if old_schema.get_field_index(c) >= 0]), cols)
            for c in cols:
                if c not in cur or c not in prev:
                    continue
                dn = abs(cur[c][0] - prev[c][0])
                dd = abs(cur[c][1] - prev[c][1]) / max(prev[c][1], 1)
                breach = dn > th.max_null_rate_drift or dd > th.max_distinct_drift
                h.add(
                    Check(
                        name=f"distribution:{c}",
                        status="breach" if breach else "ok",
                        value=round(dn, 4),
                        detail=f"null rate {prev[c][0]:.3f}->{cur[c][0]:.3f}, distinct {prev[c][1]}->{cur[c][1]}",
                    )
                )
    # quarantine
    tid = TableId.parse(table)
    q = f"{tid.layer}.{tid.name}_quarantine"
    if lake.table_exists(q):
        h.quarantined = lake.delta_table(q).count()
        breach = th.max_quarantined >= 0 and h.quarantined > th.max_quarantined
        h.add(
            Check(
                name="quarantine",
                status="breach" if breach else "ok",
                value=h.quarantined,
                detail=f"{h.quarantined} rows in {q}",
            )
        )
    return h


def check_health(
    lake: Lake, thresholds: HealthThresholds, *, tables: list[str] | None = None, now: datetime | None = None
) -> HealthReport:
    """Check every table that has loads in the run log (or the given ones)."""
    now = now or datetime.now(UTC)
    runs = runs_of(lake)
    if tables is None:
        names = {r["target"] for r in runs if r["target"]}
        tables = sorted(t for t in names if _is_table(t) and not t.endswith("_quarantine") and lake.table_exists(t))
    report = [check_table(lake, t, runs, thresholds, now) for t in tables]
    return HealthReport(checked_at=now, ok=all(t.status == "ok" for t in report), tables=report)


def _is_table(name: str) -> bool:
    try:
        TableId.parse(name)
        return True
    except ValueError:
        return False
