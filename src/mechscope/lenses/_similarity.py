"""Representation similarity: linear CKA (biased and debiased) and SVCCA between sites, of one model or two.

**Linear CKA** (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", section 3) compares
two representations of the same ``n`` inputs, ``X [n d1]`` and ``Y [n d2]``, through their linear Gram matrices
``K = X X^T`` and ``L = Y Y^T``: ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``. It is invariant to orthogonal
transforms and isotropic scaling of either representation, but not to arbitrary invertible linear maps. The
**biased** estimator uses ``HSIC = tr(K H L H) / (n - 1)^2`` (``H`` centers); it is inflated for few inputs and many
features (independent random matrices score well above 0). The **debiased** estimator uses the unbiased HSIC of
Song et al. 2012 ("Feature Selection via Dependence Maximization", eq. 5), as Nguyen et al. 2021 ("Do Wide and Deep
Networks Learn the Same Things?") do for CKA:

    HSIC_u(K, L) = [tr(K~ L~) + 1^T K~ 1 · 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) · 1^T K~ L~ 1] / (n (n-3))

with ``K~``, ``L~`` the Gram matrices with their diagonals zeroed. Every term is computed in feature space (``X^T Y``,
row norms, column sums), so 10k inputs never form a 10k-square matrix.

**SVCCA** (Raghu et al. 2017, "SVCCA: Singular Vector Canonical Correlation Analysis for Deep Learning Dynamics and
Interpretability"): keep each representation's top singular directions (those explaining ``keep`` of its variance),
then the mean canonical correlation between the two reduced representations. Unlike linear CKA it is invariant to
any invertible linear map of the kept subspace.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ..core._model import Inputs, Model
from ._registry import METHODS

Measure = Literal["cka", "cka-biased", "svcca"]


def _center(x: Tensor) -> Tensor:
    x = x.double()
    return x - x.mean(0, keepdim=True)


def _hsic_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """Song et al.'s unbiased HSIC of the linear kernels of ``x [n d1]`` and ``y [n d2]``, in feature space."""
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 inputs, got {n}")
    kd, ld = x.pow(2).sum(1), y.pow(2).sum(1)  # diagonals of K and L
    tr = torch.linalg.matrix_norm(x.T @ y).pow(2) - (kd * ld).sum()  # tr(K~ L~)
    k1, l1 = x @ x.sum(0) - kd, y @ y.sum(0) - ld  # K~ 1, L~ 1
    return (tr + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (k1 @ l1)) / (n * (n - 3))


def linear_cka(x: Float[Tensor, "n d1"], y: Float[Tensor, "n d2"], *, debiased: bool = True) -> float:
    """Linear CKA between two representations of the same ``n`` inputs (rows); debiased unless ``debiased=False``."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA compares [n d] matrices of the same n inputs, got {list(x.shape)} and {list(y.shape)}")
    x, y = _center(x), _center(y)
    if debiased:
        xy, xx, yy = _hsic_unbiased(x, y), _hsic_unbiased(x, x), _hsic_unbiased(y, y)
    else:
        xy = torch.linalg.matrix_norm(x.T @ y).pow(2)
        xx, yy = torch.linalg.matrix_norm(x.T @ x).pow(2), torch.linalg.matrix_norm(y.T @ y).pow(2)
    return float(xy / (xx * yy).clamp_min(1e-300).sqrt())


def svcca(x: Float[Tensor, "n d1"], y: Float[Tensor, "n d2"], *, keep: float = 0.99) -> float:
    """Mean canonical correlation of the top singular directions (``keep`` of the variance) of ``x`` and ``y``."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"SVCCA compares representations of the same inputs, got {x.shape[0]} and {y.shape[0]} rows")
    bases = []
    for z in (x, y):
        u, s, _ = torch.linalg.svd(_center(z), full_matrices=False)
        var = s.pow(2).cumsum(0) / s.pow(2).sum().clamp_min(1e-300)
        r = int((var < keep).sum()) + 1
        bases.append(u[:, :r])  # orthonormal basis of the kept directions over the inputs
    corr = torch.linalg.svdvals(bases[0].T @ bases[1])  # canonical correlations
    return float(corr.clamp(max=1).mean())


def similarity(x: Tensor, y: Tensor, measure: Measure = "cka") -> float:
    """One similarity between two ``[n d]`` representations by name (``cka``, ``cka-biased``, ``svcca``)."""
    if measure == "svcca":
        return svcca(x, y)
    if measure not in ("cka", "cka-biased"):
        raise ValueError(f"unknown similarity measure {measure!r}: choose from cka, cka-biased, svcca")
    return linear_cka(x, y, debiased=measure == "cka")


@dataclass(frozen=True)
class SimilarityConfig:
    """Settings of representation similarity (``mechscope similarity``)."""

    sites: str = "resid_post.*"
    """Sites compared (names or globs, comma-separated); each is a matrix of every real token's vector."""
    measure: Measure = "cka"
    """cka: debiased linear CKA; cka-biased: the original estimator; svcca: mean SVCCA correlation."""


@dataclass(frozen=True)
class SimilarityMatrix:
    """What :func:`site_similarity` returns: the similarity of every pair of sites over the same tokens."""

    rows: tuple[str, ...]
    """Sites of the first model."""
    cols: tuple[str, ...]
    """Sites of the second model (the first one's when only one model is given)."""
    values: Float[Tensor, "row col"]
    measure: str
    n: int
    """Tokens compared (padding left out)."""
    provenance: dict[str, Any]
    """The models' ids, checksums and dtypes (``{"a": ..., "b": ...}``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON."""
        return {"method": "similarity", "measure": self.measure, "n": self.n, "rows": list(self.rows),
                "cols": list(self.cols), "values": self.values.tolist(), "provenance": self.provenance}  # fmt: skip

    def to_json(self, indent: int | None = 2) -> str:
        """The result as a JSON string (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)


@torch.no_grad()
def site_activations(model: Model, inputs: Inputs, sites: str | Sequence[str]) -> dict[str, Float[Tensor, "n d"]]:
    """Every real (non-padding) token's vector at each site, as ``[n d]`` rows in the same order for every site."""
    names = [s.name for s in model.resolve(_patterns(sites))]
    run = model.run(inputs, cache=names, logits=False)
    mask = run.attention_mask.bool() if run.attention_mask is not None else None
    out = {}
    for name in names:
        act = run.cache[name]
        if act.ndim < 3:
            raise ValueError(f"site {name} has shape {list(act.shape)}; similarity needs [batch pos ...] sites")
        act = act.flatten(2)  # [batch pos d] (per-head sites: heads concatenated)
        out[name] = (act[mask] if mask is not None else act.flatten(0, 1)).float().cpu()
    return out


def site_similarity(
    model: Model, inputs: Inputs, config: SimilarityConfig = SimilarityConfig(), *, other: Model | None = None,
    other_sites: str | Sequence[str] | None = None,
) -> SimilarityMatrix:  # fmt: skip
    """Similarity of every pair of ``config.sites`` (layer × layer) on the same inputs.

    Within one model, or between ``model``'s sites and ``other``'s (``other_sites``, default the same patterns).
    Both models must tokenise the inputs alike (the same tokens are compared).
    """
    a = site_activations(model, inputs, config.sites)
    b = a if other is None and other_sites is None else site_activations(other or model, inputs,
                                                                         other_sites or config.sites)  # fmt: skip
    n = {len(v) for v in (*a.values(), *b.values())}
    if len(n) != 1:
        raise ValueError(f"the two models read different numbers of tokens ({sorted(n)}): give token ids as inputs")
    values = torch.zeros(len(a), len(b))
    for i, x in enumerate(a.values()):
        for j, y in enumerate(b.values()):
            values[i, j] = values[j, i] if b is a and j < i else similarity(x, y, config.measure)
    prov = {"a": model.provenance, "b": (other or model).provenance}
    return SimilarityMatrix(tuple(a), tuple(b), values, config.measure, n.pop(), prov)


@METHODS.declare("similarity", config=SimilarityConfig, result=SimilarityMatrix, tags=("similarity",))
def similarity_method(model: Model, inputs: Inputs, config: SimilarityConfig) -> SimilarityMatrix:
    """Linear CKA (debiased) or SVCCA between every pair of sites on the same inputs (Kornblith et al. 2019)."""
    return site_similarity(model, inputs, config)


def _patterns(sites: str | Sequence[str]) -> list[str]:
    items = [sites] if isinstance(sites, str) else list(sites)
    return [p.strip() for item in items for p in item.split(",") if p.strip()]
