"""Every bronze/silver/gold table the sample pipeline builds answers a text equality filter
through `ingest sql`, after a first run and after an incremental one that merges (issue #13)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.lake import Lake

pytestmark = [pytest.mark.integration, pytest.mark.spark]

BIN = Path(sys.executable).parent


def _ingest(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ingest"), "--lake", "./l", "--json", *args], cwd=cwd, capture_output=True, text=True,
        timeout=1200, env={**os.environ, **env},
    )


def _check_text_filters(tmp_path: Path, env: dict[str, str]) -> set[str]:
    lake = Lake(str(tmp_path / "l"))
    r = _ingest(tmp_path, "ls", env=env)
    assert r.returncode == 0, r.stderr
    checked = set()
    for name in sorted(t["table"] for t in json.loads(r.stdout)):
        if name.startswith("_meta."):
            continue
        data = lake.delta_table(name).to_pyarrow_table()
        text = [f.name for f in data.schema if pa.types.is_string(f.type)]
        branches, expected = [], {}
        for col in text:
            values = [v for v in data[col].to_pylist() if v is not None]
            if not values:
                continue
            value = values[0]
            expected[col] = values.count(value)
            lit = value.replace("'", "''")
            branches.append(f"select '{col}' as col, count(*) as n from {name} where \"{col}\" = '{lit}'")
        if not branches:
            continue
        r = _ingest(tmp_path, "sql", " union all ".join(branches), env=env)
        assert r.returncode == 0, f"{name}: {r.stderr}"
        assert {row["col"]: row["n"] for row in json.loads(r.stdout)} == expected, name
        checked.add(name)
    return checked


def test_text_filters_on_every_sample_table(tmp_path: Path) -> None:
    env = {"LAKEHOUSE_SAMPLE_DIR": str(tmp_path / "sample")}
    r = _ingest(tmp_path, "run", "--orchestrator", "local", "--no-sync", env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    first = _check_text_filters(tmp_path, env)
    assert {"bronze.images", "bronze.events", "bronze.photos", "silver.photos", "gold.photo_features"} <= first

    # photos change in the source: the next run merges them into bronze and silver
    con = sqlite3.connect(tmp_path / "sample" / "photos.db")
    con.execute("update photos set place = 'Oslo', updated_at = '2027-01-01T00:00:00Z' where photo_id <= 5")
    con.commit()
    con.close()
    r = _ingest(tmp_path, "run", "--orchestrator", "local", "--no-sync", env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    assert _check_text_filters(tmp_path, env) == first
