"""What one ingest run did: the result it returns and the counts it keeps while it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ingest.lake import Lake, TableId

__all__ = ["IngestResult", "Tally"]


class IngestResult(BaseModel):
    """What one ingest run did; printed by ``--json`` and returned to the pipeline/flows."""

    table: str
    version: int | None
    rows_written: int = 0
    rows_quarantined: int = 0
    skipped: int = 0  # inputs (files, images, batches) already in the lake
    run_id: str
    bytes_read: int = 0
    notes: list[str] = []  # things the user should know, e.g. a partial line waiting


@dataclass
class Tally:
    """What a run has committed so far, counted as each commit lands (a retried batch counts
    once, a failed run keeps what it committed: ``track(counts=...)``); ``finish`` copies it into
    the run log and the result."""

    rows: int = 0
    quarantined: int = 0
    skipped: int = 0
    bytes_read: int = 0

    def copy_to(self, run: Any) -> None:
        run.rows_written, run.rows_quarantined = self.rows, self.quarantined
        run.skipped, run.bytes_read = self.skipped, self.bytes_read

    def finish(self, lake: Lake, table: TableId, run: Any, *, snapshot: Any = None) -> IngestResult:
        """Also creates the (empty) quarantine table, so queries on it work for a clean source.

        ``snapshot``: the run's loaded DeltaTable of ``table``, brought up to date instead of
        opening the table again."""
        from ingest.delta import current_version, ensure_table
        from ingest.sources.quarantine import QUARANTINE_SCHEMA, quarantine_table

        ensure_table(lake, quarantine_table(table), QUARANTINE_SCHEMA)
        self.copy_to(run)
        if snapshot is not None:
            snapshot.update_incremental()
        run.version_after = snapshot.version() if snapshot is not None else current_version(lake, table)
        return IngestResult(
            table=str(table),
            version=run.version_after,
            rows_written=self.rows,
            rows_quarantined=self.quarantined,
            skipped=self.skipped,
            run_id=run.run_id,
            bytes_read=self.bytes_read,
        )
