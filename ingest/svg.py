"""Inline SVG charts for the HTML reports (`ingest health --html`, `ingest docs`).

Hand-written SVG rather than a charting library: the reports must open from a file with no
network (no CDN script), and graphviz is not a dependency.  Three shapes cover what the reports
show: a time series (rows per run), horizontal bars (freshness, quarantine rate, drift) and a
layered left-to-right graph (lineage).  Every chart has a title, labelled axes and a legend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

# colour-blind-safe palette (Okabe-Ito), cycled per series
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
OK, BREACH, MUTED = "#009E73", "#D55E00", "#8a8f98"
FONT = "font-family='system-ui, -apple-system, Segoe UI, Roboto, sans-serif'"


def _t(
    x: float,
    y: float,
    text: str,
    *,
    size: int = 12,
    anchor: str = "start",
    weight: str = "normal",
    fill: str = "#222",
    extra: str = "",
) -> str:
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' font-weight='{weight}' "
        f"fill='{fill}' {extra}>{escape(text)}</text>"
    )


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 x 10^k steps)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, v = [], start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def fmt_num(v: float) -> str:
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _frame(width: int, height: int, title: str, body: list[str], *, label: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        f"role='img' aria-label='{escape(label, quote=True)}' {FONT}>"
        f"<rect width='{width}' height='{height}' fill='#fff'/>"
        + _t(16, 24, title, size=15, weight="600")
        + "".join(body)
        + "</svg>"
    )


def _legend(x: float, y: float, items: Sequence[tuple[str, str]], *, max_width: float) -> tuple[list[str], float]:
    """Legend swatches laid out in rows from (x, y); returns the SVG and the height used."""
    out, cx, cy = [], x, y
    for label, colour in items:
        w = 22 + 7 * len(label)
        if cx + w > x + max_width and cx > x:
            cx, cy = x, cy + 18
        out.append(f"<rect x='{cx:.1f}' y='{cy - 9:.1f}' width='12' height='12' rx='2' fill='{colour}'/>")
        out.append(_t(cx + 16, cy + 1, label, size=11))
        cx += w + 10
    return out, (cy - y) + 18 if items else 0


def time_series(
    *,
    title: str,
    series: dict[str, list[tuple[datetime, float]]],
    y_label: str,
    x_label: str = "run started (UTC)",
    width: int = 900,
    height: int = 340,
) -> str:
    """One line with a dot per point for each series (e.g. rows written per run, per table)."""
    items = [(name, PALETTE[i % len(PALETTE)]) for i, name in enumerate(series)]
    legend, legend_h = _legend(70, 48, items, max_width=width - 90)
    top, left, right, bottom = 48 + legend_h + 8, 70, width - 60, height - 48
    body = list(legend)
    points = [p for pts in series.values() for p in pts]
    if not points:
        body.append(_t(width / 2, (top + bottom) / 2, "no runs recorded yet", anchor="middle", fill=MUTED))
        return _frame(width, height, title, body, label=title)
    ts = [p[0].timestamp() for p in points]
    t0, t1 = min(ts), max(ts)
    if t1 - t0 < 1:
        t0, t1 = t0 - 60, t1 + 60
    yt = nice_ticks(0, max(p[1] for p in points) or 1)
    y1 = yt[-1] or 1

    def sx(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * (right - left)

    def sy(v: float) -> float:
        return bottom - v / y1 * (bottom - top)

    for v in yt:
        body.append(f"<line x1='{left}' x2='{right}' y1='{sy(v):.1f}' y2='{sy(v):.1f}' stroke='#e6e8eb'/>")
        body.append(_t(left - 6, sy(v) + 4, fmt_num(v), size=11, anchor="end", fill="#555"))
    for i in range(5):
        t = t0 + (t1 - t0) * i / 4
        stamp = datetime.fromtimestamp(t, tz=UTC)
        label = stamp.strftime("%m-%d %H:%M:%S" if t1 - t0 < 3600 else "%Y-%m-%d %H:%M")
        body.append(f"<line x1='{sx(t):.1f}' x2='{sx(t):.1f}' y1='{bottom}' y2='{bottom + 4}' stroke='#555'/>")
        body.append(_t(sx(t), bottom + 17, label, size=11, anchor="middle", fill="#555"))
    body.append(f"<line x1='{left}' x2='{right}' y1='{bottom}' y2='{bottom}' stroke='#555'/>")
    body.append(f"<line x1='{left}' x2='{left}' y1='{top}' y2='{bottom}' stroke='#555'/>")
    body.append(_t((left + right) / 2, height - 8, x_label, size=12, anchor="middle"))
    body.append(
        _t(
            16,
            (top + bottom) / 2,
            y_label,
            size=12,
            anchor="middle",
            extra=f"transform='rotate(-90 16 {(top + bottom) / 2:.1f})'",
        )
    )
    for (name, colour), pts in zip(items, series.values(), strict=True):
        pts = sorted(pts, key=lambda p: p[0])
        coords = [(sx(p[0].timestamp()), sy(p[1])) for p in pts]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            body.append(f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'/>")
        for (x, y), p in zip(coords, pts, strict=True):
            tip = f"{name}: {p[1]:g} rows at {p[0]:%Y-%m-%d %H:%M:%S}"
            body.append(
                f"<circle cx='{x:.1f}' cy='{y:.1f}' r='4' fill='{colour}'><title>{escape(tip)}</title></circle>"
            )
    return _frame(width, height, title, body, label=title)


@dataclass
class Bar:
    label: str
    value: float
    colour: str = PALETTE[0]
    note: str = ""  # shown after the bar (defaults to the value)


def bar_chart(
    *,
    title: str,
    bars: Sequence[Bar],
    x_label: str,
    limit: float | None = None,
    limit_label: str = "",
    legend: Sequence[tuple[str, str]] = (),
    width: int = 900,
    unit: str = "",
) -> str:
    """Horizontal bars, one per label, with an optional dashed threshold line."""
    row = 26
    leg, legend_h = _legend(16, 48, list(legend), max_width=width - 32)
    top = 48 + legend_h + 6
    left = 20 + min(260, 7 * max((len(b.label) for b in bars), default=8))
    right, height = width - 120, int(top + row * max(len(bars), 1) + 54)
    body = list(leg)
    if not bars:
        body.append(_t(width / 2, top + 16, "nothing to show", anchor="middle", fill=MUTED))
        return _frame(width, height, title, body, label=title)
    hi = max([b.value for b in bars] + [limit or 0]) or 1
    ticks = nice_ticks(0, hi)
    x1 = ticks[-1] or 1

    def sx(v: float) -> float:
        return left + v / x1 * (right - left)

    bottom = top + row * len(bars)
    for v in ticks:
        body.append(f"<line x1='{sx(v):.1f}' x2='{sx(v):.1f}' y1='{top}' y2='{bottom}' stroke='#e6e8eb'/>")
        body.append(_t(sx(v), bottom + 16, fmt_num(v) + unit, size=11, anchor="middle", fill="#555"))
    for i, b in enumerate(bars):
        y = top + i * row
        body.append(_t(left - 8, y + row / 2 + 4, b.label, size=12, anchor="end"))
        w = max(sx(b.value) - left, 1.5)
        body.append(
            f"<rect x='{left}' y='{y + 4}' width='{w:.1f}' height='{row - 8}' rx='3' fill='{b.colour}'>"
            f"<title>{escape(b.label)}: {b.value:g}{escape(unit)}</title></rect>"
        )
        body.append(_t(left + w + 6, y + row / 2 + 4, b.note or f"{b.value:g}{unit}", size=11, fill="#333"))
    body.append(f"<line x1='{left}' x2='{left}' y1='{top}' y2='{bottom}' stroke='#555'/>")
    if limit is not None:
        body.append(
            f"<line x1='{sx(limit):.1f}' x2='{sx(limit):.1f}' y1='{top - 4}' y2='{bottom}' "
            f"stroke='{BREACH}' stroke-width='1.5' stroke-dasharray='5,4'/>"
        )
        body.append(_t(sx(limit) + 4, top - 6, limit_label or f"limit {limit:g}", size=11, fill=BREACH))
    body.append(_t((left + right) / 2, bottom + 36, x_label, size=12, anchor="middle"))
    return _frame(width, height, title, body, label=title)


@dataclass
class GraphNode:
    id: str
    label: str
    kind: str  # a key of the graph's colour map (source, bronze, silver, gold, snapshot, shard_set...)
    detail: str = ""  # second line under the label
    tooltip: str = ""


@dataclass
class Graph:
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, label)

    def add_node(self, node: GraphNode) -> None:
        if all(n.id != node.id for n in self.nodes):
            self.nodes.append(node)

    def add_edge(self, src: str, dst: str, label: str = "") -> None:
        if src != dst and all((e[0], e[1]) != (src, dst) for e in self.edges):
            self.edges.append((src, dst, label))


def _layers(graph: Graph, order: Sequence[str]) -> dict[str, int]:
    """Column per node: its kind's band (all bronze tables side by side...), moved right of every
    node it depends on where the edges need it; empty columns are squeezed out."""
    rank = {k: i for i, k in enumerate(order)}
    col = {n.id: rank.get(n.kind, 0) for n in graph.nodes}
    for _ in range(len(graph.nodes)):  # relax; a DAG settles in at most |nodes| passes
        changed = False
        for src, dst, _ in graph.edges:
            if src in col and dst in col and col[dst] < col[src] + 1:
                col[dst] = col[src] + 1
                changed = True
        if not changed:
            break
    squeeze = {c: i for i, c in enumerate(sorted(set(col.values())))}
    return {nid: squeeze[c] for nid, c in col.items()}


def layered_graph(
    *, title: str, graph: Graph, colours: dict[str, str], kind_labels: dict[str, str] | None = None
) -> str:
    """A left-to-right DAG: nodes in columns by depth, curved edges with arrowheads, a legend."""
    labels = kind_labels or {}
    items = [(labels.get(k, k), c) for k, c in colours.items() if any(n.kind == k for n in graph.nodes)]
    col = _layers(graph, list(colours))
    ncols = max(col.values(), default=0) + 1
    by_col: dict[int, list[GraphNode]] = {}
    for n in graph.nodes:
        by_col.setdefault(col[n.id], []).append(n)
    node_h, gap_x, gap_y = 46, 44, 16
    # each column as wide as its longest label or detail (about 7.8 px a character in bold 12 px)
    col_w = [
        min(280, max([150] + [20 + 7.8 * max(len(n.label), len(n.detail) * 0.85) for n in by_col.get(c, [])]))
        for c in range(ncols)
    ]
    col_x = [20 + sum(col_w[:c]) + c * gap_x for c in range(ncols)]
    width = max(int(col_x[-1] + col_w[-1] + 20), 600)
    leg, legend_h = _legend(16, 48, items, max_width=width - 32)
    top = 48 + legend_h + 12
    rows = max((len(v) for v in by_col.values()), default=1)
    height = int(top + rows * (node_h + gap_y) + 20)
    # order each column by the mean position of its parents (fewer crossings)
    pos: dict[str, tuple[float, float]] = {}
    parents: dict[str, list[str]] = {}
    for s, d, _ in graph.edges:
        parents.setdefault(d, []).append(s)
    for c in range(ncols):
        nodes = by_col.get(c, [])

        def key(n: GraphNode) -> tuple[float, str]:
            ys = [pos[p][1] for p in parents.get(n.id, []) if p in pos]
            return (sum(ys) / len(ys) if ys else 0.0, n.label)

        nodes.sort(key=key)
        offset = (rows - len(nodes)) * (node_h + gap_y) / 2
        for i, n in enumerate(nodes):
            pos[n.id] = (col_x[c], top + offset + i * (node_h + gap_y))
    body = list(leg)
    body.append(
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' markerHeight='7' "
        "orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' fill='#6b7280'/></marker></defs>"
    )
    for s, d, label in graph.edges:
        if s not in pos or d not in pos:
            continue
        x0, y0 = pos[s][0] + col_w[col[s]], pos[s][1] + node_h / 2
        x1, y1 = pos[d][0], pos[d][1] + node_h / 2
        mx = (x0 + x1) / 2
        tip = f"<title>{escape(label)}</title>" if label else ""
        body.append(
            f"<path d='M{x0:.1f},{y0:.1f} C{mx:.1f},{y0:.1f} {mx:.1f},{y1:.1f} {x1 - 2:.1f},{y1:.1f}' "
            f"fill='none' stroke='#9aa1ab' stroke-width='1.6' marker-end='url(#arrow)'>{tip}</path>"
        )
    for n in graph.nodes:
        x, y = pos[n.id]
        node_w, chars = col_w[col[n.id]], int((col_w[col[n.id]] - 20) / 7.8)
        colour = colours.get(n.kind, MUTED)
        tip = escape(n.tooltip or f"{n.kind}: {n.label}")
        body.append(
            f"<g class='node' data-kind='{escape(n.kind, quote=True)}'><title>{tip}</title>"
            f"<rect x='{x}' y='{y:.1f}' width='{node_w}' height='{node_h}' rx='8' fill='{colour}' fill-opacity='0.14' "
            f"stroke='{colour}' stroke-width='1.8'/>"
        )
        body.append(_t(x + 9, y + 19, _clip(n.label, chars), size=12, weight="600"))
        if n.detail:
            body.append(_t(x + 9, y + 36, _clip(n.detail, int((node_w - 20) / 6.6)), size=11, fill="#555"))
        body.append("</g>")
    return _frame(width, height, title, body, label=title)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
