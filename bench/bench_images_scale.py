"""Does loading new images cost the same whatever the table already holds?

    .venv/bin/python bench/bench_images_scale.py [--stored 100000] [--new 10000] [--rounds 3]

The same NEW images (never seen before) go into three lakes, in paired rounds:

* empty: a lake with no images table (the baseline);
* half: a lake holding STORED/2 other images (memory must not grow from half to stored);
* stored: a lake whose ``bronze.images`` already holds STORED other images, loaded by
  ``ingest images`` in its usual 512-file batches (one small file per batch);
* optimized: the same lake after ``ingest optimize --z-order`` (what the weekly maintenance does).

Every load is ``ingest images`` in a fresh process on a fresh copy of its lake (timed after
imports, wall and CPU time of all its threads; peak RSS from the kernel).  On a machine shared
with other jobs the CPU ratio is the steadier one.  Ratios stored/empty and optimized/empty are medians of the
per-round ratios.  It also reports the stored table's files before and after ``ingest optimize``
(compaction, then z-order).  Local lake, local source.  Results go to stdout and
bench/results/images_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"


def make_images(d: Path, start: int, n: int) -> None:
    """``n`` distinct small PNGs (24x16, a few hundred bytes each), content set by their index."""
    import io

    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        rng = random.Random(i)
        img = Image.new("RGB", (24, 16), tuple(rng.randrange(256) for _ in range(3)))
        img.putpixel((0, 0), (i % 256, i // 256 % 256, i // 65536 % 256))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        sub = d / f"{i // 1000:05d}"  # a folder per thousand, like a camera dump
        sub.mkdir(exist_ok=True)
        (sub / f"img_{i:08d}.png").write_bytes(buf.getvalue())


def child_ingest(lake: str, src: str) -> None:
    sys.path.insert(0, str(ROOT))
    import deltalake  # noqa: F401 - imported before the clock starts (pandas alone takes seconds)
    import pandas  # noqa: F401
    import PIL.Image  # noqa: F401
    import pyarrow.compute
    import pyarrow.dataset  # noqa: F401

    from ingest.lake import Lake
    from ingest.sources.images import ingest_images

    t0, c0 = time.perf_counter(), time.process_time()
    res = ingest_images(Lake(lake), src)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    # VmHWM: this process's own peak (ru_maxrss can carry the forking parent's peak across exec)
    hwm = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:")]
    rss_mb = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "rows": res.rows_written, "peak_rss_mb": round(rss_mb, 1)}))


def run_child(*args: str) -> dict:
    proc = subprocess.run([str(PY), __file__, "--child", *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"child {args} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ingest_cli(lake: Path, *args: str) -> dict:
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ingest"), "--lake", str(lake), "--json", *args],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode:
        raise SystemExit(f"ingest {args} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def data_files(lake: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from ingest.lake import Lake

    return len(Lake(str(lake)).delta_table("bronze.images").file_uris())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stored", type=int, default=100_000)
    ap.add_argument("--new", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("LAKE", "SRC"))
    args = ap.parse_args()
    if args.child:
        child_ingest(*args.child)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-images-scale-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        make_images(tmp / "stored_src", 0, args.stored)
        make_images(tmp / "new_src", args.stored, args.new)
        print(f"made {args.stored} + {args.new} images in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        half, base = tmp / "half", tmp / "base"  # the table at STORED/2, then at STORED rows
        folders = sorted((tmp / "stored_src").iterdir())
        first = tmp / "stored_src" / "first"
        first.mkdir()
        for f in folders[: len(folders) // 2]:
            f.rename(first / f.name)
        ingest_cli(half, "images", str(first))
        shutil.copytree(half, base)
        ingest_cli(base, "images", str(tmp / "stored_src"))
        loaded = {"rows_written": sum(1 for _ in (tmp / "stored_src").rglob("*.png"))}
        files_stored = data_files(base)
        print(f"stored lake: {loaded['rows_written']} rows in {files_stored} files ({time.perf_counter() - t0:.0f} s)", flush=True)
        compacted = tmp / "compacted"
        shutil.copytree(base, compacted)
        t0 = time.perf_counter()
        ingest_cli(compacted, "optimize", "bronze.images")
        compact_s, files_compacted = time.perf_counter() - t0, data_files(compacted)
        optimized = tmp / "optimized"
        shutil.copytree(base, optimized)
        t0 = time.perf_counter()
        ingest_cli(optimized, "optimize", "--z-order", "bronze.images")
        zorder_s, files_zordered = time.perf_counter() - t0, data_files(optimized)
        print(f"optimize: {files_stored} -> {files_compacted} files ({compact_s:.1f} s); "
              f"--z-order: -> {files_zordered} files ({zorder_s:.1f} s)", flush=True)

        runs: dict[str, list[dict]] = {"empty": [], "half": [], "stored": [], "optimized": []}
        for r in range(args.rounds):
            for kind, seed in (("empty", None), ("half", half), ("stored", base), ("optimized", optimized)):
                lake = tmp / f"run-{kind}"
                shutil.rmtree(lake, ignore_errors=True)
                if seed is not None:
                    shutil.copytree(seed, lake)
                os.sync()  # the copy's writeback does not land in the timed run
                out = run_child(str(lake), str(tmp / "new_src"))
                if out["rows"] != args.new:
                    raise SystemExit(f"{kind}: stored {out['rows']} of {args.new} new images")
                runs[kind].append(out)
                print(f"round {r + 1} {kind:9s} {out['seconds']:6.2f} s  CPU {out['cpu_s']:6.2f} s  "
                      f"peak RSS {out['peak_rss_mb']:6.1f} MB", flush=True)

    def ratio(kind: str, key: str) -> float:
        return statistics.median(a[key] / b[key] for a, b in zip(runs[kind], runs["empty"], strict=True))

    report = {
        "stored": args.stored, "new": args.new, "rounds": args.rounds,
        "files_stored": files_stored, "files_after_optimize": files_compacted, "optimize_s": round(compact_s, 1),
        "files_after_z_order": files_zordered, "z_order_s": round(zorder_s, 1),
        **{f"{k}_s": round(statistics.median(x["seconds"] for x in v), 2) for k, v in runs.items()},
        **{f"{k}_peak_rss_mb": round(statistics.median(x["peak_rss_mb"] for x in v), 1) for k, v in runs.items()},
        "time_ratio_half": round(ratio("half", "seconds"), 2),
        "rss_ratio_half": round(ratio("half", "peak_rss_mb"), 2),
        "time_ratio_stored": round(ratio("stored", "seconds"), 2),
        "time_ratio_optimized": round(ratio("optimized", "seconds"), 2),
        **{f"{k}_cpu_s": round(statistics.median(x["cpu_s"] for x in v), 2) for k, v in runs.items()},
        "cpu_ratio_half": round(ratio("half", "cpu_s"), 2),
        "cpu_ratio_stored": round(ratio("stored", "cpu_s"), 2),
        "cpu_ratio_optimized": round(ratio("optimized", "cpu_s"), 2),
        "rss_ratio_stored": round(ratio("stored", "peak_rss_mb"), 2),
        "rss_ratio_optimized": round(ratio("optimized", "peak_rss_mb"), 2),
    }
    print(json.dumps(report, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "images_scale.json").write_text(json.dumps({"report": report, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
