"""The ingest-tables flow carries its cursor_lag parameter to the load (issue #13, item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.lake import Lake
from tests.sources.test_cursor_lag_config import commit_late_row, make_source

pytestmark = [pytest.mark.integration, pytest.mark.prefect]


def test_flow_parameter_cursor_lag_reaches_the_load(prefect_harness, tmp_path: Path) -> None:
    from flows.sources import ingest_tables_flow
    from flows.params import TablesParams

    url = make_source(tmp_path / "src.db")
    params = TablesParams.model_validate(
        {"lake": str(tmp_path / "lake"), "url": url, "source_table": "photos", "table": "bronze.photos",
         "cursor": "updated_at", "cursor_lag": 30}
    )
    assert ingest_tables_flow(params)["rows_written"] == 2
    commit_late_row(url)
    assert ingest_tables_flow(params)["rows_written"] == 1  # the late row, inside the 30 s lag
    lake = Lake(str(tmp_path / "lake"))
    ids = sorted(lake.delta_table("bronze.photos").to_pyarrow_table(columns=["photo_id"])["photo_id"].to_pylist())
    assert ids == [1, 2, 3]
