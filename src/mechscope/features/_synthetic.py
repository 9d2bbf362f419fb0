"""Synthetic activations built from known sparse features: ground truth for dictionary learning.

Each row is a sparse non-negative combination of ``n_features`` unit directions in ``d`` dimensions
(``n_features > d`` puts them in superposition; Elhage et al. 2022, "Toy Models of Superposition"). Features
fire independently with given probabilities, or together within correlated groups, and a child feature
fires only when its parent does (the hierarchy that causes feature absorption; Chanin et al. 2024, "A is for
Absorption", §3). The data come back with the true directions and firing masks so that a trained dictionary
can be scored against them (see ``_metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor


@dataclass(frozen=True)
class SyntheticConfig:
    """Recipe for synthetic sparse activations; the same config and seed give the same data."""

    n_features: int
    """Number of ground-truth features."""
    d: int
    """Width of the activations; ``n_features > d`` gives superposition."""
    n_samples: int
    """Number of rows."""
    firing_prob: float | tuple[float, ...] = 0.05
    """Firing probability of each feature (one number for all, or one per feature). For a child in
    ``hierarchy`` it is the probability of firing given that its parent fires."""
    groups: tuple[tuple[int, ...], ...] = ()
    """Disjoint groups of features that tend to fire together."""
    group_correlation: float = 0.5
    """Within a group, the chance that a member follows the group's shared draw rather than its own; the
    marginal firing probabilities are unchanged (0: independent, 1: maximally correlated)."""
    hierarchy: tuple[tuple[int, int], ...] = ()
    """``(parent, child)`` pairs: the child fires only in rows where the parent fires. Chains are allowed."""
    magnitude: tuple[float, float] = (0.5, 1.5)
    """A firing feature's coefficient is uniform in this range."""
    orthogonal: bool = False
    """Draw orthonormal directions (needs ``n_features <= d``) instead of independent random unit vectors."""
    noise_std: float = 0.0
    """Standard deviation of isotropic Gaussian noise added to every row."""
    seed: int = 0
    """Seed of every random draw."""

    def __post_init__(self) -> None:
        if min(self.n_features, self.d, self.n_samples) < 1:
            raise ValueError("n_features, d and n_samples must be positive")
        probs = self.firing_prob if isinstance(self.firing_prob, tuple) else (self.firing_prob,)
        if isinstance(self.firing_prob, tuple) and len(probs) != self.n_features:
            raise ValueError(f"firing_prob has {len(probs)} entries for {self.n_features} features")
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ValueError("firing probabilities must be in [0, 1]")
        if self.orthogonal and self.n_features > self.d:
            raise ValueError(f"{self.n_features} orthogonal directions do not fit in {self.d} dimensions")
        if not 0.0 <= self.group_correlation <= 1.0:
            raise ValueError("group_correlation must be in [0, 1]")
        if not 0.0 <= self.magnitude[0] <= self.magnitude[1]:
            raise ValueError(f"magnitude must be a range (low, high) with 0 <= low <= high: {self.magnitude}")
        grouped = [f for group in self.groups for f in group]
        if len(grouped) != len(set(grouped)):
            raise ValueError("groups must be disjoint")
        _check_indices(grouped + [f for pair in self.hierarchy for f in pair], self.n_features)
        _check_forest(self.hierarchy)


def _check_indices(indices: list[int], n: int) -> None:
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise ValueError(f"feature indices out of range [0, {n}): {bad}")


def _check_forest(hierarchy: tuple[tuple[int, int], ...]) -> None:
    parent = {}
    for p, c in hierarchy:
        if c in parent:
            raise ValueError(f"feature {c} has two parents")
        parent[c] = p
    for start in parent:
        seen, node = {start}, start
        while node in parent:
            node = parent[node]
            if node in seen:
                raise ValueError(f"hierarchy has a cycle through feature {start}")
            seen.add(node)


class SyntheticData(NamedTuple):
    """Synthetic activations and their ground truth."""

    x: Float[Tensor, "n_samples d"]
    """The activations: ``coefficients @ features`` plus noise."""
    features: Float[Tensor, "n_features d"]
    """True feature directions (unit rows)."""
    coefficients: Float[Tensor, "n_samples n_features"]
    """True feature coefficients, zero where a feature does not fire."""
    mask: Bool[Tensor, "n_samples n_features"]
    """Where each feature fires."""
    hierarchy: tuple[tuple[int, int], ...]
    """The ``(parent, child)`` pairs the data were built with."""


def make_synthetic(cfg: SyntheticConfig) -> SyntheticData:
    """Draw synthetic activations following ``cfg``."""
    gen = torch.Generator().manual_seed(cfg.seed)
    features = _directions(cfg, gen)
    mask = _firing(cfg, gen)
    low, high = cfg.magnitude
    coefficients = mask * (low + (high - low) * torch.rand(mask.shape, generator=gen))
    x = coefficients @ features
    if cfg.noise_std > 0:
        x = x + cfg.noise_std * torch.randn(x.shape, generator=gen)
    return SyntheticData(x, features, coefficients, mask, cfg.hierarchy)


def _directions(cfg: SyntheticConfig, gen: torch.Generator) -> Float[Tensor, "n_features d"]:
    if cfg.orthogonal:
        q, _ = torch.linalg.qr(torch.randn(cfg.d, cfg.n_features, generator=gen))
        return q.T.contiguous()
    directions = torch.randn(cfg.n_features, cfg.d, generator=gen)
    return directions / directions.norm(dim=1, keepdim=True)


def _firing(cfg: SyntheticConfig, gen: torch.Generator) -> Bool[Tensor, "n_samples n_features"]:
    probs = torch.as_tensor(cfg.firing_prob, dtype=torch.float32).expand(cfg.n_features)
    draws = torch.rand(cfg.n_samples, cfg.n_features, generator=gen)
    for group in cfg.groups:
        # Members follow a shared uniform with chance group_correlation: each marginal stays uniform, so
        # firing probabilities are kept while co-firing becomes likelier.
        shared = torch.rand(cfg.n_samples, 1, generator=gen)
        follow = torch.rand(cfg.n_samples, len(group), generator=gen) < cfg.group_correlation
        cols = list(group)
        draws[:, cols] = torch.where(follow, shared, draws[:, cols])
    mask = draws < probs
    for parent, child in _topological(cfg.hierarchy):
        mask[:, child] &= mask[:, parent]
    return mask


def _topological(hierarchy: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """Order pairs so a parent's own parent constraint is applied before it constrains its children."""
    parent = {c: p for p, c in hierarchy}

    def depth(node: int) -> int:
        return 0 if node not in parent else 1 + depth(parent[node])

    return sorted(hierarchy, key=lambda pair: depth(pair[1]))
