"""The plain-PyTorch floor for patching sweeps on a Llama-family Hugging Face model (SmolLM2-135M).

What a careful hand-written loop costs: the model's own modules called directly (no site names, no intervention
values), the causal mask and rotary embeddings built once per batch shape, every patched pass started at its
lowest patched block from the cached residual stream of the unpatched run, and only each prompt's last real token
unembedded. Each sweep uses the same chunks of nodes per pass as mechscope (row-major order, ``copies`` nodes of
all prompts per pass), so the work is equal.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from transformers.masking_utils import create_causal_mask


class Floor:
    """Unpatched runs and patched passes of one batch of prompts, written against the Llama modules."""

    def __init__(self, hf: nn.Module, mask: Tensor) -> None:
        self.hf, self.inner = hf, hf.model
        self.layers = self.inner.layers
        self.mask = mask
        self.last = torch.where(mask != 0, torch.arange(mask.shape[1]), -1).amax(-1)  # [batch]
        self.cfg = hf.config
        self.n_heads, self.d_head = self.cfg.num_attention_heads, self.cfg.hidden_size // self.cfg.num_attention_heads
        self._setup: dict[int, tuple[Tensor | None, tuple[Tensor, Tensor], Tensor]] = {}

    def setup(self, copies: int) -> tuple[Tensor | None, tuple[Tensor, Tensor], Tensor]:
        """Causal mask, rotary embeddings and position ids of ``copies`` stacked copies of the batch."""
        if copies not in self._setup:
            mask = self.mask.repeat(copies, 1)
            emb = torch.zeros(*mask.shape, self.cfg.hidden_size)
            pos = torch.arange(mask.shape[1])[None]
            causal = create_causal_mask(config=self.cfg, inputs_embeds=emb, attention_mask=mask, cache=None,
                                        position_ids=pos)  # fmt: skip
            self._setup[copies] = (causal, self.inner.rotary_emb(emb, position_ids=pos), pos)
        return self._setup[copies]

    def blocks(self, h: Tensor, start: int, copies: int) -> Tensor:
        causal, pe, pos = self.setup(copies)
        for layer in self.layers[start:]:
            h = layer(h, attention_mask=causal, position_embeddings=pe, position_ids=pos)
        return h

    def final(self, h: Tensor, copies: int) -> Tensor:
        """``[copies*batch d_vocab]`` logits of each row's last real token."""
        last = self.last.repeat(copies)
        rows = h[torch.arange(h.shape[0]), last].contiguous()
        return self.hf.lm_head(self.inner.norm(rows))

    def unpatched(self, tokens: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor], Tensor]:
        """Residual entering each block, head outputs ``z`` (o_proj inputs), MLP outputs, final logits."""
        resid, z, mlp = [], [], []
        hooks = [
            layer.self_attn.o_proj.register_forward_pre_hook(lambda _m, a: z.append(a[0])) for layer in self.layers
        ]
        hooks += [layer.mlp.register_forward_hook(lambda _m, _a, o: mlp.append(o)) for layer in self.layers]
        hooks += [layer.register_forward_pre_hook(lambda _m, a: resid.append(a[0])) for layer in self.layers]
        try:
            h = self.blocks(self.inner.embed_tokens(tokens), 0, 1)
        finally:
            for hook in hooks:
                hook.remove()
        return resid, z, mlp, self.final(h, 1)

    def patched(self, resid: Tensor, start: int, copies: int, hooks: list[tuple[nn.Module, Callable]]) -> Tensor:
        """Final logits of a pass from block ``start`` with forward pre-hooks (module, fn) installed."""
        handles = [module.register_forward_pre_hook(fn) for module, fn in hooks]
        try:
            h = self.blocks(resid.repeat(copies, 1, 1), start, copies)
        finally:
            for handle in handles:
                handle.remove()
        return self.final(h, copies)


def logit_diff(logits: Tensor, answers: Tensor, wrongs: Tensor, copies: int) -> Tensor:
    """Mean logit difference of each copy (single-token answers)."""
    per = logits.float().gather(1, answers.repeat(copies)[:, None]) - logits.float().gather(
        1, wrongs.repeat(copies)[:, None]
    )
    return per.view(copies, -1).mean(1)


def chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def head_patching(hf: nn.Module, clean: Tensor, corrupt: Tensor, mask: Tensor, answers: Tensor, wrongs: Tensor,
                  batch_size: int = 64) -> Tensor:  # fmt: skip
    """Denoising per-head patching of ``z``: ``[layer head]`` mean logit differences."""
    f = Floor(hf, mask)
    b = clean.shape[0]
    _, clean_z, _, _ = f.unpatched(clean)
    resid, _, _, _ = f.unpatched(corrupt)
    nodes = [(layer, h) for layer in range(len(f.layers)) for h in range(f.n_heads)]
    out = torch.empty(len(nodes))
    copies = max(1, batch_size // b)
    for chunk in chunks(len(nodes), copies):
        members = [nodes[i] for i in chunk]
        start = min(layer for layer, _ in members)
        hooks = []
        for layer in sorted({layer for layer, _ in members}):

            def patch(_m: nn.Module, args: tuple, layer: int = layer, members: list = members) -> tuple:
                z = args[0].clone()  # [copies*batch pos head*d_head]
                for c, (lay, h) in enumerate(members):
                    if lay == layer:
                        cols = slice(h * f.d_head, (h + 1) * f.d_head)
                        z[c * b : (c + 1) * b, :, cols] = clean_z[layer][:, :, cols]
                return (z,)

            hooks.append((f.layers[layer].self_attn.o_proj, patch))
        logits = f.patched(resid[start], start, len(members), hooks)
        out[chunk.start : chunk.stop] = logit_diff(logits, answers, wrongs, len(members))
    return out.view(len(f.layers), f.n_heads)


@torch.no_grad()
def resid_patching(hf: nn.Module, clean: Tensor, corrupt: Tensor, mask: Tensor, answers: Tensor, wrongs: Tensor,
                   batch_size: int = 64) -> Tensor:  # fmt: skip
    """Denoising patching of ``resid_pre`` per layer and position: ``[layer pos]``."""
    f = Floor(hf, mask)
    b, n_pos = clean.shape
    clean_resid, _, _, _ = f.unpatched(clean)
    resid, _, _, _ = f.unpatched(corrupt)
    nodes = [(layer, p) for layer in range(len(f.layers)) for p in range(n_pos)]
    out = torch.empty(len(nodes))
    copies = max(1, batch_size // b)
    for chunk in chunks(len(nodes), copies):
        members = [nodes[i] for i in chunk]
        start = min(layer for layer, _ in members)
        hooks = []
        for layer in sorted({layer for layer, _ in members}):

            def patch(_m: nn.Module, args: tuple, layer: int = layer, members: list = members) -> tuple:
                h = args[0].clone()  # [copies*batch pos d_model]
                for c, (lay, p) in enumerate(members):
                    if lay == layer:
                        h[c * b : (c + 1) * b, p] = clean_resid[layer][:, p]
                return (h,)

            hooks.append((f.layers[layer], patch))
        logits = f.patched(resid[start], start, len(members), hooks)
        out[chunk.start : chunk.stop] = logit_diff(logits, answers, wrongs, len(members))
    return out.view(len(f.layers), n_pos)


@torch.no_grad()
def acdc(hf: nn.Module, clean: Tensor, corrupt: Tensor, mask: Tensor, tau: float) -> list[tuple[str, float, bool]]:
    """Node ACDC (KL to the clean run, nodes from the last layer down, MLP before its heads): the trace."""
    f = Floor(hf, mask)
    clean_resid, _, _, clean_logits = f.unpatched(clean)
    _, corrupt_z, corrupt_mlp, _ = f.unpatched(corrupt)
    log_p = clean_logits.float().log_softmax(-1)

    def score(removed: set[tuple[int, int | None]], start: int) -> float:
        hooks = []
        for layer in range(start, len(f.layers)):
            heads = [h for (lay, h) in removed if lay == layer and h is not None]
            if heads:

                def patch_z(_m: nn.Module, args: tuple, layer: int = layer, heads: list[int] = heads) -> tuple:
                    z = args[0].clone()
                    for h in heads:
                        cols = slice(h * f.d_head, (h + 1) * f.d_head)
                        z[:, :, cols] = corrupt_z[layer][:, :, cols]
                    return (z,)

                hooks.append((f.layers[layer].self_attn.o_proj, patch_z))
        handles = [
            f.layers[layer].mlp.register_forward_hook(lambda _m, _a, _o, layer=layer: corrupt_mlp[layer])
            for (layer, h) in removed
            if h is None
        ]
        try:
            logits = f.patched(clean_resid[start], start, 1, hooks)
        finally:
            for handle in handles:
                handle.remove()
        log_q = logits.float().log_softmax(-1)
        return float((log_p.exp() * (log_p - log_q)).sum(-1).mean())

    order: list[tuple[int, int | None]] = []
    for layer in reversed(range(len(f.layers))):
        order += [(layer, None)] + [(layer, h) for h in reversed(range(f.n_heads))]
    removed: set[tuple[int, int | None]] = set()
    current = score(removed, len(f.layers) - 1)
    trace = []
    for node in order:
        after = score(removed | {node}, node[0])
        drop = after - current < tau
        name = f"m{node[0]}" if node[1] is None else f"a{node[0]}.h{node[1]}"
        trace.append((name, after, drop))
        if drop:
            removed.add(node)
            current = after
    return trace
