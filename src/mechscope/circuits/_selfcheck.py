"""Check a cheap estimate against the real thing: re-run true activation patching on a sample of nodes.

Attribution patching is a linear approximation (Syed et al. 2023, section 3) that fails in known ways —
saturated attention, large activations, cancellation between paths (Kramár et al. 2024, "AtP*", section 3). The
only way to know how far to trust a given run is to measure: ``verify`` draws nodes uniformly at random from the
scored grids, patches each for real (same direction, same metric) and reports the correlation and error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .. import _numerics
from ..core._model import Model
from ..data._metrics import logit_diff
from ..data._task import Task
from ._contrast import Contrast, Metric
from ._nodes import Node
from ._patching import patch_nodes

if TYPE_CHECKING:
    from ._attribution import AttributionResult


@dataclass(frozen=True)
class CheckedNode:
    """One sampled node: its estimated and its measured effect (normalised: 1 = clean, 0 = corrupt)."""

    node: Node
    estimate: float
    actual: float


@dataclass(frozen=True)
class SelfCheck:
    """Agreement of estimated and real patching effects on a random sample of nodes."""

    direction: str
    seed: int
    nodes: tuple[CheckedNode, ...]
    pearson: float
    """Pearson correlation of estimated and real effects (NaN when either is constant)."""
    spearman: float
    """Spearman rank correlation (average ranks for ties)."""
    mean_abs_error: float
    """Mean |estimate - actual| in normalised effect units."""

    @property
    def n(self) -> int:
        return len(self.nodes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        rows = [{"node": c.node.label(), "kind": c.node.kind, "layer": c.node.layer, "head": c.node.head,
                 "pos": c.node.pos, "estimate": c.estimate, "actual": c.actual} for c in self.nodes]  # fmt: skip
        return {"direction": self.direction, "seed": self.seed, "n": self.n, "pearson": self.pearson,
                "spearman": self.spearman, "mean_abs_error": self.mean_abs_error, "nodes": rows}  # fmt: skip


def verify(
    result: AttributionResult,
    model: Model,
    task: Task,
    *,
    sample: int = 16,
    seed: int = 0,
    metric: Metric = logit_diff,
    batch_size: int = 64,
    progress: bool = True,
) -> SelfCheck:
    """Really patch ``sample`` nodes drawn at random (``seed``) from ``result``'s grids and compare.

    Pass the task and metric the result was computed with; a different metric name is refused. The sample is
    uniform over all scored nodes, so on a sparse circuit most sampled nodes have effects near zero: the
    correlation then measures agreement on the bulk as well as on the few large nodes.
    """
    grids = list(result.grids.values())
    if not grids:
        raise ValueError("verify: the attribution result has no grids")
    name = getattr(metric, "__name__", repr(metric))
    if any(g.metric != name for g in grids) or any(g.task != task.name for g in grids):
        raise ValueError(f"verify: the result was computed with metric {grids[0].metric!r} on task "
                         f"{grids[0].task!r}; got metric {name!r} and task {task.name!r}")  # fmt: skip
    direction = grids[0].direction
    pool = [(node, float(value)) for g in grids for node, value in zip(g.nodes(), g.effect.flatten(), strict=True)]
    picked = random.Random(seed).sample(pool, min(sample, len(pool)))
    contrast = Contrast.of(model, task, metric)
    nodes = [node for node, _ in picked]
    scores, clean, corrupt = patch_nodes(model, contrast, nodes, direction, batch_size=batch_size,
                                         progress=progress, desc="verify")  # fmt: skip
    actual = (scores - corrupt) / (clean - corrupt)
    estimate = torch.tensor([v for _, v in picked])
    rows = tuple(CheckedNode(n, e, a) for n, e, a in zip(nodes, estimate.tolist(), actual.tolist(), strict=True))
    return SelfCheck(direction, seed, rows, pearson(estimate, actual), spearman(estimate, actual),
                     float((estimate - actual).abs().mean()))  # fmt: skip


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two 1-D tensors (NaN when either is constant)."""
    return float(_numerics.pearson(x.flatten(), y.flatten()))


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman rank correlation: Pearson correlation of the (tie-averaged) ranks."""
    return float(_numerics.spearman(x.flatten(), y.flatten()))
