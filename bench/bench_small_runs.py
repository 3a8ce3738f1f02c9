"""Benchmark small increments, as a schedule runs them every few minutes: a fresh process loads a
few new records into a table that exists, so start-up is most of the cost.

    .venv/bin/python bench/bench_small_runs.py [--rounds 5] [--baseline DIR]

* ``images``: 20 new PNGs (64x64) into ``bronze.images`` holding 20.  Peer: a fresh Python process
  that reads the same files and appends them (bytes and sha256) with ``write_deltalake``: the
  floor of a process that imports pyarrow and deltalake and commits once.
* ``logs``: a new 1,000-line JSON-lines file into ``bronze.events`` holding one.  Peer: a fresh
  process with pyarrow's ``read_json`` + ``write_deltalake``.

``--baseline DIR`` (a checkout of an older version, ``git archive REV | tar -x -C DIR``) times that
version in the same rounds, interleaved with ours (``PYTHONPATH=DIR``), so a change is a paired
before/after ratio.  Each measurement is a whole process, timed around the command.  Results go
to stdout and bench/results/small_runs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"
INGEST = ROOT / ".venv" / "bin" / "ingest"

PEER_IMAGES = """
import hashlib, sys
from pathlib import Path
import pyarrow as pa
from deltalake import write_deltalake
files = sorted(Path(sys.argv[1]).iterdir())
blobs = [f.read_bytes() for f in files]
write_deltalake(sys.argv[2], pa.table({
    "source_uri": [str(f) for f in files], "sha256": [hashlib.sha256(b).hexdigest() for b in blobs],
    "content": pa.array(blobs, pa.binary())}), mode="append")
"""
PEER_LOGS = """
import sys
import pyarrow.json as pj
from deltalake import write_deltalake
write_deltalake(sys.argv[2], pj.read_json(sys.argv[1]), mode="append")
"""


def make_pngs(d: Path, start: int, n: int) -> None:
    from PIL import Image

    d.mkdir(parents=True)
    rng = random.Random(start)
    for i in range(start, start + n):
        Image.frombytes("RGB", (64, 64), rng.randbytes(64 * 64 * 3)).save(d / f"img_{i:05d}.png")


def make_log(path: Path, start: int, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(start)
    with path.open("w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"ts": f"2026-11-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z", "user_id": rng.randrange(50_000),
                                "event": rng.choice(["view", "like"]), "dwell": round(rng.random() * 30, 3)}) + "\n")


def run(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    if proc.returncode:
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr[-2000:]}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", type=Path, help="an older checkout, timed in the same rounds")
    args = ap.parse_args()
    base_env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())} if args.baseline else None
    work = Path(tempfile.mkdtemp(prefix="bench-small-"))
    builds = {"ours": None, **({"base": base_env} if base_env else {})}
    runs: dict[str, list[float]] = {}
    try:
        make_pngs(work / "img-old", 0, 20)
        make_pngs(work / "img-new", 20, 20)
        make_log(work / "log-old" / "a.jsonl", 0, 1000)
        make_log(work / "log-new" / "b.jsonl", 1000, 1000)
        for r in range(args.rounds):
            for build, env in builds.items():
                lake = work / f"{build}{r}"
                img, logs = work / f"{build}{r}-img", work / f"{build}{r}-logs"
                shutil.copytree(work / "img-old", img)
                shutil.copytree(work / "log-old", logs)
                run([str(INGEST), "--lake", str(lake), "images", str(img), "--table", "bronze.images"], env)
                run([str(INGEST), "--lake", str(lake), "logs", str(logs), "--table", "bronze.events"], env)
                for f in (work / "img-new").iterdir():
                    shutil.copy(f, img / f.name)
                shutil.copy(work / "log-new" / "b.jsonl", logs / "b.jsonl")
                runs.setdefault(f"{build}_images", []).append(
                    run([str(INGEST), "--lake", str(lake), "images", str(img), "--table", "bronze.images"], env))
                runs.setdefault(f"{build}_logs", []).append(
                    run([str(INGEST), "--lake", str(lake), "logs", str(logs), "--table", "bronze.events"], env))
            peer = work / f"peer{r}"
            run([str(PY), "-c", PEER_IMAGES, str(work / "img-old"), str(peer / "images")])
            run([str(PY), "-c", PEER_LOGS, str(work / "log-old" / "a.jsonl"), str(peer / "events")])
            runs.setdefault("peer_images", []).append(run([str(PY), "-c", PEER_IMAGES, str(work / "img-new"), str(peer / "images")]))
            runs.setdefault("peer_logs", []).append(
                run([str(PY), "-c", PEER_LOGS, str(work / "log-new" / "b.jsonl"), str(peer / "events")]))
        med = {k: round(statistics.median(v), 3) for k, v in runs.items()}
        report: dict = {"rounds": args.rounds, "median_seconds": med, "runs": runs}
        print("small increments, a fresh process each (median seconds)")
        for k, v in med.items():
            print(f"  {k:12s} {v:6.3f} s")
        for kind in ("images", "logs"):
            report[f"{kind}_speed_vs_peer"] = round(med[f"peer_{kind}"] / med[f"ours_{kind}"], 2)
            line = f"  {kind}: {report[f'{kind}_speed_vs_peer']}x the peer's speed"
            if base_env:
                paired = [b / o for b, o in zip(runs[f"base_{kind}"], runs[f"ours_{kind}"])]
                report[f"{kind}_speedup_vs_baseline"] = round(statistics.median(paired), 2)
                report[f"{kind}_paired_vs_baseline"] = [round(x, 2) for x in paired]
                line += f"; {report[f'{kind}_speedup_vs_baseline']}x the baseline (paired {report[f'{kind}_paired_vs_baseline']})"
            print(line)
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        (out_dir / "small_runs.json").write_text(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
