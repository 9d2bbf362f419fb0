"""The logit lens: read every layer's residual stream as if it were the last one.

Each layer's ``resid_post`` is passed through the model's own final norm and unembedding, giving the next-token
distribution the model would predict if the remaining layers were skipped (nostalgebraist 2020, "interpreting
GPT: the logit lens"). The last layer's lens is the model's real output, which the tests check.

The lens is declared as ``logit-lens`` in ``mechscope.lenses.METHODS`` with its settings in ``LogitLensConfig``
(whose defaults the library call ``logit_lens`` shares); ``mechscope.report`` draws its results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core._model import Inputs, Model, RunResult
from ..core._unembed import unembed
from ._registry import METHODS


@dataclass(frozen=True)
class LogitLensConfig:
    """Settings of the logit lens (``mechscope lens --method logit-lens``)."""

    answer: str | None = None
    """Token whose probability is tracked, a single token such as " Mary" (default: the model's own prediction, the
    last layer's top token)."""
    pos: int = -1
    """Position read: negative counts back from each prompt's last real token (-1: the last), non-negative indexes
    the padded batch."""
    top_k: int = 5
    """How many of the most probable tokens to keep per layer."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")


@dataclass(frozen=True)
class LogitLensResult:
    """What :func:`logit_lens` returns: per prompt and layer, the answer's probability and the top tokens."""

    layers: tuple[int, ...]
    """Layer indices; entry ``l`` reads ``resid_post.l``."""
    prompts: tuple[str, ...] | None
    """The prompts (None when the inputs were token ids)."""
    positions: Int[Tensor, " batch"]
    """Position read in each (padded) prompt."""
    answer_ids: Int[Tensor, " batch"]
    """Token whose probability is tracked, per prompt."""
    answer_tokens: tuple[str, ...]
    """The answer tokens as text."""
    answer_probs: Float[Tensor, "batch layer"]
    """Probability of the answer token under each layer's lens."""
    answer_ranks: Int[Tensor, "batch layer"]
    """Rank of the answer token under each layer's lens (0: most probable); readable where probabilities are tiny."""
    top_ids: Int[Tensor, "batch layer k"]
    """The ``k`` most probable tokens under each layer's lens, most probable first."""
    top_probs: Float[Tensor, "batch layer k"]
    top_tokens: tuple[tuple[tuple[str, ...], ...], ...]
    """``top_ids`` as text, ``[batch][layer][k]``."""
    provenance: dict[str, Any]
    """The model's id, weights checksum and dtype."""
    lens: str = "logit_lens"
    """Which lens read the layers: ``logit_lens`` or ``tuned_lens``."""

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON."""
        top = [
            [
                [{"token": t, "id": int(i), "prob": float(p)} for t, i, p in zip(toks, ids, probs, strict=True)]
                for toks, ids, probs in zip(layer_toks, layer_ids, layer_probs, strict=True)
            ]
            for layer_toks, layer_ids, layer_probs in zip(self.top_tokens, self.top_ids, self.top_probs, strict=True)
        ]
        return {
            "method": self.lens,
            "provenance": self.provenance,
            "layers": list(self.layers),
            "prompts": list(self.prompts) if self.prompts is not None else None,
            "positions": self.positions.tolist(),
            "answers": [{"token": t, "id": int(i)} for t, i in zip(self.answer_tokens, self.answer_ids, strict=True)],
            "answer_probs": self.answer_probs.tolist(),
            "answer_ranks": self.answer_ranks.tolist(),
            "top": top,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The result as a JSON string (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)


@torch.no_grad()
def logit_lens(
    model: Model,
    inputs: Inputs,
    answer: str | int | None = None,
    *,
    pos: int = LogitLensConfig.pos,
    top_k: int = LogitLensConfig.top_k,
) -> LogitLensResult:
    """Apply the final norm and unembedding to every layer's ``resid_post`` at one position per prompt.

    Args:
        model: a transformer language model (``ms.load``, ``ms.tiny``, ``ms.from_hf``).
        inputs: a prompt, a list of prompts (right-padded) or token ids.
        answer: token to track: a single-token string (``" Mary"``), a token id, or None for each prompt's
            real next-token prediction (the last layer's top token).
        pos: position to read. Negative values count back from each prompt's last real token (``-1`` is the
            last real token, whatever the padding); non-negative values index the padded batch.
        top_k: how many top tokens to keep per layer.
    """
    return lens_result(model, inputs, answer, pos=pos, top_k=top_k, read=lambda resid: unembed(model, resid))


def lens_result(
    model: Model,
    inputs: Inputs,
    answer: str | int | None,
    *,
    pos: int,
    top_k: int,
    read: Callable[[Tensor], Tensor],
    name: str = "logit_lens",
    extra: dict[str, Any] | None = None,
) -> LogitLensResult:
    """One forward pass caching ``resid_post.*``; ``read`` turns ``[batch layer d_model]`` into logits."""
    cfg = model.cfg
    if cfg is None:
        raise TypeError(f"{name} needs a transformer language model; {model.name} has no final norm")
    # logits=False: the forward pass stops after the last block; the lens computes the last layer's logits itself.
    run = model.run(inputs, cache="resid_post.*", logits=False)
    positions = _positions(run, pos)
    rows = torch.arange(len(positions))
    resid = torch.stack([run.cache[f"resid_post.{layer}"][rows, positions] for layer in range(cfg.n_layers)], 1)
    probs = read(resid).float().softmax(-1)  # [batch layer d_vocab]

    if answer is None:
        answer_ids = probs[:, -1].argmax(-1)
    else:
        token = model.to_single_token(answer) if isinstance(answer, str) else int(answer)
        if not 0 <= token < probs.shape[-1]:
            raise ValueError(f"answer token id {token} is outside the vocabulary (size {probs.shape[-1]})")
        answer_ids = torch.full((len(positions),), token)
    answer_probs = probs[rows, :, answer_ids]  # [batch layer]
    top_probs, top_ids = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    decode = _decoder(model)
    return LogitLensResult(
        layers=tuple(range(cfg.n_layers)),
        prompts=(inputs,) if isinstance(inputs, str) else None if isinstance(inputs, Tensor) else tuple(inputs),
        positions=positions,
        answer_ids=answer_ids,
        answer_tokens=tuple(decode(int(i)) for i in answer_ids),
        answer_probs=answer_probs,
        answer_ranks=(probs > answer_probs[..., None]).sum(-1),
        top_ids=top_ids,
        top_probs=top_probs,
        top_tokens=tuple(tuple(tuple(decode(int(i)) for i in layer) for layer in row) for row in top_ids),
        provenance={**model.provenance, **(extra or {})},
        lens=name,
    )


@METHODS.declare("logit-lens", config=LogitLensConfig, result=LogitLensResult)
def logit_lens_method(model: Model, inputs: Inputs, config: LogitLensConfig) -> LogitLensResult:
    """Read every layer's residual stream through the final norm and unembedding (nostalgebraist 2020)."""
    return logit_lens(model, inputs, config.answer, pos=config.pos, top_k=config.top_k)


def _positions(run: RunResult, pos: int) -> Int[Tensor, " batch"]:
    assert run.tokens is not None
    last, width = run.last_pos(), run.tokens.shape[1]
    positions = last + 1 + pos if pos < 0 else torch.full_like(last, pos)
    inside = (positions >= 0) & (positions < width)
    if run.attention_mask is not None and bool(inside.all()):
        inside &= run.attention_mask[torch.arange(len(last)), positions].bool()
    if not bool(inside.all()):
        i = int((~inside).nonzero()[0])
        raise ValueError(f"pos={pos} is not a real token of prompt {i} (its last real token is at {int(last[i])})")
    return positions


def _decoder(model: Model) -> Callable[[int], str]:
    tok = model.tokenizer
    if tok is None:
        return str
    return lambda i: tok.decode([i])
