"""The Spark session builder: a start after the first uses the jars Ivy resolved then."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from transforms.spark.session import record_resolved_jars, resolved_jars

ROOT = Path(__file__).resolve().parents[2]


def test_recorded_jars_are_used_only_while_every_one_is_cached(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LAKEHOUSE_IVY_DIR", str(tmp_path / "ivy"))
    (tmp_path / "ivy").mkdir()
    a, b = tmp_path / "a.jar", tmp_path / "b.jar"
    a.write_bytes(b"PK"), b.write_bytes(b"PK")
    packages = ["org.apache.hadoop:hadoop-aws:3.4.1"]
    assert resolved_jars(packages) is None  # never resolved: Ivy runs
    record_resolved_jars(packages, f"file://{a},file://{b}")
    assert resolved_jars(packages) == f"file://{a},file://{b}"
    assert resolved_jars([]) is None  # another package list is another resolution
    b.unlink()
    assert resolved_jars(packages) is None  # a jar gone from the cache: resolve again
    record_resolved_jars(["x:y:1"], f"file://{a},https://repo.example/c.jar")
    assert resolved_jars(["x:y:1"]) is None  # only local jar files are remembered


_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from ingest.lake import Lake
from transforms.spark.session import build_spark
spark = build_spark(Lake(sys.argv[1]))
conf = spark.sparkContext.getConf()
path = sys.argv[1] + "/t"
spark.range(3).write.format("delta").mode("append").save(path)
rows = spark.read.format("delta").load(path).count()
print("RESULT " + json.dumps({{"packages": conf.get("spark.jars.packages", ""), "jars": conf.get("spark.jars", ""), "rows": rows}}))
"""


@pytest.mark.spark
@pytest.mark.integration
def test_a_second_start_loads_the_resolved_jars_without_ivy_and_delta_works(tmp_path: Path) -> None:
    def start() -> dict:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD.format(root=str(ROOT)), str(tmp_path / "lake")],
            capture_output=True, text=True, timeout=300, check=False,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, proc.stderr[-3000:]
        return json.loads(lines[-1][7:])

    first, second = start(), start()
    assert second["packages"] == ""  # no Ivy resolution on the second start
    delta = [j for j in second["jars"].split(",") if "delta-spark" in j]
    assert delta and all(j in first["jars"] for j in second["jars"].split(","))
    assert (first["rows"], second["rows"]) == (3, 6)  # Delta's classes were there both times
