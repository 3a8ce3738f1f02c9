"""Benchmark the driver's search of new images' dHashes against the stored index.

    .venv/bin/python bench/bench_near_pairs.py [--new 10000] [--stored 1000000] [--threshold 6]

An incremental ``dedup_images`` run on the driver (``transforms/spark/driver.py``) compares the
new images' 64-bit dHashes with every stored one.  Random hashes (plus 5% planted copies
1..threshold bits away) are searched two ways, in one process:

* baseline: one exact band of threshold+1 as the key, the scheme of the Spark model's banded join
  (``dedup_images.near_duplicate_pairs``), in numpy;
* ours: ``near_pair_indices`` (a pair of threshold+2 blocks as the key, counted per key).

Both must find the same pairs.  Prints seconds, candidates checked and ours / baseline.  Results go
to bench/results/near_pairs.json.  Uniform hashes are the easy case for both: real dHashes
cluster, which makes every key less selective.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.spark.dedup_images import bands  # noqa: E402 - after the path setup above
from transforms.spark.driver import near_pair_indices  # noqa: E402 - after the path setup above


def one_band_pairs(a: np.ndarray, b: np.ndarray, threshold: int) -> tuple[set[tuple[int, int]], int]:
    """The Spark model's scheme in numpy: a pair shares one of threshold+1 bands exactly."""
    found: set[tuple[int, int]] = set()
    candidates = 0
    for shift, width in bands(threshold):
        mask = np.uint64((1 << width) - 1)
        ka, kb = (a >> np.uint64(shift)) & mask, (b >> np.uint64(shift)) & mask
        order = np.argsort(ka, kind="stable")
        sorted_a = ka[order]
        for lo_b in range(0, len(b), 200_000):  # bounded memory: the candidates of 200k stored
            chunk = kb[lo_b : lo_b + 200_000]
            lo = np.searchsorted(sorted_a, chunk, side="left")
            n = np.searchsorted(sorted_a, chunk, side="right") - lo
            hit = np.nonzero(n)[0]
            counts = n[hit]
            bj = np.repeat(hit, counts)
            ai = order[np.repeat(lo[hit], counts) + np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)]
            candidates += len(ai)
            close = np.bitwise_count(a[ai] ^ b[bj + lo_b]) <= threshold
            found.update(zip(ai[close].tolist(), (bj[close] + lo_b).tolist(), strict=True))
    return found, candidates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new", type=int, default=10_000)
    ap.add_argument("--stored", type=int, default=1_000_000)
    ap.add_argument("--threshold", type=int, default=6)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    new = rng.integers(0, 2**64, args.new, dtype=np.uint64)
    stored = rng.integers(0, 2**64, args.stored, dtype=np.uint64)
    planted = rng.choice(args.stored, args.stored // 20, replace=False)
    for j in planted:  # copies of new images among the stored, 1..threshold bits away
        src = new[int(j) % args.new]
        for bit in rng.choice(64, int(rng.integers(1, args.threshold + 1)), replace=False):
            src ^= np.uint64(1) << np.uint64(int(bit))
        stored[j] = src

    started = time.perf_counter()
    ai, bj = near_pair_indices(new, stored, threshold=args.threshold)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    base, candidates = one_band_pairs(new, stored, args.threshold)
    base_s = time.perf_counter() - started
    ours = set(zip(ai.tolist(), bj.tolist(), strict=True))
    if ours != base:
        raise SystemExit(f"the two searches differ: {len(ours)} vs {len(base)} pairs")
    summary = {
        "new": args.new,
        "stored": args.stored,
        "threshold": args.threshold,
        "pairs": len(ours),
        "ours_s": round(ours_s, 3),
        "one_band_s": round(base_s, 3),
        "one_band_candidates": candidates,
        "ours_vs_one_band": round(ours_s / base_s, 3),
    }
    print(json.dumps(summary, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "near_pairs.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
