"""``PatchingResult``: one grid of patching effects (measured or estimated), with its axes and baselines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ._nodes import Node, nodes_of


@dataclass(frozen=True, eq=False)
class PatchingResult:
    """Metric of the patched run for every node of one kind, e.g. ``resid_pre`` over ``[layer pos]``.

    ``scores`` holds the raw metric (mean over prompts) after patching each node; ``effect`` rescales it so that
    1 is the clean run and 0 the corrupt run, in both directions: denoising effects near 1 mark nodes that
    restore the behaviour on their own, noising effects near 0 mark nodes whose corruption destroys it.
    """

    kind: str
    """Node kind: a site name without its layer (``resid_pre``, ``attn_out``, ``head.z``, ``head.k``...)."""
    method: Literal["activation", "attribution"]
    """``activation``: each node really patched; ``attribution``: first-order estimate (gradient x difference)."""
    direction: Literal["denoising", "noising"]
    """``denoising``: corrupt run, clean activation patched in; ``noising``: clean run, corrupt patched in."""
    scores: Float[Tensor, "..."]
    """Metric after patching each node, shaped like ``axes``."""
    axes: tuple[str, ...]
    """Axis names: ``layer`` then ``head`` / ``kv_head`` and/or ``pos``."""
    labels: tuple[tuple[str, ...], ...]
    """Tick labels per axis (positions: index and token of the first clean prompt)."""
    clean_metric: float
    """Metric of the unpatched clean run."""
    corrupt_metric: float
    """Metric of the unpatched corrupt run."""
    metric: str
    """Name of the metric function."""
    task: str
    model: dict[str, Any] = field(default_factory=dict)
    """Provenance of the model (name, weights checksum, dtype)."""
    seconds: float = 0.0
    """Wall time of the sweep."""

    @property
    def effect(self) -> Float[Tensor, "..."]:
        """Normalised scores: ``(score - corrupt) / (clean - corrupt)``; 1 = clean behaviour, 0 = corrupt."""
        gap = self.clean_metric - self.corrupt_metric
        if gap == 0:
            raise ValueError(
                f"{self.task}: clean and corrupt runs score the same ({self.clean_metric}); the effect is "
                "undefined. Use .scores, or a task whose corruption changes the metric."
            )
        return (self.scores - self.corrupt_metric) / gap

    def nodes(self) -> list[Node]:
        """The grid's nodes in row-major order (``effect.flatten()[i]`` belongs to ``nodes()[i]``)."""
        return nodes_of(self.kind, self.axes, tuple(self.scores.shape))

    def top(self, k: int = 10, *, by: Literal["abs", "value"] = "abs") -> list[tuple[Node, float]]:
        """The ``k`` nodes with the largest effect change (``abs``: |effect - baseline|; ``value``: largest)."""
        flat = self.effect.flatten()
        base = 0.0 if self.direction == "denoising" else 1.0
        key = (flat - base).abs() if by == "abs" else flat
        order = torch.argsort(key, descending=True)[:k].tolist()
        nodes = self.nodes()
        return [(nodes[i], float(flat[i])) for i in order]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tensors as nested lists; ``effect`` is None when undefined)."""
        gap = self.clean_metric - self.corrupt_metric
        return {
            "kind": self.kind,
            "method": self.method,
            "direction": self.direction,
            "axes": list(self.axes),
            "labels": [list(x) for x in self.labels],
            "scores": self.scores.tolist(),
            "effect": self.effect.tolist() if gap != 0 else None,
            "clean_metric": self.clean_metric,
            "corrupt_metric": self.corrupt_metric,
            "metric": self.metric,
            "task": self.task,
            "model": self.model,
            "seconds": self.seconds,
        }
