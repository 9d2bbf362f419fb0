"""TransformerLens 4 doing the patching sweeps of ``circuits.py --suite sweeps`` (run in ``.venv-bench``).

Its best loop for this work, batched by layer: one ``run_with_hooks`` pass per layer over the corrupt prompts
stacked once per node of that layer (9 heads, or every position), each copy patched at its own node from the clean
run's cache (``blocks.L.attn.hook_z`` / ``blocks.L.hook_resid_pre``). Batching by layer beat one pass per node in
the issue's measurement (233.0 vs 247.8 CPU s). Every pass runs from the embedding and returns logits at every
position: TransformerLens 4.3's ``start_at_layer`` still executes every block (issue 13), so starting late would not
save work. The model is the one mechscope loads (SmolLM2-135M from its safetensors cache), wrapped by
``TransformerBridge.boot_transformers``, which switches attention to the eager implementation.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn


def bridge(hf: nn.Module, tokenizer: Any) -> Any:
    """A ``TransformerBridge`` around a copy of ``hf`` (booting changes the wrapped model's attention)."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(hf.config._name_or_path, hf_model=copy.deepcopy(hf), tokenizer=tokenizer)


def _last_logit_diff(logits: Tensor, mask: Tensor, answers: Tensor, wrongs: Tensor, copies: int) -> Tensor:
    """Mean logit difference at each row's last real token, per copy: ``[copies]``."""
    rows = torch.arange(logits.shape[0])
    last = torch.where(mask != 0, torch.arange(mask.shape[1]), -1).amax(-1).repeat(copies)
    final = logits[rows, last].float()  # [copies*batch d_vocab]
    per = final.gather(1, answers.repeat(copies)[:, None]) - final.gather(1, wrongs.repeat(copies)[:, None])
    return per.view(copies, -1).mean(1)


@torch.no_grad()
def head_patching(tl: Any, clean: Tensor, corrupt: Tensor, mask: Tensor, answers: Tensor, wrongs: Tensor) -> Tensor:
    """Denoising per-head patching of ``hook_z``: ``[layer head]`` mean logit differences."""
    n_layers, n_heads, b = tl.cfg.n_layers, tl.cfg.n_heads, clean.shape[0]
    _, cache = tl.run_with_cache(clean, attention_mask=mask, names_filter=lambda name: name.endswith("attn.hook_z"))
    out = torch.empty(n_layers, n_heads)
    stacked, stacked_mask = corrupt.repeat(n_heads, 1), mask.repeat(n_heads, 1)
    for layer in range(n_layers):
        clean_z = cache[f"blocks.{layer}.attn.hook_z"]  # [batch pos head d_head]

        def patch(z: Tensor, hook: Any, clean_z: Tensor = clean_z) -> Tensor:
            assert z.shape[0] == n_heads * b and z.shape[2] == n_heads, f"hook_z has shape {list(z.shape)}"
            z = z.clone()
            for h in range(n_heads):
                z[h * b : (h + 1) * b, :, h] = clean_z[:, :, h]
            return z

        logits = tl.run_with_hooks(
            stacked, attention_mask=stacked_mask, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", patch)]
        )
        out[layer] = _last_logit_diff(logits, mask, answers, wrongs, n_heads)
    return out


@torch.no_grad()
def resid_patching(tl: Any, clean: Tensor, corrupt: Tensor, mask: Tensor, answers: Tensor, wrongs: Tensor) -> Tensor:
    """Denoising patching of ``hook_resid_pre`` per layer and position: ``[layer pos]``."""
    n_layers, (b, n_pos) = tl.cfg.n_layers, clean.shape
    _, cache = tl.run_with_cache(clean, attention_mask=mask, names_filter=lambda name: name.endswith("hook_resid_pre"))
    out = torch.empty(n_layers, n_pos)
    stacked, stacked_mask = corrupt.repeat(n_pos, 1), mask.repeat(n_pos, 1)
    for layer in range(n_layers):
        clean_resid = cache[f"blocks.{layer}.hook_resid_pre"]  # [batch pos d_model]

        def patch(resid: Tensor, hook: Any, clean_resid: Tensor = clean_resid) -> Tensor:
            resid = resid.clone()
            for p in range(n_pos):
                resid[p * b : (p + 1) * b, p] = clean_resid[:, p]
            return resid

        logits = tl.run_with_hooks(stacked, attention_mask=stacked_mask,
                                   fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", patch)])  # fmt: skip
        out[layer] = _last_logit_diff(logits, mask, answers, wrongs, n_pos)
    return out
