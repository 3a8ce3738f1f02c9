"""Benchmark the Spark models' incremental runs: merge what +1% new rows change vs a full refresh.

    .venv/bin/python bench/bench_spark_incremental.py [--events 1000000] [--images 20000]

Builds ``bronze.events`` (``--events`` rows, 5,000 users over three days) and ``bronze.images``
(``--images`` small distinct PNGs, 5% of them re-encoded near copies) in a temp local lake, on
one local[2] session:

1. full build of ``sessionize_events`` and ``dedup_images``,
2. appends 1% new rows to each (new events on the next day; new pictures and near copies),
3. incremental run (the models MERGE what the new rows change),
4. full refresh over the same, now 101%, data (the peer): its tables must equal the
   incremental run's, every column, or the benchmark fails.

Prints seconds per model and incremental / full refresh.  Results go to
bench/results/spark_incremental.json.  Not a timed test: run it on a quiet machine if you can.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from hashlib import sha256
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.delta import write_batch  # noqa: E402
from ingest.lake import Lake  # noqa: E402
from ingest.settings import S3Settings  # noqa: E402
from transforms.spark import run_spark_models  # noqa: E402
from transforms.spark.session import build_spark  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")
KEYS = {"sessionize_events": ("silver.user_sessions", ["user_id", "session_id"]),
        "dedup_images": ("silver.image_duplicates", ["sha256"])}


def events_batch(first: int, n: int, day: int, rng) -> pa.Table:
    ids = np.arange(first, first + n, dtype=np.int64)
    secs = rng.integers(0, 86400, size=n) + day * 86400
    ts = (np.datetime64("2026-11-01T00:00:00") + secs.astype("timedelta64[s]")).astype("datetime64[us]")
    return pa.table({
        "event_id": pc.binary_join_element_wise("e", pc.cast(pa.array(ids), pa.string()), ""),
        "ts": pc.cast(pa.array(ts), TS),
        "user_id": rng.integers(1, 5001, size=n),
        "event_type": pa.array(rng.choice(np.array(["view", "view", "view", "like", "login"]), size=n)),
        "_ingested_at": pa.array([T0] * n, TS),
    })


def images_batch(first: int, n: int, rng) -> pa.Table:
    """``n`` pictures: 16x12 random blocks upscaled to 64x48 (distinct dHashes), 5% of them
    near copies (a JPEG of an earlier picture of this batch)."""
    from PIL import Image

    rows, pictures = [], []
    for i in range(first, first + n):
        if pictures and i % 20 == 0:
            im, fmt = pictures[int(rng.integers(len(pictures)))], "jpeg"
        else:
            im = Image.fromarray(rng.integers(0, 256, size=(12, 16), dtype=np.uint8)).resize((64, 48))
            pictures.append(im)
            fmt = "png"
        buf = io.BytesIO()
        im.save(buf, "JPEG" if fmt == "jpeg" else "PNG", **({"quality": 60} if fmt == "jpeg" else {}))
        data = buf.getvalue()
        rows.append({"source_uri": f"file:///data/{i}.{fmt}", "sha256": sha256(data).hexdigest(),
                     "size_bytes": len(data), "format": fmt, "width": 64, "height": 48, "content": data})
    return pa.Table.from_pylist(rows)


def timed_models(spark, lake: Lake, **kw) -> dict[str, tuple[float, dict, int]]:
    """name -> (seconds, result, Spark jobs run)."""
    out = {}
    tracker = spark.sparkContext.statusTracker()
    for name in KEYS:
        jobs = len(tracker.getJobIdsForGroup(None))
        t0 = time.perf_counter()
        (res,) = run_spark_models(spark, lake, select=name, **kw)
        out[name] = (time.perf_counter() - t0, res, len(tracker.getJobIdsForGroup(None)) - jobs)
    return out


def rows(lake: Lake, name: str) -> pa.Table:
    table, keys = KEYS[name]
    return lake.delta_table(table).to_pyarrow_table().sort_by([(k, "ascending") for k in keys])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=20_000)
    args = ap.parse_args()
    if args.events < 100 or args.images < 100:
        raise SystemExit("--events and --images need at least 100 rows")
    rng = np.random.default_rng(7)
    base = Path(tempfile.mkdtemp(prefix="bench-spark-incr-"))
    try:
        lake = Lake(str(base / "lake"), s3=S3Settings())
        spark = build_spark(lake, app_name="bench-spark-incremental", master="local[2]",
                            extra_conf={"spark.driver.memory": "2g", "spark.ui.retainedJobs": "100000"})
        write_batch(lake, "bronze.events", events_batch(1, args.events, 0, rng))
        write_batch(lake, "bronze.images", images_batch(1, args.images, rng))
        full = timed_models(spark, lake)
        new_e, new_i = max(1, args.events // 100), max(1, args.images // 100)
        write_batch(lake, "bronze.events", events_batch(args.events + 1, new_e, 3, rng))
        write_batch(lake, "bronze.images", images_batch(args.images + 1, new_i, rng))
        incr = timed_models(spark, lake)
        after_incr = {name: rows(lake, name) for name in KEYS}
        refresh = timed_models(spark, lake, full_refresh=True)
        for name in KEYS:
            if incr[name][1]["mode"] != "merge" or not after_incr[name].equals(rows(lake, name)):
                raise SystemExit(f"{name}: the incremental result differs from the full refresh: benchmark invalid")
        spark.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)

    summary: dict = {"bronze_rows": {"events": args.events, "images": args.images}, "new_rows_fraction": 0.01}
    print(f"bronze: {args.events:,} events, {args.images:,} images; +1% new rows")
    for name in KEYS:
        f, i, r = full[name][0], incr[name][0], refresh[name][0]
        summary[name] = {"full_build_s": round(f, 2), "incremental_s": round(i, 2), "full_refresh_s": round(r, 2),
                         "incremental_vs_full_refresh": round(i / r, 3),
                         "rows_written": incr[name][1]["rows_written"], "rows": incr[name][1]["rows"],
                         "spark_jobs": {"incremental": incr[name][2], "full_refresh": refresh[name][2]}}
        print(f"{name:18} full build {f:7.2f} s  incremental {i:7.2f} s ({incr[name][1]['rows_written']} rows"
              f" written, {incr[name][2]} Spark jobs)  full refresh {r:7.2f} s ({refresh[name][2]} jobs)  ratio {i / r:.3f}")
    total_i, total_r = sum(incr[n][0] for n in KEYS), sum(refresh[n][0] for n in KEYS)
    summary["incremental_vs_full_refresh"] = round(total_i / total_r, 3)
    print(f"both models: incremental {total_i:.2f} s / full refresh {total_r:.2f} s = {total_i / total_r:.3f}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "spark_incremental.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
