"""A task's circuit analysis in one call: the pieces of an IOI-style study, as data.

``analyse`` runs, on one task, the pieces of an IOI-style study (Wang et al. 2022, "Interpretability in the
Wild"): the per-prompt logit differences, direct logit attribution of every head, real per-head activation
patching and its attribution-patching estimate, EAP-IG edge scores (Hanna et al. 2024), the faithfulness curve
of their top circuits against random circuits with MIB's CPR and CMD (Mueller et al. 2025), and one circuit to
draw. The edge scores and the curve come from ``find_circuit``'s own steps (the declared ``eap-ig`` method and
``ranking_curve``). ``mechscope.report.analysis_sections`` renders the result (HTML, PNG, the circuit's files).

Two rules keep the numbers it shows honest:

- **Integration steps by completeness.** EAP-IG's edges out of ``input`` add up to the whole clean - corrupt change
  only when the integral is fine enough (``EdgeScores.completeness``, ideally 1). ``eap_ig_until_complete`` starts
  at ``ig_steps`` and doubles the steps while completeness is more than ``completeness_tolerance`` away from 1 (up
  to ``max_ig_steps``); every try is kept, so the report states the steps used and what they cost.
- **The drawn circuit is a faithful one.** It is the smallest circuit on the faithfulness curve whose faithfulness
  reaches ``faithful_at`` (the most faithful one when none does, and the report says so), and its faithfulness and
  that of random circuits of its size are measured on the very circuit drawn.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core._model import Model
from ..data._metrics import final_logits, logit_diff
from ..data._task import Task
from ._attribution import attribution_patching
from ._contrast import Contrast, subtask
from ._dla import DLAResult, direct_logit_attribution
from ._faithfulness import FaithfulnessCurve, faithfulness
from ._find import edge_ranking, ranking_curve, run_method
from ._graph import Circuit, EdgeScores
from ._methods import EAPIGConfig
from ._patching import activation_patching
from ._registry import METHODS
from ._result import PatchingResult

IG_STEPS = 10
"""EAP-IG steps the analysis starts from: the fewest on the ladder 5, 10, 20, 40 at which completeness is within 0.1
of 1 on three held-out IOI sets of 8 pairs on SmolLM2-135M (``benchmarks/eapig_steps.py``; 5 steps reach 1.31)."""


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of :func:`analyse` (the demo states them in its report)."""

    patch_prompts: int = 4
    """Prompt pairs (the task's first ones) for real per-head patching and its attribution estimate: one forward
    pass per head and prompt makes this the demo's most expensive step. 0: all of them."""
    ig_steps: int = IG_STEPS
    """EAP-IG integration steps to start from (``EAPIGConfig.steps``); doubled while completeness is off (below)."""
    completeness_tolerance: float | None = 0.1
    """Double EAP-IG's steps while its completeness is further than this from 1 (so at least 0.9 when reached);
    None: use ``ig_steps`` as they are."""
    max_ig_steps: int = 80
    """No more EAP-IG steps than this, completeness reached or not (the report says which)."""
    random: int = 2
    """Random circuits per size on the faithfulness curve, and of the drawn circuit's size."""
    faithful_at: float = 0.8
    """The drawn circuit is the smallest on the curve whose faithfulness reaches this (1 = the whole model, 0 = the
    corrupt run); when none does, the most faithful one on the curve."""
    top_heads: int = 10
    """How many heads each ranking shows and compares."""
    seed: int = 0
    """Seed of the random circuits."""
    batch_size: int = 32
    """Rows per forward pass."""

    def __post_init__(self) -> None:
        if self.ig_steps < 1 or self.random < 0 or self.top_heads < 1 or self.patch_prompts < 0:
            raise ValueError(f"need ig_steps >= 1, random >= 0, top_heads >= 1, patch_prompts >= 0; got {self}")
        if self.max_ig_steps < self.ig_steps:
            raise ValueError(f"max_ig_steps ({self.max_ig_steps}) is below ig_steps ({self.ig_steps})")
        if self.completeness_tolerance is not None and self.completeness_tolerance <= 0:
            raise ValueError(f"completeness_tolerance must be positive or None, got {self.completeness_tolerance}")
        if not 0 < self.faithful_at <= 1:
            raise ValueError(f"faithful_at must be in (0, 1] (1 = the whole model), got {self.faithful_at}")


@dataclass(frozen=True)
class IGTry:
    """One EAP-IG run of the steps rule: its steps, completeness and cost."""

    steps: int
    completeness: float
    seconds: float
    """Wall time of the run."""
    rows: int
    """Rows through the forward and backward pass (``steps`` copies of every prompt)."""

    def close_enough(self, tolerance: float) -> bool:
        """Completeness within ``tolerance`` of 1 (NaN, when clean and corrupt tie, never is)."""
        return abs(self.completeness - 1.0) <= tolerance


def eap_ig_until_complete(
    model: Model,
    task: Task,
    config: EAPIGConfig,
    *,
    tolerance: float | None = 0.1,
    max_steps: int = 80,
    progress: bool = False,
) -> tuple[EdgeScores, tuple[IGTry, ...]]:
    """EAP-IG from ``config.steps``, doubling the steps while completeness is further than ``tolerance`` from 1.

    Stops at the first try within tolerance or at ``max_steps`` (the last try then has exactly ``max_steps``).
    Returns the last scores and every try (steps, completeness, seconds), so the cost of the rule is on record.
    ``tolerance=None``: one run at ``config.steps``.
    """
    spec, tries = METHODS["eap-ig"], []
    while True:
        start = time.perf_counter()
        scores: EdgeScores = run_method(spec, model, task, config, progress=progress)
        tries.append(IGTry(config.steps, scores.completeness, time.perf_counter() - start, config.steps * len(task)))
        if tolerance is None or tries[-1].close_enough(tolerance) or config.steps >= max_steps:
            return scores, tuple(tries)
        config = replace(config, steps=min(2 * config.steps, max_steps))


def pick_size(curve: FaithfulnessCurve, at_least: float) -> tuple[int, bool]:
    """Index on ``curve`` of the circuit to draw, and whether it reaches ``at_least``.

    The smallest size whose faithfulness reaches ``at_least``; when none does, the most faithful size (the
    smallest of equals).
    """
    hit = curve.smallest_faithful(at_least)
    if hit is not None:
        return curve.sizes.index(hit[0]), True
    best = max(curve.faithfulness)
    return curve.faithfulness.index(best), False


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
    """EAP-IG scores of every edge (the last of ``ig_tries``)."""
    ig_tries: tuple[IGTry, ...]
    """Every EAP-IG run of the steps rule, in order (the last one gave ``scores``)."""
    curve: FaithfulnessCurve
    circuit: Circuit
    """The drawn circuit: the curve's circuit at ``circuit_size`` (the smallest reaching ``config.faithful_at``)."""
    circuit_size: float
    """The drawn circuit's size on the curve, as a fraction of the graph's edges."""
    circuit_faithfulness: float
    """Faithfulness of ``circuit`` itself (1 = the whole model, 0 = the corrupt run)."""
    circuit_random: tuple[float, ...]
    """Faithfulness of ``config.random`` random circuits with as many edges."""
    circuit_reached: bool
    """Whether the curve reaches ``config.faithful_at`` (False: ``circuit`` is the most faithful size instead)."""
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
    def ig_cost(self) -> tuple[int, float]:
        """Forward-and-backward rows and seconds of every EAP-IG try together (the steps rule's cost)."""
        return sum(t.rows for t in self.ig_tries), sum(t.seconds for t in self.ig_tries)

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
                "tries": [asdict(t) for t in self.ig_tries],
                "rows": self.ig_cost[0],
                "seconds": self.ig_cost[1],
                "n_edges": self.scores.graph.n_edges,
                "top_edges": self.scores.top_edges(20),
            },
            "faithfulness": self.curve.to_dict(),
            "circuit": {
                "size": self.circuit_size,
                "n_edges": self.circuit.n_edges,
                "n_nodes": len(self.circuit.nodes()),
                "faithfulness": self.circuit_faithfulness,
                "random_faithfulness": list(self.circuit_random),
                "faithful_at": self.config.faithful_at,
                "reached": self.circuit_reached,
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


ANALYSIS_STEPS = ("logit_diff", "dla", "activation_patching", "attribution_patching", "eap_ig", "faithfulness",
                  "drawn_circuit")  # fmt: skip
"""The steps of ``analyse``, in order (``on_step`` is called with each name as it starts)."""


def analyse(
    model: Model,
    task: Task,
    config: AnalysisConfig = AnalysisConfig(),
    *,
    progress: bool = False,
    on_step: Any = None,
):
    """Run every step of the analysis on ``task`` (metric: logit difference) and return a ``CircuitAnalysis``.

    ``on_step(name)``, if given, is called as each step of ``ANALYSIS_STEPS`` starts (for a status line or log).
    """
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        if on_step is not None:
            on_step(name)
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
    settings = EAPIGConfig(steps=c.ig_steps, batch_size=c.batch_size)
    scores, tries = timed("eap_ig", lambda: eap_ig_until_complete(model, task, settings, progress=progress,
                                                                  tolerance=c.completeness_tolerance,
                                                                  max_steps=c.max_ig_steps))  # fmt: skip
    g, ranking = scores.graph, edge_ranking(scores)
    curve = timed("faithfulness", lambda: ranking_curve(model, task, g, ranking, "eap-ig", random=c.random,
                                                        seed=c.seed, batch_size=c.batch_size,
                                                        progress=progress))  # fmt: skip
    index, reached = pick_size(curve, c.faithful_at)
    circuit = Circuit(g, torch.zeros(g.n_edges, dtype=torch.bool).index_fill(0, ranking[: curve.n_edges[index]], True))
    randoms = [Circuit.random(g, circuit.n_edges, seed=c.seed + i) for i in range(c.random)]
    faith = timed("drawn_circuit", lambda: faithfulness(model, task, [circuit, *randoms], seed=c.seed,
                                                        batch_size=c.batch_size, progress=progress))  # fmt: skip
    return CircuitAnalysis(task, c, clean, corrupt, dla, patching, attrib["head.z"], scores, tries, curve, circuit,
                           curve.sizes[index], faith[0], tuple(faith[1:]), reached, seconds)  # fmt: skip
