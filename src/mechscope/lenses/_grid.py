"""The logit lens at every position of one prompt: a layer x position grid of next-token predictions.

``logit_lens`` reads one position per prompt; the explorer's grid (and anyone asking "what does each layer predict
after each token?") needs all of them from one forward pass. Same reading as ``logit_lens``: each layer's
``resid_post`` through the model's own final norm and unembedding (nostalgebraist 2020), so the last layer's row
is the model's real next-token distribution at every position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core._model import Model
from ..core._unembed import unembed
from .logit_lens import _decoder

if TYPE_CHECKING:
    from ._tuned import TunedLens


@dataclass(frozen=True)
class LensGrid:
    """What :func:`logit_lens_grid` returns: the top tokens of every layer's lens at every position."""

    tokens: tuple[str, ...]
    """The prompt's tokens as text, one per position."""
    token_ids: Int[Tensor, " pos"]
    top_ids: Int[Tensor, "layer pos k"]
    """The ``k`` most probable next tokens under layer ``l``'s lens after position ``p``, most probable first."""
    top_probs: Float[Tensor, "layer pos k"]
    top_tokens: tuple[tuple[tuple[str, ...], ...], ...]
    """``top_ids`` as text, ``[layer][pos][k]``."""
    provenance: dict[str, Any]
    method: str = "logit_lens_grid"
    """Which lens: ``logit_lens_grid`` or ``tuned_lens_grid``."""

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON."""
        return {
            "method": self.method,
            "provenance": self.provenance,
            "tokens": list(self.tokens),
            "token_ids": self.token_ids.tolist(),
            "layers": list(range(self.top_ids.shape[0])),
            "top": [
                [
                    [{"token": t, "id": int(i), "prob": float(p)} for t, i, p in zip(toks, ids, probs, strict=True)]
                    for toks, ids, probs in zip(layer_toks, layer_ids, layer_probs, strict=True)
                ]
                for layer_toks, layer_ids, layer_probs in zip(
                    self.top_tokens, self.top_ids, self.top_probs, strict=True
                )
            ],
        }


@torch.no_grad()
def logit_lens_grid(model: Model, prompt: str, *, top_k: int = 3) -> LensGrid:
    """Read every layer's ``resid_post`` at every position of ``prompt`` through the final norm and unembedding."""
    return _grid(model, prompt, top_k, lambda resid: unembed(model, resid), "logit_lens_grid")


@torch.no_grad()
def tuned_lens_grid(model: Model, lens: TunedLens, prompt: str, *, top_k: int = 3) -> LensGrid:
    """The tuned lens's grid: layer ``l < n-1`` through translator ``l + 1``, the last layer as the model's output.

    Same axes as ``logit_lens_grid`` (``resid_post.l`` = ``resid_pre.{l+1}``), so the two are drawn side by side.
    """
    lens.check(model)

    def read(resid: Tensor) -> Tensor:  # [layer pos d_model]
        inner = lens.translate(resid[:-1], slice(1, None)).to(resid.dtype)
        return unembed(model, torch.cat([inner, resid[-1:]]))

    return _grid(model, prompt, top_k, read, "tuned_lens_grid")


def _grid(model: Model, prompt: str, top_k: int, read: Callable[[Tensor], Tensor], name: str) -> LensGrid:
    cfg = model.cfg
    if cfg is None:
        raise TypeError(f"{name} needs a transformer language model; {model.name} has no final norm")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    run = model.run(prompt, cache="resid_post.*", logits=False)
    assert run.tokens is not None
    resid = torch.stack([run.cache[f"resid_post.{layer}"][0] for layer in range(cfg.n_layers)])  # [layer pos d_model]
    probs = read(resid).float().softmax(-1)  # [layer pos d_vocab]
    top_probs, top_ids = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    decode = _decoder(model)
    ids = run.tokens[0]
    return LensGrid(
        tokens=tuple(decode(int(i)) for i in ids),
        token_ids=ids,
        top_ids=top_ids,
        top_probs=top_probs,
        top_tokens=tuple(tuple(tuple(decode(int(i)) for i in pos) for pos in layer) for layer in top_ids),
        provenance=model.provenance,
        method=name,
    )
