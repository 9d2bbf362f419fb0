"""Streaming per-latent statistics for the feature database, updated one chunk of contexts at a time.

Every accumulator sees each chunk once and keeps memory independent of the number of tokens:

- ``Counts``: firing count, sum and maximum of the activations, and a histogram over fixed log-spaced bins.
- ``TopContexts``: the ``k`` contexts with the largest activation of each latent (a running top-k merge).
- ``Reservoirs``: a uniform random sample of ``R`` firing tokens for each (latent, histogram bin), kept by
  priority sampling: every token draws a uniform key and a bin keeps the ``R`` largest keys it has seen,
  which is a uniform sample without replacement of the bin's tokens (Efraimidis & Spirakis 2006, with equal
  weights). Slots exist only for bins a latent has reached, so memory follows the occupied bins.

Both example keepers also keep a window of the latent's activations around each kept token, because the
latents are not stored and recomputing them later would be a second pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

# Histogram edges: 0, then 8 log-spaced bins per decade from 1e-4 to 1e4; the last bin is open (>= 1e4).
HIST_EDGES = torch.cat([torch.zeros(1), torch.logspace(-4, 4, 65)])
N_BINS = len(HIST_EDGES)  # bins: [0, 1e-4), [1e-4, 1e-4 * 10^(1/8)), ..., [1e4, inf)


def bin_of(acts: Float[Tensor, " n"]) -> Int[Tensor, " n"]:
    """Histogram bin of positive activations."""
    return torch.bucketize(acts, HIST_EDGES, right=True) - 1


def windows(
    lat3: Float[Tensor, "n_ctx pos d_sae"],
    ctx: Int[Tensor, " m"],
    pos: Int[Tensor, " m"],
    latent: Int[Tensor, " m"],
    width: int,
    before: int,
) -> tuple[Int[Tensor, " m"], Float[Tensor, "m width"]]:
    """Start and activations of the ``width``-token window around each ``pos``.

    The window starts ``before`` tokens ahead of ``pos`` where the context allows; at the context's edges it
    is shifted, never padded.
    """
    start = (pos - before).clamp(0, lat3.shape[1] - width)
    positions = start[:, None] + torch.arange(width)  # [m width]
    return start, lat3[ctx[:, None], positions, latent[:, None]]


@dataclass
class Counts:
    """Firing counts, sums, maxima and histograms of every latent."""

    n_active: Tensor  # [d_sae] int64
    total: Tensor  # [d_sae] float64: sum of activations
    max: Tensor  # [d_sae] float32
    hist: Tensor  # [d_sae n_bins] int64

    @classmethod
    def empty(cls, d_sae: int) -> Counts:
        return cls(
            torch.zeros(d_sae, dtype=torch.int64),
            torch.zeros(d_sae, dtype=torch.float64),
            torch.zeros(d_sae),
            torch.zeros(d_sae, N_BINS, dtype=torch.int64),
        )

    def update(self, latent: Tensor, acts: Tensor, bins: Tensor) -> None:
        d_sae = len(self.n_active)
        self.n_active += torch.bincount(latent, minlength=d_sae)
        self.total += torch.bincount(latent, acts.double(), minlength=d_sae)
        self.max = self.max.scatter_reduce(0, latent, acts, "amax")
        self.hist += torch.bincount(latent * N_BINS + bins, minlength=d_sae * N_BINS).view(d_sae, N_BINS)


@dataclass
class TopContexts:
    """The ``k`` contexts with each latent's largest activation: value, context, peak position, window."""

    val: Tensor  # [d_sae k] float32, 0 where no context fired yet
    ctx: Tensor  # [d_sae k] int64
    pos: Tensor  # [d_sae k] int64
    start: Tensor  # [d_sae k] int64: window start
    win: Tensor  # [d_sae k width] float32

    @classmethod
    def empty(cls, d_sae: int, k: int, width: int) -> TopContexts:
        def idx() -> Tensor:
            return torch.zeros(d_sae, k, dtype=torch.int64)

        return cls(torch.zeros(d_sae, k), idx() - 1, idx(), idx(), torch.zeros(d_sae, k, width))

    def update(self, lat3: Float[Tensor, "n_ctx pos d_sae"], first_ctx: int, before: int) -> None:
        k = self.val.shape[1]
        peak, arg = lat3.max(dim=1)  # [n_ctx d_sae] each context's largest activation and its position
        val, idx = torch.cat([self.val, peak.T], dim=1).topk(k, dim=1)  # [d_sae k] into old entries, then chunk
        rows = ((idx >= k) & (val > 0)).any(dim=1).nonzero().flatten()  # latents a firing context enters
        if not len(rows):
            return
        val, idx = val[rows], idx[rows]
        old = idx < k
        lat = rows[:, None].expand(-1, k)
        keep = idx.clamp(max=k - 1)
        ctx_local = (idx - k).clamp(min=0)
        self.ctx[rows] = torch.where(old, self.ctx[lat, keep], first_ctx + ctx_local)
        self.pos[rows] = torch.where(old, self.pos[lat, keep], arg.T[lat, ctx_local])
        self.start[rows] = self.start[lat, keep]
        self.win[rows] = self.win[lat, keep]
        self.val[rows] = val
        new = ~old
        dest = lat[new], torch.arange(k).expand(len(rows), -1)[new]
        self.start[dest], self.win[dest] = windows(
            lat3, ctx_local[new], self.pos[dest], lat[new], self.win.shape[2], before
        )


@dataclass
class Reservoirs:
    """``R`` uniformly sampled firing tokens per occupied (latent, bin): key, context, position, value, window."""

    size: int
    width: int
    slot_of: Tensor  # [d_sae * n_bins] int64: slot of each (latent, bin), -1 before it fires
    group: Tensor  # [slots] int64: latent * n_bins + bin of each slot
    key: Tensor  # [slots R] float32 priority keys, -inf in empty places
    ctx: Tensor  # [slots R] int64
    pos: Tensor  # [slots R] int64
    act: Tensor  # [slots R] float32
    start: Tensor  # [slots R] int64
    win: Tensor  # [slots R width] float32

    @classmethod
    def empty(cls, d_sae: int, size: int, width: int) -> Reservoirs:
        idx = torch.zeros(0, size, dtype=torch.int64)
        no_slot = torch.full((d_sae * N_BINS,), -1, dtype=torch.int64)
        empty = torch.zeros(0, size)
        return cls(size, width, no_slot, idx[:, 0], empty, idx, idx, empty, idx, torch.zeros(0, size, width))

    def update(
        self, lat3: Tensor, first_ctx: int, rows: Tensor, latent: Tensor, bins: Tensor, keys: Tensor, before: int
    ) -> None:
        """Offer the chunk's firing tokens (``rows`` into the flattened chunk, their ``latent`` and ``bins``)."""
        group = latent * N_BINS + bins
        self._add_slots(group)
        slot = self.slot_of[group]
        chance = keys > self.key[slot].min(dim=1).values  # can beat the smallest key kept in its slot
        slot, keys, rows, latent = slot[chance], keys[chance], rows[chance], latent[chance]
        if not len(slot):
            return
        order = torch.argsort(slot.double() * 2 - keys.double())  # by slot, then key descending
        slot, keys, rows, latent = slot[order], keys[order], rows[order], latent[order]
        slots, first, counts = _runs(slot)
        rank = torch.arange(len(slot)) - torch.repeat_interleave(first, counts)
        top = rank < self.size
        slot, keys, rows, latent, rank = slot[top], keys[top], rows[top], latent[top], rank[top]
        self._merge(lat3, first_ctx, slots, torch.searchsorted(slots, slot), rank, keys, rows, latent, before)

    def _add_slots(self, group: Tensor) -> None:
        fresh = torch.unique(group)
        fresh = fresh[self.slot_of[fresh] < 0]
        if not len(fresh):
            return
        n, m, r = len(self.group), len(fresh), self.size
        self.slot_of[fresh] = torch.arange(n, n + m)
        self.group = torch.cat([self.group, fresh])
        self.key = torch.cat([self.key, torch.full((m, r), -torch.inf)])
        zeros = torch.zeros(m, r, dtype=torch.int64)
        self.ctx, self.pos, self.start = (torch.cat([t, zeros]) for t in (self.ctx, self.pos, self.start))
        self.act = torch.cat([self.act, torch.zeros(m, r)])
        self.win = torch.cat([self.win, torch.zeros(m, r, self.width)])

    def _merge(
        self,
        lat3: Tensor,
        first_ctx: int,
        slots: Tensor,
        at: Tensor,
        rank: Tensor,
        keys: Tensor,
        rows: Tensor,
        latent: Tensor,
        before: int,
    ) -> None:
        """Keep, in each of ``slots``, the ``R`` largest keys among its old entries and its candidates.

        Candidate ``i`` goes to slot ``slots[at[i]]``, ranked ``rank[i]`` among that slot's candidates.
        """
        n, r = len(slots), self.size
        cand_key = torch.full((n, r), -torch.inf)
        cand_key[at, rank] = keys
        cand_id = torch.zeros(n, r, dtype=torch.int64)
        cand_id[at, rank] = torch.arange(len(keys))
        key, idx = torch.cat([self.key[slots], cand_key], dim=1).topk(r, dim=1)  # [n R] over old, then new
        src = slots[:, None].expand(-1, r)
        keep = idx.clamp(max=r - 1)
        for name in ("ctx", "pos", "act", "start", "win"):  # move kept old entries to their new places
            t = getattr(self, name)
            t[slots] = t[src, keep]
        self.key[slots] = key
        new = (idx >= r) & (key > -torch.inf)
        pick = cand_id[torch.arange(n)[:, None].expand(-1, r)[new], (idx - r)[new]]
        row, lat = rows[pick], latent[pick]
        ctx_local, pos = row // lat3.shape[1], row % lat3.shape[1]
        start, win = windows(lat3, ctx_local, pos, lat, self.width, before)
        dest = src[new], torch.arange(r).expand(n, -1)[new]
        self.ctx[dest], self.pos[dest], self.start[dest], self.win[dest] = first_ctx + ctx_local, pos, start, win
        self.act[dest] = lat3.reshape(-1, lat3.shape[2])[row, lat]


def _runs(sorted_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct values of a sorted tensor, the index where each run starts, and each run's length."""
    values, counts = torch.unique_consecutive(sorted_values, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    return values, first, counts
