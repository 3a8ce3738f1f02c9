"""Minimal reproduction: delta-rs commits an append-mode transaction that removes a file another
writer removed since the transaction's snapshot, so the file's rows come back twice.

Why ``ingest.delta.plain_files`` (which swaps a merge's string_view files for plain copies in one
``create_write_transaction``) commits without retries.  deltalake only, no project code.  Seen
with deltalake 1.x (the version in requirements.lock).  To report upstream (delta-io/delta-rs).

1. A table of two files (ids 0-49, 50-99); a transaction is prepared against it that removes the
   first file and adds a copy of it (a swap: same rows, ``dataChange=false``).
2. Another writer compacts the table (OPTIMIZE: removes both files, adds one with all rows).
3. The swap commits: delta-rs's conflict check lets it pass (the default retries), and the table
   now holds ids 0-49 twice (150 rows).  With ``max_commit_retries=0`` it fails instead.

The same hole between two compactions: two ``optimize.compact()`` of one table at once (threads,
the second started while the first runs) both commit, and every row is there twice
(``max_commit_retries=0`` does not stop it).  A removal marked ``dataChange=true`` is checked: a
compaction running meanwhile then fails, as ``ingest.delta.plain_files`` relies on.

    python bench/repro/swap_after_compaction.py     # prints the outcomes, exit 0
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.transaction import AddAction, RemoveAction


def attempt(retries: int | None) -> str:
    path = tempfile.mkdtemp(prefix="swap-repro-")
    try:
        write_deltalake(path, pa.table({"id": pa.array(range(50), pa.int64())}))
        write_deltalake(path, pa.table({"id": pa.array(range(50, 100), pa.int64())}), mode="append")
        dt = DeltaTable(path)
        first = pa.table(dt.get_add_actions(flatten=True)).to_pylist()[0]
        copy = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
        shutil.copy(os.path.join(path, first["path"]), os.path.join(path, copy))
        now = int(time.time() * 1000)
        actions = [
            AddAction(copy, os.path.getsize(os.path.join(path, copy)), {}, now, False, ""),
            RemoveAction(first["path"], False, now, first["size_bytes"], {}),
        ]
        DeltaTable(path).optimize.compact()  # the other writer
        props = CommitProperties() if retries is None else CommitProperties(max_commit_retries=retries)
        try:
            dt.create_write_transaction(actions, mode="append", schema=dt.schema(), commit_properties=props)
        except Exception as exc:  # noqa: BLE001 - the outcome is what is printed
            return f"refused ({type(exc).__name__})"
        ids = DeltaTable(path).to_pyarrow_table()["id"].to_pylist()
        return f"committed: {len(ids)} rows, {len(set(ids))} distinct ids"
    finally:
        shutil.rmtree(path, ignore_errors=True)


def two_compactions() -> str:
    import threading

    path = tempfile.mkdtemp(prefix="compact-repro-")
    try:
        n = 200_000
        for k in range(12):
            write_deltalake(path, pa.table({"id": pa.array(range(k * n, (k + 1) * n), pa.int64())}), mode="append")
        outcomes: list[str] = []

        def compact(target: int | None) -> None:
            try:
                DeltaTable(path).optimize.compact(target_size=target)
                outcomes.append("committed")
            except Exception as exc:  # noqa: BLE001 - the outcome is what is printed
                outcomes.append(type(exc).__name__)

        first = threading.Thread(target=compact, args=(None,))
        second = threading.Thread(target=compact, args=(8_000_000,))
        first.start()
        time.sleep(0.05)
        second.start()
        first.join()
        second.join()
        ids = DeltaTable(path).to_pyarrow_table(columns=["id"])["id"]
        return f"{outcomes}: {len(ids)} rows, {len(set(ids.to_pylist()))} distinct ids"
    finally:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    print("swap, default retries:     ", attempt(None))
    print("swap, max_commit_retries=0:", attempt(0))
    print("two compactions at once:   ", two_compactions())
