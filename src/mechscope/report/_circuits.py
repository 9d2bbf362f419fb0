"""Circuits, rendered: heatmaps, circuit drawings, faithfulness curves, circuit files, HTML sections.

Heatmaps of patching grids and DLA, circuit drawings, faithfulness curves, the circuit's files (JSON, DOT, SVG),
and the HTML sections of a circuit analysis and of a ``find_circuit`` run.

Every function takes a result of ``mechscope.circuits`` (data only) and draws or writes it; matplotlib is imported
inside the functions that draw, so importing this module costs nothing.

Circuit drawings put the input at the bottom, each layer's heads on one row and its MLP just above them, and the
logits on top; an edge is drawn from its sender to the node that owns its receiver (a head for ``q``, a key/value
head ``a{L}.kv{K}`` for ``k``/``v`` under grouped-query attention, an MLP, the logits). With scores, edges are
coloured by sign (red: pushes the metric towards clean, blue: away) and drawn thicker the larger their ``|score|``.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._cache import atomic_write_bytes
from ..circuits._analysis import CircuitAnalysis
from ..circuits._dla import DLAResult
from ..circuits._faithfulness import FaithfulnessCurve
from ..circuits._find import CircuitRun
from ..circuits._graph import Circuit, EdgeScores
from ..circuits._result import PatchingResult
from ._page import Section, figure_html, table_html

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# --- heatmaps ------------------------------------------------------------------------------------------------------


def heatmap(result: PatchingResult | DLAResult, path: str | Path | None = None, *, title: str | None = None) -> Figure:
    """Draw a result as a heatmap; save it as PNG (or any matplotlib format) when ``path`` is given.

    Patching grids show the normalised effect (raw scores when clean and corrupt tie) with a diverging colour map
    centred on the no-effect value; ``[layer]`` grids are one row, ``[layer head pos]`` grids one row per head.
    Direct logit attribution shows ``[layer, heads + MLP]``.
    """
    from matplotlib.figure import Figure

    if isinstance(result, DLAResult):
        grid = torch.cat([result.heads, result.mlps[:, None]], 1)
        rows = [f"L{i}" for i in range(grid.shape[0])]
        cols = [f"H{i}" for i in range(result.heads.shape[1])] + ["MLP"]
        label, center = "direct logit attribution", 0.0
        title = title or f"DLA: {result.task} (logit diff {result.logit_diff:.3g})"
    else:
        grid, rows, cols, label, center = _patching_grid(result)
        title = title or f"{result.method} patching: {result.kind}, {result.direction} ({result.task})"
    fig = Figure(figsize=(max(4.0, 0.35 * len(cols) + 2.5), max(2.5, 0.28 * len(rows) + 1.5)))
    ax = fig.subplots()
    span = float((grid - center).abs().max()) or 1.0
    image = ax.imshow(grid.numpy(), cmap="RdBu_r", vmin=center - span, vmax=center + span, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _patching_grid(result: PatchingResult) -> tuple[Tensor, list[str], list[str], str, float]:
    try:
        grid, label = result.effect, "effect (1 = clean, 0 = corrupt)"
        center = 0.0 if result.direction == "denoising" else 1.0
    except ValueError:
        grid, label, center = result.scores, f"{result.metric}", float(result.corrupt_metric)
    grid = grid.float()
    if grid.ndim == 1:  # [layer] -> one row
        return grid[None], [result.kind], list(result.labels[0]), label, center
    if grid.ndim == 3:  # [layer head pos] -> rows "L.H"
        rows = [f"L{layer}{head}" for layer in result.labels[0] for head in result.labels[1]]
        return grid.flatten(0, 1), rows, list(result.labels[2]), label, center
    return grid, [f"L{x}" for x in result.labels[0]], list(result.labels[1]), label, center


# --- circuits ------------------------------------------------------------------------------------------------------


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


def _kept_scores(circuit: Circuit, scores: EdgeScores | Mapping[str, float] | None) -> dict[int, float] | None:
    """Score of each kept edge (by edge index), from edge scores or a name -> score mapping."""
    if scores is None:
        return None
    kept = torch.nonzero(circuit.edges).flatten().tolist()
    if isinstance(scores, EdgeScores):
        return {i: float(scores.scores[i]) for i in kept}
    names = circuit.graph.edge_names()
    return {i: float(scores.get(names[i], 0.0)) for i in kept}


MAX_DRAWN_EDGES = 60
"""Circuits with more edges than this are drawn grouped by node (``draw_node_circuit``): more lines are not read."""

_Link = tuple[str, str, str, float | None]
"""One line of a drawing: sender node, receiver node, line style, score (None: no scores)."""


def draw_circuit(
    circuit: Circuit, scores: EdgeScores | Mapping[str, float] | None = None, *, title: str | None = None
) -> Figure:
    """A layered drawing of ``circuit``, one line per edge.

    Edge colours and widths come from ``scores`` when given: edge scores, or edge name -> score as
    ``CircuitRun.edge_scores`` holds them.
    """
    g = circuit.graph
    kept = torch.nonzero(circuit.edges).flatten().tolist()
    values = _kept_scores(circuit, scores)
    edges = g.edges()
    styles = {"q": "-", "k": "--", "v": ":"}
    links = [(edges[i][0].name, edges[i][1].node.format(), styles.get(edges[i][1].kind, "-"),
              None if values is None else values[i]) for i in kept]  # fmt: skip
    legend = [(f"into {kind}", style) for kind, style in styles.items()]
    return _draw_links(links, g.n_layers, title or f"{circuit!r}", legend, "score")


def node_links(circuit: Circuit, scores: EdgeScores | Mapping[str, float]) -> dict[tuple[str, str], float]:
    """The circuit's edges grouped by node: ``(sender, receiver node) -> sum of their edges' scores``.

    A head's q, k and v edges from one sender become one link (under grouped-query attention k/v go to the key/value
    head ``a{L}.kv{K}``); links come strongest (largest |sum|) first.
    """
    values = _kept_scores(circuit, scores)
    assert values is not None
    edges = circuit.graph.edges()
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for i, v in values.items():
        sums[(edges[i][0].name, edges[i][1].node.format())] += v
    return dict(sorted(sums.items(), key=lambda kv: -abs(kv[1])))


def draw_node_circuit(
    circuit: Circuit,
    scores: EdgeScores | Mapping[str, float],
    *,
    max_links: int = MAX_DRAWN_EDGES,
    title: str | None = None,
) -> Figure:
    """A circuit too large to draw edge by edge, grouped by node: its ``max_links`` strongest node links.

    Each line is one ``node_links`` link (every edge of the circuit between two nodes, scores summed); only the
    strongest ``max_links`` are drawn, so the title should say how much of the circuit they hold.
    """
    links: list[_Link] = [(s, r, "-", v) for (s, r), v in list(node_links(circuit, scores).items())[:max_links]]
    return _draw_links(links, circuit.graph.n_layers, title or f"{circuit!r}, grouped by node", [], "summed score")


def _draw_links(links: list[_Link], n_layers: int, title: str, styles: list[tuple[str, str]], what: str) -> Figure:
    """Input at the bottom, each layer's heads on one row and its MLP above them, logits on top; one line a link."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch

    nodes = sorted({n for s, r, _, _ in links for n in (s, r)}, key=lambda n: (_row(n, n_layers), _column(n)))
    by_row: dict[float, list[str]] = defaultdict(list)
    for n in nodes:
        by_row[_row(n, n_layers)].append(n)
    pos = {}
    for y, row in by_row.items():
        for i, n in enumerate(row):
            pos[n] = ((i + 1) / (len(row) + 1), y)
    fig = Figure(figsize=(7.5, max(4.0, 0.28 * (n_layers + 2))))
    ax = fig.subplots()
    signed = bool(links) and links[0][3] is not None
    biggest = max((abs(v) for *_, v in links if v is not None), default=1.0) or 1.0
    for s, r, style, v in links:
        (x0, y0), (x1, y1) = pos[s], pos[r]
        colour = "0.4" if v is None else ("tab:red" if v > 0 else "tab:blue")
        width = 0.4 + 2.6 * abs(v if v is not None else biggest) / biggest
        if abs(x1 - x0) > 0.02:
            ax.plot([x0, x1], [y0, y1], color=colour, linewidth=width, linestyle=style, alpha=0.6, zorder=1)
        else:  # one above the other (MLP to MLP): an arc, so links of different lengths do not hide each other
            arc = FancyArrowPatch((x0, y0), (x1, y1), connectionstyle="arc3,rad=0.25", arrowstyle="-",
                                  color=colour, linewidth=width, linestyle=style, alpha=0.6, zorder=1)  # fmt: skip
            ax.add_patch(arc)
    for n, (x, y) in pos.items():
        face = "#fde9c9" if n.startswith("m") else "#d7e8f7" if n.startswith("a") else "#e0e0e0"
        box = {"boxstyle": "round,pad=0.2", "facecolor": face, "edgecolor": "0.5", "linewidth": 0.5}
        ax.text(x, y, n, ha="center", va="center", fontsize=6.5, zorder=2, bbox=box)
    ax.set_xlim(0, 1)
    ax.set_ylim(-1.7, n_layers + 0.7)
    ax.set_xticks([])
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    if signed:
        ax.plot([], [], color="tab:red", label=f"{what} > 0")
        ax.plot([], [], color="tab:blue", label=f"{what} < 0")
    for label, style in styles:
        ax.plot([], [], color="0.3", linestyle=style, label=label)
    if signed or styles:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def node_dot(links: Mapping[tuple[str, str], float]) -> str:
    """Node links (``node_links``) as a Graphviz DOT graph, each edge labelled with its summed score."""
    lines = ["digraph circuit_nodes {", "  rankdir=BT; node [shape=box, fontsize=10];"]
    lines += [f'  "{s}" -> "{r}" [label="{v:.3g}"];' for (s, r), v in links.items()]
    return "\n".join([*lines, "}"])


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


def plot_faithfulness_curve(curve: FaithfulnessCurve, path: str | Path | None = None, *,
                            title: str | None = None) -> Figure:  # fmt: skip
    """Faithfulness against circuit size (log axis), with each random circuit and their mean."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.subplots()
    pct = [100 * s for s in curve.sizes]
    for row in curve.random:
        ax.plot(pct, row, color="0.8", linewidth=0.8)
    if curve.random:
        ax.plot(pct, curve.random_mean, color="0.5", marker=".", label=f"random (CPR {curve.random_cpr:.2f})")
    ax.plot(pct, curve.faithfulness, color="C0", marker="o", label=f"{curve.method} (CPR {curve.cpr:.2f})")
    ax.axhline(1.0, color="k", linewidth=0.5)
    ax.axhline(0.0, color="k", linewidth=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("edges in circuit (%)")
    ax.set_ylabel("faithfulness")
    ax.set_title(title or f"{curve.task}: circuit faithfulness ({curve.ablation} ablation)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _write_text(path: Path, text: str) -> Path:
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def write_circuit_files(
    circuit: Circuit,
    out: Path,
    *,
    scores: EdgeScores | Mapping[str, float] | None = None,
    info: Mapping[str, Any] | None = None,
    stem: str = "circuit",
    svg: bool = True,
) -> dict[str, Path]:
    """Write ``{stem}.json``, ``{stem}.dot`` and, with Graphviz installed and ``svg``, ``{stem}.svg``.

    The JSON holds the circuit's edges, their ``scores`` when given, and ``info``.
    """
    names = circuit.graph.edge_names()
    values = _kept_scores(circuit, scores)
    payload = {**circuit.to_dict(), **(info or {})}
    if values is not None:
        payload["scores"] = {names[i]: v for i, v in values.items()}
    files = {"json": _write_text(out / f"{stem}.json", json.dumps(payload, indent=2)),
             "dot": _write_text(out / f"{stem}.dot", circuit.to_dot())}  # fmt: skip
    drawn = render_dot(circuit.to_dot(), out / f"{stem}.svg") if svg else None
    if drawn is not None:
        files["svg"] = drawn
    return files


def write_run_files(run: CircuitRun, out: str | Path) -> dict[str, Path]:
    """Write a ``find_circuit`` run's files in ``out``.

    The circuit (JSON, DOT, SVG with Graphviz, PNG drawing), the curve's PNG (edge methods) and ``summary.json``
    (``run.to_dict()`` with the files).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"method": run.method, "config": run.config, "task": run.task, "model": run.model, "result": run.scores}
    files = write_circuit_files(run.circuit, out, scores=run.edge_scores or None, info=info)
    title = f"{run.task}: {run.method} circuit, faithfulness {run.faithfulness:.2f}"
    files["png"] = _save(draw_circuit(run.circuit, run.edge_scores or None, title=title), out / "circuit.png")
    if run.curve is not None:
        files["curve"] = _save(plot_faithfulness_curve(run.curve), out / "faithfulness.png")
    summary = {**run.to_dict(), "files": {k: str(v) for k, v in files.items()}}
    files["summary"] = _write_text(out / "summary.json", json.dumps(summary, indent=2))
    return files


def run_section(run: CircuitRun) -> Section:
    """A ``find_circuit`` run as one report section.

    What was found, its faithfulness against random circuits, the drawing, the curve (edge methods), the strongest
    edges and the method's settings.
    """
    c = run.circuit
    rand = ", ".join(f"{x:.2f}" for x in run.random_faithfulness) or "none"
    body = (f"<p>{html.escape(run.method)} on {html.escape(run.task)} ({run.n_prompts} prompt pairs): a circuit of "
            f"{c.n_edges:,} of {c.graph.n_edges:,} edges ({len(c.nodes())} nodes) with faithfulness "
            f"<b>{run.faithfulness:.3f}</b>; random circuits of the same size: {rand}.</p>")  # fmt: skip
    if (complete := run.scores.get("completeness")) is not None:
        body += (f"<p>{run.scores['steps']} integration step(s): completeness {complete:.2f} (the edges out of the "
                 "input over the clean–corrupt change; 1 when the integral is exact).</p>")  # fmt: skip
    title = f"{run.task}: {run.method} circuit, faithfulness {run.faithfulness:.2f}"
    body += figure_html(draw_circuit(c, run.edge_scores or None, title=title), f"{run.method} circuit")
    if run.curve is not None:
        k = run.curve
        body += (f"<p>CPR <b>{k.cpr:.3f}</b> (random {k.random_cpr:.3f}), CMD <b>{k.cmd:.3f}</b> (random "
                 f"{k.random_cmd:.3f}); {html.escape(k.reach())}.</p>"
                 + figure_html(plot_faithfulness_curve(k), "faithfulness curve"))  # fmt: skip
    if run.edge_scores:
        top = sorted(run.edge_scores.items(), key=lambda kv: -abs(kv[1]))[:15]
        body += table_html(["edge", "score"], top)
    body += table_html(["setting", "value"], [(k, repr(v)) for k, v in run.config.items()])
    return (f"Circuit: {run.method} on {run.task}", body)


# --- the demo's analysis -------------------------------------------------------------------------------------------


def _histogram(a: CircuitAnalysis) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.subplots()
    both = torch.cat([a.clean_diffs, a.corrupt_diffs])
    bins = torch.linspace(float(both.min()) - 0.5, float(both.max()) + 0.5, 25).tolist()
    ax.hist(a.clean_diffs.numpy(), bins=bins, alpha=0.7, label=f"clean (mean {float(a.clean_diffs.mean()):.2f})")
    ax.hist(a.corrupt_diffs.numpy(), bins=bins, alpha=0.7, label=f"corrupt (mean {float(a.corrupt_diffs.mean()):.2f})")
    ax.axvline(0, color="k", linewidth=0.6)
    ax.set_xlabel("logit difference (answer - wrong)")
    ax.set_ylabel("prompts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def analysis_sections(
    a: CircuitAnalysis, out: Path, *, max_edges: int = MAX_DRAWN_EDGES
) -> tuple[list[Section], dict[str, Path]]:
    """The analysis as report sections; writes the circuit files and the curve PNG to ``out`` (returned too).

    A drawn circuit of more than ``max_edges`` edges is drawn grouped by node (``draw_node_circuit``), and its SVG
    is rendered from the node links (``circuit_nodes.dot``); ``circuit.json`` and ``circuit.dot`` keep every edge.
    """
    out.mkdir(parents=True, exist_ok=True)
    info = {"method": a.scores.method, "steps": a.scores.steps, "task": a.scores.task, "model": a.scores.model,
            "size": a.circuit_size, "faithfulness": a.circuit_faithfulness,
            "random_faithfulness": list(a.circuit_random), "faithful_at": a.config.faithful_at,
            "reached": a.circuit_reached}  # fmt: skip
    grouped = a.circuit.n_edges > max_edges
    files = write_circuit_files(a.circuit, out, scores=a.scores, info=info, svg=not grouped)
    if grouped:
        links = dict(list(node_links(a.circuit, a.scores).items())[:max_edges])
        files["nodes_dot"] = _write_text(out / "circuit_nodes.dot", node_dot(links))
        svg = render_dot(node_dot(links), out / "circuit_nodes.svg")
        if svg is not None:
            files["svg"] = svg
    sections = [
        (f"Logit difference over the {a.task.name} prompts", _logit_diff_html(a)),
        ("Heads: DLA vs activation patching", _heads_html(a)),
        ("EAP-IG circuit", _circuit_html(a, out, files, max_edges)),
        ("Faithfulness vs random circuits", _faithfulness_html(a, out, files)),
    ]
    return sections, files


def faithfulness_sentence(a: CircuitAnalysis) -> str:
    """How faithful the drawn circuit is, in one plain sentence (and whether it reaches the stated goal)."""
    c, f, goal = a.circuit, a.circuit_faithfulness, a.config.faithful_at
    rand = ", ".join(f"{x:.2f}" for x in a.circuit_random) or "none measured"
    metric = {"logit_diff": "logit difference"}.get(a.curve.metric, a.curve.metric)
    text = (f"The drawn circuit ({c.n_edges:,} edges, {100 * c.fraction:.3g} % of the graph) recovers {f:.2f} of "
            f"the clean–corrupt {metric} (faithfulness {f:.2f}; 1 = the whole model, 0 = the corrupted run); "
            f"random circuits of the same size: {rand}.")  # fmt: skip
    if a.circuit_reached:
        return text + f" It is the smallest circuit on the faithfulness curve that reaches faithfulness {goal:g}."
    return (text + f" No circuit on the faithfulness curve reaches faithfulness {goal:g}: the drawn circuit is the "
            "most faithful one on it, not a faithful one.")  # fmt: skip


def _steps_sentence(a: CircuitAnalysis) -> str:
    s, cfg = a.scores, a.config
    rows, seconds = a.ig_cost
    tries = ", ".join(f"{t.steps} steps → {t.completeness:.2f}" for t in a.ig_tries)
    if cfg.completeness_tolerance is None:
        rule = f"steps fixed at {cfg.ig_steps}"
    else:
        lo, hi = 1 - cfg.completeness_tolerance, 1 + cfg.completeness_tolerance
        met = "met" if a.ig_tries[-1].close_enough(cfg.completeness_tolerance) else (
            f"<b>not met</b> at the cap of {cfg.max_ig_steps} steps")  # fmt: skip
        rule = f"steps doubled from {cfg.ig_steps} until completeness is within [{lo:g}, {hi:g}]: {met}"
    return (f"EAP-IG with <b>{s.steps} integration steps</b>: completeness <b>{s.completeness:.2f}</b> (the edges "
            f"out of the input sum to that share of the clean–corrupt change; 1 = the integral is exact). Steps "
            f"rule: {rule} (tries: {tries}); all tries together cost {rows:,} forward-and-backward prompt rows "
            f"and {seconds:.1f} s (wall).")  # fmt: skip


def _circuit_html(a: CircuitAnalysis, out: Path, files: dict[str, Path], max_edges: int) -> str:
    c = a.circuit
    head = (f"EAP-IG circuit: top {c.n_edges:,} edges ({100 * a.circuit_size:g} %), "
            f"faithfulness {a.circuit_faithfulness:.2f}")  # fmt: skip
    if c.n_edges > max_edges:
        links = node_links(c, a.scores)
        total = sum(abs(v) for v in links.values()) or 1.0
        held = sum(abs(v) for v in list(links.values())[:max_edges]) / total
        drawing = draw_node_circuit(c, a.scores, max_links=max_edges, title=f"{head}; grouped by node")
        nodes = {n for link in links for n in link}
        how = (f"It has {c.n_edges:,} edges between {len(nodes)} nodes, too many to read one by one, so it is "
               f"<b>drawn grouped by node</b>: its edges make {len(links):,} node-to-node links (a link's score is "
               f"the sum of its edges'), and the {min(max_edges, len(links))} strongest by |summed score| are drawn, "
               f"holding {100 * held:.0f} % of the links' total |score|. ")  # fmt: skip
        table = table_html(["sender", "receiver node", "summed score"], [(s, r, v) for (s, r), v in
                                                                         list(links.items())[:15]])  # fmt: skip
    else:
        drawing = draw_circuit(c, a.scores, title=head)
        how = f"It has {c.n_edges} edges ({len(c.nodes())} nodes), drawn one by one. "
        table = table_html(["edge", "score"], a.scores.top_edges(15))
    files["circuit_png"] = _save(drawing, out / "circuit.png")
    svg = "an SVG drawing (<code>" + files["svg"].name + "</code>)" if "svg" in files else (
        "no SVG (Graphviz <code>dot</code> is not installed)")  # fmt: skip
    return (
        f"<p><b>{html.escape(faithfulness_sentence(a))}</b></p>"
        f"<p>{_steps_sentence(a)} EAP-IG scored all {a.scores.graph.n_edges:,} edges of the graph "
        f"(input, {a.dla.heads.numel()} heads, {a.dla.heads.shape[0]} MLPs, logits; receivers are each head's "
        f"q/k/v inputs, each MLP and the logits). The circuit keeps the highest-|score| edges. {how}It is written "
        f"as <code>circuit.json</code> (every edge and its score), <code>circuit.dot</code> and {svg}.</p>"
        + figure_html(drawing, "circuit drawing")
        + table
    )  # fmt: skip


def _logit_diff_html(a: CircuitAnalysis) -> str:
    n, positive = len(a.task), int((a.clean_diffs > 0).sum())
    return (f"<p>{n} {html.escape(a.task.name)} prompt pairs. The clean logit difference is positive on "
            f"<b>{positive} of {n}</b> prompts (mean {float(a.clean_diffs.mean()):.2f}); the corrupt prompts "
            f"average {float(a.corrupt_diffs.mean()):.2f}.</p>"
            + figure_html(_histogram(a), "logit difference histogram"))  # fmt: skip


def _heads_html(a: CircuitAnalysis) -> str:
    ranks, ov, k = a.rankings(), a.overlaps(), a.k
    rows = [(i + 1, *ranks["dla"][i], *ranks["patching"][i], *ranks["attribution"][i])
            for i in range(min(len(v) for v in ranks.values()))]  # fmt: skip
    return (
        "<p>Heads ranked by |direct logit attribution| (logit-difference units, final-norm scale frozen), by "
        "|effect| of really patching each head's output from the clean run into the corrupt run (denoising; 1 = "
        "clean, 0 = corrupt) and by its attribution-patching estimate (one forward and backward pass). DLA uses "
        f"all {len(a.task)} pairs; patching and attribution the first {a.n_patched} (one forward pass per head "
        "and prompt).</p>"
        + table_html(["#", "DLA head", "DLA", "patching head", "effect", "attribution head", "estimate"], rows)
        + f"<p>Overlap of the top {k}: DLA &amp; patching <b>{ov['dla&patching']}</b>, attribution &amp; "
        f"patching <b>{ov['attribution&patching']}</b>, DLA &amp; attribution {ov['dla&attribution']} "
        f"(chance: {a.chance_overlap:.2f} of {a.dla.heads.numel()} heads).</p>"
        + figure_html(heatmap(a.dla), "DLA heatmap") + figure_html(heatmap(a.patching), "head patching heatmap")
    )  # fmt: skip


def _faithfulness_html(a: CircuitAnalysis, out: Path, files: dict[str, Path]) -> str:
    c = a.curve
    fig = plot_faithfulness_curve(c, title=f"{a.task.name}: faithfulness of EAP-IG circuits vs random")
    files["curve_png"] = _save(fig, out / "faithfulness.png")
    random = c.random_mean or tuple(float("nan") for _ in c.sizes)
    rows = [(f"{100 * s:g} %", m, f, r, "drawn" if s == a.circuit_size else "")
            for s, m, f, r in zip(c.sizes, c.n_edges, c.faithfulness, random, strict=True)]  # fmt: skip
    return (
        f"<p>Faithfulness = (m(circuit) - m(empty)) / (m(full) - m(empty)) with every edge outside the circuit "
        f"carrying its corrupt value ({c.ablation} ablation), at MIB's fixed sizes; {a.config.random} random "
        f"circuits per size as the baseline. <b>CPR {c.cpr:.3f}</b> (area under the curve, higher is better; "
        f"random {c.random_cpr:.3f}), <b>CMD {c.cmd:.3f}</b> (area between the curve and 1, lower is better; "
        f"random {c.random_cmd:.3f}). {html.escape(c.reach(a.config.faithful_at)).capitalize()}; the circuit drawn "
        f"above is the one at {100 * a.circuit_size:g} %.</p>"
        + figure_html(fig, "faithfulness curve")
        + table_html(["size", "edges", "EAP-IG", "random (mean)", ""], rows)
    )  # fmt: skip
