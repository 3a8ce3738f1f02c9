"""Benchmark the near-duplicate search of ``dedup_images``: banded self-join vs all-pairs.

    .venv/bin/python bench/bench_spark_dedup.py [--images 10000] [--threshold 6] [--rounds 1]

Builds ``--images`` random 64-bit dHashes plus 5% planted near-duplicates (1..threshold bits
flipped), then finds every pair within ``--threshold`` bits two ways on the same local[2] session:

* peer: the all-pairs cross join (``a.sha256 < b.sha256`` and ``bit_count(a ^ b) <= t``), the
  obvious way to write it;
* ours: ``transforms.spark.dedup_images.near_duplicate_pairs`` (exact match on one of t+1 bands,
  then the same distance filter).

Both must return the same pairs.  Prints seconds (median over rounds), candidate pairs compared,
and ours / all-pairs as the ratio.  Results go to bench/results/spark_dedup.json.  Image decoding
(the pandas UDF) is not part of this figure: it is the same work in both.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.lake import Lake  # noqa: E402
from ingest.settings import S3Settings  # noqa: E402
from transforms.spark.dedup_images import hamming, near_duplicate_pairs  # noqa: E402
from transforms.spark.session import build_spark  # noqa: E402


def synthetic_hashes(n: int, threshold: int, seed: int = 7) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append((f"{i:064x}", rng.getrandbits(64)))
    for j in range(n // 20):
        _, base = rows[rng.randrange(n)]
        flipped = base
        for bit in rng.sample(range(64), rng.randint(1, threshold)):
            flipped ^= 1 << bit
        rows.append((f"{n + j:064x}", flipped))
    return [(sha, v - (1 << 64) if v >= (1 << 63) else v) for sha, v in rows]


def all_pairs(df, threshold: int):
    from pyspark.sql import functions as F

    a, b = df.alias("a"), df.alias("b")
    return (
        a.crossJoin(b)
        .where(F.col("a.sha256") < F.col("b.sha256"))
        .where(F.bit_count(F.col("a.phash_l").bitwiseXOR(F.col("b.phash_l"))) <= threshold)
        .select(F.col("a.sha256").alias("x"), F.col("b.sha256").alias("y"))
    )


def timed(fn) -> tuple[float, set[tuple[str, str]]]:
    t = time.perf_counter()
    out = {(r.x, r.y) for r in fn().collect()}
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--threshold", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        spark = build_spark(Lake(tmp, s3=S3Settings()), app_name="bench-spark-dedup", master="local[2]")
        spark.sparkContext.setLogLevel("ERROR")
        rows = synthetic_hashes(args.images, args.threshold)
        df = spark.createDataFrame(rows, "sha256 string, phash_l bigint").repartition(4).cache()
        n = df.count()
        expected = {
            tuple(sorted((a, b))) for a, b in _planted(rows, args.images, args.threshold)
        }
        peer_s, ours_s = [], []
        for _ in range(args.rounds):
            s, peer = timed(lambda: all_pairs(df, args.threshold))
            peer_s.append(s)
            s, ours = timed(lambda: near_duplicate_pairs(df, threshold=args.threshold))
            ours_s.append(s)
            if ours != peer:
                raise SystemExit(f"banded join disagrees with all-pairs: {len(ours)} vs {len(peer)} pairs")
            missing = expected - ours
            if missing:
                raise SystemExit(f"{len(missing)} planted near-duplicates not found")
        spark.stop()

    result = {
        "images": n,
        "threshold": args.threshold,
        "pairs_found": len(ours),
        "all_pairs_compared": n * (n - 1) // 2,
        "results": {
            "all-pairs cross join": {"median_s": statistics.median(peer_s), "runs": peer_s, "ratio_vs_all_pairs": 1.0},
            "banded join (dedup_images)": {
                "median_s": statistics.median(ours_s),
                "runs": ours_s,
                "ratio_vs_all_pairs": statistics.median(ours_s) / statistics.median(peer_s),
            },
        },
    }
    out = ROOT / "bench" / "results" / "spark_dedup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _planted(rows: list[tuple[str, int]], n: int, threshold: int):
    """The planted pairs, recomputed by brute force over the planted rows only."""
    originals = rows[:n]
    for sha, v in rows[n:]:
        for osha, ov in originals:
            if hamming(v, ov) <= threshold:
                yield sha, osha


if __name__ == "__main__":
    main()
