"""Tiny random-weight language models of each supported family, built from configs with no download.

They share a byte-level tokenizer (256 byte tokens + end-of-text + pad), so strings work end to end.
"""

from __future__ import annotations

from typing import Any

import torch

from ._load import from_hf
from ._model import Model

_COMMON = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
_GQA = {**_COMMON, "num_key_value_heads": 2, "max_position_embeddings": 256}

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 128, "n_positions": 256},
    "llama": {**_COMMON, "num_key_value_heads": 2, "max_position_embeddings": 256},
    "gpt_neox": {**_COMMON, "max_position_embeddings": 256, "use_parallel_residual": True},
    "gemma": {**_COMMON, "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 256},
    "gemma2": {**_COMMON, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256},
    "mistral": {**_GQA, "sliding_window": 4},
    "qwen2": {**_GQA},
    "qwen3": {**_GQA, "head_dim": 16},
    "olmo": {**_GQA},
    "olmo2": {**_GQA},
    "phi": {**_COMMON, "max_position_embeddings": 256},
    "phi3": {**_GQA},
    "gptj": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 128, "n_positions": 256, "rotary_dim": 8},
    "gpt_bigcode": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 128, "n_positions": 256},
    "opt": {**_COMMON, "ffn_dim": 128, "max_position_embeddings": 256, "word_embed_proj_dim": 64},
    "falcon": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "ffn_hidden_size": 128,
        "max_position_embeddings": 256,
    },
    "bloom": {"hidden_size": 64, "n_layer": 2, "n_head": 4},
    "gemma3_text": {**_GQA, "head_dim": 16, "sliding_window": 4},
    "granite": {**_GQA},
    "stablelm": {**_GQA},
    "mixtral": {**_GQA, "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {
        **_GQA,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 64,
    },
}
"""Config overrides per family: 2 layers, d_model 64, 4 heads (GQA where the family has it)."""


def tiny(family: str = "llama", *, seed: int = 0, **overrides: Any) -> Model:
    """A random-weight model of ``family`` (seeded) with a byte-level tokenizer: for tests and examples."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if family not in TINY_CONFIGS:
        raise ValueError(f"no tiny config for {family!r}; choose from {', '.join(TINY_CONFIGS)}")
    tokenizer = byte_tokenizer()
    special = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
               "bos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    config = AutoConfig.for_model(family, **{**TINY_CONFIGS[family], **special, **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return from_hf(module, tokenizer, name=f"tiny-{family}-s{seed}")


def byte_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges: one token per byte, plus ``<|endoftext|>`` and ``<pad>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["<|endoftext|>"] = len(vocab)
    vocab["<pad>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>")
