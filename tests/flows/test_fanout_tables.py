"""`ingest-tables` split into key ranges of the primary key on a real local Dask cluster (2 worker
processes), against a real PostgreSQL and Prefect server: every row once, the same rows as one
single-process ingest, and a re-run split another way merges updates and new rows exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prefect_procs import ROOT, PrefectServer

from ingest.lake import Lake
from ingest.sources.tables import ingest_table, table_key_ranges
from tests.sources.conftest import sorted_rows

pytestmark = [pytest.mark.integration, pytest.mark.prefect, pytest.mark.postgres]

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
COLS = ["id", "v", "n", "updated_at"]

_RUN_FLOW = """
import json, os, sys
from flows.params import TablesParams
from flows.sources import ingest_tables_flow
state = ingest_tables_flow(TablesParams.model_validate(json.loads(sys.argv[1])), return_state=True)
ok = state.is_completed()
out = {"ok": ok, "pid": os.getpid(), "result": state.result() if ok else str(state.message)}
print("RESULT " + json.dumps(out), flush=True)
os._exit(0 if ok else 1)  # no native teardown (deltalake's runtime), as the CLI does
"""


def _pg(url: str):
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def _table(url: str, n: int, *, nullable_cursor: bool = False) -> str:
    name = "fan_" + uuid.uuid4().hex[:8]
    with _pg(url) as con:
        null = "" if nullable_cursor else " not null"
        con.execute(f'create table "{name}" (id bigint primary key, v text, n integer, updated_at timestamptz{null})')
        with con.cursor() as cur, cur.copy(f'copy "{name}" (id, v, n, updated_at) from stdin') as cp:
            for i in range(n):
                ts = None if nullable_cursor and i % 97 == 0 else T0 + timedelta(seconds=i)
                cp.write_row((i, f"v{i}", i % 100, ts))
    return name


def _flow(server: PrefectServer, params: dict, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_FLOW, json.dumps(params)], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**server.env, **env}, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"flow failed ({proc.returncode}): {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_key_ranges_on_dask_merge_every_row_once(prefect_server: PrefectServer, postgres_url: str, tmp_path: Path) -> None:
    name = _table(postgres_url, 3000)
    lake = Lake(str(tmp_path / "lake"))
    env = {"LAKEHOUSE_CONFIG": os.devnull, "FANOUT_TEST_DB_URL": postgres_url, "INGEST_TABLE_BATCH_ROWS": "400"}
    params = {"lake": lake.uri, "url_env": "FANOUT_TEST_DB_URL", "source_table": name, "table": "bronze.fan",
              "primary_key": ["id"], "partitions": 3, "task_runner": "dask", "dask_workers": 2}
    first = _flow(prefect_server, params, env)
    res = first["result"]
    assert (res["partitions"], res["rows_written"], res["rows_quarantined"]) == (3, 3000, 0)
    pids = {int(w.rsplit(":", 1)[1]) for w in res["workers"]}
    assert len(pids) == 2 and first["pid"] not in pids, res["workers"]  # Dask worker processes did the reads
    ids = [r[0] for r in sorted_rows(lake, "bronze.fan", ["id"])]
    assert ids == list(range(3000))

    with _pg(postgres_url) as con:  # updates in every range, new rows below and above the old split
        con.execute(f'update "{name}" set v = v || \'-changed\' where id % 30 = 0')
        con.execute(f'insert into "{name}" select i, \'v\' || i, 1, now() from generate_series(3000, 3499) i')
        con.execute(f'insert into "{name}" values (-1, \'below\', 1, now())')
    again = _flow(prefect_server, {**params, "partitions": 2, "task_runner": "local", "dask_workers": None}, env)
    assert again["result"]["partitions"] == 2
    single = Lake(str(tmp_path / "single"))
    ingest_table(single, postgres_url, source_table=name, table="bronze.fan", primary_key=["id"])
    assert sorted_rows(lake, "bronze.fan", COLS) == sorted_rows(single, "bronze.fan", COLS)
    assert len(sorted_rows(lake, "bronze.fan", ["id"])) == 3501


def test_cursor_ranges_loaded_at_once_append_every_row_once(postgres_url: str, tmp_path: Path) -> None:
    """No primary key: the cursor is split (NULL cursors go to the first range), the ranges load
    concurrently, and appended rows arrive once; a second split run after new rows adds only them."""
    name = _table(postgres_url, 2000, nullable_cursor=True)
    lake, single = Lake(str(tmp_path / "lake")), Lake(str(tmp_path / "single"))
    opts = {"source_table": name, "table": "bronze.cur", "cursor": "updated_at"}

    def split_run(count: int) -> int:
        ranges = table_key_ranges(lake, postgres_url, count=count, **opts)
        assert len(ranges) == count and ranges[0].column == "updated_at"
        with ThreadPoolExecutor(count) as pool:
            results = list(pool.map(lambda r: ingest_table(lake, postgres_url, key_range=r, **opts), ranges))
        return sum(r.rows_written for r in results)

    assert split_run(3) == 2000
    with _pg(postgres_url) as con:
        con.execute(f'insert into "{name}" select i, \'v\' || i, 1, now() + i * interval \'1 second\' '
                    f'from generate_series(2000, 2299) i')
    assert split_run(2) == 300
    ingest_table(single, postgres_url, **opts)
    cols = ["id", "v", "n"]
    assert sorted_rows(lake, "bronze.cur", cols) == sorted_rows(single, "bronze.cur", cols)
    assert len(sorted_rows(lake, "bronze.cur", ["id"])) == 2300
