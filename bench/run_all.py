"""Run every benchmark, one after another, and keep their reports in bench/results/.

Each benchmark measures this project against a named peer in the same run and prints ratios;
run them on an otherwise idle machine.  Usage: `make bench` (or `.venv/bin/python bench/run_all.py
[--only sync,shards]`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "ingest": ["bench_ingest.py"],
    "logs": ["bench_logs.py"],
    "small_runs": ["bench_small_runs.py"],
    "sql": ["bench_sql.py"],
    "images_scale": ["bench_images_scale.py"],
    "transform": ["bench_transform.py"],
    "shards": ["bench_shards.py"],
    "sync": ["bench_sync.py"],
    "spark_dedup": ["bench_spark_dedup.py"],
    "serve": ["bench_serve.py"],
    "fanout": ["bench_fanout.py"],
    "spark_incremental": ["bench_spark_incremental.py"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHES))
    args = ap.parse_args()
    chosen = [b for b in args.only.split(",") if b] or list(BENCHES)
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        ap.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHES)}")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    failed = []
    for name in chosen:
        script, *extra = BENCHES[name]
        print(f"== {name} ({script})", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(HERE / script), *extra], capture_output=True, text=True)
        report = proc.stdout + (f"\n[stderr]\n{proc.stderr[-3000:]}" if proc.returncode else "")
        (out_dir / f"{name}.txt").write_text(report)
        print(proc.stdout, flush=True)
        print(f"   ({time.monotonic() - t0:.0f} s, exit {proc.returncode})", flush=True)
        if proc.returncode:
            failed.append(name)
            print(proc.stderr[-3000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
