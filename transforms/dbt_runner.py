"""Run the dbt project (models and tests) and then the Spark models, and say what was written.

dbt runs in-process (``dbtRunner``) against an in-memory DuckDB; the lake plugin
(``transforms.dbt_plugin``) reads bronze Delta tables and stores the ``delta`` models in the
lake.  Its target/ and logs/ go to a temp dir so a read-only checkout works.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ingest.errors import IngestError, TransientError
from ingest.lake import Lake
from ingest.settings import Settings

PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
_DBT_LOCK = threading.Lock()


class ModelResult(BaseModel):
    name: str
    kind: Literal["dbt", "spark"]
    status: str
    rows: int | None = None  # rows in the table after the run
    rows_written: int | None = None  # rows this run wrote (merge: the upserted ones)
    table: str | None = None  # lake table (None for DuckDB-only views)
    version: int | None = None  # Delta version this run wrote
    mode: str | None = None  # overwrite | append | merge | view
    seconds: float | None = None
    message: str | None = None
    inputs: dict[str, int] = Field(default_factory=dict)  # lake tables read -> Delta version (lineage)


class TestSummary(BaseModel):
    passed: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    warned: list[str] = Field(default_factory=list)


class TransformResult(BaseModel):
    ok: bool
    models: list[ModelResult] = Field(default_factory=list)
    tests: TestSummary = Field(default_factory=TestSummary)
    duration_s: float = 0.0
    test_seconds: float = 0.0  # all data + unit tests together
    sources: dict[str, int] = Field(default_factory=dict)  # source tables read -> Delta version
    project_sha: str = ""  # fingerprint of dbt_project/ (unit tests rerun when it changes)
    unit_tests_run: bool = True
    tests_scoped: bool = False  # data tests read only new/changed rows (see get_where_subquery.sql)


class TransformFailed(IngestError):
    """dbt (a model or a test) failed; ``result`` holds everything that did run.

    ``transient``: it failed only because another transform committed to its tables while it
    ran; run again (exit 4, which the Prefect task retries), it computes from that commit."""

    def __init__(self, message: str, result: TransformResult, *, transient: bool = False) -> None:
        super().__init__(message)
        self.result = result
        self.transient = transient
        if transient:
            self.exit_code = TransientError.exit_code

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled across processes (a task runner, a result store): rebuilt from its arguments
        return (type(self), (str(self), self.result), self.__dict__)


def dbt_args(
    command: str,
    *,
    target_dir: Path,
    select: str | None = None,
    full_refresh: bool = False,
) -> list[str]:
    """The dbt CLI arguments for ``command`` against the bundled project."""
    args = [
        command,
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--target-path",
        str(target_dir / "target"),
        "--log-path",
        str(target_dir / "logs"),
        "--quiet",
        "--log-level",
        "none",  # stdout belongs to `ingest` (--json); failures come back in results
        "--log-level-file",
        "none",
        "--no-use-colors",
        "--no-partial-parse",  # parsed once per project version instead (parsed_manifest)
        "--no-write-json",
    ]
    if select:
        # tests that also read an unselected model (relationships) wait for a run that builds it
        args += ["--select", *select.split(), "--indirect-selection", "buildable"]
    if full_refresh:
        args.append("--full-refresh")
    return args


PARSE_CACHE_ENV = "LAKEHOUSE_DBT_CACHE"
# parsed projects kept in this process: pickled bytes, so every invocation gets a fresh copy
# (dbt compiles into the manifest's nodes while it runs)
_MANIFESTS: dict[str, bytes] = {}


def parse_cache_dir() -> Path:
    """Where dbt's parsed project is kept between runs (parsing is most of a no-op run's time)."""
    env = os.environ.get(PARSE_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "lakehouse" / "dbt"


def _manifest_prefix() -> str:
    """Per checkout: a manifest holds the project's absolute paths."""
    import hashlib

    return "manifest-" + hashlib.sha256(str(PROJECT_DIR).encode()).hexdigest()[:12]


def _manifest_key(project_sha: str) -> str:
    from dbt.version import __version__ as dbt_version

    py = "{}.{}".format(*sys.version_info[:2])
    return f"{_manifest_prefix()}-{dbt_version}-py{py}-{project_sha[:32]}.pickle"


def parsed_manifest(project_sha: str, target_dir: Path) -> Any:
    """The dbt project parsed once per project version, not on every run.

    dbt re-parses (or reads its msgpack partial-parse state, ~0.3-1 s) on every invocation;
    a pickled ``Manifest`` loads in ~10 ms and dbt takes it as ``dbtRunner(manifest=...)``.
    Keyed by the checkout, the project's fingerprint and the dbt and Python versions, so any
    change to a model, macro or yml parses again.  The cache is only a cache: anything unreadable re-parses.
    """
    key = _manifest_key(project_sha)
    blob = _MANIFESTS.get(key)
    if blob is None:
        try:
            blob = (parse_cache_dir() / key).read_bytes()
            manifest = _unpickle_manifest(blob)
        except Exception:  # noqa: BLE001 - missing, truncated or from another dbt: parse again
            blob = None
    if blob is None:
        from dbt.cli.main import dbtRunner

        res = dbtRunner().invoke(dbt_args("parse", target_dir=target_dir))
        if res.result is None or not res.success:
            raise IngestError(f"dbt could not parse the project: {_one_line(res.exception) or 'see dbt_project/'}")
        blob = _pickle_manifest(res.result)
        manifest = res.result
        _save_manifest(key, blob)
    elif key in _MANIFESTS:
        manifest = _unpickle_manifest(blob)
    _MANIFESTS[key] = blob
    return manifest


def _pickle_manifest(manifest: Any) -> bytes:
    """The manifest's public fields (dbt 1.11's ``Manifest.__reduce_ex__`` omits ``fixtures``
    and so shifts every later field; its lookups and lock are rebuilt on first use)."""
    import dataclasses
    import pickle

    state = {
        f.name: getattr(manifest, f.name) for f in dataclasses.fields(manifest) if f.init and not f.name.startswith("_")
    }
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def _unpickle_manifest(blob: bytes) -> Any:
    import pickle

    from dbt.contracts.graph.manifest import Manifest

    return Manifest(**pickle.loads(blob))


def _save_manifest(key: str, blob: bytes) -> None:
    """Atomic replace: concurrent runs at worst both write the same bytes."""
    cache = parse_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{key}.{os.getpid()}"
        tmp.write_bytes(blob)
        os.replace(tmp, cache / key)
        for old in cache.glob(f"{_manifest_prefix()}-*.pickle"):  # this checkout's other versions
            if old.name != key:
                old.unlink(missing_ok=True)
    except OSError:  # a read-only home only costs the next process a parse
        pass


def upstream_views_selector(select: str) -> str:
    """The view models upstream of ``select`` (dbt selector syntax, space-separated unions)."""
    parts = []
    for sel in select.split():
        base = sel.lstrip("+")
        parts.append(f"+{base},config.materialized:view")
    return " ".join(parts)


def _reset_duckdb_env() -> None:
    """dbt-duckdb keeps one DuckDB per process; start each run from a fresh one."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - a broken old env must not block the new run
                pass


def _status(raw: Any) -> str:
    return str(getattr(raw, "value", raw)).lower()


def _lake_inputs(
    node: Any, results: list[Any], reads: dict[str, int], writes: dict[str, dict[str, Any]]
) -> dict[str, int]:
    """The lake tables (and versions) a model reads, through any DuckDB views in between."""
    by_id = {r.node.unique_id: r.node for r in results}
    found: dict[str, int] = {}
    stack, seen = list(node.depends_on.nodes), set()
    while stack:
        uid = stack.pop()
        if uid in seen:
            continue
        seen.add(uid)
        if uid.startswith("source."):
            table = ".".join(uid.split(".")[-2:])  # source.<project>.bronze.events -> bronze.events
            if table in reads:
                found[table] = reads[table]
            continue
        dep = by_id.get(uid)
        if dep is None:
            continue
        if dep.config.materialized == "delta":
            table = dep.config.get("lake_table") or f"{dep.schema}.{dep.alias}"
            if table in writes and writes[table].get("version") is not None:
                found[table] = writes[table]["version"]
            continue
        stack.extend(dep.depends_on.nodes)
    return found


def _collect(
    results: list[Any], writes: dict[str, dict[str, Any]], reads: dict[str, int] | None = None
) -> tuple[list[ModelResult], TestSummary, list[str], float]:
    models: list[ModelResult] = []
    tests = TestSummary()
    errors: list[str] = []
    test_seconds = 0.0
    for r in results:
        node = r.node
        status = _status(r.status)
        rtype = _status(node.resource_type)
        if rtype in ("test", "unit_test"):
            test_seconds += float(getattr(r, "execution_time", 0.0) or 0.0)
            name = node.name
            if status == "pass":
                tests.passed.append(name)
            elif status == "warn":
                tests.warned.append(name)
            elif status in ("fail", "error"):
                tests.failed.append(name)
                if status == "error":
                    errors.append(f"test {name}: {_one_line(r.message)}")
            continue
        if rtype not in ("model", "seed", "snapshot"):
            continue
        materialized = node.config.materialized
        table = None
        info: dict[str, Any] = {}
        if materialized == "delta":
            table = node.config.get("lake_table") or f"{node.schema}.{node.alias}"
            info = writes.get(table, {})
        models.append(
            ModelResult(
                name=node.name,
                kind="dbt",
                status=status,
                table=table,
                rows=info.get("rows"),
                rows_written=info.get("rows_written"),
                version=info.get("version"),
                mode=info.get("mode") or (materialized if materialized != "delta" else None),
                seconds=round(float(getattr(r, "execution_time", 0.0) or 0.0), 3),
                message=None if status == "success" else _one_line(r.message),
                inputs=_lake_inputs(node, results, reads or {}, writes) if table else {},
            )
        )
        if status == "error":
            errors.append(f"model {node.name}: {_one_line(r.message)}")
    return models, tests, errors, test_seconds


def _one_line(msg: Any) -> str:
    text = str(msg or "").strip()
    return " ".join(text.split())[:500] if text else ""


def run_dbt(
    lake: Lake,
    *,
    select: str | None = None,
    full_refresh: bool = False,
    source_versions: dict[str, int | str] | None = None,
    progress: bool = False,
    test_all: bool = False,
) -> TransformResult:
    """``dbt build`` over the lake; raises ``TransformFailed`` naming failed models/tests.

    ``test_all`` runs every test over whole tables (see ``get_where_subquery.sql``).
    """
    t0 = time.monotonic()
    if not (select or full_refresh or source_versions or test_all):
        same = unchanged_since_last_run(lake)
        if same is not None:
            same.duration_s = round(time.monotonic() - t0, 3)
            return same
    with _DBT_LOCK:  # dbt and dbt-duckdb keep process-wide state: one invocation at a time
        res, ctx = _invoke(lake, select, full_refresh, source_versions, progress, test_all)
    results = list(getattr(res.result, "results", None) or [])
    models, tests, errors, test_seconds = _collect(results, ctx.writes, ctx.reads)
    result = TransformResult(
        ok=bool(res.success) and not tests.failed and not errors,
        models=models,
        tests=tests,
        test_seconds=round(test_seconds, 3),
        duration_s=round(time.monotonic() - t0, 3),
        sources=ctx.reads,
        project_sha=ctx.project_sha,
        unit_tests_run=ctx.unit_tests,
        tests_scoped=ctx.scope_tests,
    )
    if errors:  # a test that could not run is not a test that found bad rows: say why
        from transforms.dbt_plugin import WRITE_CONFLICT

        lost_race = bool(ctx.conflicts) and all(WRITE_CONFLICT in e for e in errors)
        raise TransformFailed(f"dbt failed: {errors[0]}", result, transient=lost_race)
    if tests.failed:
        raise TransformFailed(
            f"dbt tests failed: {', '.join(tests.failed)} - fix the data or the model, then rerun `ingest transform`",
            result,
        )
    if not res.success:
        raise TransformFailed(f"dbt build failed: {_one_line(res.exception) or 'see the models above'}", result)
    return result


def last_tested_run(lake: Lake) -> dict[str, Any] | None:
    """The details of the latest successful whole-project transform (its ``sources`` versions
    and ``project_sha``), or None when there is none or a transform failed since (then every
    data test reads whole tables).

    Rows a failing run wrote stay in the lake; scoping the next run's tests to its own changes
    would let them pass unseen.
    """
    import json

    from ingest.runlog import RUNS_TABLE

    if not lake.table_exists(RUNS_TABLE):
        return None
    runs = [
        r
        for r in lake.delta_table(RUNS_TABLE)
        .to_pyarrow_table(columns=["command", "status", "started_at", "target", "details"])
        .to_pylist()
        if r["command"] == "transform"
    ]
    whole = [r for r in runs if r["target"] == "all" and r["status"] == "success"]
    if not whole:
        return None
    last = max(whole, key=lambda r: r["started_at"])
    if any(r["status"] == "failed" and r["started_at"] > last["started_at"] for r in runs):
        return None  # a --select run counts too
    try:
        details = json.loads(last["details"] or "{}")
    except ValueError:
        return {}
    return details if isinstance(details, dict) else {}


def unchanged_since_last_run(lake: Lake) -> TransformResult | None:
    """The result of a dbt run that would find nothing to do, without running dbt (its per-node
    compile and bookkeeping cost ~2 s for this project), or None when dbt must run.

    Nothing to do: the last whole-project run passed (``last_tested_run``), the project is the
    one it ran, no source it read has a newer Delta version and no model table a version other
    than the one it left.  Its data tests then would read nothing new and its unit tests do not
    rerun; a failed run since, --full-refresh, --test-all, --select or pinned sources run dbt.
    Nothing here imports dbt (~1.4 s of a fresh process).
    """
    last = last_tested_run(lake)
    if not last or last.get("project_sha") != project_fingerprint():
        return None
    sources = _versions(last.get("sources"))
    models = [m for m in last.get("models") or [] if isinstance(m, dict) and m.get("kind") == "dbt"]
    tables = {m["table"]: m.get("version") for m in models if m.get("table")}
    if not sources or not tables or any(v is None for v in tables.values()):
        return None
    try:
        for table, version in [*sources.items(), *tables.items()]:
            if not lake.table_exists(table) or lake.delta_table(table).version() != version:
                return None
    except IngestError:
        return None
    return TransformResult(
        ok=True,
        models=[
            ModelResult(
                **{
                    **m,
                    "status": "skipped",
                    "rows_written": 0,
                    "seconds": 0.0,
                    "message": "nothing new since the last run",
                }
            )
            for m in models
        ],
        sources=sources,
        project_sha=last["project_sha"],
        unit_tests_run=False,
        tests_scoped=True,
    )


def _invoke(
    lake: Lake,
    select: str | None,
    full_refresh: bool,
    source_versions: dict[str, int | str] | None,
    progress: bool,
    test_all: bool = False,
) -> tuple[Any, Any]:
    from dbt.cli.main import dbtRunner

    from transforms import dbt_plugin

    # incremental runs test only what is new, when the last run left the lake tested
    tested = None if full_refresh or source_versions or test_all else last_tested_run(lake)
    sources = None if tested is None else _versions(tested.get("sources"))
    ctx = dbt_plugin.configure(lake, source_versions=source_versions, tested_sources=sources)
    # unit tests check model logic: they run whenever the project differs from the last
    # tested run's (dbt's advice is to keep them out of production runs otherwise)
    ctx.project_sha = project_fingerprint()
    ctx.unit_tests = tested is None or tested.get("project_sha") != ctx.project_sha
    tmp = Path(tempfile.mkdtemp(prefix="lakehouse-dbt-"))
    callbacks = [_progress_callback()] if progress else []
    _reset_duckdb_env()
    try:
        runner = dbtRunner(manifest=parsed_manifest(ctx.project_sha, tmp), callbacks=callbacks)
        if select:
            # the DuckDB views upstream of a partial selection (staging/intermediate) live only in
            # this process's in-memory DuckDB: create them first (lake tables are already exposed)
            pre = runner.invoke(dbt_args("run", target_dir=tmp, select=upstream_views_selector(select)))
            if pre.exception is not None and pre.result is None:
                raise IngestError(f"dbt could not run: {_one_line(pre.exception)}")
        args = dbt_args("build", target_dir=tmp, select=select, full_refresh=full_refresh)
        if not ctx.unit_tests:
            args += ["--exclude-resource-type", "unit_test"]
        res = runner.invoke(args)
    finally:
        _reset_duckdb_env()
        dbt_plugin.configure(None)
        shutil.rmtree(tmp, ignore_errors=True)
    if res.exception is not None and res.result is None:
        exc = res.exception
        if isinstance(exc, IngestError):
            raise exc
        raise IngestError(f"dbt could not run: {_one_line(exc)}")
    return res, ctx


def _versions(raw: Any) -> dict[str, int]:
    try:
        return {str(k): int(v) for k, v in (raw or {}).items()}
    except (TypeError, ValueError, AttributeError):
        return {}


def project_fingerprint() -> str:
    """sha256 over everything dbt parses: models, macros, tests, docs blocks and config
    (paths and contents).  It keys the parsed-manifest cache, so a file dbt reads that is
    missing here would leave runs on a stale project.  The top-level README is not parsed."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(PROJECT_DIR.rglob("*")):
        rel = path.relative_to(PROJECT_DIR)
        if rel.parts[0] in ("target", "logs", "dbt_packages") or not path.is_file():
            continue
        docs = path.suffix == ".md" and len(rel.parts) > 1  # {% docs %} blocks in models/ etc.
        if docs or path.suffix in (".sql", ".yml", ".yaml", ".csv", ".py"):
            h.update(rel.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _progress_callback():
    from rich.console import Console

    console = Console(stderr=True)

    def on_event(event: Any) -> None:
        name = event.info.name
        if name == "NodeFinished":
            node = event.data.node_info
            console.print(f"  {node.node_status:>7}  {node.resource_type} {node.node_name}")

    return on_event


# -- Spark models ------------------------------------------------------------------------------
def run_spark_stage(
    settings: Settings,
    lake: Lake,
    *,
    select: str | None = None,
    full_refresh: bool = False,
    source_versions: dict[str, int | str] | None = None,
) -> list[ModelResult]:
    """The Spark models, after dbt.  No JVM is started when the selection names none of them, or
    every selected one is up to date (its input unchanged since it last ran) or has an increment
    small enough for the driver (``Settings.spark_driver_max_rows``)."""
    import transforms.spark as spark_pkg

    names = spark_pkg.selected_models(select)
    if not names:
        return []
    done = {} if full_refresh else spark_pkg.up_to_date_results(lake, names, source_versions=source_versions)
    rows = dict(done)
    if any(n not in done for n in names):
        from transforms.spark.session import build_spark

        # the JVM starts only for a model that needs Spark: small increments run on the driver
        for row in spark_pkg.run_spark_models(
            lambda: build_spark(settings),
            lake,
            select=select,
            source_versions=source_versions,
            full_refresh=full_refresh,
            driver_max_rows=settings.spark_driver_max_rows,
        ):
            rows.setdefault(row["name"], row)
    models = []
    for name in names:
        result = rows.get(name)
        if result is None:
            continue
        source = spark_pkg.SPARK_MODELS[name][0]
        version = (source_versions or {}).get(source)
        inputs = {source: lake.delta_table(source, version=version).version()} if lake.table_exists(source) else {}
        models.append(ModelResult(**{**result, "kind": "spark", "inputs": inputs}))
    return models


def run_transform(
    settings: Settings,
    *,
    select: str | None = None,
    full_refresh: bool = False,
    progress: bool = False,
    source_versions: dict[str, int | str] | None = None,
    snapshot: str | None = None,
    include_spark: bool = True,
    test_all: bool = False,
) -> TransformResult:
    """dbt build (models + data/unit tests), then the Spark models; recorded in ``_meta.runs``.

    ``source_versions`` (``{"bronze.events": 0}``) or ``snapshot`` (a snapshot name) pin the bronze
    inputs; pinned runs are full refreshes, since incremental watermarks assume newer inputs.
    ``include_spark=False`` runs dbt only.  Incremental runs test only what changed unless
    ``test_all`` (or ``full_refresh``, or the last run failed).
    Raises ``TransformFailed`` (an ``IngestError``) naming the failing models/tests.
    """
    from ingest.runlog import track

    lake = Lake.from_settings(settings)
    pins = dict(source_versions or {})
    if snapshot:
        from ingest.snapshots import get_snapshot

        snap = get_snapshot(lake, snapshot)
        pins.update({t: v for t, v in snap.tables.items() if t.startswith("bronze.")})
        if not pins:
            raise IngestError(
                f"snapshot {snapshot!r} pins no bronze table; it pins {', '.join(sorted(snap.tables)) or 'nothing'}"
            )
    if pins:
        full_refresh = True
    t0 = time.monotonic()
    with track(lake, command="transform", source="dbt_project", target=select or "all") as run:
        try:
            result = run_dbt(
                lake,
                select=select,
                full_refresh=full_refresh,
                source_versions=pins,
                progress=progress,
                test_all=test_all,
            )
        except TransformFailed as exc:
            run.details = exc.result.model_dump(mode="json")
            run.rows_written = _rows_written(exc.result)  # what landed before the failure stays
            raise
        if include_spark:
            try:
                result.models.extend(
                    run_spark_stage(
                        settings,
                        lake,
                        select=select,
                        full_refresh=full_refresh,
                        source_versions=pins,
                    )
                )
            except IngestError as exc:
                result.ok = False
                run.details = result.model_dump(mode="json")
                run.rows_written = _rows_written(result)  # dbt's commits stand
                raise TransformFailed(f"spark models failed: {exc}", result) from exc
            except Exception as exc:  # Spark/JVM errors become one line
                result.ok = False
                run.details = result.model_dump(mode="json")
                run.rows_written = _rows_written(result)
                raise TransformFailed(
                    f"spark models failed: {lake.describe_error(exc, type(exc).__name__)}", result
                ) from exc
        result.duration_s = round(time.monotonic() - t0, 3)
        run.rows_written = _rows_written(result)
        run.details = result.model_dump(mode="json")
    _record_model_runs(lake, result, transform_run=run.run_id)
    return result


def _rows_written(result: TransformResult) -> int:
    """Rows the models of this run committed (a failed run's record keeps them too)."""
    return sum(m.rows_written or 0 for m in result.models)


def _record_model_runs(lake: Lake, result: TransformResult, *, transform_run: str) -> None:
    """One `_meta.runs` row per table a model wrote, naming the table versions it read.

    This is what `ingest lineage` follows from a gold table back to the ingest runs, and what
    `ingest health` reads for the freshness and volume of silver/gold tables.
    """
    from ingest.runlog import Run, record

    # (a model that wrote nothing new leaves the table's existing writer run standing)
    record(
        lake,
        *(
            Run(
                command=f"transform {m.kind}:{m.name}",
                source="dbt_project" if m.kind == "dbt" else "transforms.spark",
                target=m.table,
                version_after=m.version,
                rows_written=m.rows_written,
                duration_s=m.seconds or 0.0,
                status="success",
                details={"inputs": m.inputs, "transform_run": transform_run, "mode": m.mode},
            )
            for m in result.models
            if m.table and m.version is not None and m.rows_written and m.status == "success"
        ),
    )


if __name__ == "__main__":  # pragma: no cover - `python -m transforms.dbt_runner` for debugging
    from ingest.settings import load_settings

    print(run_transform(load_settings(), select=" ".join(sys.argv[1:]) or None).model_dump_json(indent=2))
