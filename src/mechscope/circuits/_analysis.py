"""A task's circuit analysis in one call: the pieces of an IOI-style study, as data.

``analyse`` runs, on one task, the pieces of an IOI-style study (Wang et al. 2022, "Interpretability in the
Wild"): the per-prompt logit differences, direct logit attribution of every head, real per-head activation
patching and its attribution-patching estimate, EAP-IG edge scores (Hanna et al. 2024), the faithfulness curve
of their top circuits against random circuits with MIB's CPR and CMD (Mueller et al. 2025), and one circuit to
draw. The edge scores and the curve come from ``find_circuit``'s own steps (the declared ``eap-ig`` method and
``ranking_curve``). ``mechscope.report.analysis_sections`` renders the result (HTML, PNG, the circuit's files).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from jaxtyping import Float
from torch import Tensor

from ..core._model import Model
from ..data._metrics import final_logits, logit_diff
from ..data._task import Task
from ._attribution import attribution_patching
from ._contrast import Contrast, subtask
from ._dla import DLAResult, direct_logit_attribution
from ._faithfulness import SIZES, FaithfulnessCurve
from ._find import edge_ranking, ranking_curve, run_method
from ._graph import Circuit, EdgeScores
from ._methods import EAPIGConfig
from ._patching import activation_patching
from ._registry import METHODS
from ._result import PatchingResult


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of :func:`analyse` (the demo states them in its report)."""

    patch_prompts: int = 4
    """Prompt pairs (the task's first ones) for real per-head patching and its attribution estimate: one forward
    pass per head and prompt makes this the demo's most expensive step. 0: all of them."""
    ig_steps: int = 5
    """EAP-IG integration steps (``EAPIGConfig.steps``)."""
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
        """A JSON summary (without the full edge scores; ``mechscope.report.analysis_sections`` writes the circuit)."""
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
    spec, settings = METHODS["eap-ig"], EAPIGConfig(steps=c.ig_steps, batch_size=c.batch_size)
    scores = timed("eap_ig", lambda: run_method(spec, model, task, settings, progress=progress))
    curve = timed("faithfulness", lambda: ranking_curve(model, task, scores.graph, edge_ranking(scores), spec.name,
                                                        random=c.random, seed=c.seed, batch_size=c.batch_size,
                                                        progress=progress))  # fmt: skip
    circuit = scores.top(int(c.circuit_size * scores.graph.n_edges))
    return CircuitAnalysis(task, c, clean, corrupt, dla, patching, attrib["head.z"], scores, curve, circuit, seconds)
