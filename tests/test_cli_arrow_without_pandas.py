"""``ingest logs`` and ``ingest images`` run without importing pandas (pyarrow would import it, ~0.3 s of CPU, only to
ask whether a value is a pandas object), and pyarrow still gives pandas to what asks for it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from ingest.lake import Lake
from tests.sources.conftest import read

# Records any import of pandas in the process (the CLI ends without running atexit hooks).
_WATCH = """
import sys
marker = sys.argv.pop(1)
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas":
            open(marker, "a").write("imported")
        return None
sys.meta_path.insert(0, Watch())
sys.argv[0] = "ingest"
from ingest.cli import main
main()
"""


def _run_watched(tmp_path: Path, *args: str) -> tuple[Lake, Path]:
    marker = tmp_path / "pandas-imported"
    proc = subprocess.run(
        [sys.executable, "-c", _WATCH, str(marker), "--lake", str(tmp_path / "lake"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return Lake(str(tmp_path / "lake"), s3=None), marker


def test_ingest_logs_process_never_imports_pandas(tmp_path: Path) -> None:
    src = tmp_path / "logs"
    src.mkdir()
    (src / "app.log").write_text('{"ts": "2026-11-01T10:00:00Z", "n": 1, "f": 0.5}\n{bad\n{"n": 2}\n')
    lake, marker = _run_watched(tmp_path, "logs", str(src), "--table", "bronze.ev")
    assert sorted(r["n"] for r in read(lake, "bronze.ev")) == [1, 2]
    assert len(read(lake, "bronze.ev_quarantine")) == 1
    assert not marker.exists(), "pandas was imported by `ingest logs`"


def test_ingest_images_process_never_imports_pandas(tmp_path: Path) -> None:
    src = tmp_path / "images"
    src.mkdir()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(src / "a.png")
    Image.new("L", (5, 5), 7).save(src / "b.jpg")
    (src / "c.png").write_bytes((src / "a.png").read_bytes()[:20])  # truncated: quarantined
    lake, marker = _run_watched(tmp_path, "images", str(src), "--table", "bronze.img")
    assert sorted((r["width"], r["height"]) for r in read(lake, "bronze.img")) == [(5, 5), (8, 6)]
    assert len(read(lake, "bronze.img_quarantine")) == 1
    assert not marker.exists(), "pandas was imported by `ingest images`"


_AFTER = """
import json, sys
import pyarrow as pa
from ingest.cli.common import arrow_without_pandas
arrow_without_pandas()
out = {"before": "pandas" in sys.modules, "scalar": pa.scalar(1.5).as_py()}
df = pa.table({"a": [1, None]}).to_pandas()  # pyarrow imports pandas when asked for it
import pandas as pd
out["frame"] = df["a"].isna().tolist()
arr = pa.array(pd.Series([1, None], dtype="Int64"))  # a pandas object is known as one again
out["series"] = [str(arr.type), arr.to_pylist()]
ts = pa.array([1_000_000_001], pa.timestamp("ns"))[0].as_py()
out["ns"] = type(ts).__name__
print(json.dumps(out))
"""


def test_pyarrow_still_imports_pandas_for_what_needs_it() -> None:
    proc = subprocess.run([sys.executable, "-c", _AFTER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"before": False, "scalar": 1.5, "frame": [False, True], "series": ["int64", [1, None]], "ns": "Timestamp"}
