"""Per-family rename tables: where each uniform site lives in a Hugging Face model.

This is the only place that knows architectures. A family is a handful of module paths; everything else (site
shapes, hooks, methods) is derived from it and from the config. Adding a family is adding one table entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

QKVLayout = Literal["separate", "concat", "interleaved"]


@dataclass(frozen=True)
class Family:
    """Module paths of one transformer family. Paths inside a block are relative to the block."""

    layers: str
    """The ModuleList of decoder blocks."""
    embed: str
    """Token embedding (its output is the ``embed`` site)."""
    final_norm: str | None
    """The norm applied before the unembedding (None: the unembedding reads the residual stream itself)."""
    unembed: str
    """The linear map to vocabulary logits."""
    attn: str
    """The attention module; its output is ``(attn_output, attn_weights)``."""
    attn_out: str
    """Module whose output is what attention adds to the residual stream."""
    mlp_out: str
    """Module whose output is what the MLP adds to the residual stream."""
    o_proj: str
    """Attention output projection; its input is the per-head ``z``."""
    qkv: tuple[str, ...]
    """Query, key and value projections (one path when they are fused)."""
    qkv_layout: QKVLayout
    """separate: three modules; concat: one output ``[q | k | v]``; interleaved: ``[head, (q k v), d_head]``."""
    mlp_down: str | None
    """The MLP's output projection; its input is the neuron activations (``mlp.L.post``). None for mixtures of
    experts, whose experts are one fused parameter with no module per expert (no neuron site)."""
    ln1: str | None
    """The block's first norm; its input is the residual stream after any edits to ``resid_pre`` (None: no norm,
    attention reads the residual stream itself)."""
    ln2: str | None
    """The norm in front of the MLP (its output is the ``ln2`` site; None: no norm)."""
    parallel_attr: str | None = None
    """Config attribute that, when true, makes attention and MLP read the same residual (no ``resid_mid``)."""
    parallel: bool = False
    """Attention and MLP always read the same residual (GPT-J, Phi); ``ln2`` is then the shared norm ``ln1``."""
    mlp_flat: bool = False
    """The block flattens batch and positions into one axis before its MLP (OPT): the MLP's sites unflatten it."""
    qkv_in_place: bool = False
    """Attention clamps the projections' outputs in place (OLMo's ``clip_qkv``)."""
    mlp_out_in_place: bool = False
    """The block adds attention's output into the MLP's output tensor in place (Falcon's parallel blocks)."""
    router: str | None = None
    """Mixture-of-experts router, relative to the block; its first output is the router logits
    (the read-only ``mlp.L.router`` site)."""


_LLAMA = Family(
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    attn="self_attn",
    attn_out="self_attn",
    mlp_out="mlp",
    o_proj="self_attn.o_proj",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    qkv_layout="separate",
    mlp_down="mlp.down_proj",
    ln1="input_layernorm",
    ln2="post_attention_layernorm",
)

# Gemma 2 normalises each branch's output before adding it to the residual stream.
_GEMMA2 = Family(
    **{
        **_LLAMA.__dict__,
        "attn_out": "post_attention_layernorm",
        "mlp_out": "post_feedforward_layernorm",
        "ln2": "pre_feedforward_layernorm",
    }
)

_GPT2 = Family(
    layers="transformer.h",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    attn="attn",
    attn_out="attn",
    mlp_out="mlp",
    o_proj="attn.c_proj",
    qkv=("attn.c_attn",),
    qkv_layout="concat",
    mlp_down="mlp.c_proj",
    ln1="ln_1",
    ln2="ln_2",
)

_GPT_NEOX = Family(
    layers="gpt_neox.layers",
    embed="gpt_neox.embed_in",
    final_norm="gpt_neox.final_layer_norm",
    unembed="lm_head",
    attn="attention",
    attn_out="attention",
    mlp_out="mlp",
    o_proj="attention.dense",
    qkv=("attention.query_key_value",),
    qkv_layout="interleaved",
    mlp_down="mlp.dense_4h_to_h",
    ln1="input_layernorm",
    ln2="post_attention_layernorm",
    parallel_attr="use_parallel_residual",
)

# --- more families: each a table, or a function of the config where a config switch changes the block ----------

# OLMo 2 normalises each branch's output (no norm in front of attention or the MLP); q and k are normalised after
# the projections, so the head.L.q/k sites (projection outputs) are before that norm, like the rotary.
_OLMO2 = replace(_LLAMA, ln1=None, ln2=None, attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm")

# Phi-1/2: one norm that attention and the MLP share, both added to the block's input (parallel blocks).
_PHI = replace(
    _LLAMA, final_norm="model.final_layernorm", o_proj="self_attn.dense", mlp_down="mlp.fc2", ln2="input_layernorm",
    parallel=True,
)  # fmt: skip

# Phi-3: fused [q | k | v] projection and fused gate/up projection.
_PHI3 = replace(_LLAMA, qkv=("self_attn.qkv_proj",), qkv_layout="concat")

_GPTJ = Family(
    layers="transformer.h",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    attn="attn",
    attn_out="attn",
    mlp_out="mlp",
    o_proj="attn.out_proj",
    qkv=("attn.q_proj", "attn.k_proj", "attn.v_proj"),
    qkv_layout="separate",
    mlp_down="mlp.fc_out",
    ln1="ln_1",
    ln2="ln_1",
    parallel=True,
)

# OPT's MLP is not a module of its own: fc1 and fc2 sit in the block, so fc2's output is what the MLP adds.
_OPT = Family(
    layers="model.decoder.layers",
    embed="model.decoder.embed_tokens",
    final_norm="model.decoder.final_layer_norm",
    unembed="lm_head",
    attn="self_attn",
    attn_out="self_attn",
    mlp_out="fc2",
    o_proj="self_attn.out_proj",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    qkv_layout="separate",
    mlp_down="fc2",
    ln1="self_attn_layer_norm",
    ln2="final_layer_norm",
    mlp_flat=True,
)

# BLOOM adds the residual inside its attention and MLP modules, so their output projections are the branch outputs.
_BLOOM = Family(
    layers="transformer.h",
    embed="transformer.word_embeddings",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    attn="self_attention",
    attn_out="self_attention.dense",
    mlp_out="mlp.dense_4h_to_h",
    o_proj="self_attention.dense",
    qkv=("self_attention.query_key_value",),
    qkv_layout="interleaved",
    mlp_down="mlp.dense_4h_to_h",
    ln1="input_layernorm",
    ln2="post_attention_layernorm",
)

_FALCON = Family(
    layers="transformer.h",
    embed="transformer.word_embeddings",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    attn="self_attention",
    attn_out="self_attention",
    mlp_out="mlp",
    o_proj="self_attention.dense",
    qkv=("self_attention.query_key_value",),
    qkv_layout="concat",
    mlp_down="mlp.dense_4h_to_h",
    ln1="input_layernorm",
    ln2="post_attention_layernorm",
)

# Mixtures of experts: the router is a site; the experts are one fused parameter (no module, so no neuron site).
_MOE = replace(_LLAMA, mlp_down=None, router="mlp.gate")


def _falcon(config: Any) -> Family:
    if config.new_decoder_architecture:
        raise ValueError(
            "Falcon's new decoder architecture (Falcon-40B/180B) groups each key/value head's queries inside the "
            "fused projection, so per-head queries are not a view of a module's output: mechscope cannot name "
            "head.L.q there. Use ms.wrap(module) to work with its module paths."
        )
    layout: QKVLayout = "concat" if config.multi_query else "interleaved"  # [q | k | v] or [head, (q k v), d_head]
    if config.parallel_attn:
        return replace(_FALCON, qkv_layout=layout, ln2=_FALCON.ln1, parallel=True, mlp_out_in_place=True)
    return replace(_FALCON, qkv_layout=layout)


def _gpt_bigcode(config: Any) -> Family:
    # Multi-query (StarCoder): [q | k | v] with one key/value head (the config's num_key_value_heads); otherwise
    # per head [head, (q k v), d_head].
    return _GPT2 if config.multi_query else replace(_GPT2, qkv_layout="interleaved")


def _opt(config: Any) -> Family:
    if not config.do_layer_norm_before or config.word_embed_proj_dim != config.hidden_size:
        raise ValueError(
            "this OPT variant (OPT-350M: norms after each branch, and a projection around the embeddings) has no "
            "pre-norm residual stream for mechscope's sites; the other OPT sizes open. Use ms.wrap(module) for its "
            "module paths."
        )
    return _OPT


def _olmo(config: Any) -> Family:
    # clip_qkv: attention clamps q, k and v in place; the sites keep the projections' outputs (before the clamp)
    return replace(_LLAMA, qkv_in_place=True) if config.clip_qkv is not None else _LLAMA


def _stablelm(config: Any) -> Family:
    return replace(_LLAMA, ln2=_LLAMA.ln1, parallel=True) if config.use_parallel_residual else _LLAMA


def _granite(config: Any) -> Family:
    scales = {k: getattr(config, k) for k in ("residual_multiplier", "logits_scaling", "embedding_multiplier")}
    if any(v != 1 for v in scales.values()):
        raise ValueError(
            f"Granite scales its branches, embeddings and logits outside any module ({scales}): attn_out, "
            "mlp_out and logits would not be what the model adds or outputs, so mechscope refuses rather than "
            "report wrong residual-stream sums. Granite configs with these set to 1 open; otherwise use "
            "ms.wrap(module) for its module paths."
        )
    return _LLAMA


FamilyRule = Family | Callable[[Any], Family]
"""A family table, or a function of the Hugging Face config that returns one (or refuses, naming why)."""

FAMILIES: dict[str, FamilyRule] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "olmo": _olmo,
    "olmo2": _OLMO2,
    "gemma": _LLAMA,
    "gemma2": _GEMMA2,
    "gemma3_text": _GEMMA2,
    "gpt2": _GPT2,
    "gpt_neox": _GPT_NEOX,
    "phi": _PHI,
    "phi3": _PHI3,
    "gptj": _GPTJ,
    "gpt_bigcode": _gpt_bigcode,
    "opt": _opt,
    "falcon": _falcon,
    "bloom": _BLOOM,
    "granite": _granite,
    "stablelm": _stablelm,
    "mixtral": _MOE,
    "qwen2_moe": _MOE,
}


def family_of(config: Any) -> Family:
    """Return the rename table for a Hugging Face config (or a bare ``config.model_type`` string)."""
    model_type = config if isinstance(config, str) else config.model_type
    try:
        rule = FAMILIES[model_type]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise ValueError(
            f"mechscope has no site table for model_type {model_type!r} (known: {known}). "
            "Wrap it with ms.wrap(module) to use its module paths as sites, or add a Family to "
            "mechscope/core/_families.py."
        ) from None
    if isinstance(rule, Family):
        return rule
    if isinstance(config, str):
        raise TypeError(f"the site table of {model_type!r} depends on its config: pass the config itself")
    return rule(config)
