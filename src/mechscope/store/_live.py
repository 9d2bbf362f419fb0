"""Activations computed while a dictionary trains: the on-the-fly alternative to an activation store.

``LiveActivations`` is a re-iterable stream of ``[batch_size d]`` rows of one site. Each epoch visits the
corpus's contexts (cut by ``token_contexts``, as ``harvest`` cuts them) in an order set by the seed and the
epoch, runs the model over ``contexts_per_forward`` of them at a time (stopping after the site), and shuffles
the rows of ``buffer_contexts`` contexts together before serving them. Everything is a pure function of the
arguments, so ``features.train`` can resume from it: a resumed run recomputes and skips the batches it already
consumed (which costs their forward passes; harvest a store when training for many epochs). Under ``torchrun``
each process runs the forward passes of its share of the contexts and receives the others' rows.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechscope.core._distributed import all_gather, rank_world, world_group
from mechscope.data.corpus import load_corpus, token_contexts


class LiveActivations:
    """Batches of a site's activations from the model, computed as they are consumed (no store on disk)."""

    def __init__(
        self,
        model: Any,
        site: str,
        batch_size: int,
        *,
        corpus: str = "python-docs",
        ctx_len: int = 128,
        seed: int = 0,
        contexts_per_forward: int = 8,
        buffer_contexts: int = 256,
        skip_bos: bool = True,
        max_contexts: int | None = None,
    ) -> None:
        """Stream ``site`` of ``model`` over ``corpus`` (see the module docstring).

        ``skip_bos`` leaves out position 0, as the store's readers do; ``max_contexts`` keeps the first
        contexts of the corpus's seeded order only.
        """
        matches = model.resolve(site)
        if len(matches) != 1:
            raise ValueError(f"{site!r} names {len(matches)} sites; a dictionary reads one")
        resolved = matches[0]
        if resolved.axes[:2] != ("batch", "pos"):
            raise ValueError(f"site {site!r} has axes {resolved.axes}; a dictionary reads per-token sites")
        if min(batch_size, contexts_per_forward, buffer_contexts) < 1:
            raise ValueError("batch_size, contexts_per_forward and buffer_contexts must be positive")
        self.model, self.site, self.batch_size = model, resolved.name, batch_size
        self.contexts = token_contexts(load_corpus(corpus), model.tokenizer, ctx_len, seed=seed)[:max_contexts]
        self.seed, self.per_forward, self.buffer, self.skip_bos = seed, contexts_per_forward, buffer_contexts, skip_bos
        rows_per_epoch = len(self.contexts) * (ctx_len - int(skip_bos))
        if rows_per_epoch < batch_size:
            raise ValueError(f"the corpus gives {rows_per_epoch} rows, fewer than one batch of {batch_size}")

    def __iter__(self) -> Iterator[Float[Tensor, "batch d"]]:
        carry: Tensor | None = None  # rows left over from the previous buffer, served first
        for epoch in itertools.count():
            gen = torch.Generator().manual_seed(_seed(self.seed, epoch))
            order = torch.randperm(len(self.contexts), generator=gen)
            for start in range(0, len(order), self.buffer):
                rows = self._rows(self.contexts[order[start : start + self.buffer]])
                rows = rows[torch.randperm(len(rows), generator=gen)]
                rows = rows if carry is None else torch.cat([carry, rows])
                n_full = len(rows) // self.batch_size * self.batch_size
                yield from rows[:n_full].split(self.batch_size)
                carry = rows[n_full:]

    def _rows(self, contexts: Tensor) -> Float[Tensor, "rows d"]:
        """The site's activations over ``contexts`` as float32 rows (BOS positions left out with skip_bos).

        Under ``torchrun`` the forward passes are shared: rank ``r`` runs contexts ``r, r + N, ...`` and every
        rank receives all rows, in the order one process would compute them (``train`` then gives each rank its
        block of every batch).
        """
        rank, world = rank_world()
        if world == 1:
            return self._forward(contexts)
        n, m = len(contexts), -(-len(contexts) // world)  # m: contexts per rank, the last ones padded
        mine = contexts[rank::world]
        mine = torch.cat([mine, contexts[:1].expand(m - len(mine), -1)])
        rows = self._forward(mine)
        rows = rows.view(m, -1, rows.shape[-1]).to(self._device())  # [m pos d] (NCCL gathers on the GPU)
        every = all_gather(rows, world_group()).cpu().view(world, m, *rows.shape[1:])  # [rank m pos d]
        i = torch.arange(n)
        return every[i % world, i // world].reshape(-1, rows.shape[-1])  # context i came from rank i % world

    @torch.no_grad()
    def _forward(self, contexts: Tensor) -> Float[Tensor, "rows d"]:
        device = self._device()
        parts = []
        for chunk in contexts.split(self.per_forward):
            acts = self.model.run(chunk.to(device), cache=self.site, logits=False).cache[self.site]
            acts = acts[:, int(self.skip_bos) :]  # [batch pos ...]
            parts.append(acts.reshape(-1, acts[0, 0].numel()).float().cpu())  # [batch*pos d]
        return torch.cat(parts)

    def _device(self) -> torch.device:
        return next(self.model.module.parameters()).device


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, ("live", *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
