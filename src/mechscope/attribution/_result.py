"""``Attribution``: one attribution map per example, with what produced it and how far it can be trusted."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True, eq=False)
class Attribution:
    """An attribution map for a batch, shaped like the attributed tensor (the input, or a site)."""

    map: Float[Tensor, "batch ..."]
    """Attribution per element of the attributed tensor (``[batch c h w]`` images, ``[batch pos d_model]`` embed)."""
    method: str
    """``saliency``, ``input_x_gradient``, ``integrated_gradients``, ``smoothgrad``, ``occlusion``, ``grad_cam``..."""
    target: str
    """What was explained (the target's repr, e.g. ``Logit([2, 0, 3])``)."""
    at: str
    """``input`` or the site name the map lives on."""
    completeness_gap: Float[Tensor, " batch"] | None = None
    """Integrated Gradients: ``map.sum() - (f(x) - f(baseline))`` per example (0 for the exact integral)."""
    output_change: Float[Tensor, " batch"] | None = None
    """Integrated Gradients: ``f(x) - f(baseline)`` per example, the total the map should sum to."""
    params: dict[str, Any] = field(default_factory=dict)
    """Method settings (steps, rule, window, noise...), recorded for reproduction."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Quality metrics attached with :meth:`with_metrics` (deletion/insertion AUC, localisation...)."""
    seconds: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)
    """Provenance of the model (name, weights checksum, dtype)."""

    def heatmap(self) -> Float[Tensor, "batch ..."]:
        """One value per location: channels summed for ``[batch c h w]`` maps, features for ``[batch pos d]``."""
        m = self.map
        if m.ndim == 4:
            return m.sum(1)
        if m.ndim == 3:
            return m.sum(-1)
        return m

    def relative_gap(self) -> Float[Tensor, " batch"] | None:
        """``|completeness_gap| / |f(x) - f(baseline)|`` (None for methods without a completeness property)."""
        if self.completeness_gap is None or self.output_change is None:
            return None
        return self.completeness_gap.abs() / self.output_change.abs().clamp_min(1e-12)

    def with_metrics(self, **metrics: Any) -> Attribution:
        """A copy carrying ``metrics`` as well (later values win)."""
        return dataclasses.replace(self, metrics={**self.metrics, **metrics})

    def to_dict(self, maps: bool = True) -> dict[str, Any]:
        """JSON-serialisable form (tensors as nested lists; ``maps=False`` leaves the map out)."""

        def plain(v: Any) -> Any:
            if isinstance(v, Tensor):
                return v.detach().cpu().tolist()
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [plain(x) for x in v]
            return v

        out = {
            "method": self.method,
            "target": self.target,
            "at": self.at,
            "shape": list(self.map.shape),
            "completeness_gap": plain(self.completeness_gap),
            "output_change": plain(self.output_change),
            "params": plain(self.params),
            "metrics": plain(self.metrics),
            "seconds": self.seconds,
            "model": self.model,
        }
        if maps:
            out["map"] = plain(self.map)
        return out
