"""A task's circuit analysis in one call, and its sections for an HTML report.

``analyse`` runs, on one task, the pieces of an IOI-style study (Wang et al. 2022, "Interpretability in the
Wild"): the per-prompt logit differences, direct logit attribution of every head, real per-head activation
patching and its attribution-patching estimate, EAP-IG edge scores (Hanna et al. 2024), the faithfulness curve
of their top circuits against random circuits with MIB's CPR and CMD (Mueller et al. 2025), and one circuit to
draw. ``report_sections`` writes the circuit's files (JSON, DOT, SVG when Graphviz is installed, PNGs) and returns
``(title, HTML)`` sections for ``mechscope.report.write_report``.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from matplotlib.figure import Figure
from torch import Tensor

from .._cache import atomic_write_bytes
from ..core._model import Model
from ..data._metrics import final_logits, logit_diff
from ..data._task import Task
from ..report import Section, figure_html, table_html
from ._attribution import attribution_patching
from ._contrast import Contrast, subtask
from ._dla import DLAResult, direct_logit_attribution
from ._draw import draw_circuit, render_dot
from ._eap import eap_ig
from ._faithfulness import SIZES, FaithfulnessCurve, faithfulness_curve
from ._graph import Circuit, EdgeScores
from ._patching import activation_patching
from ._plot import heatmap
from ._result import PatchingResult


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of :func:`analyse` (the demo states them in its report)."""

    patch_prompts: int = 4
    """Prompt pairs (the task's first ones) for real per-head patching and its attribution estimate: one forward
    pass per head and prompt makes this the demo's most expensive step. 0: all of them."""
    ig_steps: int = 5
    """EAP-IG integration steps (``eap_ig(steps=...)``)."""
    random: int = 2
    """Random circuits per size on the faithfulness curve."""
    circuit_size: float = 0.002
    """Size of the circuit drawn, as a fraction of edges; one of ``SIZES`` so its faithfulness is on the curve."""
    top_heads: int = 10
    """How many heads each ranking shows and compares."""
    seed: int = 0
    """Seed of the random circuits."""
    batch_size: int = 32
    """Rows per forward pass."""

    def __post_init__(self) -> None:
        if self.circuit_size not in SIZES:
            raise ValueError(f"circuit_size must be one of {SIZES}, got {self.circuit_size}")
        if self.ig_steps < 1 or self.random < 0 or self.top_heads < 1 or self.patch_prompts < 0:
            raise ValueError(f"need ig_steps >= 1, random >= 0, top_heads >= 1, patch_prompts >= 0; got {self}")


@dataclass(frozen=True, eq=False)
class CircuitAnalysis:
    """Everything :func:`analyse` measured on one task."""

    task: Task
    config: AnalysisConfig
    clean_diffs: Float[Tensor, " batch"]
    """Logit difference (answer minus wrong) of each clean prompt."""
    corrupt_diffs: Float[Tensor, " batch"]
    dla: DLAResult
    patching: PatchingResult
    """Real per-head activation patching (``head.z``, denoising) on the first ``config.patch_prompts`` pairs."""
    attribution: PatchingResult
    """Attribution-patching estimate of the same grid."""
    scores: EdgeScores
    """EAP-IG scores of every edge."""
    curve: FaithfulnessCurve
    circuit: Circuit
    """The top ``config.circuit_size`` of edges by |EAP-IG score|."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each step."""

    def rankings(self) -> dict[str, list[tuple[str, float]]]:
        """Top heads (``a{L}.h{H}``) by |DLA|, by |real patching effect| and by |attribution estimate|."""
        k = self.k
        dla = self.dla.heads
        order = dla.abs().flatten().argsort(descending=True)[:k].tolist()
        n_heads = dla.shape[1]
        out = {"dla": [(f"a{i // n_heads}.h{i % n_heads}", float(dla.flatten()[i])) for i in order]}
        for name, grid in (("patching", self.patching), ("attribution", self.attribution)):
            out[name] = [(f"a{n.layer}.h{n.head}", v) for n, v in grid.top(k)]
        return out

    def overlaps(self) -> dict[str, int]:
        """Heads shared by the top-k lists: ``dla&patching``, ``attribution&patching``, ``dla&attribution``."""
        sets = {k: {h for h, _ in v} for k, v in self.rankings().items()}
        return {f"{a}&{b}": len(sets[a] & sets[b]) for a, b in
                (("dla", "patching"), ("attribution", "patching"), ("dla", "attribution"))}  # fmt: skip

    @property
    def n_patched(self) -> int:
        """Prompt pairs that real patching and attribution patching ran on."""
        return min(self.config.patch_prompts or len(self.task), len(self.task))

    @property
    def k(self) -> int:
        """Length of the head rankings: ``config.top_heads``, at most every head."""
        return min(self.config.top_heads, self.dla.heads.numel())

    @property
    def chance_overlap(self) -> float:
        """Expected overlap of two random top-k lists of heads: ``k * k / n_heads_total``."""
        return self.k**2 / self.dla.heads.numel()

    @property
    def circuit_faithfulness(self) -> float:
        return self.curve.at(self.config.circuit_size)

    def to_dict(self) -> dict[str, Any]:
        """A JSON summary (the full edge scores are left out; ``report_sections`` writes the circuit)."""
        return {
            "task": self.task.name,
            "n_prompts": len(self.task),
            "config": asdict(self.config),
            "logit_diff": {
                "clean": self.clean_diffs.tolist(),
                "corrupt": self.corrupt_diffs.tolist(),
                "clean_mean": float(self.clean_diffs.mean()),
                "corrupt_mean": float(self.corrupt_diffs.mean()),
                "clean_positive": int((self.clean_diffs > 0).sum()),
            },
            "top_heads": {k: [{"head": h, "value": v} for h, v in rows] for k, rows in self.rankings().items()},
            "overlap": self.overlaps(),
            "chance_overlap": self.chance_overlap,
            "eap_ig": {
                "steps": self.scores.steps,
                "completeness": self.scores.completeness,
                "n_edges": self.scores.graph.n_edges,
                "top_edges": self.scores.top_edges(20),
            },
            "faithfulness": self.curve.to_dict(),
            "circuit": {
                "size": self.config.circuit_size,
                "n_edges": self.circuit.n_edges,
                "n_nodes": len(self.circuit.nodes()),
                "faithfulness": self.circuit_faithfulness,
            },
            "seconds": self.seconds,
        }


def per_prompt_logit_diffs(model: Model, task: Task) -> tuple[Tensor, Tensor]:
    """Logit difference of every clean and every corrupt prompt (no averaging)."""
    contrast = Contrast.of(model, task, logit_diff)
    out = []
    for tokens in (contrast.clean, contrast.corrupt):
        logits = model.run(tokens, attention_mask=contrast.attention_mask).logits
        assert logits is not None
        out.append(logit_diff(final_logits(logits, contrast.attention_mask), task).float().detach())
    return out[0], out[1]


def analyse(model: Model, task: Task, config: AnalysisConfig = AnalysisConfig(), *, progress: bool = False):
    """Run every step of the analysis on ``task`` (metric: logit difference) and return a ``CircuitAnalysis``."""
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        start = time.perf_counter()
        out = fn()
        seconds[name] = time.perf_counter() - start
        return out

    c = config
    clean, corrupt = timed("logit_diff", lambda: per_prompt_logit_diffs(model, task))
    dla = timed("dla", lambda: direct_logit_attribution(model, task))
    few = subtask(task, slice(0, c.patch_prompts or len(task)))
    patching = timed("activation_patching", lambda: activation_patching(model, few, "head.z", progress=progress))
    attrib = timed("attribution_patching", lambda: attribution_patching(model, few, ["head.z"], progress=progress))
    scores = timed("eap_ig", lambda: eap_ig(model, task, steps=c.ig_steps, batch_size=c.batch_size,
                                            progress=progress))  # fmt: skip
    curve = timed("faithfulness", lambda: faithfulness_curve(model, task, scores, random=c.random, seed=c.seed,
                                                             batch_size=c.batch_size, progress=progress))  # fmt: skip
    circuit = scores.top(int(c.circuit_size * scores.graph.n_edges))
    return CircuitAnalysis(task, c, clean, corrupt, dla, patching, attrib["head.z"], scores, curve, circuit, seconds)


# --- report ------------------------------------------------------------------------------------------------------


def _histogram(a: CircuitAnalysis) -> Figure:
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


def _write_text(path: Path, text: str) -> Path:
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def write_circuit_files(scores: EdgeScores, circuit: Circuit, out: Path, stem: str = "circuit") -> dict[str, Path]:
    """``{stem}.json`` (edges with scores), ``{stem}.dot`` and, with Graphviz installed, ``{stem}.svg``."""
    kept = torch.nonzero(circuit.edges).flatten().tolist()
    names = scores.graph.edge_names()
    payload = {**circuit.to_dict(), "method": scores.method, "steps": scores.steps, "task": scores.task,
               "scores": {names[i]: float(scores.scores[i]) for i in kept}, "model": scores.model}  # fmt: skip
    files = {"json": _write_text(out / f"{stem}.json", json.dumps(payload, indent=2)),
             "dot": _write_text(out / f"{stem}.dot", circuit.to_dot())}  # fmt: skip
    svg = render_dot(circuit.to_dot(), out / f"{stem}.svg")
    if svg is not None:
        files["svg"] = svg
    return files


def report_sections(a: CircuitAnalysis, out: Path) -> tuple[list[Section], dict[str, Path]]:
    """The analysis as report sections; writes the circuit files and the curve PNG to ``out`` (returned too)."""
    out.mkdir(parents=True, exist_ok=True)
    files = write_circuit_files(a.scores, a.circuit, out)
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
    fig = c.plot(title=f"{a.task.name}: faithfulness of EAP-IG circuits vs random")
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


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path
