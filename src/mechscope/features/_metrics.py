"""How good is a dictionary: reconstruction and sparsity on data, recovery of known synthetic features.

Reconstruction: MSE, fraction of variance unexplained (FVU), L0, dead and dense latents. Ground-truth
recovery (needs the true features, e.g. from ``make_synthetic``): mean max cosine similarity (MMCS) between
true features and decoder rows, F1 of each feature's matched latent firing against the feature firing, and
the feature-absorption rate of parent/child pairs (Chanin et al. 2024, "A is for Absorption").
"""

from __future__ import annotations

from typing import NamedTuple

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechscope.features._dictionary import Dictionary, check_widths
from mechscope.features._synthetic import SyntheticData


def mse(target: Float[Tensor, "batch d"], reconstruction: Float[Tensor, "batch d"]) -> float:
    """Mean squared error per element."""
    return float((target - reconstruction).pow(2).mean())


def fvu(target: Float[Tensor, "batch d"], reconstruction: Float[Tensor, "batch d"]) -> float:
    """Fraction of variance unexplained: summed squared error over the target's summed variance.

    The variance is about the target's mean: 0 is perfect, 1 is no better than predicting the mean.
    """
    return float((target - reconstruction).pow(2).sum() / (target - target.mean(0)).pow(2).sum())


def l0(latents: Float[Tensor, "batch d_sae"]) -> float:
    """Mean number of non-zero latents per row."""
    return float((latents != 0).sum(-1).float().mean())


def firing_rates(latents: Float[Tensor, "batch d_sae"]) -> Float[Tensor, " d_sae"]:
    """Fraction of rows on which each latent is non-zero."""
    return (latents != 0).float().mean(0)


class ReconstructionMetrics(NamedTuple):
    """Reconstruction and sparsity of a dictionary on a dataset."""

    mse: float
    """Mean squared error per element."""
    fvu: float
    """Fraction of variance unexplained."""
    l0: float
    """Mean number of active latents per row."""
    dead_fraction: float
    """Fraction of latents that never fire on the data."""
    dense_fraction: float
    """Fraction of latents firing on more than ``dense_threshold`` of rows."""


@torch.no_grad()
def evaluate(
    dictionary: Dictionary,
    x: Float[Tensor, "n d_in"],
    target: Float[Tensor, "n d_out"] | None = None,
    *,
    dense_threshold: float = 0.1,
    chunk_rows: int = 4096,
) -> ReconstructionMetrics:
    """Reconstruction metrics of ``dictionary`` (in eval mode) on ``x`` against ``target`` (default ``x``).

    Rows are encoded ``chunk_rows`` at a time, so memory holds one chunk's latents, not ``n * d_sae`` of them;
    sums are accumulated in float64 (the target's variance from its sum and sum of squares).
    """
    target = x if target is None else target
    check_widths(dictionary.cfg, x, target)
    if len(target) != len(x) or len(x) == 0:
        raise ValueError(f"need as many (> 0) target rows as input rows, got {len(target)} and {len(x)}")
    was_training = dictionary.training
    dictionary.eval()
    starts = range(0, len(x), chunk_rows)
    mean = sum(target[i : i + chunk_rows].double().sum(0) for i in starts) / len(x)  # [d_out], of all rows
    sse = variance = 0.0
    fired, active = torch.zeros(dictionary.cfg.d_sae, dtype=torch.int64), 0
    try:
        for start in starts:
            rows = slice(start, start + chunk_rows)
            latents = dictionary.encode(x[rows])  # [chunk d_sae]
            recon = dictionary.decode(latents) + dictionary.skip(x[rows])
            sse += float((target[rows] - recon).double().pow(2).sum())
            variance += float((target[rows].double() - mean).pow(2).sum())
            nonzero = latents != 0
            fired += nonzero.sum(0).cpu()
            active += int(nonzero.sum())
    finally:
        dictionary.train(was_training)
    rates = fired.double() / len(x)
    return ReconstructionMetrics(
        mse=sse / target.numel(),
        fvu=sse / variance,
        l0=active / len(x),
        dead_fraction=float((rates == 0).float().mean()),
        dense_fraction=float((rates > dense_threshold).float().mean()),
    )


def cosine_matrix(
    features: Float[Tensor, "n_features d"], decoder: Float[Tensor, "d_sae d"]
) -> Float[Tensor, "n_features d_sae"]:
    """Cosine similarity of every true feature with every decoder row."""
    f = features / features.norm(dim=1, keepdim=True)
    w = decoder / decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return einops.einsum(f, w, "n_features d, d_sae d -> n_features d_sae")


def match_latents(
    features: Float[Tensor, "n_features d"], decoder: Float[Tensor, "d_sae d"]
) -> tuple[Float[Tensor, " n_features"], Int[Tensor, " n_features"]]:
    """For each true feature, the largest cosine with any decoder row and that row's index."""
    best = cosine_matrix(features, decoder).max(dim=1)
    return best.values, best.indices


def mmcs(features: Float[Tensor, "n_features d"], decoder: Float[Tensor, "d_sae d"]) -> float:
    """Mean over true features of the max cosine similarity with any decoder row (MMCS).

    1 when every feature has an exact decoder row (Sharkey, Braun & Millidge 2022, "Taking features out of
    superposition with sparse autoencoders").
    """
    return float(match_latents(features, decoder)[0].mean())


def firing_f1(
    latents: Float[Tensor, "batch d_sae"],
    mask: Bool[Tensor, "batch n_features"],
    matches: Int[Tensor, " n_features"],
) -> Float[Tensor, " n_features"]:
    """Per feature, F1 of "matched latent is non-zero" against "feature fires" (0 when neither ever does)."""
    fired = latents[:, matches] != 0
    tp = (fired & mask).sum(0).float()
    denom = fired.sum(0).float() + mask.sum(0).float()
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))


class AbsorptionScores(NamedTuple):
    """Full feature absorption of parent features by their children's latents."""

    rate: float
    """Absorbed parent firings over all parent firings, pooled over parents (nan without parents)."""
    per_parent: dict[int, float]
    """Absorption rate of each parent feature."""


def absorption(
    latents: Float[Tensor, "batch d_sae"],
    decoder: Float[Tensor, "d_sae d"],
    features: Float[Tensor, "n_features d"],
    mask: Bool[Tensor, "batch n_features"],
    hierarchy: tuple[tuple[int, int], ...],
    *,
    cos_threshold: float = 0.025,
) -> AbsorptionScores:
    """Rate of full feature absorption of each parent by its children's latents.

    A parent firing is absorbed when the parent's matched latent stays at zero while the matched latent of
    a firing child fires instead and its decoder row carries the parent direction. This is the ground-truth
    version of the full-absorption criterion of Chanin et al. 2024 ("A is for Absorption",
    arXiv:2409.14507; SAEBench's ``mean_full_absorption_score``): the true parent direction replaces the
    linear probe, the latent whose decoder row best matches it replaces the k-sparse-probing "main
    latents", and an absorbing latent needs decoder cosine at least ``cos_threshold`` (their 0.025) with
    it. Their further check that the absorber carries a set share of the probe projection is left out.
    """
    _, matches = match_latents(features, decoder)
    cos_to = cosine_matrix(features, decoder)
    children: dict[int, list[int]] = {}
    for parent, child in hierarchy:
        children.setdefault(parent, []).append(child)
    per_parent, absorbed_total, fired_total = {}, 0, 0
    for parent, kids in children.items():
        fires = mask[:, parent]
        main_silent = latents[:, matches[parent]] == 0
        absorbing = torch.zeros_like(fires)
        for child in kids:
            latent = matches[child]
            if latent == matches[parent] or cos_to[parent, latent] < cos_threshold:
                continue
            absorbing |= mask[:, child] & (latents[:, latent] != 0)
        absorbed = int((fires & main_silent & absorbing).sum())
        n_fired = int(fires.sum())
        per_parent[parent] = absorbed / n_fired if n_fired else float("nan")
        absorbed_total, fired_total = absorbed_total + absorbed, fired_total + n_fired
    rate = absorbed_total / fired_total if fired_total else float("nan")
    return AbsorptionScores(rate, per_parent)


class RecoveryMetrics(NamedTuple):
    """How well a dictionary recovers the ground truth of synthetic data."""

    mmcs: float
    """Mean over true features of the max decoder cosine similarity."""
    max_cosine: Float[Tensor, " n_features"]
    """Each feature's best decoder cosine similarity."""
    matches: Int[Tensor, " n_features"]
    """Each feature's best-matching latent (by decoder cosine)."""
    f1: Float[Tensor, " n_features"]
    """F1 of each matched latent's firing against its feature's firing."""
    mean_f1: float
    """Mean of ``f1`` over features."""
    absorption: AbsorptionScores
    """Full absorption of the hierarchy's parents (rate nan without a hierarchy)."""


@torch.no_grad()
def recovery(dictionary: Dictionary, data: SyntheticData, *, cos_threshold: float = 0.025) -> RecoveryMetrics:
    """Score ``dictionary`` (in eval mode) against the ground truth of ``data``."""
    was_training = dictionary.training
    dictionary.eval()
    try:
        latents = dictionary.encode(data.x)
    finally:
        dictionary.train(was_training)
    decoder = dictionary.W_dec.detach()
    max_cos, matches = match_latents(data.features, decoder)
    f1 = firing_f1(latents, data.mask, matches)
    absorbed = absorption(latents, decoder, data.features, data.mask, data.hierarchy, cos_threshold=cos_threshold)
    return RecoveryMetrics(float(max_cos.mean()), max_cos, matches, f1, float(f1.mean()), absorbed)
