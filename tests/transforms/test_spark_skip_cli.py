"""`ingest transform` skips an up-to-date Spark model without starting a JVM, and runs it again
after a real edit of its source file or of its parameters.

Each run is a fresh `ingest` process importing a copy of the project (so the test edits the
copy, never the checkout); its JAVA_HOME is a wrapper that records every JVM it launches.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from spark_images import jpeg_bytes, near_copy, png_bytes, scene

from ingest.delta import write_batch
from ingest.lake import Lake
from transforms.spark import run_spark_models

pytestmark = [pytest.mark.integration, pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[2]
INGEST = str(Path(sys.executable).parent / "ingest")


def _images(lake: Lake, pictures: list[tuple[bytes, str, int, int]] | None = None, *, run: str = "run-1") -> None:
    """bronze.images: by default a picture, its re-uploaded near copy and an unrelated one."""
    from datetime import datetime, timezone
    from hashlib import sha256

    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    pictures = pictures or [(png_bytes(scene("sunset")), "png", 320, 240), (near_copy(scene("sunset")), "jpeg", 160, 120),
                            (jpeg_bytes(scene("sea"), quality=90), "jpeg", 320, 240)]
    write_batch(lake, "bronze.images", pa.Table.from_pylist([
        {"source_uri": f"file:///src/{run}-{i}.{fmt}", "sha256": sha256(data).hexdigest(), "size_bytes": len(data),
         "format": fmt, "width": w, "height": h, "source_mtime": t0, "ingest_run_id": run, "ingested_at": t0,
         "content": data}
        for i, (data, fmt, w, h) in enumerate(pictures)
    ]))


def _java_recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A JAVA_HOME whose bin/java appends a line to a file, then runs the real java."""
    real = shutil.which("java")
    if real is None:
        pytest.skip("java not installed")
    home, record = tmp_path / "java-home", tmp_path / "java-launches"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f'#!/bin/sh\necho "$$" >> "{record}"\nexec "{os.path.realpath(real)}" "$@"\n')
    java.chmod(java.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return home, record


def _copy_project(dest: Path) -> Path:
    """The importable project (ingest, transforms, dbt_project) under ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "target", "logs", "dbt_packages", ".user.yml")
    for name in ("ingest", "transforms", "dbt_project"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def transform_cli(tmp_path: Path):
    """Runs `ingest --json transform --select dedup_images` on the copy; returns (dedup row, JVMs started)."""
    src = _copy_project(tmp_path / "src")
    java_home, record = _java_recorder(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAKEHOUSE_", "PREFECT_", "SPARK_"))}
    env.update(PYTHONPATH=str(src), JAVA_HOME=str(java_home), LAKEHOUSE_CONFIG=os.devnull,
               LAKEHOUSE_LOG_DIR=str(tmp_path / "logs"), SPARK_LOCAL_IP="127.0.0.1")
    env.pop("PYTHONSAFEPATH", None)

    def run(lake: Lake) -> tuple[dict, int]:
        record.unlink(missing_ok=True)
        proc = subprocess.run([INGEST, "--lake", lake.uri, "--json", "transform", "--select", "dedup_images"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (row,) = [m for m in json.loads(proc.stdout)["models"] if m["name"] == "dedup_images"]
        launches = len(record.read_text().split()) if record.exists() else 0
        return row, launches

    run.src = src  # type: ignore[attr-defined]
    return run


def test_transform_skips_without_a_jvm_and_reruns_after_a_real_edit(spark, local_lake: Lake, transform_cli) -> None:
    lake = local_lake
    _images(lake)
    model = transform_cli.src / "transforms" / "spark" / "dedup_images.py"
    # the subprocess imports the copy, not this checkout
    probe = subprocess.run([sys.executable, "-c", "import transforms; print(transforms.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(transform_cli.src)}, cwd=transform_cli.src.parent,
                           capture_output=True, text=True)
    assert probe.stdout.strip() == str(transform_cli.src / "transforms" / "__init__.py"), probe

    # built here (this JVM) from the same bytes as the copy: the fresh process has nothing to do
    (first,) = run_spark_models(spark, lake, select="dedup_images")
    assert (first["status"], first["version"]) == ("success", 0)
    row, jvms = transform_cli(lake)
    assert (row["status"], row["version"], jvms) == ("skipped", 0, 0), (row, jvms)

    # a real edit of the model's code (its parameters unchanged): runs again, in a JVM
    _edit(model, "def dedup_images(", "# edited by the test: the code changed, so the output may have\ndef dedup_images(")
    row, jvms = transform_cli(lake)
    assert (row["status"], row["version"]) == ("success", 1), row
    assert jvms >= 1  # the recorder sees a JVM when one starts
    row, jvms = transform_cli(lake)
    assert (row["status"], row["version"], jvms) == ("skipped", 1, 0), (row, jvms)

    # a real edit of a parameter: runs again, with it (threshold 0 keeps the near copy apart)
    _edit(model, "DEFAULT_THRESHOLD = ", "DEFAULT_THRESHOLD = 0  # was ")
    row, jvms = transform_cli(lake)
    assert (row["status"], row["version"]) == ("success", 2) and jvms >= 1, (row, jvms)
    canonical = lake.delta_table("silver.image_duplicates").to_pyarrow_table().column("is_canonical").to_pylist()
    assert canonical == [True, True, True]


def test_a_small_increment_runs_on_the_driver_without_a_jvm(spark, local_lake: Lake, transform_cli) -> None:
    """New images after a build: the `ingest` process merges them on the driver, and no JVM starts."""
    lake = local_lake
    _images(lake)
    (first,) = run_spark_models(spark, lake, select="dedup_images")  # the same code as the copy's
    assert first["mode"] == "overwrite"
    bigger = png_bytes(scene("sunset").resize((640, 480)))  # joins the sunset group as its canonical
    _images(lake, [(bigger, "png", 640, 480), (jpeg_bytes(scene("sea"), quality=60), "jpeg", 320, 240)], run="run-2")
    row, jvms = transform_cli(lake)
    assert (row["status"], row["mode"], row["rows"], jvms) == ("success", "merge", 5, 0), (row, jvms)
    assert row["message"].startswith("incremental on the driver"), row
    from hashlib import sha256

    canonicals = set(lake.delta_table("silver.image_duplicates").to_pyarrow_table().column("canonical_sha256").to_pylist())
    assert len(canonicals) == 2 and sha256(bigger).hexdigest() in canonicals  # sunset's group and sea's
