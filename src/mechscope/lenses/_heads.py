"""How heads compose, read from the weights, and what kind of head each is, read from its attention on made inputs.

**Composition scores** (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits", section
"Composition"): how much of what an earlier head writes a later head reads, as its queries (Q), keys (K) or values
(V). With ``W_OV`` of the earlier head and the later head's ``W_QK`` / ``W_OV`` in the row-vector convention of
``lenses._weights`` (a residual vector ``x`` is written as ``x W_OV``), the scores are Frobenius-norm ratios:

    Q: ||W_OV^1 W_QK^2|| / (||W_OV^1|| ||W_QK^2||)
    K: ||W_OV^1 (W_QK^2)^T|| / (||W_OV^1|| ||W_QK^2||)
    V: ||W_OV^1 W_OV^2|| / (||W_OV^1|| ||W_OV^2||)

(the paper writes them column-wise: ``||W_QK^T W_OV||``, ``||W_QK W_OV||``, ``||W_OV^2 W_OV^1||``; TransformerLens's
``all_composition_scores`` computes the same). Each is in ``[0, 1]``. Unrelated heads do not score 0: the paper
subtracts the expected score of random matrices of the same shapes, which ``CompositionScores.baseline`` estimates
(Gaussian factors ``[d_model d_head] @ [d_head d_model]``, seeded). Heads of rotary models
compose before rotary (the position-free part, see ``lenses._weights``). The products are never formed: with
``W_OV^1 = A B`` and ``W^2 = C D`` (``A``, ``C``: ``[d_model d_head]``), ``A = Qa Ra`` and ``D^T = Qd Rd``, the
norm of the product is that of the ``d_head``-square ``Ra (B C) Rd^T``.

**Head types** (TransformerLens's ``head_detector``): attention patterns on sequences of random tokens repeated
twice, scored against a 0/1 detection pattern as the fraction of the head's attention that falls on it
(``sum(pattern * detection) / sum(pattern)``, the ``"mul"`` measure), averaged over sequences. Previous-token:
each position's predecessor. Duplicate-token: earlier positions holding the same token. Induction: the position
just after each earlier occurrence of the current token (Olsson et al. 2022). On sequences of length ``2n`` the
best possible duplicate and induction scores are about ``n / 2n`` (the first half has nothing to find).

**Copy suppression** (McDougall et al. 2023, *Copy Suppression: Comprehensively Understanding an Attention Head*,
§3: the head attends to earlier tokens and lowers their logits). Its detection pattern comes from the head's own
output: at query ``q`` the head writes ``o_q = z_q W_O``; its direct effect on token ``x`` is ``o_q W_U[:, x]``
(``W_U`` with the final norm's gain folded in), centred over the vocabulary (softmax ignores shifts). Key ``k`` is
on the pattern when that centred effect on the token at ``k`` is negative, so the score is the fraction of the
head's attention that goes to tokens its output pushes down. A head unrelated to its inputs scores about 0.5, a
copying head near 0, a copy-suppressing head near 1. The effect ignores the final norm's scale (a positive factor
per position, which does not change a sign).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core._model import Model
from ..core._residual import ResidualModel, model_of, residual
from ._registry import METHODS
from ._weights import head_weights, one_thread, unembedding

Mode = Literal["q", "k", "v"]
MODES: tuple[Mode, ...] = ("q", "k", "v")


@dataclass(frozen=True)
class CompositionConfig:
    """Settings of the composition scores (``mechscope weights --composition``)."""

    fold_norm: bool = True
    """Fold each layer's attention norm into its W_Q/W_K/W_V (see docs/weights.md)."""


@dataclass(frozen=True)
class CompositionScores:
    """What :func:`composition_scores` returns: Q-, K- and V-composition of every earlier head into every later one.

    Each tensor is ``[layer head layer head]``, indexed ``[source layer, source head, reader layer, reader head]``;
    pairs whose reader is not in a later layer are 0.
    """

    q: Float[Tensor, "layer head layer2 head2"]
    k: Float[Tensor, "layer head layer2 head2"]
    v: Float[Tensor, "layer head layer2 head2"]
    baseline: float
    """Mean score of random Gaussian factored matrices of the same shapes: what unrelated heads score."""
    folded: bool
    provenance: dict[str, Any]

    def __getitem__(self, mode: str) -> Tensor:
        if mode not in MODES:
            raise KeyError(f"composition mode {mode!r}: choose from q, k, v")
        return {"q": self.q, "k": self.k, "v": self.v}[mode]

    def top(self, mode: Mode, n: int = 10) -> list[tuple[tuple[int, int], tuple[int, int], float]]:
        """The ``n`` highest-scoring ``((layer, head), (reader layer, reader head), score)`` pairs of ``mode``."""
        scores = self[mode]
        values, flat = scores.flatten().topk(min(n, scores.numel()))
        idx = torch.unravel_index(flat, scores.shape)
        return [((int(a), int(b)), (int(c), int(d)), float(v)) for a, b, c, d, v in zip(*idx, values, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON."""
        return {"method": "composition", "provenance": self.provenance, "folded": self.folded,
                "baseline": self.baseline, **{m: self[m].tolist() for m in MODES}}  # fmt: skip

    def to_json(self, indent: int | None = 2) -> str:
        """The result as a JSON string (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)


def composition_score(left: Float[Tensor, "d_model d_model"], right: Float[Tensor, "d_model d_model"]) -> Tensor:
    """``||left @ right||_F / (||left||_F ||right||_F)``: the definition, on full matrices (for checks and one-offs)."""
    return torch.linalg.matrix_norm(left @ right) / (torch.linalg.matrix_norm(left) * torch.linalg.matrix_norm(right))


@torch.no_grad()
def composition_scores(
    model: Model | ResidualModel, config: CompositionConfig = CompositionConfig()
) -> CompositionScores:
    """Q-, K- and V-composition scores of every head pair in different layers, from the weights alone."""
    res = residual(model)
    cfg = res.cfg
    heads = [head_weights(res, layer, fold_norm=config.fold_norm) for layer in range(cfg.n_layers)]
    shape = (cfg.n_layers, cfg.n_heads, cfg.n_layers, cfg.n_heads)
    out = {m: torch.zeros(shape) for m in MODES}
    with one_thread():  # many small QRs (see one_thread)
        writers = [_Factors(w.w_v, w.w_o) for w in heads]  # W_OV = A B of every source head
        readers = {
            "q": [_Factors(w.w_q, w.w_k.transpose(-1, -2)) for w in heads],  # W_QK
            "k": [_Factors(w.w_k, w.w_q.transpose(-1, -2)) for w in heads],  # W_QK^T
            "v": writers,  # W_OV
        }
    for mode in MODES:
        for dst in range(1, cfg.n_layers):
            r = readers[mode][dst]
            for src in range(dst):
                w = writers[src]
                core = torch.einsum("ahm,bmg->abhg", w.b, r.a)  # B_src C_dst: [src_head dst_head d_head d_head]
                core = w.ra[:, None] @ core @ r.rd[None].transpose(-1, -2)
                norms = torch.linalg.matrix_norm(core)  # [src_head dst_head]
                out[mode][src, :, dst, :] = norms / (w.norm[:, None] * r.norm[None, :])
    prov = model_of(model).provenance
    return CompositionScores(out["q"], out["k"], out["v"], random_baseline(cfg.d_model, cfg.d_head), config.fold_norm,
                             prov)  # fmt: skip


def random_baseline(d_model: int, d_head: int, n: int = 64, seed: int = 0) -> float:
    """Mean composition score of ``n`` pairs of random rank-``d_head`` products (Gaussian factors)."""
    gen = torch.Generator().manual_seed(seed)
    a, b, c, d = (torch.randn(n, *shape, generator=gen) for shape in [(d_model, d_head), (d_head, d_model)] * 2)
    return float(composition_score(a @ b, c @ d).mean())


class _Factors:
    """A per-head product ``a @ b`` (``a``: ``[head d_model r]``, ``b``: ``[head r d_model]``) ready for norms."""

    def __init__(self, a: Tensor, b: Tensor) -> None:
        self.a, self.b = a, b
        self.ra = torch.linalg.qr(a).R  # a = Qa Ra
        self.rd = torch.linalg.qr(b.transpose(-1, -2)).R  # b^T = Qd Rd
        self.norm = torch.linalg.matrix_norm(self.ra @ b)  # ||a b|| = ||Ra b||


@METHODS.declare("composition", config=CompositionConfig, result=CompositionScores, tags=("weights",))
def composition_method(model: Model, config: CompositionConfig) -> CompositionScores:
    """Q/K/V composition scores between heads of different layers, from the weights (Elhage et al. 2021)."""
    return composition_scores(model, config)


# --- head types ---------------------------------------------------------------------------------------------------

HeadType = Literal["previous_token", "duplicate_token", "induction", "copy_suppression"]
HEAD_TYPES: tuple[HeadType, ...] = ("previous_token", "duplicate_token", "induction", "copy_suppression")


@dataclass(frozen=True)
class HeadTypesConfig:
    """Settings of the head-type scores (``mechscope weights --head-types``)."""

    rep_len: int = 16
    """Length of the random segment; each sequence is that segment twice."""
    n_seqs: int = 16
    """Sequences averaged over."""
    seed: int = 0
    """Seed of the random tokens."""

    def __post_init__(self) -> None:
        if self.rep_len < 2 or self.n_seqs < 1:
            raise ValueError(f"rep_len must be >= 2 and n_seqs >= 1, got {self.rep_len} and {self.n_seqs}")


@dataclass(frozen=True)
class HeadTypeScores:
    """What :func:`head_type_scores` returns: per head, the fraction of attention on each head type's pattern."""

    previous_token: Float[Tensor, "layer head"]
    duplicate_token: Float[Tensor, "layer head"]
    induction: Float[Tensor, "layer head"]
    copy_suppression: Float[Tensor, "layer head"]
    """Fraction of attention on tokens whose (centred) logits the head's own output lowers; 0.5 is chance."""
    tokens: Int[Tensor, "batch pos"]
    """The sequences scored (a random segment repeated twice)."""
    provenance: dict[str, Any]

    def __getitem__(self, kind: str) -> Tensor:
        if kind not in HEAD_TYPES:
            raise KeyError(f"head type {kind!r}: choose from {', '.join(HEAD_TYPES)}")
        return getattr(self, kind)

    def top(self, kind: HeadType, n: int = 5) -> list[tuple[tuple[int, int], float]]:
        """The ``n`` heads with the highest ``kind`` score, as ``((layer, head), score)``."""
        scores = self[kind]
        values, flat = scores.flatten().topk(min(n, scores.numel()))
        return [
            ((int(f) // scores.shape[1], int(f) % scores.shape[1]), float(v)) for f, v in zip(flat, values, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON."""
        return {"method": "head-types", "provenance": self.provenance, "n_seqs": len(self.tokens),
                "seq_len": self.tokens.shape[1], **{k: self[k].tolist() for k in HEAD_TYPES}}  # fmt: skip


def repeated_tokens(model: Model, rep_len: int, n_seqs: int, seed: int = 0) -> Int[Tensor, "batch pos"]:
    """``n_seqs`` sequences of ``rep_len`` random tokens (no special tokens) repeated twice."""
    cfg = model.cfg
    if cfg is None:
        raise TypeError(f"{model.name} is not a transformer language model")
    special = set(getattr(model.tokenizer, "all_special_ids", None) or [])
    allowed = torch.tensor([t for t in range(cfg.d_vocab) if t not in special])
    gen = torch.Generator().manual_seed(seed)
    half = allowed[torch.randint(len(allowed), (n_seqs, rep_len), generator=gen)]
    return torch.cat([half, half], 1)


def detection_patterns(tokens: Int[Tensor, "batch pos"]) -> dict[HeadType, Float[Tensor, "batch pos pos"]]:
    """The 0/1 ``[query key]`` patterns of each head type for each sequence (TransformerLens's definitions)."""
    n, t = tokens.shape
    prev = torch.zeros(t, t)
    prev[torch.arange(1, t), torch.arange(t - 1)] = 1
    same = (tokens[:, :, None] == tokens[:, None, :]).float().tril(-1)  # earlier positions with the same token
    shifted = torch.zeros_like(same)
    shifted[:, :, 1:] = same[:, :, :-1]  # the position after each earlier occurrence
    return {"previous_token": prev.expand(n, t, t), "duplicate_token": same, "induction": shifted.tril()}


@torch.no_grad()
def head_type_scores(
    model: Model, config: HeadTypesConfig = HeadTypesConfig(), tokens: Int[Tensor, "batch pos"] | None = None
) -> HeadTypeScores:
    """Previous-token, duplicate-token, induction and copy-suppression scores of every head.

    On ``config``'s repeated random tokens, or on ``tokens`` when given.
    """
    cfg = model.cfg
    if cfg is None:
        raise TypeError(f"{model.name} is not a transformer language model")
    if tokens is None:
        tokens = repeated_tokens(model, config.rep_len, config.n_seqs, config.seed)
    # logits="final": a pass stopped at the deepest site would end at its z, before that attention returns its pattern
    cache = model.run(tokens, cache=["head.*.pattern", "head.*.z"], logits="final").cache
    tokens = tokens.cpu()
    detect = detection_patterns(tokens)
    w_u = unembedding(model)[:, tokens].permute(1, 0, 2)  # [batch d_model kpos]: the unembedding of each key's token
    w_u_mean = unembedding(model).mean(-1)  # [d_model]
    scores = {k: torch.zeros(cfg.n_layers, cfg.n_heads) for k in HEAD_TYPES}
    for layer in range(cfg.n_layers):
        pat = cache[f"head.{layer}.pattern"].float().cpu()  # [batch head qpos kpos]
        detect["copy_suppression"] = suppressed(cache[f"head.{layer}.z"].float().cpu(),
                                                head_weights(model, layer).w_o, w_u, w_u_mean)  # fmt: skip
        for kind in HEAD_TYPES:
            pattern = detect[kind] if detect[kind].ndim == 4 else detect[kind][:, None]
            hits = (pat * pattern).sum((-1, -2)) / pat.sum((-1, -2))  # [batch head]
            scores[kind][layer] = hits.mean(0)
    return HeadTypeScores(scores["previous_token"], scores["duplicate_token"], scores["induction"],
                          scores["copy_suppression"], tokens, model.provenance)  # fmt: skip


def suppressed(
    z: Float[Tensor, "batch pos head d_head"],
    w_o: Float[Tensor, "head d_head d_model"],
    w_u_keys: Float[Tensor, "batch d_model kpos"],
    w_u_mean: Float[Tensor, " d_model"],
) -> Float[Tensor, "batch head qpos kpos"]:
    """1 where the head's output at the query lowers the centred logit of the token at the key (copy suppression)."""
    out = torch.einsum("bqhd,hdm->bhqm", z, w_o)  # [batch head qpos d_model]: the head's direct write
    effect = torch.einsum("bhqm,bmk->bhqk", out, w_u_keys) - (out @ w_u_mean)[..., None]
    return (effect < 0).float()


@METHODS.declare("head-types", config=HeadTypesConfig, result=HeadTypeScores, tags=("weights",))
def head_types_method(model: Model, config: HeadTypesConfig) -> HeadTypeScores:
    """Previous-token, duplicate-token, induction and copy-suppression scores of every head on repeated tokens."""
    return head_type_scores(model, config)
