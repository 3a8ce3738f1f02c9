"""Retry policy: transient errors are retried with backoff, data errors are not."""

import pytest
from prefect import flow

from flows import tasks
from ingest.errors import IngestError, TransientError, is_transient
from ingest.settings import ImageSource, Settings

pytestmark = [pytest.mark.integration, pytest.mark.prefect]


def test_is_transient_classifies_errors():
    assert is_transient(ConnectionError("reset"))
    assert is_transient(TransientError("endpoint down"))
    assert not is_transient(IngestError("bad column type"))
    assert not is_transient(ValueError("bad value"))


def _run_once(monkeypatch, tmp_path, failures):
    calls = []

    def fake_ingest_source(lake, source, *, progress=False):
        calls.append(source.table)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return {"table": source.table, "version": 0, "rows_written": 1}

    monkeypatch.setattr("ingest.pipeline.ingest_source", fake_ingest_source)
    fast = tasks.ingest_source_task.with_options(retry_delay_seconds=0)
    settings = Settings(lake=str(tmp_path / "lake"))
    source = ImageSource(path=str(tmp_path), table="bronze.images")

    @flow
    def one():
        # wrapped so a failed task state does not fail the test flow itself
        return {"state": fast(settings, source, return_state=True)}

    return one()["state"], calls


def test_transient_failure_is_retried(prefect_harness, monkeypatch, tmp_path):
    state, calls = _run_once(monkeypatch, tmp_path, [ConnectionError("S3 connection reset")])
    assert state.is_completed()
    assert state.result()["table"] == "bronze.images"
    assert calls == ["bronze.images", "bronze.images"]


def test_data_error_is_not_retried(prefect_harness, monkeypatch, tmp_path):
    state, calls = _run_once(monkeypatch, tmp_path, [IngestError("bad data")] * 4)
    assert state.is_failed()
    assert calls == ["bronze.images"]  # one attempt only
    with pytest.raises(IngestError, match="bad data"):
        state.result()


def test_task_run_named_after_source(prefect_harness, monkeypatch, tmp_path):
    from prefect.client.orchestration import get_client

    state, _ = _run_once(monkeypatch, tmp_path, [])
    import asyncio

    async def name():
        async with get_client() as client:
            run = await client.read_task_run(state.state_details.task_run_id)
            return run.name

    assert asyncio.run(name()) == "ingest-images-bronze.images"
