"""ACDC at node granularity: remove heads and MLPs one by one while the output barely changes.

Automatic Circuit DisCovery (Conmy et al. 2023, "Towards Automated Circuit Discovery for Mechanistic
Interpretability", section 3, Algorithm 1) walks the graph from the logits back to the input and tries to remove
each component; a removal is kept when the metric moves by less than a threshold ``tau``. Here the components are
nodes (every head and every MLP; the input is always kept), visited from the last layer to the first (MLP before
the heads of its layer), and removing one means every reader sees its corrupt output: the same ablation as a
circuit's missing edges (``Circuit.from_nodes``), applied with ``Patch`` on ``head.L.z`` / ``mlp_out.L``.

With ``metric="kl"`` the score is the mean KL divergence of the next-token distribution from the clean model's
(Conmy et al.'s default) and a removal is kept when it raises the KL by less than ``tau``; with a task metric
(e.g. ``logit_diff``) it is kept when the mean metric moves by less than ``tau`` either way. One forward pass per
node: meant for small graphs (SmolLM2's 300 nodes take minutes on a CPU). Because nodes are visited from the last
layer down, every node removed so far sits at or above the one being tried, at layer ``L``: below ``L`` the run is
the clean run, so each pass starts at block ``L`` from the clean run's residual stream (a ``Prefix``) and
unembeds only each prompt's last real token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from tqdm.auto import tqdm

from ..core._interventions import Patch
from ..core._model import Model
from ..core._residual import ResidualModel, model_of
from ..data._metrics import kl_to_log_probs, logit_diff
from ..data._task import Task
from ._contrast import Contrast, Metric
from ._edgerun import Ablation, SenderActs, reference
from ._graph import Circuit, Graph
from ._prefix import Prefix


@dataclass(frozen=True)
class ACDCStep:
    """One node tried: the score before and after removing it, and whether the removal was kept."""

    node: str
    before: float
    after: float
    removed: bool


@dataclass(frozen=True, eq=False)
class ACDCResult:
    """The nodes ACDC kept and removed, with the trace of every decision."""

    graph: Graph
    kept: tuple[str, ...]
    """Heads and MLPs in the circuit (``a{L}.h{H}``, ``m{L}``), in graph order; the input is always in it."""
    removed: tuple[str, ...]
    steps: tuple[ACDCStep, ...]
    tau: float
    metric: str
    """``kl`` or the task metric's name."""
    clean_score: float
    """Score of the full model (0 for KL)."""
    final_score: float
    """Score of the circuit (the full model with every removed node ablated)."""
    ablation: str
    task: str
    model: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def circuit(self) -> Circuit:
        """The node circuit as edges: every edge out of the input and the kept nodes."""
        return Circuit.from_nodes(self.graph, list(self.kept))

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph.to_dict(),
            "kept": list(self.kept),
            "removed": list(self.removed),
            "steps": [s.__dict__ for s in self.steps],
            "tau": self.tau,
            "metric": self.metric,
            "clean_score": self.clean_score,
            "final_score": self.final_score,
            "ablation": self.ablation,
            "task": self.task,
            "model": self.model,
            "seconds": self.seconds,
        }


def acdc(
    model: Model | ResidualModel,
    task: Task,
    *,
    tau: float = 0.01,
    metric: Metric | Literal["kl"] = "kl",
    ablation: Ablation = "patch",
    seed: int = 0,
    progress: bool = True,
) -> ACDCResult:
    """Run node-level ACDC on the clean prompts, ablating removed nodes to their corrupt (``ablation``) value.

    ``model``: a transformer language model or any ``ResidualModel`` adapter (only its sites are used).
    """
    start = time.perf_counter()
    model = model_of(model)
    assert model.cfg is not None, "ACDC needs a transformer language model"
    contrast = Contrast.of(model, task, metric if callable(metric) else logit_diff)  # KL: tokenises only
    graph = Graph.of(model.cfg)
    mask = contrast.attention_mask
    corrupt = model.run(contrast.corrupt, cache=SenderActs.sites(graph.n_layers), attention_mask=mask).cache
    ref = reference(SenderActs.of(corrupt, graph.n_layers), ablation, mask, contrast.n_prompts, seed)
    clean_run = model.run(contrast.clean, attention_mask=mask, cache=Prefix.sites(model, contrast.clean),
                          logits="final")  # fmt: skip
    clean_log_probs, prefix = clean_run.final_logits().float().log_softmax(-1), Prefix.of(clean_run.cache)

    def score(removed: set[str], layer: int) -> float:
        """Score with ``removed`` ablated; none of them is below ``layer``."""
        with model.intervene(*_ablations(graph, removed, ref)):
            out = contrast.forward_run(model, contrast.clean, start=prefix.start(layer))
        if metric == "kl":
            return float(kl_to_log_probs(out.final_logits(), clean_log_probs).mean())
        return float(contrast.score_run(out)[0])

    senders = {s.name: s for s in graph.senders}
    order = [s.name for s in reversed(graph.senders) if s.kind != "input"]
    removed: set[str] = set()
    steps = []
    current = clean = score(removed, graph.n_layers - 1)
    for node in tqdm(order, desc="ACDC", disable=not progress, leave=False):
        after = score(removed | {node}, senders[node].layer)
        change = after - current if metric == "kl" else abs(after - current)
        drop = change < tau
        steps.append(ACDCStep(node, current, after, drop))
        if drop:
            removed.add(node)
            current = after
    names = [s.name for s in graph.senders if s.kind != "input"]
    return ACDCResult(
        graph=graph,
        kept=tuple(n for n in names if n not in removed),
        removed=tuple(n for n in names if n in removed),
        steps=tuple(steps),
        tau=tau,
        metric="kl" if metric == "kl" else getattr(metric, "__name__", repr(metric)),
        clean_score=clean,
        final_score=current,
        ablation=ablation,
        task=task.name,
        model=model.provenance,
        seconds=time.perf_counter() - start,
    )


def _ablations(graph: Graph, removed: set[str], ref: SenderActs) -> list[Patch]:
    """``Patch`` interventions giving every removed node its reference output."""
    out = []
    for layer in range(graph.n_layers):
        heads = [h for h in range(graph.n_heads) if f"a{layer}.h{h}" in removed]
        if heads:
            out.append(Patch(f"head.{layer}.z", ref.z[layer], heads=heads))
        if f"m{layer}" in removed:
            out.append(Patch(f"mlp_out.{layer}", ref.mlp[layer]))
    return out
