"""Prefix caches: the residual stream entering each block of an unpatched run, so patched runs can start late.

A run whose first change is in block ``L`` equals the unpatched run below ``L``. Caching ``resid_pre`` of the
unpatched run once per batch lets every patched pass start at its first changed block
(``Model.run(start_at=L, resid=...)``): a pass patching layer 25 of 30 costs 5 blocks, not 30.

Memory is bounded: the cache holds ``n_layers`` tensors of ``[batch pos d_model]``. When that exceeds
``PREFIX_BUDGET`` only every ``k``-th block is kept (the smallest ``k`` that fits) and a pass starts at the nearest
kept block at or below its first change; with no block kept, passes start at the embedding as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from ..core._model import Model
from ._contrast import Start

PREFIX_BUDGET = 1 << 30
"""Bytes a prefix cache may hold (1 GiB): SmolLM2-135M with 16 prompts of 14 tokens needs 15 MB for all 30 blocks."""


@dataclass(frozen=True)
class Prefix:
    """``resid_pre`` of one unpatched run at some blocks."""

    resid: dict[int, Float[Tensor, "batch pos d_model"]]

    @staticmethod
    def sites(model: Model, tokens: Tensor, budget: int = PREFIX_BUDGET) -> list[str]:
        """The ``resid_pre`` sites to cache in the unpatched run of ``tokens``: every block that fits ``budget``.

        Block 0 is left out: starting there is the full run.
        """
        assert model.cfg is not None
        itemsize = next(model.module.parameters()).element_size()
        per_block = tokens.numel() * model.cfg.d_model * itemsize
        stride = max(1, math.ceil(model.cfg.n_layers * per_block / max(budget, 1)))
        return [f"resid_pre.{layer}" for layer in range(stride, model.cfg.n_layers, stride)]

    @classmethod
    def of(cls, cache: dict[str, Tensor]) -> Prefix:
        """The prefix in a run's cache (its ``resid_pre.L`` entries)."""
        return cls({int(k.split(".")[1]): v for k, v in cache.items() if k.startswith("resid_pre.")})

    def start(self, layer: int) -> Start | None:
        """Where a run whose first change is in block ``layer`` can start; None: at the embedding."""
        kept = [k for k in self.resid if k <= layer]
        if not kept:
            return None
        best = max(kept)
        return best, self.resid[best]
