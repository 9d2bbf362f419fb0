"""Read attention heads and MLP neurons from the weights: OV and QK circuits, their SVD, neurons → vocabulary.

A head moves information with two bilinear maps of the residual stream (Elhage et al. 2021, "A Mathematical
Framework for Transformer Circuits", section "Attention Heads are Independent and Additive"): the **QK circuit**
``W_QK = W_Q W_K^T`` (``[d_model d_model]``) scores a query position against a key position, and the **OV circuit**
``W_OV = W_V W_O`` (``[d_model d_model]``) is what the head writes for each unit of attention. Both are read here in
the row-vector convention of the code: a query ``x_q`` and key ``x_k`` score ``x_q W_QK x_k^T``, and a key ``x_k``
attended with weight ``p`` adds ``p x_k W_OV`` to the residual stream.

What the matrices include, and what they leave out:

- **Grouped-query attention.** A query head reads the key/value head it shares with its group
  (``cfg.kv_head_of``), so ``W_K`` and ``W_V`` of query head ``h`` are those of key/value head ``h // group``.
- **Rotary positions** (Llama, Gemma, NeoX). Rotary rotates queries and keys by their positions *after* the
  projections, so ``W_QK`` here is the position-free part: exactly ``q · k`` of the ``head.L.q`` / ``head.L.k``
  sites (which are read before rotary), not the attention score. Families without rotary (GPT-2) score
  ``x_q W_QK x_k^T / sqrt(d_head)`` plus bias terms.
- **The norm in front of attention.** With ``fold_norm=True`` (the default) the norm's linear part is folded into
  ``W_Q``, ``W_K`` and ``W_V``: its gain (RMSNorm, Gemma's ``1 + w`` and LayerNorm alike) and, for LayerNorm, the
  centering. The matrices then act on the raw residual stream divided by its scale (RMS, or the standard deviation
  for LayerNorm), a per-position scalar, as in TransformerLens's ``fold_ln``. ``fold_norm=False`` gives the
  projections as stored, acting on the norm's output.
- **Biases** (``b_Q``, ``b_K``, ``b_V``, the norm's bias) are not part of ``W_QK`` / ``W_OV``.

``head_spectra`` takes the SVD of every head's OV and QK circuit without forming the ``d_model``-square matrices (a
QR of each factor leaves a ``d_head``-square core) and projects the top singular directions to tokens (Millidge &
Black 2022, "The Singular Value Decompositions of Transformer Weight Matrices are Highly Interpretable"): what a head
writes through the unembedding (the final norm's gain folded in), what it reads, and what its queries and keys
match, through the embedding. ``neuron_vocab`` reads an MLP neuron's output weights through the unembedding (Geva
et al. 2022, "Transformer Feed-Forward Layers Build Predictions by Promoting Concepts in the Vocabulary Space").
Reading the embedding and unembedding at middle layers is a heuristic: it shows the directions' tokens as if the
residual stream there spoke the vocabulary's language.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from ..core._model import Model
from ..core._residual import ResidualModel, linear_part, model_of, residual
from ._registry import METHODS

Circuit = Literal["ov", "qk"]


@dataclass(frozen=True)
class HeadWeights:
    """One layer's attention weights per query head (key/value heads repeated for their query heads)."""

    layer: int
    w_q: Float[Tensor, "head d_model d_head"]
    w_k: Float[Tensor, "head d_model d_head"]
    """Query head ``h``'s key weights: those of key/value head ``cfg.kv_head_of(h)``."""
    w_v: Float[Tensor, "head d_model d_head"]
    w_o: Float[Tensor, "head d_head d_model"]
    folded: bool
    """The attention norm's linear part is folded into ``w_q``, ``w_k``, ``w_v`` (see the module docstring)."""

    def ov(self) -> Float[Tensor, "head d_model d_model"]:
        """``W_OV = W_V W_O`` of every head: what it writes for each unit of attention to a key."""
        return self.w_v @ self.w_o

    def qk(self) -> Float[Tensor, "head d_model d_model"]:
        """``W_QK = W_Q W_K^T`` of every head, before rotary (unscaled: attention divides by ``sqrt(d_head)``)."""
        return self.w_q @ self.w_k.transpose(-1, -2)


def norm_matrix(norm: nn.Module, d_model: int) -> Float[Tensor, "d_model d_model"] | None:
    """The linear part of a norm, up to its per-position scale; None for ``nn.Identity``.

    ``diag(g)``, or ``(I - 11^T/d) diag(g)`` when the norm centers (LayerNorm); see :func:`norm_gain`.
    """
    read = norm_gain(norm, d_model)
    return None if read is None else fold(read, torch.eye(d_model, device=read[0].device))


def fold(norm: tuple[Tensor, bool], weight: Float[Tensor, "d_model ..."]) -> Float[Tensor, "d_model ..."]:
    """``N @ weight`` for a norm's linear part ``N`` (``norm_gain``), without forming ``N``: scale rows, center."""
    gain, centers = norm
    weight = weight * gain.reshape(-1, *[1] * (weight.ndim - 1))
    return weight - weight.mean(0, keepdim=True) if centers else weight  # (I - 11^T/d) diag(g) W


@torch.no_grad()
def norm_gain(norm: nn.Module, d_model: int) -> tuple[Float[Tensor, " d_model"], bool] | None:
    """A norm's gain ``g`` and whether it centers (LayerNorm); None for ``nn.Identity``.

    Read by probing the module (so RMSNorm, Gemma's ``1 + w`` and LayerNorm need no table): on a large alternating
    ``±s`` vector every norm's scale is ``s``, so ``(norm(s a) - norm(-s a)) / 2 * a`` is the gain; a norm that
    gives the same output after adding a constant to every entry centers.
    """
    if isinstance(norm, nn.Identity):
        return None
    if d_model % 2:
        raise ValueError(f"reading a norm's gain needs an even d_model, got {d_model}; pass fold_norm=False")
    param = next(norm.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    a = torch.ones(d_model, dtype=dtype, device=param.device if param is not None else None)
    a[1::2] = -1
    s = 1e3
    gain = ((norm.forward(s * a) - norm.forward(-s * a)) / 2 * a).float()
    shifted, plain = norm.forward(s * (a + 1)).float(), norm.forward(s * a).float()
    return gain, torch.allclose(shifted, plain, atol=1e-4 * float(gain.abs().max()), rtol=1e-4)


def head_weights(model: Model | ResidualModel, layer: int, *, fold_norm: bool = True) -> HeadWeights:
    """Every query head's ``W_Q``, ``W_K``, ``W_V`` (``[d_model d_head]``) and ``W_O`` (``[d_head d_model]``).

    Float32, GQA-expanded (key/value heads repeated for their query heads), with the attention norm folded in
    unless ``fold_norm=False``.

    Works on a Hugging Face model of a known family and on any ``core.ResidualModel`` adapter.
    """
    res = residual(model)
    cfg = res.cfg
    if not 0 <= layer < cfg.n_layers:
        raise ValueError(f"layer {layer} is outside 0..{cfg.n_layers - 1}")
    kv = torch.tensor([cfg.kv_head_of(h) for h in range(cfg.n_heads)])
    w_q, w_k, w_v = (res.qkv(layer, part)[0].float() for part in ("q", "k", "v"))  # [d_model n d_head]
    w_k, w_v = w_k[:, kv], w_v[:, kv]  # key/value head of each query head
    if fold_norm and (n := norm_gain(res.attn_norm(layer), cfg.d_model)) is not None:
        w_q, w_k, w_v = (fold(n, w) for w in (w_q, w_k, w_v))
    w_q, w_k, w_v = (w.permute(1, 0, 2).contiguous() for w in (w_q, w_k, w_v))  # [head d_model d_head]
    return HeadWeights(layer, w_q, w_k, w_v, res.w_o(layer).float(), fold_norm)


@torch.no_grad()
def embedding(model: Model | ResidualModel) -> Float[Tensor, "d_vocab d_model"]:
    """The token embedding matrix (``W_E``), float32; positional embeddings (GPT-2) are not included."""
    m = model_of(model)
    module = m.module.get_submodule(m.resolve("embed")[0].module)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise TypeError(f"the embed site of {m.name} is no embedding table ({type(module).__name__})")
    return weight.detach().float()


@torch.no_grad()
def unembedding(model: Model | ResidualModel, *, fold_norm: bool = True) -> Float[Tensor, "d_model d_vocab"]:
    """``W_U`` with the final norm's gain (and LayerNorm's centering) folded in unless ``fold_norm=False``.

    Gemma 2's logit soft-capping is monotone and left out.
    """
    res = residual(model)
    norm, w_u = res.unembed()
    w_u = w_u.float()
    if fold_norm and (n := norm_gain(norm, res.cfg.d_model)) is not None:
        w_u = fold(n, w_u)
    return w_u


def _factored_svd(
    a: Float[Tensor, "head d_model d_head"], b: Float[Tensor, "head d_head d_model"]
) -> tuple[Tensor, Tensor, Tensor]:
    """SVD of every ``a[h] @ b[h]`` without forming it: ``(left [head d_model r], s [head r], right [head d_model r])``.

    ``a = Qa Ra`` and ``b^T = Qb Rb`` (reduced QR), so ``a b = Qa (Ra Rb^T) Qb^T`` and the SVD of the
    ``d_head``-square core gives the singular values and, mapped through ``Qa`` / ``Qb``, the singular vectors.
    """
    qa, ra = torch.linalg.qr(a)
    qb, rb = torch.linalg.qr(b.transpose(-1, -2))
    u, s, vh = torch.linalg.svd(ra @ rb.transpose(-1, -2))
    return qa @ u, s, qb @ vh.transpose(-1, -2)


@dataclass(frozen=True)
class WeightsConfig:
    """Settings of the weight reading (``mechscope weights``)."""

    layer: int | None = None
    """Only this layer (default: every layer)."""
    head: int | None = None
    """Only this query head of each layer read (default: every head)."""
    directions: int = 2
    """Singular directions kept per head and circuit (largest first)."""
    top_k: int = 8
    """Tokens shown per singular direction."""
    fold_norm: bool = True
    """Fold the attention norm into W_Q/W_K/W_V and the final norm into W_U (see docs/weights.md)."""

    def __post_init__(self) -> None:
        if self.directions < 1 or self.top_k < 1:
            raise ValueError(f"directions and top_k must be at least 1, got {self.directions} and {self.top_k}")


@dataclass(frozen=True)
class HeadSpectra:
    """What :func:`head_spectra` returns: singular values of every head's OV and QK circuit, directions as tokens.

    Row ``i`` of every tensor is head ``heads[i]``. Singular pairs have a sign ambiguity; each pair is signed so
    that its output side (OV: the written direction through the unembedding; QK: the key direction through the
    embedding) has its largest-magnitude token score positive, and the tokens shown are that positive end.
    """

    heads: tuple[tuple[int, int], ...]
    """``(layer, head)`` of each row."""
    ov_singular: Float[Tensor, "n d_head"]
    """Singular values of ``W_OV`` (all ``d_head`` of them, largest first)."""
    qk_singular: Float[Tensor, "n d_head"]
    """Singular values of ``W_QK`` (position-free part; see the module docstring)."""
    ov_out_ids: Int[Tensor, "n direction k"]
    """Tokens whose unembedding the written direction (right singular vector of ``W_OV``) promotes most."""
    ov_in_ids: Int[Tensor, "n direction k"]
    """Tokens whose embedding is closest to the read direction (left singular vector of ``W_OV``)."""
    qk_query_ids: Int[Tensor, "n direction k"]
    """Tokens whose embedding is closest to the query-side direction (left singular vector of ``W_QK``)."""
    qk_key_ids: Int[Tensor, "n direction k"]
    """Tokens whose embedding is closest to the key-side direction (right singular vector of ``W_QK``)."""
    tokens: dict[str, tuple[tuple[tuple[str, ...], ...], ...]]
    """The four id tensors as text, by field name without ``_ids`` (``"ov_out"``, ...): ``[n][direction][k]``."""
    folded: bool
    provenance: dict[str, Any]

    def row(self, layer: int, head: int) -> int:
        """Index of ``(layer, head)`` in ``heads``."""
        try:
            return self.heads.index((layer, head))
        except ValueError:
            raise KeyError(f"head {layer}.{head} was not read (read: {len(self.heads)} heads)") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON."""
        rows = []
        for i, (layer, head) in enumerate(self.heads):
            row: dict[str, Any] = {"layer": layer, "head": head, "ov_singular": self.ov_singular[i].tolist(),
                                   "qk_singular": self.qk_singular[i].tolist()}  # fmt: skip
            for name, ids in self._ids().items():
                row[name] = [[{"token": t, "id": int(j)} for t, j in zip(toks, d_ids, strict=True)]
                             for toks, d_ids in zip(self.tokens[name][i], ids[i], strict=True)]  # fmt: skip
            rows.append(row)
        return {"method": "weights", "provenance": self.provenance, "folded": self.folded, "heads": rows}

    def to_json(self, indent: int | None = 2) -> str:
        """The result as a JSON string (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)

    def _ids(self) -> dict[str, Tensor]:
        return {"ov_out": self.ov_out_ids, "ov_in": self.ov_in_ids, "qk_query": self.qk_query_ids,
                "qk_key": self.qk_key_ids}  # fmt: skip


@torch.no_grad()
def head_spectra(model: Model, config: WeightsConfig = WeightsConfig()) -> HeadSpectra:
    """SVD of every selected head's OV and QK circuit, with its top singular directions read as tokens.

    No forward pass: weights only. ``model`` must be a transformer language model of a known family (the
    embedding and unembedding are read through its ``embed`` and ``logits`` sites).

    All heads are read at once: one batched SVD of the factored circuits, and one product with the vocabulary matrix
    per side (the top ``directions`` of every head together), so the vocabulary matrix is streamed four times in all.
    """
    cfg = _lm_cfg(model)
    layers = range(cfg.n_layers) if config.layer is None else [config.layer]
    heads = list(range(cfg.n_heads)) if config.head is None else [config.head]
    if any(not 0 <= h < cfg.n_heads for h in heads):
        raise ValueError(f"head {config.head} is outside 0..{cfg.n_heads - 1}")
    res = residual(model)  # weights read once
    w_e, w_u = embedding(model), unembedding(res, fold_norm=config.fold_norm)
    k = min(config.directions, cfg.d_head)
    per_layer = [head_weights(res, layer, fold_norm=config.fold_norm) for layer in layers]
    pick = slice(None) if config.head is None else slice(config.head, config.head + 1)  # a view, not a copy
    w_q, w_k, w_v, w_o = (torch.cat([getattr(w, n)[pick] for w in per_layer]) for n in ("w_q", "w_k", "w_v", "w_o"))
    with one_thread():
        ov_u, ov_s, ov_v = _factored_svd(w_v, w_o)  # OV: reads u, writes v; [head d_model d_head]
        qk_u, qk_s, qk_v = _factored_svd(w_q, w_k.transpose(-1, -2))  # QK: query u, key v
    # each side's top-k directions of every head through the vocabulary: [head direction d_vocab], then its two ends
    ov_out, ov_in, qk_key, qk_query = (
        _ends(_project(vectors[..., :k].transpose(-1, -2), matrix), config.top_k)
        for vectors, matrix in ((ov_v, w_u), (ov_u, w_e.T), (qk_v, w_e.T), (qk_u, w_e.T))
    )
    ov_sign, qk_sign = ov_out.positive, qk_key.positive  # signs from the output (OV) and key (QK) sides
    ids = {"ov_out": ov_out.pick(ov_sign), "ov_in": ov_in.pick(ov_sign), "qk_query": qk_query.pick(qk_sign),
           "qk_key": qk_key.pick(qk_sign)}  # fmt: skip
    decode = _decoder(model)
    return HeadSpectra(
        heads=tuple((layer, h) for layer in layers for h in heads),
        ov_singular=ov_s,
        qk_singular=qk_s,
        ov_out_ids=ids["ov_out"],
        ov_in_ids=ids["ov_in"],
        qk_query_ids=ids["qk_query"],
        qk_key_ids=ids["qk_key"],
        tokens={n: tuple(_texts(decode, row) for row in t) for n, t in ids.items()},
        folded=config.fold_norm,
        provenance=model.provenance,
    )


@METHODS.declare("weights", config=WeightsConfig, result=HeadSpectra, tags=("weights",))
def weights_method(model: Model, config: WeightsConfig) -> HeadSpectra:
    """SVD of every head's OV and QK circuit, singular directions read as tokens (Millidge & Black 2022)."""
    return head_spectra(model, config)


def _project(vectors: Float[Tensor, "... d_model"], matrix: Float[Tensor, "d_model d_vocab"]) -> Tensor:
    """``vectors @ matrix`` as one 2-d product (a batched product would stream the vocabulary matrix per batch)."""
    return (vectors.reshape(-1, vectors.shape[-1]) @ matrix).reshape(*vectors.shape[:-1], matrix.shape[-1])


class _Ends(NamedTuple):
    """The ``k`` highest and lowest scoring tokens of each direction, and which end has the larger magnitude."""

    top: Int[Tensor, "head direction k"]
    bottom: Int[Tensor, "head direction k"]
    """Lowest first."""
    positive: Bool[Tensor, "head direction"]
    """The largest-magnitude score is positive (ties: positive)."""

    def pick(self, positive: Bool[Tensor, "head direction"]) -> Int[Tensor, "head direction k"]:
        """Each direction's tokens signed so that ``positive`` holds: ``top`` where it does, else ``bottom``."""
        return torch.where(positive[..., None], self.top, self.bottom)


def _ends(scores: Float[Tensor, "head direction d_vocab"], k: int) -> _Ends:
    # two top-k passes instead of abs().argmax() and a signed copy: the largest magnitude is one of the two ends
    top, bottom = scores.topk(k, -1), scores.topk(k, -1, largest=False)
    return _Ends(top.indices, bottom.indices, top.values[..., 0] >= -bottom.values[..., 0])


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (restored after), for batches of small LAPACK problems.

    Batched QR and SVD loop over the batch calling LAPACK on each small matrix; with MKL's threads on this 2-core
    machine that was 5x slower than one thread (QR of ``[270 576 64]``: 730 ms vs 145 ms; SVD of ``[270 64 64]``:
    680 ms vs 145 ms), the threads' start-up outweighing the work of one ``576 x 64`` factorisation.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class OVTokens:
    """What :func:`ov_tokens` returns: for each input token, the tokens the head's OV circuit promotes most."""

    layer: int
    head: int
    input_ids: Int[Tensor, " n"]
    top_ids: Int[Tensor, "n k"]
    """Most promoted tokens per input token, most promoted first."""
    top_logits: Float[Tensor, "n k"]
    """Their direct logits (``W_E[t] / scale · W_OV · W_U``; the input scaled to unit RMS)."""
    self_rank: Int[Tensor, " n"]
    """Rank of the input token itself among the promoted tokens (0: the head copies it most)."""
    input_tokens: tuple[str, ...]
    top_tokens: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON."""
        return {"layer": self.layer, "head": self.head,
                "rows": [{"input": t, "id": int(i), "self_rank": int(r),
                          "top": [{"token": tt, "id": int(j), "logit": float(x)}
                                  for tt, j, x in zip(tops, ids, logits, strict=True)]}
                         for t, i, r, tops, ids, logits in zip(self.input_tokens, self.input_ids, self.self_rank,
                                                               self.top_tokens, self.top_ids, self.top_logits,
                                                               strict=True)]}  # fmt: skip


@torch.no_grad()
def ov_tokens(
    model: Model, layer: int, head: int, tokens: Sequence[int] | Tensor, *, top_k: int = 5, fold_norm: bool = True,
    after_block0: bool = False,
) -> OVTokens:  # fmt: skip
    """The full OV circuit ``W_E W_OV W_U`` (Elhage et al. 2021) for some input tokens, as logits.

    What the head writes when it attends to each token; a copying head (a name mover) ranks the token itself first.

    Each input is scaled to unit RMS, the scale the attention norm divides out. By default the input is the token's
    embedding (the direct path; positional embeddings and earlier layers ignored). ``after_block0=True`` uses the
    token's residual stream after block 0 when it is the only token of its sequence (``resid_post.0``: the
    embedding plus block 0's attention, which can only attend to the token itself, and MLP 0), the "effective
    embedding" Wang et al. 2022 read name movers' OV circuits through.
    """
    cfg = _lm_cfg(model)
    if not 0 <= head < cfg.n_heads:
        raise ValueError(f"head {head} is outside 0..{cfg.n_heads - 1}")
    ids = torch.as_tensor(tokens, dtype=torch.long).flatten()
    w = head_weights(model, layer, fold_norm=fold_norm)
    if after_block0:
        x = model.run(ids[:, None], cache="resid_post.0", logits=False).cache["resid_post.0"][:, 0].float()
    else:
        x = embedding(model)[ids]
    x = x / x.pow(2).mean(-1, keepdim=True).sqrt()
    logits = x @ w.w_v[head] @ w.w_o[head] @ unembedding(model, fold_norm=fold_norm)  # [n d_vocab]
    top = logits.topk(top_k, -1)
    self_logit = logits.gather(-1, ids[:, None])
    decode = _decoder(model)
    return OVTokens(layer, head, ids, top.indices, top.values, (logits > self_logit).sum(-1),
                    tuple(decode(int(i)) for i in ids),
                    tuple(tuple(decode(int(t)) for t in row) for row in top.indices))  # fmt: skip


@dataclass(frozen=True)
class NeuronVocab:
    """What :func:`neuron_vocab` returns: the tokens each MLP neuron's output weights promote and suppress."""

    layer: int
    neurons: Int[Tensor, " n"]
    top_ids: Int[Tensor, "n k"]
    """Most promoted tokens (largest ``w_out · W_U``), most first."""
    bottom_ids: Int[Tensor, "n k"]
    """Most suppressed tokens, most first."""
    top_logits: Float[Tensor, "n k"]
    bottom_logits: Float[Tensor, "n k"]
    top_tokens: tuple[tuple[str, ...], ...]
    bottom_tokens: tuple[tuple[str, ...], ...]
    folded: bool
    """The final norm's gain (and LayerNorm's centering) is folded into ``W_U``."""

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON."""
        rows = zip(self.neurons, self.top_tokens, self.bottom_tokens, strict=True)
        return {"layer": self.layer, "folded": self.folded,
                "neurons": [{"neuron": int(n), "top": list(t), "bottom": list(b)} for n, t, b in rows]}  # fmt: skip


@torch.no_grad()
def neuron_vocab(
    model: Model, layer: int, neurons: Sequence[int] | Tensor | None = None, *, top_k: int = 10,
    fold_norm: bool = True,
) -> NeuronVocab:  # fmt: skip
    """Each neuron's output weights (its row of the MLP's down projection) read through the unembedding.

    The direct effect on the logits of one unit of the neuron's activation, up to the final norm's per-position
    scale (the norm's gain is folded in unless ``fold_norm=False``).
    """
    cfg = _lm_cfg(model)
    if not 0 <= layer < cfg.n_layers:
        raise ValueError(f"layer {layer} is outside 0..{cfg.n_layers - 1}")
    down = model.module.get_submodule(model.resolve(f"mlp.{layer}.post")[0].module)
    w_out = linear_part(down, cfg.d_mlp)[0].float()  # [d_mlp d_model]
    ids = torch.arange(cfg.d_mlp) if neurons is None else torch.as_tensor(neurons, dtype=torch.long).flatten()
    if len(ids) and not (int(ids.min()) >= 0 and int(ids.max()) < cfg.d_mlp):
        raise ValueError(f"neurons must lie in 0..{cfg.d_mlp - 1}")
    logits = w_out[ids] @ unembedding(model, fold_norm=fold_norm)  # [n d_vocab]
    top, bottom = logits.topk(top_k, -1), logits.topk(top_k, -1, largest=False)
    decode = _decoder(model)
    text = functools.partial(_texts, decode)
    return NeuronVocab(layer, ids, top.indices, bottom.indices, top.values, bottom.values, text(top.indices),
                       text(bottom.indices), fold_norm)  # fmt: skip


def _texts(decode: Any, ids: Tensor) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(decode(int(t)) for t in row) for row in ids)


def _lm_cfg(model: Model) -> Any:
    if not isinstance(model, Model) or model.cfg is None:
        raise TypeError(
            "reading weights as tokens needs a transformer language model of a known family (ms.load, ms.tiny); "
            f"got {getattr(model, 'name', type(model).__name__)}"
        )
    return model.cfg


def _decoder(model: Model) -> Any:
    tok = model.tokenizer
    if tok is None:
        return str
    return lambda i: tok.decode([i])
