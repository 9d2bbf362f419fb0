"""Attribution graphs as static SVG inside a self-contained HTML page (no scripts, nothing from the network).

Columns are token positions; rows are, bottom to top, the embeddings, each layer's features and error nodes, and
the output logits. Edges are drawn from source to target, blue when positive and red when negative, their width and
opacity scaled by |weight| (the ``MAX_GRAPH_EDGES`` strongest). Hovering a node or an edge shows its tooltip (SVG
``<title>``). Render a pruned graph (``AttributionGraph.prune``): a full one has thousands of nodes.
"""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

import torch

from ..graphs import AttributionGraph, GraphVerification
from ._page import Section, table_html, write_report

MAX_GRAPH_EDGES = 400
"""The strongest edges drawn; the rest are left out of the picture (not of the graph)."""

_COL, _ROW, _PAD = 120, 46, 40
_COLOURS = {"feature": "#f6e05e", "error": "#a0aec0", "embedding": "#90cdf4", "logit": "#9ae6b4"}


def graph_svg(graph: AttributionGraph) -> str:
    """The graph as an inline ``<svg>`` element."""
    n_pos = len(graph.tokens)
    rows = graph.n_layers + 2  # embeddings, layers, logits
    xy = _layout(graph)
    width, height = _PAD * 2 + _COL * n_pos, _PAD * 2 + _ROW * rows + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">']  # fmt: skip
    for layer in range(graph.n_layers):
        y = _y(layer, rows)
        parts.append(f'<text x="4" y="{y + 3}" fill="#718096">L{layer}</text>')
    for pos, token in enumerate(graph.tokens):
        x = _PAD + _COL * pos + _COL / 2
        parts.append(f'<text x="{x}" y="{height - 8}" text-anchor="middle">{html.escape(repr(token))}</text>')
    a = graph.adjacency
    t, s = a.nonzero(as_tuple=True)
    if len(t):
        w = a[t, s]
        top = torch.argsort(w.abs(), descending=True)[:MAX_GRAPH_EDGES]
        scale = float(w.abs().max())
        for i in reversed(top.tolist()):  # strongest drawn last, on top
            ti, si, wi = int(t[i]), int(s[i]), float(w[i])
            (x1, y1), (x2, y2) = xy[si], xy[ti]
            strength = abs(wi) / scale
            colour = "#2b6cb0" if wi > 0 else "#c53030"
            label = html.escape(f"{graph.nodes[si].id} -> {graph.nodes[ti].id}: {wi:+.4g}")
            parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                         f'stroke-width="{0.5 + 3.5 * strength:.2f}" stroke-opacity="{0.15 + 0.75 * strength:.2f}">'
                         f"<title>{label}</title></line>")  # fmt: skip
    for i, node in enumerate(graph.nodes):
        x, y = xy[i]
        tip = html.escape(_tooltip(graph, i))
        fill = _COLOURS[node.kind]
        if node.kind == "feature":
            shape = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{fill}" stroke="#744210">'
            parts.append(f"{shape}<title>{tip}</title></circle>")
        else:
            text = {"error": "err", "embedding": "emb", "logit": repr(node.token)}[node.kind]
            parts.append(f'<g><title>{tip}</title><rect x="{x - 22:.1f}" y="{y - 8:.1f}" width="44" height="16" rx="3" '
                         f'fill="{fill}" stroke="#4a5568"/><text x="{x:.1f}" y="{y + 3:.1f}" text-anchor="middle">'
                         f"{html.escape(text[:8])}</text></g>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _y(row_layer: int, rows: int) -> float:
    """Vertical position of a layer row (embeddings are layer -1, logits ``n_layers``); bottom to top."""
    return _PAD + _ROW * (rows - 1 - (row_layer + 1)) + _ROW / 2


def _layout(graph: AttributionGraph) -> list[tuple[float, float]]:
    rows = graph.n_layers + 2
    cells: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, node in enumerate(graph.nodes):
        cells[(node.layer, node.position)].append(i)
    xy: list[tuple[float, float]] = [(0.0, 0.0)] * len(graph.nodes)
    for (layer, pos), members in cells.items():
        y = _y(layer, rows)
        n = len(members)
        for k, i in enumerate(members):
            offset = (k - (n - 1) / 2) * min(16.0, (_COL - 20) / max(n, 1))
            jitter = (k % 2) * 8 - 4 if n > 6 else 0
            xy[i] = (_PAD + _COL * pos + _COL / 2 + offset, y + jitter)
    return xy


def _tooltip(graph: AttributionGraph, i: int) -> str:
    node = graph.nodes[i]
    if node.kind == "feature":
        where = f"layer {node.layer}, position {node.position} ({node.token!r})"
        return f"feature {node.feature} at {where}: a={node.activation or 0:.4g}"
    if node.kind == "error":
        return f"MLP error, layer {node.layer}, position {node.position}: |error|={node.activation or 0:.4g}"
    if node.kind == "embedding":
        return f"embedding of {node.token!r} at position {node.position}"
    return f"logit {node.token!r}: p={node.probability or 0:.3f}"


def graph_section(graph: AttributionGraph, verification: GraphVerification | None = None) -> Section:
    """A report section: scores, the SVG, the supernodes and (when given) the verification table."""
    scores = table_html(
        ["nodes", "features", "edges", "replacement score", "completeness score"],
        [[len(graph.nodes), int(graph.mask("feature").sum()), int((graph.adjacency != 0).sum()),
          graph.replacement_score(), graph.completeness_score()]],
    )  # fmt: skip
    body = [f"<p>Prompt: <code>{html.escape(graph.prompt)}</code>"
            + (f" (pruned at node {graph.pruned['node_threshold']}, edge {graph.pruned['edge_threshold']})"
               if graph.pruned else "") + "</p>", scores, graph_svg(graph)]  # fmt: skip
    if graph.supernodes:
        body.append(table_html(["supernode", "members"], [[k, ", ".join(v)] for k, v in graph.supernodes.items()]))
    if verification is not None:
        rows = [[c.node, c.value, len(c.targets), c.correlation] for c in verification.checks]
        v = verification
        stats = ", ".join(f"{name} {value:.3f}" if value is not None else f"{name} n/a" for name, value in
                          (("Pearson", v.correlation), ("Spearman", v.spearman), ("slope", v.slope)))  # fmt: skip
        body.append(f"<p>Real interventions against the graph's prediction (pooled): {html.escape(stats)}</p>")
        body.append(table_html(["feature", "activation set to", "targets", "correlation"], rows))
    return "Attribution graph", "".join(body)


def write_graph_report(
    graph: AttributionGraph, path: str | Path, verification: GraphVerification | None = None
) -> Path:
    """Write a one-section HTML page of ``graph`` (render a pruned graph)."""
    return write_report(path, f"Attribution graph: {graph.prompt[:60]}", [graph_section(graph, verification)])
