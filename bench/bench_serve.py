"""`ingest serve` with 20 clients at once, against the same 20 queries one after another.

The peer is what a server with one shared DuckDB behind a lock could do at best: the same
statements run serially on one session.  `ingest serve` gives each session its own DuckDB, so
the ratio (concurrent wall time / serial wall time) shows what the per-session design buys on
this machine; below 1.0 the clients really run in parallel.  Rounds alternate and are paired.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.delta import write_batch  # noqa: E402
from ingest.lake import Lake  # noqa: E402

ROWS, CLIENTS, ROUNDS = 2_000_000, 20, 3
QUERY = "select user_id %% 97 as k, count(*), sum(amount) from gold.orders where amount > %s group by 1 order by 1"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serial(url: str) -> float:
    with psycopg.connect(url, autocommit=True) as con:
        t0 = time.perf_counter()
        for i in range(CLIENTS):
            con.execute(QUERY, (i,)).fetchall()
        return time.perf_counter() - t0


def _concurrent(url: str) -> tuple[float, float]:
    """(wall time of the 20 queries, time to open the 20 sessions)."""
    barrier = threading.Barrier(CLIENTS + 1)
    done = threading.Barrier(CLIENTS + 1)
    cons = []
    t_open = time.perf_counter()
    for _ in range(CLIENTS):
        con = psycopg.connect(url, autocommit=True)
        con.execute("select 1 from gold.orders limit 1").fetchall()  # the session's DuckDB is built
        cons.append(con)
    t_open = time.perf_counter() - t_open

    def run(i: int) -> None:
        barrier.wait()
        cons[i].execute(QUERY, (i,)).fetchall()
        done.wait()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    done.wait()
    wall = time.perf_counter() - t0
    for t in threads:
        t.join()
    for con in cons:
        con.close()
    return wall, t_open


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(str(Path(tmp) / "lake"))
        Path(lake.uri).mkdir()
        rng = np.random.default_rng(0)
        write_batch(lake, "gold.orders", pa.table({
            "order_id": pa.array(np.arange(ROWS, dtype=np.int64)),
            "user_id": pa.array(rng.integers(0, 10_000, ROWS, dtype=np.int64)),
            "amount": pa.array(rng.integers(0, 1_000, ROWS, dtype=np.int32)),
        }))
        port = _port()
        env = {**os.environ, "LAKEHOUSE_SERVE_PASSWORD": "bench"}
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ingest"), "--lake", lake.uri, "serve", "--port", str(port)],
            env=env, stderr=subprocess.DEVNULL,
        )
        url = f"postgresql://bench:bench@127.0.0.1:{port}/lake"
        try:
            for _ in range(100):
                try:
                    psycopg.connect(url).close()
                    break
                except psycopg.OperationalError:
                    time.sleep(0.2)
            _serial(url)  # warm-up
            ratios, serial, parallel, opens = [], [], [], []
            for _ in range(ROUNDS):
                s = _serial(url)
                c, o = _concurrent(url)
                serial.append(s)
                parallel.append(c)
                opens.append(o / CLIENTS)
                ratios.append(c / s)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"ingest serve, {CLIENTS} clients x 1 group-by over {ROWS:,} rows, {os.cpu_count()} cores")
    print(f"  concurrent sessions (own DuckDB each): {statistics.median(parallel):.2f} s")
    print(f"  serial on one session (a lock's best case): {statistics.median(serial):.2f} s")
    print(f"  ratio concurrent/serial, median of {ROUNDS} paired rounds: {statistics.median(ratios):.2f}")
    print(f"  opening a session (auth + its DuckDB over the lake): {statistics.median(opens) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
