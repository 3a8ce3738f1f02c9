"""One batch committer for every ingester.

An ingester reads its source and types a batch (good rows, quarantined records, and where the
batch stands: a batch number or a source offset); ``BatchCommitter`` commits it the same way
for all of them: bad records to ``<table>_quarantine`` first, good rows second, each exactly once
per ``(app id, version)`` (Delta app transactions), and each commit counted into the run's
``Tally`` as it lands, so a retried batch counts once and a failed run keeps what it committed.

How a version is numbered decides what a commit that finds its version taken means:

* ``"sequence"`` (tables, images): a counter shared by every writer of the table.  A version
  already committed was taken by a concurrent run: ``BatchTaken``, and ``retry`` re-runs the
  attempt, which re-reads the table and numbers the batch again.
* ``"offset"`` (logs): the position in the source the batch ends at.  A version already
  committed means these records are in already: nothing is written, nothing counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pyarrow as pa

from ingest.delta import (
    BatchTaken,
    WriteResult,
    ensure_table,
    merge_batch,
    next_sequence,
    with_commit_retry,
    write_batch,
)
from ingest.lake import Lake, TableId
from ingest.sources.quarantine import QUARANTINE_SCHEMA, Bad, quarantine_table, write_quarantine
from ingest.sources.result import Tally
from ingest.staging import StagedFiles, commit_staged

__all__ = ["Batch", "BatchCommitter", "Committed", "Numbering"]

T = TypeVar("T")
Numbering = Literal["sequence", "offset"]


@dataclass(frozen=True)
class Batch:
    """One batch, typed and ready to commit."""

    version: int  # the batch number or source offset (see ``Numbering``)
    rows: pa.Table | None = None  # rows for the target; None: this batch writes the quarantine only
    bad: Sequence[Bad] = ()  # records that could not be loaded
    app_id: str | None = None  # default: the committer's
    extra_transactions: dict[str, int] | None = None  # state committed atomically with the rows
    metadata: dict[str, Any] | None = None  # the commit's custom metadata
    staged: StagedFiles | None = None  # the rows, written already (``ingest.staging``); instead of ``rows``


@dataclass(frozen=True)
class Committed:
    """What one ``commit`` landed (``written``: the target got a commit, possibly of no rows)."""

    rows: int = 0
    quarantined: int = 0
    written: bool = False
    version: int | None = None  # the target's version after the commit (when written)


class BatchCommitter:
    """Commits one ingester's batches into ``table`` and its quarantine, counting into ``tally``.

    ``mode="merge"`` upserts the rows on ``keys`` instead of appending them.
    """

    def __init__(
        self,
        lake: Lake,
        table: str | TableId,
        *,
        run_id: str,
        tally: Tally,
        app_id: str | None = None,
        numbering: Numbering = "sequence",
        mode: Literal["append", "merge"] = "append",
        keys: Sequence[str] = (),
    ) -> None:
        if mode == "merge" and not keys:
            raise ValueError("a merge needs key columns")
        self.lake, self.tid, self.run_id, self.tally = lake, TableId.parse(table), run_id, tally
        self.app_id, self.numbering, self.mode, self.keys = app_id, numbering, mode, list(keys)
        self._quarantine_dt: Any = None  # the quarantine table, loaded once and followed per batch
        self._target_dt: Any = None  # the target, likewise (``snapshot``)

    @property
    def quarantine(self) -> TableId:
        return quarantine_table(self.tid)

    def sequence(self, *, snapshot: Any = None, quarantine: Any = None) -> int:
        """The next batch number: one past the highest the target or its quarantine committed
        under the app id.  A batch writes both tables under one number, and a batch of only bad
        records advances the quarantine alone, so the next batch must not reuse its number there.

        ``snapshot`` (a loaded DeltaTable of the target) and ``quarantine`` (one of the
        quarantine, ``quarantine_snapshot``) are the ones the commit will be made against: a
        writer that commits after them conflicts with ours.
        """
        app_id = self._app_id(None)
        target = next_sequence(self.lake, self.tid, app_id, snapshot=snapshot)
        if quarantine is None:
            if self._quarantine_dt is None and not self.lake.table_exists(self.quarantine):
                return target
            quarantine = self.quarantine_snapshot()
        return max(target, next_sequence(self.lake, self.quarantine, app_id, snapshot=quarantine))

    def quarantine_snapshot(self) -> Any:
        """The quarantine's latest version (created empty first), loaded once and brought forward
        by the commits since.  A batch that looks up what the quarantine holds commits its bad
        records against the snapshot it looked in (``commit(quarantine=...)``): one committed
        after the lookup, even under a smaller batch number, is then a conflict, not a duplicate."""
        if self._quarantine_dt is None:
            ensure_table(self.lake, self.quarantine, QUARANTINE_SCHEMA)
            self._quarantine_dt = self.lake.delta_table(self.quarantine)
        else:
            self._quarantine_dt.update_incremental()  # reads only the commits since the last batch
        return self._quarantine_dt

    def snapshot(self) -> Any:
        """The target's latest version (None while it does not exist), loaded once and brought
        forward by the commits since: a writer of many batches does not replay the log for each."""
        if self._target_dt is None:
            if not self.lake.table_exists(self.tid):
                return None
            self._target_dt = self.lake.delta_table(self.tid)
        else:
            self._target_dt.update_incremental()
        return self._target_dt

    def retry(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` again when a concurrent commit won (``BatchTaken`` or a Delta conflict);
        it must re-read what it checks, so it sees what the other writer committed."""
        return with_commit_retry(attempt)

    def commit(self, batch: Batch, *, snapshot: Any = None, quarantine: Any = None) -> Committed:
        """Quarantine ``batch.bad`` (against ``quarantine`` if given), then write ``batch.rows``
        (against ``snapshot`` if given)."""
        app_id = self._app_id(batch)
        quarantined = 0
        if batch.bad:
            quarantined = self.write_bad(batch.bad, version=batch.version, app_id=app_id, snapshot=quarantine)
            if not quarantined:
                self._taken(app_id)
        if batch.staged is not None:
            if snapshot is None or self.mode != "append":
                raise ValueError("staged files are appended against the snapshot they were staged for")
            res = commit_staged(
                self.lake,
                batch.staged,
                snapshot=snapshot,
                app_id=app_id,
                batch_version=batch.version,
                metadata=batch.metadata,
                extra_transactions=batch.extra_transactions,
            )
            return self._landed(res, app_id, quarantined)
        if batch.rows is None:
            return Committed(quarantined=quarantined)
        if snapshot is None:
            ensure_table(self.lake, self.tid, batch.rows.schema)
        if self.mode == "merge":
            res = merge_batch(
                self.lake,
                self.tid,
                batch.rows,
                keys=self.keys,
                app_id=app_id,
                batch_version=batch.version,
                metadata=batch.metadata,
            )
        else:
            res = write_batch(
                self.lake,
                self.tid,
                batch.rows,
                app_id=app_id,
                batch_version=batch.version,
                metadata=batch.metadata,
                extra_transactions=batch.extra_transactions,
                snapshot=snapshot,
            )
        return self._landed(res, app_id, quarantined)

    def _landed(self, res: WriteResult, app_id: str, quarantined: int) -> Committed:
        if res.skipped:
            self._taken(app_id)
            return Committed(quarantined=quarantined)
        self.tally.rows += res.rows
        return Committed(res.rows, quarantined, written=True, version=res.version)

    def write_bad(self, bad: Sequence[Bad], *, version: int, app_id: str | None = None, snapshot: Any = None) -> int:
        """Append ``bad`` to the quarantine once per ``(app id, version)`` (against ``snapshot``,
        a loaded quarantine, if given); the rows written are counted and returned (0: none, or
        that version was committed already)."""
        n = write_quarantine(
            self.lake,
            self.tid,
            list(bad),
            run_id=self.run_id,
            app_id=app_id or self._app_id(None),
            batch_version=version,
            snapshot=snapshot,
        )
        self.tally.quarantined += n
        return n

    def _app_id(self, batch: Batch | None) -> str:
        app_id = (batch.app_id if batch is not None else None) or self.app_id
        if app_id is None:
            raise ValueError("no app id: give the committer or the batch one")
        return app_id

    def _taken(self, app_id: str) -> None:
        """A version committed already: taken by a concurrent run (re-number and retry), or, for
        source offsets, these records are in already."""
        if self.numbering == "sequence":
            raise BatchTaken(app_id)
