"""The ingest-tables flow, run in this process, logs neither the database password nor the S3
secret key: every record Prefect and the libraries log (caplog at DEBUG), a failing run's
traceback included. (tests/test_secret_hygiene.py checks a real process and its log file.)"""

from __future__ import annotations

import logging

import pytest

from ingest.lake import Lake
from tests.test_secret_hygiene import _assert_absent, _secrets, _seed

pytestmark = [pytest.mark.integration, pytest.mark.prefect, pytest.mark.s3, pytest.mark.postgres]


def test_a_flow_run_logs_no_secret(prefect_harness, s3_server, s3_lake: Lake, postgres_url: str, caplog,
                                   monkeypatch) -> None:
    from flows.params import TablesParams
    from flows.sources import ingest_tables_flow
    from ingest.errors import SourceError

    _seed(postgres_url, "hygiene_f")
    secrets = _secrets(s3_server, postgres_url)
    monkeypatch.setenv("HYGIENE_DB_URL", postgres_url)
    monkeypatch.setenv("HYGIENE_BAD_DB_URL", postgres_url.rsplit("/", 1)[0] + "/no_such_db")
    caplog.set_level(logging.DEBUG)
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):  # Prefect's loggers do not propagate
        logging.getLogger(name).addHandler(caplog.handler)
    try:
        ok = TablesParams.model_validate({"lake": s3_lake.uri, "url_env": "HYGIENE_DB_URL", "source_table": "hygiene_f",
                                          "table": "bronze.hygiene_f", "primary_key": ["id"]})
        assert ingest_tables_flow(ok)["rows_written"] == 20
        bad = TablesParams.model_validate({"lake": s3_lake.uri, "url_env": "HYGIENE_BAD_DB_URL", "source_table": "x",
                                           "table": "bronze.hygiene_g"})
        with pytest.raises(SourceError) as info:
            ingest_tables_flow(bad)
    finally:
        for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
            logging.getLogger(name).removeHandler(caplog.handler)
    assert "no_such_db" in str(info.value)
    assert "no_such_db" in caplog.text, "the failure was not logged: the check would be empty"
    _assert_absent(secrets, "the Python log", caplog.text)
    _assert_absent(secrets, "the error", str(info.value))
