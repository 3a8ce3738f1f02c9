"""Benchmark source ingestion against named peers, side by side in one run.

    .venv/bin/python bench/bench_ingest.py [--rows 1000000] [--images 5000] [--rounds 1]

* DB table -> Delta: ``ingest tables`` (full snapshot, connectorx Arrow batches) vs dlt's
  ``sql_table`` source with its connectorx and pyarrow backends writing the same PostgreSQL table
  to dlt's filesystem destination as Delta.  The ratio is against dlt's faster backend.
* Images -> Delta: ``ingest images`` from SeaweedFS S3 vs a plain parallel download (boto3, 16
  threads) of the same objects that stores nothing.
* Memory: peak RSS of ``ingest`` at a quarter of the input vs the full input (flat = bounded batches).

Every measurement runs in a fresh process (timed after imports, peak RSS from the kernel).  dlt
lives in ``.venv-bench`` (bench/requirements-bench-ingest.txt), created on first run, never in the
project lock.  PostgreSQL (initdb/pg_ctl) and SeaweedFS are started here and stopped at the end.
Results go to stdout and bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
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
PEER_VENV = ROOT / ".venv-bench"
PEER_REQS = ROOT / "bench" / "requirements-bench-ingest.txt"


def ensure_peer() -> Path:
    """dlt's venv (created with the project's uv on first run)."""
    py = PEER_VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import dlt, deltalake, connectorx"], capture_output=True).returncode == 0:
        return py
    uv = ROOT / ".venv-tools" / "bin" / "uv"  # where `make install` puts it
    print(f"installing dlt into {PEER_VENV} ...", flush=True)
    subprocess.run([str(uv), "venv", "-q", str(PEER_VENV), "--python", "3.11"], check=True)
    subprocess.run([str(uv), "pip", "install", "-q", "--python", str(py), "-r", str(PEER_REQS)], check=True)
    return py


# -- children: one measurement per process --------------------------------------------------------
def _report(seconds: float, rows: int, **extra) -> None:
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rows": rows, "peak_rss_mb": round(rss_mb, 1), **extra}))


def child_ours_table(url: str, table: str, dest: str) -> None:
    sys.path.insert(0, str(ROOT))
    import connectorx  # noqa: F401 - imported before the clock starts, like dlt for the peer
    import deltalake  # noqa: F401
    import psycopg  # noqa: F401
    import sqlalchemy  # noqa: F401

    from ingest.lake import Lake
    from ingest.sources.tables import ingest_table

    lake = Lake(dest)
    t0 = time.perf_counter()
    res = ingest_table(lake, url, source_table=table, table="bronze.bench")
    _report(time.perf_counter() - t0, res.rows_written)


def child_dlt_table(url: str, table: str, dest: str, backend: str) -> None:
    import dlt
    from dlt.sources.sql_database import sql_table

    plain = url.replace("postgresql+psycopg://", "postgresql://")
    kwargs = {"conn": plain} if backend == "connectorx" else {}
    src = sql_table(credentials=plain, table=table, backend=backend, chunk_size=100_000,
                    backend_kwargs=kwargs, reflection_level="full")
    pipe = dlt.pipeline(
        pipeline_name=f"bench_{backend}", destination=dlt.destinations.filesystem(f"file://{dest}"),
        dataset_name="bronze", pipelines_dir=os.path.join(dest, "_pipelines"),
    )
    t0 = time.perf_counter()
    pipe.run(src, table_format="delta", write_disposition="replace")
    seconds = time.perf_counter() - t0
    from deltalake import DeltaTable

    rows = DeltaTable(os.path.join(dest, "bronze", table)).count()
    _report(seconds, rows)


def child_ours_images(src: str, dest: str) -> None:
    sys.path.insert(0, str(ROOT))
    import deltalake  # noqa: F401 - imported before the clock starts, like boto3 for the peer
    import PIL.Image  # noqa: F401

    from ingest.lake import Lake
    from ingest.sources.images import ingest_images

    lake = Lake(dest)
    t0 = time.perf_counter()
    res = ingest_images(lake, src)
    _report(time.perf_counter() - t0, res.rows_written, bytes=res.bytes_read)


def child_download(src: str, workers: int) -> None:
    import boto3
    from botocore.config import Config
    from concurrent.futures import ThreadPoolExecutor

    bucket, prefix = src[len("s3://"):].split("/", 1)
    t0 = time.perf_counter()
    c = boto3.client("s3", config=Config(s3={"addressing_style": "path"}, max_pool_connections=workers + 4))
    keys = [o["Key"] for p in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix) for o in p.get("Contents", [])]
    with ThreadPoolExecutor(workers) as ex:
        sizes = list(ex.map(lambda k: len(c.get_object(Bucket=bucket, Key=k)["Body"].read()), keys))
    _report(time.perf_counter() - t0, len(keys), bytes=sum(sizes))


def run_child(py: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    # bytecode caching on: the warm-up run compiles each side's imports once, not per measurement
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(
        [str(py), str(Path(__file__).resolve()), "--child", *args],
        capture_output=True, text=True, env={**base_env, **(env or {})}, cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- setup ---------------------------------------------------------------------------------------
def start_postgres():
    """The test suite's PostgreSQL starter (initdb + pg_ctl on a free loopback port)."""
    sys.path.insert(0, str(ROOT))
    import tests.conftest as conftest

    gen = conftest.postgres_url._get_wrapped_function()()
    return gen, next(gen)


def load_postgres(url: str, table: str, rows: int) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as con:
        con.execute(f'drop table if exists "{table}"')
        con.execute(
            f'create table "{table}" (id bigint primary key, user_id integer, title text, place text, '
            "score double precision, liked boolean, uploaded_at timestamptz, updated_at timestamptz)"
        )
        con.execute(
            f'insert into "{table}" select g, g % 5000, \'photo title \' || g, '
            "(array['Lisbon','Kyoto','Reykjavik','Nairobi','Lima','Oslo','Hanoi','Quebec'])[1 + g % 8], "
            "(g % 1000) / 7.0, g % 3 = 0, timestamptz '2026-11-01' + g * interval '1 second', "
            f"timestamptz '2026-11-01' + g * interval '2 second' from generate_series(1, {rows}) g"
        )
        con.execute(f'analyze "{table}"')


def start_s3(base: Path):
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_sync import Weed  # the same SeaweedFS starter as the sync benchmark

    base.mkdir(parents=True, exist_ok=True)
    weed = Weed(base)
    weed.wait_ready("bench-images")
    return weed


def upload_images(weed, bucket: str, n: int) -> int:
    """``n`` distinct JPEG/PNG photos (about 10 KB each); the first quarter under ``imgs/q/``."""
    import io
    import random
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image, ImageDraw

    c = weed.client(max_pool_connections=16)

    def one(i: int) -> int:
        rng = random.Random(i)
        img = Image.new("RGB", (192, 128), tuple(rng.randrange(256) for _ in range(3)))
        d = ImageDraw.Draw(img)
        for _ in range(8):
            x, y = rng.randrange(192), rng.randrange(128)
            d.ellipse([x, y, x + rng.randrange(8, 60), y + rng.randrange(8, 60)], fill=tuple(rng.randrange(256) for _ in range(3)))
        buf = io.BytesIO()
        fmt = "PNG" if i % 4 == 0 else "JPEG"
        img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        part = "q" if i < n // 4 else "r"
        c.put_object(Bucket=bucket, Key=f"imgs/{part}/img_{i:06d}.{fmt.lower()}", Body=buf.getvalue())
        return buf.tell()

    with ThreadPoolExecutor(8) as ex:
        return sum(ex.map(one, range(n)))


def interleaved(rounds: int, contenders: dict) -> dict[str, dict]:
    """Run every contender once per round, in turn (same data, same moment), and keep each one's
    median run: on a shared machine the load changes between minutes, not between neighbours."""
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for i in range(rounds):
        for name, fn in contenders.items():
            runs[name].append(fn(i))
    out = {}
    for name, rs in runs.items():
        med = sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2]
        out[name] = {**med, "seconds_all": [round(r["seconds"], 3) for r in rs]}
    return out


def paired_ratio(peer_seconds: list[float], our_seconds: list[float]) -> float:
    """Median of per-round speed ratios: each pair ran back to back, under the same load."""
    return statistics.median(p / o for p, o in zip(peer_seconds, our_seconds))


# -- main ----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--workers", type=int, default=16, help="threads for the plain download")
    ap.add_argument("--skip", choices=["tables", "images"], action="append", default=[])
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        {"ours-table": child_ours_table, "dlt-table": child_dlt_table, "ours-images": child_ours_images,
         "download": lambda s, w: child_download(s, int(w))}[kind](*rest)
        return

    results: dict = {"rows": args.rows, "images": args.images, "rounds": args.rounds, "cpus": os.cpu_count()}
    base = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        if "tables" not in args.skip:
            results["tables"] = bench_tables(args, base)
        if "images" not in args.skip:
            results["images_s3"] = bench_images(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = ROOT / "bench" / "results" / "ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")


def bench_tables(args, base: Path) -> dict:
    peer = ensure_peer()
    gen, url = start_postgres()
    try:
        print(f"loading {args.rows:,} rows into PostgreSQL ...", flush=True)
        load_postgres(url, "bench_photos", args.rows)
        load_postgres(url, "bench_quarter", args.rows // 4)
        load_postgres(url, "bench_warmup", 1000)
        run_child(PY, "ours-table", url, "bench_warmup", str(base / "warm-ours"))  # untimed warm-up
        for backend in ("connectorx", "pyarrow"):
            run_child(peer, "dlt-table", url, "bench_warmup", str(base / f"warm-{backend}"), backend)

        def ours(i: int, table: str = "bench_photos") -> dict:
            return run_child(PY, "ours-table", url, table, str(base / f"ours-{table}-{i}"))

        def dlt_run(backend: str):
            return lambda i: run_child(peer, "dlt-table", url, "bench_photos", str(base / f"dlt-{backend}-{i}"), backend)

        got = interleaved(args.rounds, {"ours": ours, "cx": dlt_run("connectorx"), "pa": dlt_run("pyarrow")})
        r_ours, r_cx, r_pa = got["ours"], got["cx"], got["pa"]
        r_quarter = ours(0, "bench_quarter")
    finally:
        gen.close()
    peer_best = min((r_cx, "connectorx"), (r_pa, "pyarrow"), key=lambda x: x[0]["seconds"])
    for r in (r_ours, r_cx, r_pa):
        r["rows_per_s"] = round(r["rows"] / r["seconds"])
    ratio = r_ours["rows_per_s"] / peer_best[0]["rows_per_s"]
    paired = paired_ratio(peer_best[0]["seconds_all"], r_ours["seconds_all"])
    mem = r_ours["peak_rss_mb"] / r_quarter["peak_rss_mb"]
    print("\nDB table -> Delta (PostgreSQL, full table)")
    print(f"  {'ingest tables':28s} {r_ours['rows_per_s']:>10,} rows/s  {r_ours['seconds']:7.2f}s  peak {r_ours['peak_rss_mb']:7.1f} MB")
    print(f"  {'dlt sql_table connectorx':28s} {r_cx['rows_per_s']:>10,} rows/s  {r_cx['seconds']:7.2f}s  peak {r_cx['peak_rss_mb']:7.1f} MB")
    print(f"  {'dlt sql_table pyarrow':28s} {r_pa['rows_per_s']:>10,} rows/s  {r_pa['seconds']:7.2f}s  peak {r_pa['peak_rss_mb']:7.1f} MB")
    print(f"  ratio vs dlt ({peer_best[1]}): {ratio:.2f}x rows/s (medians), {paired:.2f}x (median of per-round pairs); target >= 2x")
    print(f"  memory: peak RSS at {args.rows:,} rows / at {args.rows // 4:,} rows = {mem:.2f} (flat = ~1)")
    return {
        "ours": r_ours, "dlt_connectorx": r_cx, "dlt_pyarrow": r_pa, "peer": f"dlt/{peer_best[1]}",
        "ratio_rows_per_s": round(ratio, 2), "ratio_paired": round(paired, 2),
        "memory_full_over_quarter": round(mem, 2),
        "ours_quarter": r_quarter,
    }


def bench_images(args, base: Path) -> dict:
    weed = start_s3(base / "weed")
    try:
        bucket = "bench-images"
        print(f"uploading {args.images:,} images to SeaweedFS ...", flush=True)
        total = upload_images(weed, bucket, args.images)
        env = weed.env()
        src = f"s3://{bucket}/imgs/"
        run_child(PY, "ours-images", f"s3://{bucket}/imgs/q/", str(base / "warm"), env=env)  # untimed warm-up
        got = interleaved(args.rounds, {
            "download": lambda i: run_child(PY, "download", src, str(args.workers), env=env),
            "ours": lambda i: run_child(PY, "ours-images", src, str(base / f"img-{i}"), env=env),
        })
        r_dl, r_ours = got["download"], got["ours"]
        r_quarter = run_child(PY, "ours-images", f"s3://{bucket}/imgs/q/", str(base / "img-q"), env=env)
    finally:
        weed.stop()
    for r in (r_dl, r_ours):
        r["images_per_s"] = round(r["rows"] / r["seconds"], 1)
        r["mb_per_s"] = round(r["bytes"] / r["seconds"] / 1e6, 2)
    ratio = r_ours["images_per_s"] / r_dl["images_per_s"]
    paired = paired_ratio(r_dl["seconds_all"], r_ours["seconds_all"])
    mem = r_ours["peak_rss_mb"] / r_quarter["peak_rss_mb"]
    print(f"\nImages -> Delta ({args.images:,} objects, {total / 1e6:.1f} MB on SeaweedFS S3)")
    print(f"  {'ingest images':28s} {r_ours['images_per_s']:>10,} img/s  {r_ours['mb_per_s']:6.2f} MB/s  {r_ours['seconds']:7.2f}s  peak {r_ours['peak_rss_mb']:7.1f} MB")
    print(f"  {'plain parallel download':28s} {r_dl['images_per_s']:>10,} img/s  {r_dl['mb_per_s']:6.2f} MB/s  {r_dl['seconds']:7.2f}s  peak {r_dl['peak_rss_mb']:7.1f} MB")
    print(f"  ratio vs plain download: {ratio:.2f}x (medians), {paired:.2f}x (median of per-round pairs); target >= 0.5x")
    print(f"  memory: peak RSS at {args.images:,} images / at {args.images // 4:,} = {mem:.2f} (flat = ~1)")
    return {"ours": r_ours, "download": r_dl, "ratio_images_per_s": round(ratio, 2), "ratio_paired": round(paired, 2),
            "memory_full_over_quarter": round(mem, 2), "ours_quarter": r_quarter, "total_bytes": total}


if __name__ == "__main__":
    main()
