"""Benchmark ``ingest logs`` against pyarrow's JSON reader + ``write_deltalake`` on the same files.

    .venv/bin/python bench/bench_logs.py [--lines 1000000] [--files 10] [--rounds 1]

* JSON lines: ``--lines`` activity events (~120 bytes each: ts with zone, user id, event, photo
  id, a float, a bool) in ``--files`` files, with one malformed line per file (quarantined by us,
  which keeps line numbers and resume offsets; the peer gets the files without those lines, since
  its reader fails on them).  Ours: ``ingest logs DIR --table bronze.events`` (a real process).
  Peer: ``pyarrow.json.read_json`` per file + one ``write_deltalake`` per file.
* Text: the same number of lines as ``TS LEVEL user=ID msg`` with a 4-group pattern.  Ours:
  ``ingest logs --format text --pattern``.  Peer: pyarrow reads each file's lines
  (``read_csv`` of one column) + ``extract_regex`` + ``write_deltalake``.

``--baseline DIR`` (a checkout of an older version, e.g. ``git archive REV | tar -x -C DIR``) also
times that version's ``ingest logs`` in every round (``PYTHONPATH=DIR``), interleaved with ours,
so a change is measured as a paired before/after ratio under the same load.

Each measurement runs in a fresh process, timed around the whole command (start-up included for
both: the peer's imports are counted too).  The ratio is peer time / our time (speed relative to
the peer); target >= 0.5 for JSON lines.  Results go to stdout and bench/results/logs.json.
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
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"
INGEST = ROOT / ".venv" / "bin" / "ingest"
PATTERN = r"(?P<ts>\S+) (?P<level>[A-Z]+) user=(?P<user>\d+) (?P<msg>.*)"
EVENTS = ["view", "like", "upload", "share", "comment"]


def make_files(root: Path, lines: int, files: int) -> tuple[Path, Path, Path]:
    """(json dir with one bad line per file, the same without the bad lines for the peer, text dir)."""
    rng = random.Random(7)
    jdir, clean, tdir = root / "json", root / "json-clean", root / "text"
    for d in (jdir, clean, tdir):
        d.mkdir(parents=True)
    per = lines // files
    n = 0
    for f in range(files):
        rows, texts = [], []
        for _ in range(per):
            sec = n % 86400
            ts = f"2026-11-{1 + n // 86400 % 28:02d}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.{n % 1000:03d}Z"
            rows.append(json.dumps({
                "ts": ts, "user_id": rng.randrange(1, 50_000), "event": rng.choice(EVENTS),
                "photo_id": rng.randrange(1, 1_000_000), "dwell": round(rng.random() * 30, 3),
                "mobile": rng.random() < 0.5, "page": f"/p/{rng.randrange(1, 10_000)}",
            }) + "\n")
            texts.append(f"{ts} {rng.choice(['INFO', 'WARN', 'DEBUG'])} user={rng.randrange(1, 50_000)} "
                         f"{rng.choice(EVENTS)} photo {rng.randrange(1, 1_000_000)} took {rng.randrange(1, 900)} ms\n")
            n += 1
        body = "".join(rows)
        (clean / f"app-{f:02d}.log").write_text(body)
        mid = len(rows) // 2
        (jdir / f"app-{f:02d}.log").write_text("".join(rows[:mid]) + '{"ts": broken\n' + "".join(rows[mid:]))
        (tdir / f"app-{f:02d}.log").write_text("".join(texts))
    return jdir, clean, tdir


PEER_JSON = """
import sys, time, glob
t0 = time.monotonic()
import pyarrow.json as pj
from deltalake import write_deltalake
src, dest = sys.argv[1], sys.argv[2]
for path in sorted(glob.glob(src + "/*.log")):
    write_deltalake(dest, pj.read_json(path), mode="append")
"""

PEER_TEXT = """
import sys, glob
import pyarrow as pa, pyarrow.csv as pcsv, pyarrow.compute as pc
from deltalake import write_deltalake
src, dest, pattern = sys.argv[1], sys.argv[2], sys.argv[3]
for path in sorted(glob.glob(src + "/*.log")):
    lines = pcsv.read_csv(path, read_options=pcsv.ReadOptions(column_names=["line"]),
                          parse_options=pcsv.ParseOptions(delimiter="\\x01", quote_char=False, escape_char=False),
                          convert_options=pcsv.ConvertOptions(column_types={"line": pa.string()}))["line"]
    m = pc.extract_regex(lines, pattern)
    write_deltalake(dest, pa.table({n: m.combine_chunks().field(n) for n in ("ts", "level", "user", "msg")}), mode="append")
"""


CPU: dict[str, list[float]] = {}  # process CPU seconds (user + sys, all threads) per kind


def timed(argv: list[str], env: dict[str, str] | None = None, *, kind: str = "") -> float:
    """Wall seconds of one run; its CPU seconds go to ``CPU[kind]`` (steadier on a loaded machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr[-2000:]}")
    CPU.setdefault(kind, []).append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall


def count(lake: Path, table: str) -> tuple[int, int]:
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from ingest.lake import Lake\nfrom ingest.settings import S3Settings\n"
        "lake = Lake(%r, s3=S3Settings())\n"
        "q = lake.delta_table('%s_quarantine').count() if lake.table_exists('%s_quarantine') else 0\n"
        "print(lake.delta_table('%s').count(), q)\n"
    ) % (str(ROOT), str(lake), table, table, table)
    out = subprocess.run([str(PY), "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--baseline", type=Path, help="an older checkout, timed in the same rounds")
    args = ap.parse_args()
    base_env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())} if args.baseline else None
    work = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    try:
        jdir, clean, tdir = make_files(work, args.lines, args.files)
        size_mb = sum(p.stat().st_size for p in jdir.iterdir()) / 1e6
        kinds = ("ours_json", "peer_json", "ours_text", "peer_text") + (("base_json", "base_text") if base_env else ())
        runs: dict[str, list[float]] = {k: [] for k in kinds}

        def json_cmd(lake: Path) -> list[str]:
            return [str(INGEST), "--lake", str(lake), "logs", str(jdir), "--table", "bronze.events"]

        def text_cmd(lake: Path) -> list[str]:
            return [str(INGEST), "--lake", str(lake), "logs", str(tdir), "--table", "bronze.lines",
                    "--format", "text", "--pattern", PATTERN]

        for r in range(args.rounds):
            lake = work / f"lake{r}"
            if base_env:
                runs["base_json"].append(timed(json_cmd(work / f"base{r}"), base_env, kind="base_json"))
            runs["ours_json"].append(timed(json_cmd(lake), kind="ours_json"))
            runs["peer_json"].append(timed([str(PY), "-c", PEER_JSON, str(clean), str(work / f"peer{r}")], kind="peer_json"))
            if base_env:
                runs["base_text"].append(timed(text_cmd(work / f"base{r}"), base_env, kind="base_text"))
            runs["ours_text"].append(timed(text_cmd(lake), kind="ours_text"))
            runs["peer_text"].append(timed([str(PY), "-c", PEER_TEXT, str(tdir), str(work / f"peert{r}"), PATTERN], kind="peer_text"))
        rows, quarantined = count(work / "lake0", "bronze.events")
        per = args.lines // args.files * args.files
        if (rows, quarantined) != (per, args.files):
            raise SystemExit(f"ours loaded {rows} rows and quarantined {quarantined}; expected {per} and {args.files}")
        med = {k: statistics.median(v) for k, v in runs.items()}
        report = {
            "lines": per, "files": args.files, "json_mb": round(size_mb, 1), "rounds": args.rounds,
            "median_seconds": {k: round(v, 2) for k, v in med.items()}, "runs": runs,
            "json_speed_vs_peer": round(med["peer_json"] / med["ours_json"], 2),
            "text_speed_vs_peer": round(med["peer_text"] / med["ours_text"], 2),
            "json_paired": [round(p / o, 2) for p, o in zip(runs["peer_json"], runs["ours_json"])],
            "text_paired": [round(p / o, 2) for p, o in zip(runs["peer_text"], runs["ours_text"])],
        }
        report["cpu_seconds"] = {k: [round(x, 2) for x in v] for k, v in CPU.items()}
        for kind in ("json", "text"):  # CPU: the peer's over ours (1.0 = as cheap as the peer)
            report[f"{kind}_cpu_ratio"] = round(
                statistics.median(CPU[f"peer_{kind}"]) / statistics.median(CPU[f"ours_{kind}"]), 2
            )
        if base_env:
            for kind in ("json", "text"):
                paired = [p / b for p, b in zip(runs[f"peer_{kind}"], runs[f"base_{kind}"])]
                report[f"baseline_{kind}_paired"] = [round(x, 2) for x in paired]
                report[f"baseline_{kind}_speed_vs_peer"] = round(statistics.median(paired), 2)
                report[f"{kind}_speedup_vs_baseline"] = round(
                    statistics.median(b / o for b, o in zip(runs[f"base_{kind}"], runs[f"ours_{kind}"])), 2
                )
        print(f"ingest logs, {per:,} lines in {args.files} files ({size_mb:.0f} MB of JSON lines)")
        for k, v in med.items():
            print(f"  {k:10s} {v:7.2f} s  ({per / v:,.0f} lines/s)")
        print(f"  JSON lines: {report['json_speed_vs_peer']}x the peer's speed (target >= 0.5); "
              f"text: {report['text_speed_vs_peer']}x; quarantined {quarantined}, loaded {rows}")
        print(f"  paired rounds (peer/ours): JSON {report['json_paired']}, text {report['text_paired']}")
        print(f"  CPU seconds (median): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in CPU.items())
              + f"; peer/ours JSON {report['json_cpu_ratio']}, text {report['text_cpu_ratio']}")
        if base_env:
            print(f"  baseline {args.baseline}: paired peer/baseline JSON {report['baseline_json_paired']}, "
                  f"text {report['baseline_text_paired']}; ours vs baseline (median of paired speed-ups): "
                  f"JSON {report['json_speedup_vs_baseline']}x, text {report['text_speedup_vs_baseline']}x")
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        (out_dir / "logs.json").write_text(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
