"""`ingest docs --out DIR`: dbt's documentation site, extended with the Spark models and the lake.

* ``DIR/index.html`` is dbt's own site (models, columns, tests, the lineage graph) built with
  ``dbt docs generate --static``: one file with the manifest and catalog inlined, so it opens
  from ``file://`` (the ordinary ``index.html`` fetches ``manifest.json``, which browsers block
  there).  The Spark models and the shard set are added to dbt's graph as **exposures** of the
  bronze sources and the shard table, written into a temporary copy of the project (the project
  itself is not touched, so its fingerprint and parsed-manifest cache stay as they are).
* ``DIR/lake.html`` (linked from every page of the dbt site) draws the lake's own lineage,
  source -> bronze -> silver/gold -> snapshot -> shard set, from the run log, snapshots and shard
  manifests (``ingest.lineage.lake_graph``), and lists the Spark models.
* ``DIR/manifest.json`` and ``DIR/catalog.json`` are dbt's artifacts, for other tools.

The catalog (column types) is read from the lake through the lake plugin, as a transform does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from html import escape
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ingest.errors import ConfigError, IngestError
from ingest.health_html import PAGE_CSS
from ingest.lake import Lake, TableId
from ingest.settings import Settings
from transforms.dbt_runner import PROJECT_DIR

EXPOSURES_FILE = "_lake_exposures.yml"
LAKE_PAGE = "lake.html"
# a link on every page of dbt's single-page app, outside its Angular templates (bottom left, above the
# lineage graph's control bar)
_LINK = (
    "<a id='lake-lineage-link' href='" + LAKE_PAGE + "' style='position:fixed;left:18px;bottom:96px;z-index:10000;"
    "background:#1f2937;color:#fff;padding:10px 16px;border-radius:22px;font:600 14px system-ui,sans-serif;"
    "text-decoration:none;box-shadow:0 2px 8px rgba(0,0,0,.25)'>Lake lineage &amp; Spark models &rarr;</a>"
)


class DocsSite(BaseModel):
    out: str
    index: str
    lake_page: str
    models: list[str]  # dbt models in the site
    spark_models: list[str]
    lake_nodes: int  # nodes of the lake lineage graph


def spark_exposures(settings: Settings, model_names: set[str]) -> list[dict[str, Any]]:
    """The Spark models (and the shard set) as dbt exposures, so they show in dbt's graph."""
    import transforms.spark as spark_pkg

    out = []
    for name, (source, target) in spark_pkg.SPARK_MODELS.items():
        src = TableId.parse(source)
        out.append(
            {
                "name": f"spark_{name}",
                "label": f"Spark: {name} → {target}",
                "type": "application",
                "owner": {"name": "transforms.spark"},
                "description": f"Spark model `{name}` (transforms/spark) writes `{target}`. {spark_pkg.model_description(name)}",
                "depends_on": [f"source('{src.layer}', '{src.name}')"],
                "meta": {"engine": "spark", "target": target, "params": spark_pkg.model_params(name)},
            }
        )
    shard_table = TableId.parse(settings.shards.table)
    if shard_table.name in model_names:
        out.append(
            {
                "name": f"shards_{settings.shards.dataset}",
                "label": f"Training shards: {settings.shards.dataset}",
                "type": "ml",
                "owner": {"name": "ingest shards build"},
                "description": (
                    f"`ingest shards build {settings.shards.dataset}` cuts {settings.shards.format} shards "
                    f"from a snapshot of `{settings.shards.table}` (key `{settings.shards.key}`); "
                    "`ingest sync` stages them onto GPU nodes."
                ),
                "depends_on": [f"ref('{shard_table.name}')"],
                "meta": {"format": settings.shards.format, "dataset": settings.shards.dataset},
            }
        )
    return out


def _copy_project(dest: Path) -> set[str]:
    """A copy of dbt_project/ without build output; returns its model names."""
    shutil.copytree(PROJECT_DIR, dest, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    return {p.stem for p in (dest / "models").rglob("*.sql")}


def _generate(lake: Lake, project: Path, work: Path) -> Path:
    """``dbt docs generate --static`` against the lake; returns dbt's target directory."""
    from dbt.cli.main import dbtRunner

    from transforms import dbt_plugin

    target = work / "target"
    args = [
        "docs",
        "generate",
        "--static",
        "--project-dir",
        str(project),
        "--profiles-dir",
        str(project),
        "--target-path",
        str(target),
        "--log-path",
        str(work / "logs"),
        "--quiet",
        "--log-level",
        "none",
        "--log-level-file",
        "none",
        "--no-use-colors",
        "--no-partial-parse",
    ]
    dbt_plugin.configure(lake)
    try:
        res = dbtRunner().invoke(args)
    finally:
        dbt_plugin.configure(None)
    if not res.success or not (target / "static_index.html").is_file():
        detail = " ".join(str(res.exception or "see dbt_project/").split())[:300]
        raise IngestError(f"dbt docs generate failed: {detail}")
    return target


def build_docs_site(settings: Settings, *, out: Path) -> DocsSite:
    """Write the site into ``out`` (created if missing; files of an earlier build are replaced)."""
    import transforms.spark as spark_pkg
    from ingest.lineage import LAKE_KIND_LABELS, LAKE_KINDS, lake_graph

    lake = Lake.from_settings(settings).require_exists()
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file: --out names a directory for the site")
    work = Path(tempfile.mkdtemp(prefix="lakehouse-docs-"))
    try:
        models = _copy_project(work / "project")
        exposures = spark_exposures(settings, models)
        (work / "project" / "models" / EXPOSURES_FILE).write_text(
            "# written by `ingest docs` into its temporary copy of the project\n"
            + yaml.safe_dump({"version": 2, "exposures": exposures}, sort_keys=False, allow_unicode=True)
        )
        target = _generate(lake, work / "project", work)
        index = (target / "static_index.html").read_text(encoding="utf-8")
        manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
        graph = lake_graph(
            lake, static_edges=[(src, dst, f"spark:{name}") for name, (src, dst) in spark_pkg.SPARK_MODELS.items()]
        )
        from ingest.svg import layered_graph

        svg = layered_graph(
            title="Lake lineage: source → bronze → silver/gold → snapshot → shard set",
            graph=graph,
            colours=LAKE_KINDS,
            kind_labels=LAKE_KIND_LABELS,
        )
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "index.html", _with_link(index))
        _write(out / LAKE_PAGE, _lake_page(lake, svg, spark_pkg))
        for name in ("manifest.json", "catalog.json"):
            shutil.copyfile(target / name, out / f".{name}.tmp")
            os.replace(out / f".{name}.tmp", out / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dbt_models = sorted(n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model")
    return DocsSite(
        out=str(out),
        index=str(out / "index.html"),
        lake_page=str(out / LAKE_PAGE),
        models=dbt_models,
        spark_models=list(spark_pkg.SPARK_MODELS),
        lake_nodes=len(graph.nodes),
    )


def _with_link(index: str) -> str:
    at = index.rfind("</body>")
    return index + _LINK if at < 0 else index[:at] + _LINK + index[at:]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _lake_page(lake: Lake, svg: str, spark_pkg: Any) -> str:
    """The lake's lineage graph and the Spark models, in the health report's style."""
    rows = []
    for name, (source, target) in spark_pkg.SPARK_MODELS.items():
        state = "not built yet"
        if lake.table_exists(target):
            dt = lake.delta_table(target)
            state = f"v{dt.version()}, {dt.count():,} rows"
        params = ", ".join(f"{k}={v}" for k, v in spark_pkg.model_params(name).items())
        rows.append(
            f"<tr><td><b>{escape(name)}</b></td><td>{escape(source)}</td><td>{escape(target)}</td>"
            f"<td>{escape(params)}</td><td>{escape(state)}</td><td>{escape(spark_pkg.model_description(name))}</td></tr>"
        )
    head = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Lake lineage — {escape(lake.uri)}</title>"
        f"<style>{PAGE_CSS}main{{max-width:1400px}}</style></head><body>"
    )
    banner = (
        "<header><h1>Lake lineage and Spark models</h1>"
        f"<p>{escape(lake.uri)} · <a style='color:#93c5fd' href='index.html'>dbt models, columns and tests &larr;</a></p>"
        "</header>"
    )
    lineage = (
        "<section><h2>Lineage</h2><p class='why'>Every table, the sources its ingest runs read, the models that "
        "built it (hover an arrow), the snapshots that pin it and the shard sets cut from them; from _meta.runs, "
        f"_meta.snapshots and the shard manifests. `ingest lineage REF` prints one chain.</p>{svg}</section>"
    )
    spark = (
        "<section><h2>Spark models</h2><p class='why'>transforms/spark, run by `ingest transform` after dbt; "
        "they appear in dbt's graph as exposures named spark_*.</p><table><thead><tr><th>model</th><th>reads</th>"
        "<th>writes</th><th>parameters</th><th>table now</th><th>what it does</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )
    return f"{head}{banner}<main>{lineage}{spark}</main></body></html>"
