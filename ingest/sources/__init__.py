"""The source ingesters (``images``, ``logs``, ``tables``) and the parts they share.

Every ingester follows one shape: list inputs, skip what the lake already holds (Delta app
transactions), and hand each batch to one ``BatchCommitter`` (``batches``), which writes bad
records to ``<layer>.<name>_quarantine`` first and good rows second, each exactly once per batch
id, and counts what landed for the run in ``_meta.runs``.

The shared parts live in small modules: ``result`` (what a run did), ``quarantine``, ``files``
(local and S3 sources), ``coerce`` (fitting parsed records to column types) and ``util``; Delta
commits and the lossless cast are core (``ingest.delta``, ``ingest.conform``).  This package
re-exports the names other code imports from here.
"""

from __future__ import annotations

from ingest.delta import next_sequence, write_batch
from ingest.progress import (
    progress_bar,  # re-exported: tests run the pre-fingerprint logs.py, which imports it from here
)
from ingest.sources.coerce import ISO_TS, fit_rows, infer_type
from ingest.sources.files import SourceFile, is_s3, list_source, open_range, read_bytes, s3_client, source_error
from ingest.sources.quarantine import QUARANTINE_SCHEMA, Bad, quarantine_table, row_json, write_quarantine
from ingest.sources.result import IngestResult, Tally
from ingest.sources.util import env_int, utcnow

__all__ = [
    "ISO_TS",
    "QUARANTINE_SCHEMA",
    "Bad",
    "IngestResult",
    "SourceFile",
    "Tally",
    "env_int",
    "fit_rows",
    "infer_type",
    "is_s3",
    "list_source",
    "next_sequence",
    "open_range",
    "progress_bar",
    "quarantine_table",
    "read_bytes",
    "row_json",
    "s3_client",
    "source_error",
    "utcnow",
    "write_batch",
    "write_quarantine",
]
