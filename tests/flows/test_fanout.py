"""A partitioned ingest on a real local Dask cluster (2 worker processes) through the flow, as a
deployment runs it, against a real Prefect server: every source image stored exactly once, the
same rows as one single-process ingest, a re-run that loads nothing, and the run's artifacts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prefect_procs import BIN, ROOT, PrefectServer, free_port, start, stop

from ingest.lake import Lake
from ingest.sources.images import ingest_images
from tests.sources.conftest import read, sorted_rows
from tests.sources.test_images import _write_images

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

SECRET = "fanout-sentinel-secret-4f1c"  # an S3 secret in the flow's environment: never in an artifact

_RUN_FLOW = """
import json, os, sys
from flows.params import ImagesParams
from flows.sources import ingest_images_flow
state = ingest_images_flow(ImagesParams.model_validate(json.loads(sys.argv[1])), return_state=True)
ok = state.is_completed()
out = {"id": str(state.state_details.flow_run_id), "ok": ok, "pid": os.getpid(),
       "result": state.result() if ok else str(state.message)}
print("RESULT " + json.dumps(out), flush=True)
os._exit(0 if ok else 1)  # no native teardown (deltalake's runtime), as the CLI does
"""


def _flow(server: PrefectServer, params: dict, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_FLOW, json.dumps(params)], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**server.env, **env}, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"flow failed ({proc.returncode}): {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@contextlib.contextmanager
def _dask_cluster(server: PrefectServer, env: dict[str, str], tmp: Path) -> Iterator[str]:
    """A scheduler and 2 worker processes, with the environment a deployment's workers would have."""
    address = f"tcp://127.0.0.1:{free_port()}"
    full = {**server.env, **env}
    procs = [start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                    "--no-dashboard"], env=full, log=tmp / "scheduler.log")]
    try:
        procs.append(start([str(BIN / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
                            "--preload", "flows.worker", "--no-dashboard"], env=full, log=tmp / "workers.log"))
        from distributed import Client

        with Client(address, timeout=120) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for p in reversed(procs):
            stop(p)


@pytest.fixture(scope="module")
def fanned(prefect_server: PrefectServer, tmp_path_factory):
    """200 images (20 of them copies, in a sub-folder) and 12 corrupt files, loaded in 2 file groups
    on a local 2-process Dask cluster in small batches (many commits that race), then loaded again
in 3 groups on a scheduler and 2 workers started with the `dask` CLI."""
    tmp = tmp_path_factory.mktemp("fanout")
    src = tmp / "src"
    _write_images(src, 180)
    _write_images(src / "more", 20, start=180)
    (src / "copies").mkdir()
    for i in range(0, 200, 10):
        shutil.copy(next(src.rglob(f"img_{i:05d}.png")), src / "copies" / f"copy_{i:05d}.png")
    for i in range(12):
        (src / f"bad_{i:02d}.png").write_bytes(b"not a png %d" % i)
    lake = Lake(str(tmp / "lake"))
    env = {"INGEST_IMAGE_BATCH_FILES": "16", "INGEST_IMAGE_WORKERS": "2", "LAKEHOUSE_CONFIG": os.devnull,
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": "fanout-key"}
    params = {"lake": lake.uri, "src": str(src), "partitions": 2, "task_runner": "dask", "dask_workers": 2}
    first = _flow(prefect_server, params, env)
    # again, split another way, on a cluster started as README shows (`dask scheduler`, `dask worker`)
    with _dask_cluster(prefect_server, env, tmp) as address:
        again = _flow(prefect_server, {"lake": lake.uri, "src": str(src), "partitions": 3, "task_runner": "dask",
                                       "dask_address": address}, env)
    single = Lake(str(tmp / "single"))
    ingest_images(single, str(src))
    return {"lake": lake, "single": single, "first": first, "again": again, "server": prefect_server}


def test_every_image_once_and_the_same_rows_as_one_process(fanned) -> None:
    lake, single, res = fanned["lake"], fanned["single"], fanned["first"]["result"]
    shas = [r["sha256"] for r in read(lake, "bronze.images", ["sha256"])]
    assert len(shas) == len(set(shas)) == 200  # the 20 copies stored once, wherever they were
    cols = ["sha256", "size_bytes", "format", "width", "height", "content"]
    assert sorted_rows(lake, "bronze.images", cols) == sorted_rows(single, "bronze.images", cols)
    bad = ["source_ref", "reason", "raw"]
    assert sorted_rows(lake, "bronze.images_quarantine", bad) == sorted_rows(single, "bronze.images_quarantine", bad)
    assert len(read(lake, "bronze.images_quarantine", ["source"])) == 12
    assert (res["partitions"], res["rows_written"], res["rows_quarantined"]) == (2, 200, 12)
    assert res["skipped"] == 20  # the copies (as in one process)
    # both groups ran at once, each in a Dask worker process of its own (not the flow's)
    runs = [r for r in read(lake, "_meta.runs") if r["run_id"] in res["run_ids"]]
    (a0, a1), (b0, b1) = [(r["started_at"], r["started_at"] + timedelta(seconds=r["duration_s"])) for r in runs]
    assert a0 < b1 and b0 < a1, f"the groups ran one after another: {runs}"
    pids = {int(w.rsplit(":", 1)[1]) for w in res["workers"]}
    assert len(pids) == 2 and fanned["first"]["pid"] not in pids, res["workers"]


def test_a_rerun_loads_nothing(fanned) -> None:
    first, again = fanned["first"]["result"], fanned["again"]["result"]
    assert again["partitions"] == 3
    assert (again["rows_written"], again["rows_quarantined"]) == (0, 0)
    assert again["skipped"] == 232  # every file: unchanged, or re-read and found stored (copies, corrupt ones)
    assert again["version"] == first["version"]


def _artifacts(server: PrefectServer, flow_run_id: str) -> dict[str, dict]:
    found = server.request("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    return {a["key"]: a for a in found}


def test_the_run_publishes_rows_and_health_artifacts(fanned) -> None:
    server = fanned["server"]
    arts = _artifacts(server, fanned["first"]["id"])
    assert set(arts) == {"ingest-bronze-images", "health-bronze-images"}, arts.keys()
    rows = json.loads(arts["ingest-bronze-images"]["data"])
    assert rows == [{"table": "bronze.images", "version": fanned["first"]["result"]["version"],
                     "rows_written": 200, "rows_quarantined": 12, "skipped": 20, "partitions": 2}]
    checks = {(c["table"], c["check"]): c for c in json.loads(arts["health-bronze-images"]["data"])}
    assert checks[("bronze.images", "freshness")]["status"] == "ok"
    assert "12 rows in bronze.images_quarantine" in checks[("bronze.images", "quarantine")]["detail"]
    again = json.loads(_artifacts(server, fanned["again"]["id"])["ingest-bronze-images"]["data"])
    assert (again[0]["rows_written"], again[0]["skipped"], again[0]["partitions"]) == (0, 232, 3)
    for run in ("first", "again"):
        for a in _artifacts(server, fanned[run]["id"]).values():
            assert SECRET not in json.dumps(a) and "fanout-key" not in json.dumps(a)


_RUN_PIPELINE_ARTIFACTS = """
import json, os, sys
from datetime import datetime, timezone
from prefect import flow
from flows.artifacts import publish_pipeline, report_links
from ingest.pipeline import PipelineSummary
from ingest.settings import load_settings
args = json.loads(sys.argv[1])

@flow(name="pipeline-artifacts-check")
def publish():
    summary = PipelineSummary(lake=args["lake"], started_at=datetime.now(timezone.utc), ingested=[args["result"]],
                              snapshot="photo_popularity-20261201T000000Z", snapshot_tables={"bronze.images": 3},
                              shard_set=args["lake"] + "/_shards/photo_popularity/photo_popularity-20261201T000000Z",
                              shards=2)
    publish_pipeline(load_settings(lake=args["lake"]), summary, report_links(health_report=args["html"]))

state = publish(return_state=True)
print("RESULT " + json.dumps({"id": str(state.state_details.flow_run_id), "ok": state.is_completed()}), flush=True)
os._exit(0 if state.is_completed() else 1)
"""


def test_a_pipeline_run_publishes_what_it_produced_with_report_links(fanned, tmp_path) -> None:
    """The pipeline flow's publishing step, in a flow of its own (the whole pipeline needs Spark):
    rows and health of the ingested tables, then snapshot, shard set and the report link."""
    server, lake = fanned["server"], fanned["lake"]
    html = tmp_path / "health.html"
    html.write_text("<html>health</html>")
    args = {"lake": lake.uri, "result": fanned["first"]["result"], "html": str(html)}
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_PIPELINE_ARTIFACTS, json.dumps(args)], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env={**server.env, "LAKEHOUSE_CONFIG": os.devnull, "AWS_SECRET_ACCESS_KEY": SECRET}, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    arts = _artifacts(server, json.loads(lines[-1][7:])["id"])
    assert set(arts) == {"pipeline-ingest-photo-popularity", "pipeline-health-photo-popularity",
                         "pipeline-produced-photo-popularity"}, arts.keys()
    assert json.loads(arts["pipeline-ingest-photo-popularity"]["data"])[0]["rows_written"] == 200
    md = arts["pipeline-produced-photo-popularity"]["data"]
    assert "**Snapshot** `photo_popularity-20261201T000000Z`" in md and "| bronze.images | 3 |" in md
    assert "(2 shards)" in md and f"[health report]({html.resolve().as_uri()})" in md
    assert arts["pipeline-produced-photo-popularity"]["type"] == "markdown"
    assert all(SECRET not in json.dumps(a) for a in arts.values())


def test_local_cluster_workers_import_the_ingesters_before_the_first_task() -> None:
    """A worker's first partition does not pay the ingesters' imports (Dask's preload)."""
    import sys

    from flows.params import FanoutParams
    from flows.tasks import task_runner_for

    runner = task_runner_for(FanoutParams(task_runner="dask", dask_workers=1, partitions=2))
    with runner:
        loaded = runner.client.run(lambda: [m in sys.modules for m in ("ingest.sources.images", "deltalake")])
    assert list(loaded.values()) == [[True, True]]


def test_a_worker_error_reaches_the_flow_as_itself(prefect_server: PrefectServer, tmp_path: Path) -> None:
    """An error raised in a Dask worker is pickled back to the flow: the flow fails with its own
    one-line message (one that could not be rebuilt there became a TypeError about ``__init__``)."""
    import pyarrow as pa

    from ingest.delta import write_batch

    src = tmp_path / "src"
    _write_images(src, 4)
    lake = Lake(str(tmp_path / "lake"))
    # a table whose width is a time: an image's int32 width cannot be stored in it
    write_batch(lake, "bronze.images", pa.table({"sha256": ["0" * 64], "width": pa.array([0], pa.timestamp("us", "UTC"))}))
    params = {"lake": lake.uri, "src": str(src), "partitions": 2, "task_runner": "dask", "dask_workers": 2}
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_FLOW, json.dumps(params)], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**prefect_server.env, "LAKEHOUSE_CONFIG": os.devnull}, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 1 and lines, f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    out = json.loads(lines[-1][len("RESULT "):])
    assert not out["ok"]
    assert "bronze.images: incompatible column types (width: timestamp[us, tz=UTC] -> int32)" in out["result"], out["result"]
    assert "__init__" not in out["result"]
