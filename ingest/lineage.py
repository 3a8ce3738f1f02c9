"""Lineage: shard set -> snapshot -> table versions -> transform runs -> ingest runs -> sources.

Everything comes from what the stages already record: the shard manifest, the snapshot, Delta
versions (each commit names the run that made it) and `_meta.runs` (whose `details.inputs` name
the table versions a transform read).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from ingest.delta import commit_run_id
from ingest.errors import ConfigError
from ingest.lake import Lake, TableId
from ingest.runlog import RUNS_TABLE

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    from ingest.svg import Graph


class Node(BaseModel):
    kind: str  # shard_set | snapshot | table | run | source
    name: str
    detail: dict[str, Any] = Field(default_factory=dict)
    children: list[Node] = Field(default_factory=list)

    def render(self, indent: int = 0) -> list[str]:
        extra = ", ".join(f"{k}={v}" for k, v in self.detail.items() if v not in (None, "", [], {}))
        lines = ["  " * indent + f"{self.kind} {self.name}" + (f" ({extra})" if extra else "")]
        for c in self.children:
            lines.extend(c.render(indent + 1))
        return lines


def _runs(lake: Lake) -> list[dict[str, Any]]:
    if not lake.table_exists(RUNS_TABLE):
        return []
    rows = lake.delta_table(RUNS_TABLE).to_pyarrow_table().to_pylist()
    for r in rows:
        try:
            r["details"] = json.loads(r.get("details") or "{}")
        except ValueError:
            r["details"] = {}
    return sorted(rows, key=lambda r: r["started_at"])


def _commit_run_id(lake: Lake, table: str, version: int, cache: dict) -> str | None:
    """The run id recorded in the Delta commit that made ``version`` (None: a commit without one)."""
    if table not in cache:
        try:
            cache[table] = {c.get("version"): c for c in lake.delta_table(table).history()}
        except Exception:  # noqa: BLE001 - a vacuumed or missing log: fall back to the run log
            cache[table] = {}
    return commit_run_id(cache[table].get(version) or {})


def _writer_run(
    runs: list[dict[str, Any]], table: str, version: int, run_id: str | None = None
) -> dict[str, Any] | None:
    """The run that produced ``version``: the one its commit names (or the per-model record of
    that transform), else one recorded as ending at exactly that version, else the newest run
    before it that changed the table.  A run that found nothing new never counts as a writer."""
    if run_id is not None:
        named = [r for r in runs if r["target"] == table and run_id in (r["run_id"], r["details"].get("transform_run"))]
        named = named or [r for r in runs if r["run_id"] == run_id]
        if named:
            return named[-1]

    def wrote(r: dict[str, Any]) -> bool:
        return bool(r["rows_written"]) or (r["version_after"] is not None and r["version_before"] != r["version_after"])

    candidates = [
        r
        for r in runs
        if r["target"] == table
        and r["status"] == "success"
        and r["version_after"] is not None
        and r["version_after"] <= version
        and wrote(r)
    ]
    exact = [r for r in candidates if r["version_after"] == version]
    found = exact or candidates
    return found[-1] if found else None


def trace_table(
    lake: Lake,
    table: str,
    version: int,
    runs: list[dict[str, Any]],
    *,
    _seen: set | None = None,
    _commits: dict | None = None,
) -> Node:
    seen = _seen if _seen is not None else set()
    commits = _commits if _commits is not None else {}
    node = Node(kind="table", name=f"{table}@v{version}")
    key = (table, version)
    if key in seen:
        return node
    seen.add(key)
    run = _writer_run(runs, table, version, _commit_run_id(lake, table, version, commits))
    if run is None:
        node.detail["note"] = "no run recorded for this version"
        return node
    run_node = Node(
        kind="run",
        name=run["run_id"],
        detail={
            "command": run["command"],
            "started_at": str(run["started_at"]),
            "rows_written": run["rows_written"],
            "status": None if run["status"] == "success" else run["status"],
        },
    )
    node.children.append(run_node)
    inputs: dict[str, int] = run["details"].get("inputs") or {}
    for in_table, in_version in sorted(inputs.items()):
        run_node.children.append(trace_table(lake, in_table, int(in_version), runs, _seen=seen, _commits=commits))
    if not inputs and run["source"]:
        run_node.children.append(Node(kind="source", name=run["source"]))
    return node


def _read_manifest(lake: Lake, ref: str) -> dict[str, Any] | None:
    """A shard set's manifest: ``ref`` is lake-relative (``shards/...``), ``s3://...`` or a path."""
    import pyarrow.fs as pafs

    uri = (lake.path(ref) if ref.startswith("shards/") else ref).rstrip("/") + "/manifest.json"
    try:
        if not uri.startswith("s3://"):
            local = Path(uri)
            return json.loads(local.read_text()) if local.is_file() else None
        fs, path = lake.pyarrow_filesystem(), lake.fs_path(uri)
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with fs.open_input_stream(path) as fh:
            return json.loads(fh.read())
    except OSError as exc:
        raise ConfigError(lake.describe_error(exc, f"cannot read {uri}")) from None


def lineage(lake: Lake, ref: str) -> Node:
    """Trace a shard set (path, URI or `shards/DATASET/SNAPSHOT`) or a table (`layer.name[@version]`)."""
    runs = _runs(lake)
    manifest = None if _looks_like_table(ref) else _read_manifest(lake, ref)
    if manifest is not None:
        root = Node(
            kind="shard_set",
            name=ref,
            detail={
                "dataset": manifest.get("dataset"),
                "format": manifest.get("format"),
                "shards": len(manifest.get("shards", [])),
                "code_version": manifest.get("code_version"),
            },
        )
        snap = Node(kind="snapshot", name=str(manifest.get("snapshot")), detail={})
        root.children.append(snap)
        commits: dict = {}
        for table, version in sorted((manifest.get("tables") or {}).items()):
            snap.children.append(trace_table(lake, table, int(version), runs, _commits=commits))
        return root
    table, _, at = ref.partition("@")
    if not _looks_like_table(table):
        raise ConfigError(f"{ref!r} is neither a shard set with a manifest.json nor a table layer.name[@version]")
    version = int(at.lstrip("v")) if at else lake.delta_table(table).version()
    return trace_table(lake, str(TableId.parse(table)), version, runs)


def _looks_like_table(ref: str) -> bool:
    base = ref.partition("@")[0]
    try:
        TableId.parse(base)
        return "/" not in base
    except ValueError:
        return False


# -- the whole lake as one graph (`ingest docs`) -------------------------------------------------
LAKE_KINDS = {  # column order, left to right, and colours of the lineage picture
    "source": "#8b5cf6",
    "bronze": "#b7791f",
    "silver": "#64748b",
    "gold": "#c9a227",
    "snapshot": "#0072B2",
    "shard_set": "#009E73",
}
LAKE_KIND_LABELS = {
    "source": "source",
    "bronze": "bronze table",
    "silver": "silver table",
    "gold": "gold table",
    "snapshot": "snapshot",
    "shard_set": "shard set",
}


def lake_graph(lake: Lake, *, static_edges: Sequence[tuple[str, str, str]] = ()) -> Graph:
    """source -> bronze -> silver/gold -> snapshot -> shard set, from what the lake recorded.

    Ingest runs give source -> table, per-model transform runs their input tables -> table,
    snapshots the tables they pin and shard builds their snapshot.  ``static_edges`` adds edges
    known from code (the Spark models' source -> target) for models that have not run yet.
    """
    from ingest.snapshots import list_snapshots
    from ingest.svg import Graph, GraphNode

    graph = Graph()
    tables = {str(t): t for t in lake.list_tables() if t.layer != "_meta" and not t.name.endswith("_quarantine")}

    def table_node(name: str) -> str:
        tid = TableId.parse(name)
        detail = "not built yet"
        if name in tables:
            dt = lake.delta_table(name)
            detail = f"v{dt.version()} · {dt.count():,} rows"
        graph.add_node(GraphNode(id=name, label=name, kind=tid.layer, detail=detail, tooltip=f"{name} ({detail})"))
        return name

    for name in sorted(tables):
        table_node(name)
    runs = _runs(lake)
    for r in runs:
        target, command = r["target"] or "", r["command"] or ""
        if r["status"] != "success" or target not in tables:
            continue
        if command in ("images", "logs", "tables") and r["source"]:
            src = f"source:{r['source']}"
            graph.add_node(
                GraphNode(
                    id=src, label=_short(r["source"]), kind="source", detail=f"ingest {command}", tooltip=r["source"]
                )
            )
            graph.add_edge(src, target, f"ingest {command}")
        elif command.startswith("transform "):
            for table in r["details"].get("inputs") or {}:
                if _looks_like_table(table):
                    graph.add_edge(table_node(table), target, command.removeprefix("transform "))
    for src, dst, label in static_edges:
        graph.add_edge(table_node(src), table_node(dst), label)
    for snap in list_snapshots(lake):
        sid = f"snapshot:{snap.name}"
        graph.add_node(
            GraphNode(
                id=sid,
                label=snap.name,
                kind="snapshot",
                detail=f"{len(snap.tables)} tables pinned",
                tooltip=", ".join(f"{t}@v{v}" for t, v in sorted(snap.tables.items())),
            )
        )
        for table, version in snap.tables.items():
            graph.add_edge(table_node(table), sid, f"{table}@v{version}")
    for r in runs:
        if r["command"] == "shards build" and r["status"] == "success" and r["target"]:
            manifest = _read_manifest(lake, r["target"])
            if manifest is None:  # dropped with its snapshot (retention)
                continue
            ref = r["target"].rstrip("/")
            graph.add_node(
                GraphNode(
                    id=f"shards:{ref}",
                    label=str(manifest.get("dataset") or ref.split("/")[-2]),
                    kind="shard_set",
                    detail=f"{manifest.get('format')} · {len(manifest.get('shards', []))} shards",
                    tooltip=ref,
                )
            )
            snap_id = f"snapshot:{manifest.get('snapshot')}"
            if any(n.id == snap_id for n in graph.nodes):
                graph.add_edge(snap_id, f"shards:{ref}", "shards build")
    return graph


def _short(source: str) -> str:
    """A source's last two path parts (the full one is the node's tooltip)."""
    parts = [p for p in source.replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:]) if len(parts) > 1 else source
