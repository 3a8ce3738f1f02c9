"""Imported by every Dask worker as it starts (Dask's ``preload``): the ingesters and their
libraries (deltalake, pyarrow, Pillow, Prefect's task machinery) are loaded before the first
task arrives, not inside it.  A worker's first partition otherwise spent ~0.7 s of its ~2.8 s
importing, on both workers at once, while a single worker paid it only once
(``bench/bench_fanout.py``).  For a cluster of your own: ``dask worker --preload flows.worker``.
"""

from __future__ import annotations

import importlib

PRELOADED = (
    "deltalake",
    "PIL.Image",
    "pyarrow.dataset",
    "flows.tasks",
    "ingest.sources.images",
    "ingest.sources.logs",
    "ingest.sources.tables",
)

for _name in PRELOADED:
    importlib.import_module(_name)
