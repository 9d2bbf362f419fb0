"""Drawing circuits: a layered picture with matplotlib (always available), and Graphviz when ``dot`` is installed.

The picture puts the input at the bottom, each layer's heads on one row and its MLP just above them, and the logits
on top; an edge is drawn from its sender to the node that owns its receiver (a head for ``q``, a key/value head
``a{L}.kv{K}`` for ``k``/``v`` under grouped-query attention, an MLP, the logits). With scores, edges are coloured
by sign (red: pushes the metric towards clean, blue: away) and drawn thicker the larger their ``|score|``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import torch
from matplotlib.figure import Figure

from .._cache import atomic_write_bytes
from ._graph import Circuit, EdgeScores


def _row(name: str, n_layers: int) -> float:
    """Vertical position of a node: input -1, heads of layer L at L, MLP L at L + 0.5, logits at n_layers."""
    if name == "input":
        return -1.0
    if name == "logits":
        return float(n_layers)
    if name.startswith("m"):
        return int(name[1:]) + 0.5
    return float(int(name[1:].split(".")[0]))


def _column(name: str) -> tuple[int, int]:
    """Order within a row: query heads by index, then key/value heads by index."""
    if not name.startswith("a"):
        return (0, 0)
    part = name.split(".")[1]
    return (0, int(part[1:])) if part.startswith("h") else (1, int(part[2:]))


def draw_circuit(circuit: Circuit, scores: EdgeScores | None = None, *, title: str | None = None) -> Figure:
    """A layered drawing of ``circuit`` (edge colours and widths from ``scores`` when given)."""
    g = circuit.graph
    kept = torch.nonzero(circuit.edges).flatten().tolist()
    edges = g.edges()
    pairs = [(edges[i][0].name, edges[i][1].node.format(), edges[i][1].kind, i) for i in kept]
    nodes = sorted({n for s, r, _, _ in pairs for n in (s, r)}, key=lambda n: (_row(n, g.n_layers), _column(n)))
    by_row: dict[float, list[str]] = defaultdict(list)
    for n in nodes:
        by_row[_row(n, g.n_layers)].append(n)
    pos = {}
    for y, row in by_row.items():
        for i, n in enumerate(row):
            pos[n] = ((i + 1) / (len(row) + 1), y)
    fig = Figure(figsize=(7.5, max(4.0, 0.28 * (g.n_layers + 2))))
    ax = fig.subplots()
    biggest = float(scores.scores[kept].abs().max()) if scores is not None and kept else 1.0
    for s, r, kind, i in pairs:
        (x0, y0), (x1, y1) = pos[s], pos[r]
        value = float(scores.scores[i]) if scores is not None else 1.0
        colour = "0.4" if scores is None else ("tab:red" if value > 0 else "tab:blue")
        width = 0.4 + 2.6 * abs(value) / (biggest or 1.0)
        style = {"q": "-", "k": "--", "v": ":"}.get(kind, "-")
        ax.plot([x0, x1], [y0, y1], color=colour, linewidth=width, linestyle=style, alpha=0.6, zorder=1)
    for n, (x, y) in pos.items():
        face = "#fde9c9" if n.startswith("m") else "#d7e8f7" if n.startswith("a") else "#e0e0e0"
        ax.text(
            x,
            y,
            n,
            ha="center",
            va="center",
            fontsize=6.5,
            zorder=2,
            bbox={"boxstyle": "round,pad=0.2", "facecolor": face, "edgecolor": "0.5", "linewidth": 0.5},
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(-1.7, g.n_layers + 0.7)
    ax.set_xticks([])
    ax.set_ylabel("layer")
    ax.set_title(title or f"{circuit!r}", fontsize=9)
    if scores is not None:
        ax.plot([], [], color="tab:red", label="score > 0")
        ax.plot([], [], color="tab:blue", label="score < 0")
    for kind, style in (("q", "-"), ("k", "--"), ("v", ":")):
        ax.plot([], [], color="0.3", linestyle=style, label=f"into {kind}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def render_dot(dot: str, path: str | Path, *, fmt: str = "svg", timeout: float = 60.0) -> Path | None:
    """Render DOT text with Graphviz's ``dot`` to ``path``; None when ``dot`` is not on PATH."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    done = subprocess.run([exe, f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"graphviz dot failed ({done.returncode}): {done.stderr.decode(errors='replace')[:500]}")
    path = Path(path)
    atomic_write_bytes(path, done.stdout)
    return path
