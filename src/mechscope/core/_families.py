"""Per-family rename tables: where each uniform site lives in a Hugging Face model.

This is the only place that knows architectures. A family is a handful of module paths; everything else (site
shapes, hooks, methods) is derived from it and from the config. Adding a family is adding one table entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    mlp_down: str
    """The MLP's output projection; its input is the neuron activations (``mlp.L.post``)."""
    ln1: str | None
    """The block's first norm; its input is the residual stream after any edits to ``resid_pre`` (None: no norm,
    attention reads the residual stream itself)."""
    ln2: str | None
    """The norm in front of the MLP (its output is the ``ln2`` site; None: no norm)."""
    parallel_attr: str | None = None
    """Config attribute that, when true, makes attention and MLP read the same residual (no ``resid_mid``)."""


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

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "olmo": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _GEMMA2,
    "gpt2": _GPT2,
    "gpt_neox": _GPT_NEOX,
}


def family_of(model_type: str) -> Family:
    """Return the rename table for a Hugging Face ``config.model_type``."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise ValueError(
            f"mechscope has no site table for model_type {model_type!r} (known: {known}). "
            "Wrap it with ms.wrap(module) to use its module paths as sites, or add a Family to "
            "mechscope/core/_families.py."
        ) from None
