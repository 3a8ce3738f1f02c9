"""A small real lake for the picture tests, and headless Chromium to look at what they draw.

The lake is built once per test session the way `ingest run` builds one (bundled sample
sources, two log loads, dbt without Spark, a snapshot, a shard set): a few seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BIN = Path(sys.executable).parent
_BUILT: dict[str, Path] = {}


def ingest(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The `ingest` console script, as a user runs it."""
    return subprocess.run([str(BIN / "ingest"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def small_lake(root: Path) -> Path:
    """The session's lake under ``root`` (built on first use): bronze, silver, gold, a snapshot, shards."""
    if "lake" in _BUILT:
        return _BUILT["lake"]
    from ingest.lake import Lake
    from ingest.pipeline import (
        default_sources,
        ingest_source,
        shards_stage,
        snapshot_stage,
    )
    from ingest.sample import generate_sample
    from ingest.settings import Settings
    from transforms.dbt_runner import run_transform

    sample = root / "sample"
    lake_dir = root / "lake"
    settings = Settings(lake=str(lake_dir), sample_dir=str(sample))
    lake = Lake.from_settings(settings)
    generate_sample(sample, photos=16, users=6, days=2)  # smaller than the default sample
    sources = default_sources(settings)
    for src in sources:
        ingest_source(lake, src)
    # a second day of logs: a second run with rows, so the charts have a series over time
    logs = sample / "logs"
    first = sorted(p for p in logs.iterdir() if p.suffix == ".jsonl")[0]
    lines = first.read_text().splitlines()
    extra = []
    for line in lines[: len(lines) // 2]:
        try:
            extra.append(json.loads(line))
        except ValueError:  # the sample's malformed line
            continue
    for i, e in enumerate(extra):
        e["event_id"] = f"day2-{i}"
    (logs / "day2.jsonl").write_text("".join(json.dumps(e) + "\n" for e in extra))
    ingest_source(lake, next(s for s in sources if s.table == "bronze.events"))
    run_transform(settings, include_spark=False)
    snap = snapshot_stage(settings)
    shards_stage(settings, snap["name"])
    _BUILT["lake"] = lake_dir
    return lake_dir


@pytest.fixture(scope="module", name="lake_dir")
def lake_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's small lake (see ``small_lake``); import it into a test module to use it."""
    return small_lake(tmp_path_factory.getbasetemp() / "pictures")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium is not installed: run `make test-deps`")
    return exe


def _chromium_args(tmp: Path) -> list[str]:
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=15000"]


def _url(page: Path, fragment: str) -> str:
    return page.as_uri() + (f"#{fragment}" if fragment else "")


def screenshot(page: Path, png: Path, *, size: str = "1280,2000", fragment: str = "") -> Image.Image:
    """Render ``page`` (at ``#fragment``) from file:// and return the screenshot."""
    r = subprocess.run([*_chromium_args(png.parent), f"--screenshot={png}", f"--window-size={size}", _url(page, fragment)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and png.is_file(), r.stderr[-2000:]
    return Image.open(png).convert("RGB")


def rendered_dom(page: Path, tmp: Path, *, fragment: str = "") -> str:
    """The DOM after the page's scripts ran (``--dump-dom``)."""
    r = subprocess.run([*_chromium_args(tmp), "--dump-dom", _url(page, fragment)], capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def ink(img: Image.Image) -> tuple[float, int]:
    """(fraction of pixels that are not near-white, number of distinct colours)."""
    px = np.asarray(img, dtype=np.int32)
    dark = float((px.min(axis=2) < 235).mean())
    packed = (px[..., 0] << 16) | (px[..., 1] << 8) | px[..., 2]
    return dark, len(np.unique(packed))


def colour_near(img: Image.Image, rgb: tuple[int, int, int], *, tol: int = 12) -> int:
    """Pixels within ``tol`` of ``rgb`` per channel (a chart's series or status colour)."""
    px = np.asarray(img, dtype=np.int32)
    return int((np.abs(px - np.array(rgb)) <= tol).all(axis=2).sum())
