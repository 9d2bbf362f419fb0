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


def draw_circuit(
    circuit: Circuit, scores: EdgeScores | Mapping[str, float] | None = None, *, title: str | None = None
) -> Figure:
    """A layered drawing of ``circuit``.

    Edge colours and widths come from ``scores`` when given: edge scores, or edge name -> score as
    ``CircuitRun.edge_scores`` holds them.
    """
    from matplotlib.figure import Figure

    g = circuit.graph
    kept = torch.nonzero(circuit.edges).flatten().tolist()
    values = _kept_scores(circuit, scores)
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
    biggest = max((abs(v) for v in values.values()), default=1.0) if values is not None else 1.0
    for s, r, kind, i in pairs:
        (x0, y0), (x1, y1) = pos[s], pos[r]
        value = values[i] if values is not None else 1.0
        colour = "0.4" if values is None else ("tab:red" if value > 0 else "tab:blue")
        width = 0.4 + 2.6 * abs(value) / (biggest or 1.0)
        style = {"q": "-", "k": "--", "v": ":"}.get(kind, "-")
        ax.plot([x0, x1], [y0, y1], color=colour, linewidth=width, linestyle=style, alpha=0.6, zorder=1)
    for n, (x, y) in pos.items():
        face = "#fde9c9" if n.startswith("m") else "#d7e8f7" if n.startswith("a") else "#e0e0e0"
        box = {"boxstyle": "round,pad=0.2", "facecolor": face, "edgecolor": "0.5", "linewidth": 0.5}
        ax.text(x, y, n, ha="center", va="center", fontsize=6.5, zorder=2, bbox=box)
    ax.set_xlim(0, 1)
    ax.set_ylim(-1.7, g.n_layers + 0.7)
    ax.set_xticks([])
    ax.set_ylabel("layer")
    ax.set_title(title or f"{circuit!r}", fontsize=9)
    if values is not None:
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
) -> dict[str, Path]:
    """Write ``{stem}.json``, ``{stem}.dot`` and, with Graphviz installed, ``{stem}.svg``.

    The JSON holds the circuit's edges, their ``scores`` when given, and ``info``.
    """
    names = circuit.graph.edge_names()
    values = _kept_scores(circuit, scores)
    payload = {**circuit.to_dict(), **(info or {})}
    if values is not None:
        payload["scores"] = {names[i]: v for i, v in values.items()}
    files = {"json": _write_text(out / f"{stem}.json", json.dumps(payload, indent=2)),
             "dot": _write_text(out / f"{stem}.dot", circuit.to_dot())}  # fmt: skip
    svg = render_dot(circuit.to_dot(), out / f"{stem}.svg")
    if svg is not None:
        files["svg"] = svg
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


def analysis_sections(a: CircuitAnalysis, out: Path) -> tuple[list[Section], dict[str, Path]]:
    """The analysis as report sections; writes the circuit files and the curve PNG to ``out`` (returned too)."""
    out.mkdir(parents=True, exist_ok=True)
    info = {"method": a.scores.method, "steps": a.scores.steps, "task": a.scores.task, "model": a.scores.model}
    files = write_circuit_files(a.circuit, out, scores=a.scores, info=info)
    sections = [
        (f"Logit difference over the {a.task.name} prompts", _logit_diff_html(a)),
        ("Heads: DLA vs activation patching", _heads_html(a)),
        ("EAP-IG circuit", _circuit_html(a, out, files)),
        ("Faithfulness vs random circuits", _faithfulness_html(a, out, files)),
    ]
    return sections, files


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


def _circuit_html(a: CircuitAnalysis, out: Path, files: dict[str, Path]) -> str:
    title = f"EAP-IG circuit: top {a.circuit.n_edges} edges ({100 * a.config.circuit_size:g} %)"
    drawing = draw_circuit(a.circuit, a.scores, title=f"{title}, faithfulness {a.circuit_faithfulness:.2f}")
    files["circuit_png"] = _save(drawing, out / "circuit.png")
    svg = "an SVG drawing (<code>circuit.svg</code>)" if "svg" in files else (
        "no SVG (Graphviz <code>dot</code> is not installed)")  # fmt: skip
    return (
        f"<p>EAP-IG ({a.scores.steps} steps) scored all {a.scores.graph.n_edges:,} edges of the graph "
        f"(input, {a.dla.heads.numel()} heads, {a.dla.heads.shape[0]} MLPs, logits; receivers are each head's "
        f"q/k/v inputs, each MLP and the logits) in {a.scores.seconds:.1f} s. Completeness (input edges' scores "
        f"over the clean-corrupt change): {a.scores.completeness:.2f}. The circuit below keeps the "
        f"{a.circuit.n_edges} highest-|score| edges ({len(a.circuit.nodes())} nodes) and has faithfulness "
        f"{a.circuit_faithfulness:.2f} (next section: {a.curve.reach()}; a circuit small enough to draw "
        f"is for reading, not a claim that it carries the behaviour); it is written as <code>circuit.json</code>, "
        f"<code>circuit.dot</code> and {svg}.</p>"
        + figure_html(drawing, "circuit drawing")
        + table_html(["edge", "score"], a.scores.top_edges(15))
    )


def _faithfulness_html(a: CircuitAnalysis, out: Path, files: dict[str, Path]) -> str:
    c = a.curve
    fig = plot_faithfulness_curve(c, title=f"{a.task.name}: faithfulness of EAP-IG circuits vs random")
    files["curve_png"] = _save(fig, out / "faithfulness.png")
    random = c.random_mean or tuple(float("nan") for _ in c.sizes)
    rows = [(f"{100 * s:g} %", m, f, r) for s, m, f, r in zip(c.sizes, c.n_edges, c.faithfulness, random, strict=True)]
    return (
        f"<p>Faithfulness = (m(circuit) - m(empty)) / (m(full) - m(empty)) with every edge outside the circuit "
        f"carrying its corrupt value ({c.ablation} ablation), at MIB's fixed sizes; {a.config.random} random "
        f"circuits per size as the baseline. <b>CPR {c.cpr:.3f}</b> (area under the curve, higher is better; "
        f"random {c.random_cpr:.3f}), <b>CMD {c.cmd:.3f}</b> (area between the curve and 1, lower is better; "
        f"random {c.random_cmd:.3f}).</p>"
        + figure_html(fig, "faithfulness curve")
        + table_html(["size", "edges", "EAP-IG", "random (mean)"], rows)
    )  # fmt: skip
