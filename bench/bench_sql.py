"""Benchmark ``ingest sql`` streaming a large result, against DuckDB writing the same CSV.

    .venv/bin/python bench/bench_sql.py [--rows 1000000] [--rounds 1]

* ``ingest sql "select * from bronze.wide" --format csv > file`` (a real subprocess, the CLI a
  user runs) on a 4-column table of ``--rows`` rows, and the same with ``--format jsonl``.
* Peer: DuckDB's own ``COPY (select * from the same Arrow dataset) TO 'file.csv'`` in a fresh
  process - the engine's native writer, nothing in Python per row.
* Peak RSS of each process (``wait4``'s ru_maxrss of the child); target: ours < 300 MB at 1M rows,
  i.e. memory that does not grow with the result.

Results go to stdout and bench/results/sql.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"
INGEST = ROOT / ".venv" / "bin" / "ingest"


def make_lake(lake: Path, rows: int) -> None:
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
import pyarrow as pa, pyarrow.compute as pc
from ingest.lake import Lake
from ingest.settings import S3Settings
from ingest.delta import write_batch
lake = Lake({str(lake)!r}, s3=S3Settings())
step = 250_000
for lo in range(0, {rows}, step):
    ids = pa.array(range(lo, min({rows}, lo + step)), pa.int64())
    t = pa.table({{
        "id": ids,
        "user": pc.binary_join_element_wise("user-", ids.cast(pa.string()), ""),
        "score": pc.divide(ids.cast(pa.float64()), 7.0),
        "at": pc.cast(pc.multiply(ids, 1_000_000), pa.timestamp("us", tz="UTC")),
    }})
    write_batch(lake, "bronze.wide", t)
"""
    subprocess.run([str(PY), "-c", code], check=True)


def timed(argv: list[str], *, stdout_path: Path) -> dict:
    """Run ``argv`` with stdout to a file; wall time and the child's peak RSS."""
    t0 = time.monotonic()
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"{argv[:3]} failed ({code}): {err[-2000:]}")
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "bytes": stdout_path.stat().st_size}


def peer_argv(lake: Path, out: Path) -> list[str]:
    code = f"""
import duckdb, deltalake
ds = deltalake.DeltaTable({str(lake / 'bronze' / 'wide')!r}).to_pyarrow_dataset()
con = duckdb.connect()
con.register("wide", ds)
con.execute("copy (select * from wide) to '{out}' (header)")
"""
    return [str(PY), "-c", code]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sql-"))
    try:
        lake = work / "lake"
        make_lake(lake, args.rows)
        runs: dict[str, list[dict]] = {"ours_csv": [], "ours_jsonl": [], "duckdb_copy_csv": []}
        for _ in range(args.rounds):
            for fmt in ("csv", "jsonl"):
                runs[f"ours_{fmt}"].append(timed(
                    [str(INGEST), "--lake", str(lake), "sql", "select * from bronze.wide", "--format", fmt],
                    stdout_path=work / f"out.{fmt}",
                ))
            runs["duckdb_copy_csv"].append(timed(peer_argv(lake, work / "peer.csv"), stdout_path=work / "peer.out"))
            runs["duckdb_copy_csv"][-1]["bytes"] = (work / "peer.csv").stat().st_size
        lines = sum(1 for _ in open(work / "out.csv", "rb"))
        if lines != args.rows + 1:
            raise SystemExit(f"ours wrote {lines} CSV lines, expected {args.rows + 1}")
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "peak_rss_mb")} for k, v in runs.items()}
        report = {"rows": args.rows, "rounds": args.rounds, "median": med, "runs": runs,
                  "time_ratio_csv": round(med["ours_csv"]["seconds"] / med["duckdb_copy_csv"]["seconds"], 2)}
        print(f"ingest sql, {args.rows:,} rows x 4 columns -> file")
        for k, m in med.items():
            print(f"  {k:16s} {m['seconds']:7.2f} s   peak RSS {m['peak_rss_mb']:7.1f} MB")
        print(f"  ours/duckdb COPY time: {report['time_ratio_csv']}x; target: ours CSV peak RSS < 300 MB "
              f"({'met' if med['ours_csv']['peak_rss_mb'] < 300 else 'MISSED'})")
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        (out_dir / "sql.json").write_text(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
