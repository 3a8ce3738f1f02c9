"""Benchmark the fan-out: the ingest-images flow on a local Dask cluster of 2 worker processes vs
1 worker process, same data, same 2 file groups, in one run (rounds alternate).

    .venv/bin/python bench/bench_fanout.py [--images 6000] [--rounds 2] [--side 96]

Images are PNGs of noise (``--side`` pixels square): CPU-bound to hash and decode, which is
where more processes help.  Each measurement runs the flow in a fresh process against a Prefect
server started here (SQLite in a temp dir) and loads into a fresh lake.  Two figures per run:
the flow's wall time (cluster start included) and the ingest span (first group's start to last
group's end, from ``_meta.runs``), with the CPU seconds of the flow's process tree (flow, Dask
nannies and workers) and of the Prefect server.  The page cache is synced before each run, and a
first round of each (cold caches, first imports) is run and not counted.  The ratio is 1-worker
time / 2-worker time (target >= 1.6 on 2 cores).  Beside it, in the same rounds, two references:
the machine's ceiling (reference CPU work, no I/O, nothing shared, in 2 processes at once vs 1) and
the workload's own (the same 2 groups as 2 plain processes, no Dask or Prefect, at once vs one
after the other).  Results go to stdout and bench/results/fanout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"

_CHILD = """
import json, os, sys, time
sys.path.insert(0, {root!r})
from flows.params import ImagesParams
from flows.sources import ingest_images_flow
from ingest.lake import Lake
params = ImagesParams.model_validate(json.loads(sys.argv[1]))
t0 = time.perf_counter()
state = ingest_images_flow(params, return_state=True)
wall = time.perf_counter() - t0
res = state.result()
runs = [r for r in Lake(params.lake).delta_table("_meta.runs").to_pyarrow_table().to_pylist() if r["command"] == "images"]
start = min(r["started_at"] for r in runs).timestamp()
end = max(r["started_at"].timestamp() + r["duration_s"] for r in runs)
groups = sorted((round(r["started_at"].timestamp() - start, 2), round(r["duration_s"], 2)) for r in runs)
print("RESULT " + json.dumps({{"wall_s": wall, "span_s": end - start, "rows": res["rows_written"], "groups": groups}}), flush=True)
os._exit(0)
"""


# The machine's own ceiling, measured in the same rounds: CPU-bound work of the kinds an ingest
# does (Python bytecode, sha256, zlib inflate, fresh zeroed memory), with nothing shared, in 2
# processes at once vs 1.  No fan-out of ours can scale better than this on the same cores.
_CEILING = """
import hashlib, os, zlib
buf = os.urandom(1 << 20)
packed = zlib.compress(os.urandom(1 << 14) * 64, 6)
s = 0
for i in range(2_000_000):
    s += i * i % 7
for _ in range(200):
    hashlib.sha256(buf).digest()
for _ in range(150):
    zlib.decompress(packed)
for _ in range(12):
    bytearray(64 << 20)
"""


# The workload's own scaling, no distributed runner: the same 2 file groups as 2 plain processes
# (one ``ingest_images`` call each, into one table), one after the other vs both at once.  What
# the fan-out loses beside it is Dask's and Prefect's; what this loses beside the ceiling is the
# ingest's (one ingest alone already keeps more than one core busy: fetch thread, delta-rs writer).
_PLAIN = """
import sys
sys.path.insert(0, {root!r})
from ingest.lake import Lake
from ingest.partition import FileGroup
from ingest.sources.images import ingest_images
ingest_images(Lake(sys.argv[1]), sys.argv[2], partition=FileGroup(int(sys.argv[3]), 2))
"""


def plain(src: Path, lake: Path, env: dict[str, str]) -> float:
    """Ingest span of the 2 groups one after the other / both at once, each in a plain process."""

    def span(at_once: bool, dest: Path) -> float:
        os.sync()
        cmd = [str(PY), "-c", _PLAIN.format(root=str(ROOT)), str(dest), str(src)]
        if at_once:
            procs = [subprocess.Popen([*cmd, str(i)], env=env, cwd=ROOT) for i in (0, 1)]
            codes = [p.wait() for p in procs]
        else:
            codes = [subprocess.run([*cmd, str(i)], env=env, cwd=ROOT, check=False).returncode for i in (0, 1)]
        if any(codes):
            raise RuntimeError(f"plain ingest failed: {codes}")
        from ingest.lake import Lake

        runs = Lake(str(dest)).delta_table("_meta.runs").to_pyarrow_table().to_pylist()
        if not at_once:
            return sum(r["duration_s"] for r in runs)
        return max(r["started_at"].timestamp() + r["duration_s"] for r in runs) - min(
            r["started_at"].timestamp() for r in runs
        )

    return span(False, lake / "one-after-other") / span(True, lake / "at-once")


def ceiling() -> float:
    """Throughput of the reference work in 2 processes at once over 1 process (2 x t1 / t2)."""

    def timed(k: int) -> float:
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", _CEILING]) for _ in range(k)]
        if any(p.wait() for p in procs):
            raise RuntimeError("ceiling reference failed")
        return time.perf_counter() - t0

    return 2 * timed(1) / timed(2)


def make_images(root: Path, n: int, side: int) -> int:
    from PIL import Image

    root.mkdir(parents=True)
    total = 0
    for i in range(n):
        rng = random.Random(i)
        img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        p = root / f"g{i % 20:02d}" / f"img_{i:06d}.png"
        p.parent.mkdir(exist_ok=True)
        img.save(p, format="PNG", compress_level=1)
        total += p.stat().st_size
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prefect(home: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LAKEHOUSE_", "AWS_"))}
    env.update(
        PREFECT_HOME=str(home), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_UI_ENABLED="false",
        LAKEHOUSE_CONFIG=os.devnull,
    )
    server_env = {**env, "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}"}
    proc = subprocess.Popen(
        [str(PY.parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            return proc, env
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("prefect server did not start") from None
            time.sleep(0.5)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for t in Path(f"/proc/{p}/task").iterdir():
                kids = (t / "children").read_text().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            continue
    return total


def measure(env: dict[str, str], src: Path, lake: Path, workers: int, server_pid: int) -> dict:
    os.sync()  # the previous round's lake is on disk: its writeback does not land in this round
    server0, kids0 = tree_cpu(server_pid), os.times()
    params = {"lake": str(lake), "src": str(src), "partitions": 2, "task_runner": "dask", "dask_workers": workers}
    proc = subprocess.run(
        [str(PY), "-c", _CHILD.format(root=str(ROOT)), json.dumps(params)], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=1800, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"flow failed ({proc.returncode}): {proc.stderr[-3000:]}")
    kids1 = os.times()
    out = json.loads(lines[-1][7:])
    out["flow_cpu_s"] = round(kids1.children_user + kids1.children_system - kids0.children_user - kids0.children_system, 2)
    out["server_cpu_s"] = round(tree_cpu(server_pid) - server0, 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--side", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--image-workers", type=int, default=None,
                    help="INGEST_IMAGE_WORKERS (fetch threads per ingest process; the ingester defaults to 1 for local files)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    proc = None
    try:
        size = make_images(tmp / "src", args.images, args.side)
        print(f"{args.images} PNGs {args.side}x{args.side}, {size / 1e6:.0f} MB; cpus={os.cpu_count()} "
              f"load={os.getloadavg()[0]:.1f}", flush=True)
        proc, env = start_prefect(tmp / "prefect")
        if args.image_workers:
            env["INGEST_IMAGE_WORKERS"] = str(args.image_workers)
        for workers in (1, 2):  # warm-up, not counted
            measure(env, tmp / "src", tmp / f"lake-warmup-{workers}", workers, proc.pid)
        times: dict[int, list[dict]] = {1: [], 2: []}
        for r in range(args.rounds):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                m = measure(env, tmp / "src", tmp / f"lake-{r}-{workers}", workers, proc.pid)
                assert m["rows"] == args.images, m
                times[workers].append(m)
                if workers == 2:
                    m["machine_ceiling"] = round(ceiling(), 2)
                    m["plain_processes"] = round(plain(tmp / "src", tmp / f"lake-{r}-plain", env), 2)
                print(f"  round {r + 1}: {workers} worker(s): flow {m['wall_s']:.1f} s, ingest {m['span_s']:.1f} s "
                      f"({args.images / m['span_s']:.0f} images/s; CPU: flow process tree {m['flow_cpu_s']} s, "
                      f"Prefect server {m['server_cpu_s']} s; groups (start, seconds) {m['groups']}), "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        out = {"images": args.images, "side": args.side, "mb": round(size / 1e6, 1), "rounds": args.rounds,
               "image_workers": args.image_workers}
        for key in ("wall_s", "span_s"):
            one = statistics.median(m[key] for m in times[1])
            two = statistics.median(m[key] for m in times[2])
            out[key] = {"1_worker": round(one, 2), "2_workers": round(two, 2), "ratio": round(one / two, 2)}
        for key in ("flow_cpu_s", "server_cpu_s"):
            out[key] = {str(w): round(statistics.median(m[key] for m in times[w]), 2) for w in (1, 2)}
        paired = [a["span_s"] / b["span_s"] for a, b in zip(times[1], times[2], strict=True)]
        out["span_s"]["paired_ratios"] = [round(r, 2) for r in paired]
        out["span_s"]["median_paired_ratio"] = round(statistics.median(paired), 2)
        out["machine_ceiling"] = {"per_round": [m["machine_ceiling"] for m in times[2]],
                                  "median": round(statistics.median(m["machine_ceiling"] for m in times[2]), 2)}
        out["plain_processes"] = {"per_round": [m["plain_processes"] for m in times[2]],
                                  "median": round(statistics.median(m["plain_processes"] for m in times[2]), 2)}
        out["load_avg_end"] = round(os.getloadavg()[0], 1)
        print(f"flow wall time: 1 worker {out['wall_s']['1_worker']} s, 2 workers {out['wall_s']['2_workers']} s "
              f"-> {out['wall_s']['ratio']}x")
        print(f"ingest span:    1 worker {out['span_s']['1_worker']} s, 2 workers {out['span_s']['2_workers']} s "
              f"-> {out['span_s']['ratio']}x (target >= 1.6x); paired rounds {out['span_s']['paired_ratios']}, "
              f"median {out['span_s']['median_paired_ratio']}x")
        print(f"machine ceiling (reference CPU work, 2 processes vs 1, same rounds): "
              f"{out['machine_ceiling']['median']}x {out['machine_ceiling']['per_round']}; the fan-out reaches "
              f"{out['span_s']['ratio'] / out['machine_ceiling']['median']:.0%} of it")
        print(f"the same 2 groups as 2 plain processes (no Dask, no Prefect), at once vs one after the other: "
              f"{out['plain_processes']['median']}x {out['plain_processes']['per_round']}; the fan-out reaches "
              f"{out['span_s']['ratio'] / out['plain_processes']['median']:.0%} of it")
        results = ROOT / "bench" / "results"
        results.mkdir(exist_ok=True)
        (results / "fanout.json").write_text(json.dumps(out, indent=2))
    finally:
        if proc is not None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
