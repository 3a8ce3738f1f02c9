"""The source ingesters (``images``, ``logs``, ``tables``) and the parts they share.

Every ingester follows one shape: list inputs, skip what the lake already holds (Delta app
transactions), and hand each batch to one ``BatchCommitter`` (``batches``), which writes bad
records to ``<layer>.<name>_quarantine`` first and good rows second, each exactly once per batch
id, and counts what landed for the run in ``_meta.runs``.

The shared parts live in small modules: ``result`` (what a run did), ``quarantine``, ``commit``
(retry, table creation), ``files`` (local and S3 sources), ``coerce`` (fitting records to column
types) and ``util``.  This package re-exports their names for the code that imports them from
here.
"""

from __future__ import annotations

from ingest.delta import next_sequence, write_batch
from ingest.progress import (
    progress_bar,  # re-exported: tests run the pre-fingerprint logs.py, which imports it from here
)
from ingest.sources.coerce import (
    INT64_MAX,
    INT64_MIN,
    ISO_TS,
    Misfit,
    coerce,
    fit_rows,
    fit_table,
    infer_type,
    parse_ts,
)
from ingest.sources.commit import BatchTaken, ensure_table, is_commit_conflict, with_commit_retry
from ingest.sources.files import SourceFile, is_s3, list_source, open_range, read_bytes, s3_client, source_error
from ingest.sources.quarantine import QUARANTINE_SCHEMA, Bad, quarantine_table, row_json, write_quarantine
from ingest.sources.result import IngestResult, Tally
from ingest.sources.util import env_int, utcnow

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "ISO_TS",
    "QUARANTINE_SCHEMA",
    "Bad",
    "BatchTaken",
    "IngestResult",
    "Misfit",
    "SourceFile",
    "Tally",
    "coerce",
    "ensure_table",
    "env_int",
    "fit_rows",
    "fit_table",
    "infer_type",
    "is_commit_conflict",
    "is_s3",
    "list_source",
    "next_sequence",
    "open_range",
    "parse_ts",
    "progress_bar",
    "quarantine_table",
    "read_bytes",
    "row_json",
    "s3_client",
    "source_error",
    "utcnow",
    "with_commit_retry",
    "write_batch",
    "write_quarantine",
]
