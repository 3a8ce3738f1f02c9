"""Retry policy: transient errors are retried with backoff, data errors are not.

The flow tests ingest from a real PostgreSQL, or into a real S3 lake (SeaweedFS), of their own:
down when the task starts, started again during the retry backoff.
"""

import asyncio
import logging
import threading

import pytest
from prefect import flow

from flows import tasks
from ingest.errors import IngestError, TransientError, is_transient
from ingest.lake import Lake
from ingest.settings import ImageSource, Settings, TableSource


def test_is_transient_classifies_errors():
    assert is_transient(ConnectionError("reset"))
    assert is_transient(TransientError("endpoint down"))
    assert not is_transient(IngestError("bad column type"))
    assert not is_transient(ValueError("bad value"))
    # a transform that lost a commit race is retried (it recomputes from the winner's commit);
    # one whose models or tests failed is not
    from transforms.dbt_runner import TransformFailed, TransformResult

    lost = TransformFailed("dbt failed: another transform wrote...", TransformResult(ok=False), transient=True)
    assert is_transient(lost) and lost.exit_code == 4
    failed = TransformFailed("dbt tests failed: unique_x", TransformResult(ok=False))
    assert not is_transient(failed) and failed.exit_code == 2


def _run(task, *args):
    @flow
    def one():
        # wrapped so a failed task state does not fail the test flow itself
        return {"state": task(*args, return_state=True)}

    return one()["state"]


def _task_run(state):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_task_run(state.state_details.task_run_id)

    return asyncio.run(read())


class _FirstRetry(logging.Handler):
    """Set when the task engine schedules the first retry (the server may come up only then)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.scheduled = threading.Event()  # also set by the test to release its waiters
        self.seen = False  # set only when the engine really scheduled the retry

    def emit(self, record: logging.LogRecord) -> None:
        if "Retry 1/" in record.getMessage():
            self.seen = True
            self.scheduled.set()


def _run_across_outage(start_server, settings, source, *, delays):
    """Run the ingest task while its server is down; ``start_server`` is called once the engine
    has scheduled the first retry (not before). Returns the task's final state, or fails the test
    when no retry was scheduled."""
    first_retry = _FirstRetry()
    engine_log = logging.getLogger("prefect.task_runs")
    engine_log.addHandler(first_retry)
    started = threading.Event()

    def bring_server_back() -> None:
        if first_retry.scheduled.wait(timeout=240) and first_retry.seen:
            start_server()
            started.set()

    restarter = threading.Thread(target=bring_server_back, daemon=True)
    restarter.start()
    try:
        state = _run(tasks.ingest_source_task.with_options(retry_delay_seconds=delays), settings, source)
    finally:
        engine_log.removeHandler(first_retry)
        first_retry.scheduled.set()  # release the thread whatever happened
        restarter.join(timeout=120)
    assert started.is_set(), "no retry was scheduled after the connection failure"
    return state


@pytest.fixture
def photos_db(restartable_postgres):
    """public.photos (3 rows) in the test's own PostgreSQL, which is then stopped."""
    import psycopg

    pg = restartable_postgres
    with psycopg.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password, dbname=pg.dbname,
                         autocommit=True) as con:
        con.execute("create table photos (photo_id bigint primary key, title text)")
        con.execute("insert into photos values (1, 'a'), (2, 'b'), (3, 'c')")
    pg.stop()
    return pg


@pytest.mark.integration
@pytest.mark.prefect
@pytest.mark.postgres
def test_database_outage_is_retried_until_the_server_is_back(prefect_harness, photos_db, tmp_path):
    settings = Settings(lake=str(tmp_path / "lake"))
    source = TableSource(url=photos_db.url, source_table="public.photos", table="bronze.photos", primary_key=["photo_id"])
    # the first attempt fails (server down); the server starts during the 8 s backoff
    state = _run_across_outage(photos_db.start, settings, source, delays=8)
    assert state.is_completed(), state
    assert state.result()["table"] == "bronze.photos"
    run = _task_run(state)
    assert run.run_count >= 2, run.run_count  # failed while the server was down, then loaded
    rows = Lake(settings.lake).delta_table("bronze.photos").to_pyarrow_table().sort_by("photo_id")
    assert rows.select(["photo_id", "title"]).to_pylist() == [
        {"photo_id": 1, "title": "a"}, {"photo_id": 2, "title": "b"}, {"photo_id": 3, "title": "c"}
    ]


@pytest.fixture
def lake_s3_down(restartable_s3):
    """A bucket on the test's own SeaweedFS, which is then stopped: the lake's storage is down."""
    bucket = restartable_s3.server.make_bucket()
    restartable_s3.stop()
    return restartable_s3, f"s3://{bucket}/lake"


def _pngs(d, n: int) -> None:
    import io

    from PIL import Image

    d.mkdir()
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (i, 2 * i, 3 * i)).save(buf, format="PNG")
        (d / f"img_{i}.png").write_bytes(buf.getvalue())


@pytest.mark.integration
@pytest.mark.prefect
@pytest.mark.s3
def test_lake_storage_outage_is_retried_until_s3_is_back(prefect_harness, lake_s3_down, tmp_path):
    """The lake's S3 endpoint is down when the task starts (object_store: connection refused):
    a TransientError, retried; SeaweedFS is started again during the backoff and the retry loads."""
    weed, lake_uri = lake_s3_down
    _pngs(tmp_path / "images", 3)
    settings = Settings(lake=lake_uri, s3=weed.server.s3_settings())
    source = ImageSource(path=str(tmp_path / "images"), table="bronze.images")
    # backoffs long enough for SeaweedFS to start again on a loaded machine
    state = _run_across_outage(weed.start, settings, source, delays=[10, 30, 60])
    assert state.is_completed(), state
    assert state.result()["rows_written"] == 3
    assert _task_run(state).run_count >= 2  # failed while S3 was down, then loaded
    rows = Lake.from_settings(settings).delta_table("bronze.images").to_pyarrow_table(columns=["source_uri"])
    assert sorted(u.rsplit("/", 1)[-1] for u in rows["source_uri"].to_pylist()) == ["img_0.png", "img_1.png", "img_2.png"]


@pytest.mark.integration
@pytest.mark.prefect
@pytest.mark.postgres
def test_data_error_is_not_retried(prefect_harness, photos_db, tmp_path):
    photos_db.start()
    settings = Settings(lake=str(tmp_path / "lake"))
    # the server answers; the data has no such key column: the same every time, so one attempt
    source = TableSource(url=photos_db.url, source_table="public.photos", table="bronze.photos", primary_key=["nope"])
    state = _run(tasks.ingest_source_task.with_options(retry_delay_seconds=0), settings, source)
    assert state.is_failed()
    with pytest.raises(IngestError, match="nope") as err:
        state.result()
    assert not is_transient(err.value)
    assert _task_run(state).run_count == 1  # one attempt only


@pytest.mark.integration
@pytest.mark.prefect
def test_task_run_named_after_source(prefect_harness, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    settings = Settings(lake=str(tmp_path / "lake"))
    state = _run(tasks.ingest_source_task, settings, ImageSource(path=str(images), table="bronze.images"))
    assert _task_run(state).name == "ingest-images-bronze.images"
