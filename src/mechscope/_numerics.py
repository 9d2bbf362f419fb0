"""Small numerics every layer shares: padding ragged rows, ranks, and the Pearson and Spearman correlations.

One copy of each, below every package (like ``_cache``), so no method family re-derives them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor


def pad(rows: Sequence[Sequence[int]], fill: int, side: str = "right") -> Int[Tensor, "batch pos"]:
    """Ragged rows of ints as one ``[batch pos]`` LongTensor, filled with ``fill`` on the ``side`` given."""
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        start = 0 if side == "right" else width - len(r)
        out[i, start : start + len(r)] = torch.tensor(list(r), dtype=torch.long)
    return out


def ranks(x: Float[Tensor, "*batch n"]) -> Float[Tensor, "*batch n"]:
    """0-based ranks along the last axis, in float64; tied values share their mean rank."""
    rows = x.double().reshape(-1, x.shape[-1])
    out = torch.empty_like(rows)
    for i, row in enumerate(rows):
        _, inverse, counts = torch.unique(row, return_inverse=True, return_counts=True)
        first = torch.cumsum(counts, 0) - counts  # rank of each distinct value's first occurrence
        out[i] = (first + (counts - 1) / 2)[inverse]
    return out.reshape(x.shape)


def pearson(x: Float[Tensor, "*batch n"], y: Float[Tensor, "*batch n"]) -> Float[Tensor, "*batch"]:
    """Pearson correlation along the last axis, in float64; NaN where either side is constant."""
    x, y = x.double(), y.double()
    x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    num, den = (x * y).sum(-1), x.norm(dim=-1) * y.norm(dim=-1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.nan)


def spearman(x: Float[Tensor, "*batch n"], y: Float[Tensor, "*batch n"]) -> Float[Tensor, "*batch"]:
    """Spearman rank correlation along the last axis: Pearson correlation of the (tie-averaged) ranks."""
    return pearson(ranks(x), ranks(y))
