"""Shortcuts through a forward pass that leave every value it does compute unchanged.

*Start at a block.* A patched run whose first change is in block ``L`` computes blocks ``0 .. L-1`` exactly as the
unpatched run did. Given the residual stream entering block ``L`` (cached once), the run can skip them. The
model's own forward still runs: it embeds the tokens and builds the attention mask, position ids and rotary
embeddings exactly as always (nothing of a family is reimplemented); the blocks below ``L`` are swapped, for the
call only, for a pass-through, and a hook at block ``L``'s input puts the given residual in place of what arrives.
Block ``L`` and everything after it then see bitwise the inputs of the full run.

*Unembed only the scored rows.* Metrics that read each prompt's last real token need one row of logits per prompt,
not ``[batch pos d_vocab]``. A hook at the unembedding's input gathers those rows into a contiguous
``[batch 1 d_model]`` tensor, so the model's own head (and its own soft-capping) computes only them. (Hugging
Face's ``logits_to_keep`` keeps a strided slice, which on CPU costs as much as the full product.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ._hookset import _replace_input


class _PassThrough(nn.Module):
    """Stands in for a block below ``start_at``: returns the hidden states it is given, computing nothing."""

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return hidden_states


@contextmanager
def start_at_block(blocks: nn.ModuleList, start: int, resid: Float[Tensor, "batch pos d_model"]) -> Iterator[None]:
    """Inside the block, forward passes skip ``blocks[:start]`` and enter ``blocks[start]`` with ``resid``.

    The hook that puts ``resid`` in place runs before any other hook on block ``start`` (so ``resid_pre.start``
    interventions and caches see it). Hooks on the skipped blocks do not run. Swapping modules of the list is the
    one way to skip them without rewriting the family's forward; the originals are put back in ``finally``.
    """
    original = [blocks[i] for i in range(start)]

    def enter(_m: nn.Module, args: tuple, kwargs: dict) -> tuple:
        return _replace_input(args, kwargs, resid)

    handle = blocks[start].register_forward_pre_hook(enter, with_kwargs=True, prepend=True)
    skip = _PassThrough()  # stateless: one instance stands in for every skipped block
    try:
        for i in range(start):
            blocks[i] = skip
        yield
    finally:
        for i, block in enumerate(original):
            blocks[i] = block
        handle.remove()


@contextmanager
def unembed_rows(head: nn.Module, last: Int[Tensor, " batch"]) -> Iterator[None]:
    """Inside the block, the unembedding ``head`` reads only row ``last[b]`` of prompt ``b``: ``[batch 1 d_model]``."""

    def gather(_m: nn.Module, args: tuple, kwargs: dict) -> tuple:
        hidden = args[0] if args else next(iter(kwargs.values()))  # [batch pos d_model]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return _replace_input(args, kwargs, hidden[rows, last.to(hidden.device)][:, None].contiguous())

    handle = head.register_forward_pre_hook(gather, with_kwargs=True, prepend=True)
    try:
        yield
    finally:
        handle.remove()
