"""Feature organisms: toy models of superposition, and synthetic activations from known sparse features.

Both expose their data as a ``mechscope.features.SyntheticData`` (activations, true unit feature directions,
true coefficients, firing masks, parent/child hierarchy), which is what the features scorers compare a dictionary
against (``mechscope.features.recovery``).

**Toy model of superposition** (Elhage et al. 2022, "Toy Models of Superposition", section 2): ``n`` sparse
features ``x_i`` (zero with probability ``1 - firing_prob``, else uniform in [0, 1]) of decaying importance
``I_i = importance_decay ** i`` are compressed into ``m < n`` dimensions, ``h = W x``, and read back as
``ReLU(W^T h + b)``, trained on the importance-weighted squared error. Ground truth: the columns ``W_i`` of the
features the model represents (``|W_i| > 0.5``); ``h`` is the activation a dictionary should decompose.
Verification: more features are represented than there are dimensions (superposition, section 3), the loss is
well below that of the best model without superposition (the ``m`` most important features kept on orthogonal
axes, the rest dropped), and the represented directions interfere (mean |cos| between them above zero).

**Synthetic features** (``mechscope.features.make_synthetic``): more unit directions than dimensions, correlated
groups and a parent/child hierarchy (Chanin et al. 2024, "A is for Absorption", section 3). Verification: the
activations are exactly the truth's coefficients times its directions, every child fires only with its parent,
grouped features co-fire more often than independent ones would, and the features are in superposition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from ..features._synthetic import SyntheticConfig, SyntheticData, make_synthetic
from ._organism import Built, Organism, require


@dataclass(frozen=True)
class TMSConfig:
    """Toy model of superposition: sizes, data, training and verification thresholds."""

    n_features: int = 10
    """Sparse input features."""
    m: int = 5
    """Hidden dimensions (``m < n_features``)."""
    firing_prob: float = 0.05
    """Chance that a feature is non-zero (1 - S in the paper's notation)."""
    importance_decay: float = 0.9
    """Feature ``i`` has importance ``importance_decay ** i``."""
    steps: int = 2000
    """Adam steps."""
    batch_size: int = 1024
    """Samples per step."""
    lr: float = 3e-3
    """Adam learning rate."""
    n_samples: int = 8192
    """Activations exposed to methods (rows of ``data.x``)."""
    max_loss_ratio: float = 0.8
    """Loss must be below this fraction of the best loss without superposition."""


@dataclass(frozen=True)
class ToyModelOfSuperposition(Organism):
    """The toy model of superposition (see the module docstring)."""

    name: ClassVar[str] = "superposition"
    family: ClassVar[str] = "features"
    cfg: TMSConfig = TMSConfig()

    def build(self, seed: int) -> BuiltTMS:
        c = self.cfg
        gen = torch.Generator().manual_seed(seed)
        w = (torch.randn(c.m, c.n_features, generator=gen) * (2 / (c.m + c.n_features)) ** 0.5).requires_grad_()
        b = torch.zeros(c.n_features, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=c.lr)
        importance = c.importance_decay ** torch.arange(c.n_features)
        for _ in range(c.steps):
            x = sparse_features(c, c.batch_size, gen)
            loss = (importance * (x - torch.relu(x @ w.T @ w + b)).pow(2)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        inputs = sparse_features(c, c.n_samples, gen)
        return BuiltTMS(c, seed, w.detach(), b.detach(), inputs)

    def load(self, seed: int, tensors: dict[str, Tensor]) -> BuiltTMS:
        return BuiltTMS(self.cfg, seed, tensors["W"], tensors["b"], tensors["inputs"])


def sparse_features(cfg: TMSConfig, n: int, gen: torch.Generator) -> Float[Tensor, "n n_features"]:
    """Feature vectors: each entry zero with probability ``1 - firing_prob``, else uniform in [0, 1]."""
    on = torch.rand(n, cfg.n_features, generator=gen) < cfg.firing_prob
    return on * torch.rand(n, cfg.n_features, generator=gen)


class BuiltTMS(Built):
    """A trained toy model: ``W [m n_features]``, ``b``, and ``data`` (hidden activations and their truth)."""

    organism = "superposition"

    def __init__(self, cfg: TMSConfig, seed: int, w: Tensor, b: Tensor, inputs: Tensor) -> None:
        self.cfg, self.seed, self.W, self.b, self.inputs = cfg, seed, w, b, inputs
        self.verification = {}

    @property
    def represented(self) -> list[int]:
        """Features the model represents: ``|W_i| > 0.5``."""
        return [i for i, n in enumerate(self.W.norm(dim=0).tolist()) if n > 0.5]

    @property
    def data(self) -> SyntheticData:
        """Hidden activations ``h = W x`` and their truth, restricted to the represented features."""
        keep = self.represented
        norms = self.W.norm(dim=0)[keep]
        return SyntheticData(
            x=self.inputs @ self.W.T,
            features=(self.W[:, keep] / norms).T.contiguous(),
            coefficients=self.inputs[:, keep] * norms,
            mask=self.inputs[:, keep] > 0,
            hierarchy=(),
        )

    @property
    def truth(self) -> dict[str, Any]:
        norms = [round(v, 4) for v in self.W.norm(dim=0).tolist()]
        return {"represented_features": self.represented, "feature_norms": norms}

    def tensors(self) -> dict[str, Tensor]:
        return {"W": self.W, "b": self.b, "inputs": self.inputs}

    def loss(self, w: Tensor | None = None) -> float:
        """Importance-weighted reconstruction loss on the stored inputs (of ``w`` instead of ``W`` if given)."""
        w = self.W if w is None else w
        importance = self.cfg.importance_decay ** torch.arange(self.cfg.n_features)
        x = self.inputs
        return float((importance * (x - torch.relu(x @ w.T @ w + self.b)).pow(2)).sum(-1).mean())

    def verify(self) -> dict[str, float]:
        c = self.cfg
        importance = c.importance_decay ** torch.arange(c.n_features)
        second_moment = self.inputs.pow(2).mean(0)  # E[x_i^2]
        no_superposition = float((importance * second_moment)[c.m :].sum())  # best m features kept, rest dropped
        keep = self.represented
        cos = self.data.features @ self.data.features.T
        off = cos[~torch.eye(len(keep), dtype=torch.bool)].abs()
        n = {
            "loss": self.loss(),
            "loss_without_superposition": no_superposition,
            "n_represented": float(len(keep)),
            "m": float(c.m),
            "mean_abs_interference": float(off.mean()) if off.numel() else 0.0,
        }
        checks = {
            "more features represented than dimensions": len(keep) > c.m,
            f"loss < {c.max_loss_ratio} x loss without superposition": n["loss"] < c.max_loss_ratio * no_superposition,
            "represented directions interfere": n["mean_abs_interference"] > 0.05,
        }
        return require(self.organism, self.seed, n, checks)


@dataclass(frozen=True)
class FeatureConfig:
    """Synthetic sparse features: the ``make_synthetic`` recipe (its seed is replaced by the organism's)."""

    n_features: int = 48
    """True features."""
    d: int = 24
    """Activation width."""
    n_samples: int = 8192
    """Rows."""
    firing_prob: float = 0.04
    """Firing probability (for a child: given its parent)."""
    groups: tuple[tuple[int, ...], ...] = ((0, 1, 2), (3, 4, 5), (12, 13))
    """Correlated groups."""
    group_correlation: float = 0.7
    """Within-group correlation."""
    hierarchy: tuple[tuple[int, int], ...] = field(default=((6, 7), (6, 8), (9, 10), (9, 11)))
    """(parent, child) pairs."""
    min_cofire_ratio: float = 2.0
    """Grouped features must co-fire at least this many times more often than independent ones would."""


@dataclass(frozen=True)
class SyntheticFeatures(Organism):
    """Synthetic activations from known sparse features (see the module docstring)."""

    name: ClassVar[str] = "synthetic_features"
    family: ClassVar[str] = "features"
    cfg: FeatureConfig = FeatureConfig()

    def recipe(self, seed: int) -> SyntheticConfig:
        c = self.cfg
        return SyntheticConfig(
            n_features=c.n_features, d=c.d, n_samples=c.n_samples, firing_prob=c.firing_prob, groups=c.groups,
            group_correlation=c.group_correlation, hierarchy=c.hierarchy, seed=seed,
        )  # fmt: skip

    def build(self, seed: int) -> BuiltFeatures:
        return BuiltFeatures(self.cfg, seed, make_synthetic(self.recipe(seed)))

    def load(self, seed: int, tensors: dict[str, Tensor]) -> BuiltFeatures:
        data = SyntheticData(tensors["x"], tensors["features"], tensors["coefficients"], tensors["mask"].bool(),
                             self.cfg.hierarchy)  # fmt: skip
        return BuiltFeatures(self.cfg, seed, data)


class BuiltFeatures(Built):
    """Synthetic activations ``data`` with their true features."""

    organism = "synthetic_features"

    def __init__(self, cfg: FeatureConfig, seed: int, data: SyntheticData) -> None:
        self.cfg, self.seed, self.data = cfg, seed, data
        self.verification = {}

    @property
    def truth(self) -> dict[str, Any]:
        return {"n_features": self.cfg.n_features, "groups": [list(g) for g in self.cfg.groups],
                "hierarchy": [list(h) for h in self.cfg.hierarchy]}  # fmt: skip

    def tensors(self) -> dict[str, Tensor]:
        d = self.data
        return {"x": d.x, "features": d.features, "coefficients": d.coefficients, "mask": d.mask.to(torch.uint8)}

    def verify(self) -> dict[str, float]:
        d, c = self.data, self.cfg
        residual = float((d.coefficients @ d.features - d.x).abs().max())
        violations = sum(int((d.mask[:, child] & ~d.mask[:, parent]).sum()) for parent, child in c.hierarchy)
        rates = d.mask.float().mean(0)
        ratios = []
        for group in c.groups:
            for i, a in enumerate(group):
                for b in group[i + 1 :]:
                    both = float((d.mask[:, a] & d.mask[:, b]).float().mean())
                    ratios.append(both / max(float(rates[a] * rates[b]), 1e-12))
        n = {
            "max_reconstruction_error": residual,
            "hierarchy_violations": float(violations),
            "min_cofire_ratio": min(ratios) if ratios else float("nan"),
            "features_per_dimension": c.n_features / c.d,
            "mean_l0": float(d.mask.sum(1).float().mean()),
        }
        checks = {
            "activations are the truth's coefficients times its directions": residual < 1e-4,
            "every child fires only with its parent": violations == 0,
            f"grouped features co-fire >= {c.min_cofire_ratio}x independent": not ratios
            or n["min_cofire_ratio"] >= c.min_cofire_ratio,
            "features in superposition (more features than dimensions)": c.n_features > c.d,
        }
        return require(self.organism, self.seed, n, checks)
