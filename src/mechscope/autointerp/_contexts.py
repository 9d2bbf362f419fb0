"""Contexts for explaining and scoring a latent, read from the feature database and the activation store.

Activating contexts come straight from the feature database (its top contexts and its random samples per
activation quantile, as delphi samples them: Paulo et al. 2024, "Automatically Interpreting Millions of Features
in Large Language Models", §3.1), so no model runs. Non-activating contexts need the latent's activation on
text where it did *not* fire, which the database does not keep: ``NegativePool`` encodes a fixed random set of
windows of the activation store with the dictionary once (the model does not run again) and keeps each window's
largest activation of every latent. A latent's negatives are pool windows where it is zero everywhere; half of
them (``matched_fraction``) are *matched*: the windows that share the most tokens with the latent's activating
tokens, so a scorer must tell the latent's context apart from its mere vocabulary (delphi's "similar"
non-activating examples).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.store import ActivationStore, FeatureDB


@dataclass(frozen=True)
class Window:
    """A run of tokens with one latent's activation on each."""

    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    kind: str
    """``top``, ``q1`` … ``qN`` (activation quantile, lowest first) or ``negative``."""
    context: int | None = None
    """Index of the store context the window comes from (None when unknown)."""
    start: int | None = None
    """Position of the window's first token inside that context (None when unknown)."""

    @property
    def active(self) -> bool:
        """Whether the latent fires anywhere in the window."""
        return max(self.activations, default=0.0) > 0

    @property
    def text(self) -> str:
        """The window's text."""
        return "".join(self.tokens)


@dataclass(frozen=True)
class LatentContexts:
    """What an explainer and a scorer see of one latent."""

    latent: int
    activating: tuple[Window, ...]
    """Top contexts (best first), then quantile samples (highest quantile first)."""
    negatives: tuple[Window, ...]
    """Windows where the latent is zero throughout (matched first, then random); empty without a pool."""
    promoted: tuple[str, ...]
    """Tokens the decoder direction promotes most through the unembedding (empty when the database has none)."""


@dataclass(frozen=True)
class ContextConfig:
    """How many contexts of which kind a latent gets."""

    n_top: int = 10
    """Top-activating contexts (from the database's top contexts)."""
    n_per_quantile: int = 2
    """Random contexts per activation quantile (from the database's quantile samples)."""
    n_negatives: int = 10
    """Non-activating contexts (needs a ``NegativePool``)."""
    matched_fraction: float = 0.5
    """Share of the negatives chosen to share the activating contexts' tokens (the rest are random)."""
    seed: int = 0
    """Seed of the random negatives."""

    def __post_init__(self) -> None:
        if min(self.n_top, self.n_per_quantile, self.n_negatives) < 0 or self.n_top + self.n_per_quantile < 1:
            raise ValueError("n_top, n_per_quantile, n_negatives must be >= 0 and n_top + n_per_quantile >= 1")
        if not 0 <= self.matched_fraction <= 1:
            raise ValueError(f"matched_fraction must be in [0, 1], got {self.matched_fraction}")


class NegativePool:
    """Random store windows with every latent's largest activation on each, encoded once."""

    def __init__(
        self,
        token_ids: Int[Tensor, "n window"],
        peak: Float[Tensor, "n d_sae"],
        vocab: dict[int, str],
        origin: Int[Tensor, "n 2"] | None = None,
    ) -> None:
        """``origin``: each window's store context and start position (lets ``ContextStates`` pool them)."""
        self.token_ids, self.peak, self._vocab, self.origin = token_ids, peak, vocab, origin
        # each token's stripped text as a code, so a latent's overlap with a window is one ``isin``
        self._code: dict[str, int] = {}
        for i in vocab:
            self._code.setdefault(vocab[i].strip(), len(self._code))
        self._codes = torch.tensor([[self._code[vocab[i].strip()] for i in row] for row in token_ids.tolist()],
                                   dtype=torch.long).view(token_ids.shape)  # fmt: skip

    @classmethod
    def build(
        cls, store: ActivationStore, dictionary: Any, db: FeatureDB, *, n_windows: int = 256, seed: int = 0
    ) -> NegativePool:
        """Encode ``n_windows`` random windows (the database's window length) of the store's site with ``dictionary``.

        Windows never include position 0 (BOS). Memory: one context's ``ctx_len * d_sae`` floats at a time.
        """
        site, width = db.meta["site"], db.meta["config"]["window"]
        ctx_len = store.provenance.ctx_len
        d_sae = int(dictionary.cfg.d_sae)
        if d_sae != len(db):
            raise ValueError(f"the dictionary has {d_sae} latents but the feature database {db.path} has {len(db)}")
        gen = torch.Generator().manual_seed(seed)
        n_ctx = store.manifest.n_contexts
        ctx = torch.randint(n_ctx, (n_windows,), generator=gen)
        start = torch.randint(1, ctx_len - width + 1, (n_windows,), generator=gen)
        tokens = store.tokens()
        ids = tokens[ctx[:, None], start[:, None] + torch.arange(width)]  # [n window]
        peak = torch.zeros(n_windows, d_sae)
        wanted = set(ctx.tolist())
        with torch.inference_mode():
            for shard in store.shards(site):
                for c in range(len(shard.tokens)):
                    if shard.start + c not in wanted:
                        continue
                    lat = dictionary.encode(shard.acts[c * ctx_len : (c + 1) * ctx_len].float()).float()  # [pos d_sae]
                    for w in (ctx == shard.start + c).nonzero().flatten().tolist():
                        s = int(start[w])
                        peak[w] = lat[s : s + width].amax(0)
        return cls(ids, peak, _vocab(db.path, ids.unique().tolist()), torch.stack([ctx, start], dim=1))

    def __len__(self) -> int:
        return len(self.token_ids)

    def negatives(self, latent: int, activating: tuple[Window, ...], n: int, matched: float, seed: int) -> list[Window]:
        """``n`` windows where ``latent`` is zero: ``round(n * matched)`` sharing its tokens most, the rest random."""
        free = (self.peak[:, latent] <= 0).nonzero().flatten()
        if len(free) == 0 or n == 0:
            return []
        firing = {t.strip() for w in activating for t, a in zip(w.tokens, w.activations, strict=True) if a > 0}
        wanted = torch.tensor([self._code[t] for t in firing if t in self._code], dtype=torch.long)
        # index_select, not codes[free]: advanced indexing took ~12 ms here (its thread pool on a busy 2-core CPU)
        overlap = torch.isin(self._codes.index_select(0, free), wanted).sum(1)  # firing tokens in each window
        n_matched = min(round(n * matched), len(free))
        order = torch.argsort(-overlap, stable=True)
        chosen = free[order[:n_matched]].tolist()
        rest = free[order[n_matched:]]
        gen = torch.Generator().manual_seed(seed * 1_000_003 + latent)
        chosen += rest[torch.randperm(len(rest), generator=gen)[: n - n_matched]].tolist()
        return [self._window(w) for w in chosen]

    def _window(self, w: int) -> Window:
        ids = self.token_ids[w].tolist()
        where = (None, None) if self.origin is None else tuple(self.origin[w].tolist())
        return Window(tuple(self._vocab[i] for i in ids), (0.0,) * len(ids), "negative", *where)


def gather(db: FeatureDB, latent: int, config: ContextConfig, pool: NegativePool | None = None) -> LatentContexts:
    """The contexts of ``latent``: activating ones from ``db``, negatives from ``pool`` (none without one)."""
    card = db.latent(latent)
    top = [_from_example(e, "top") for e in card.top_examples[: config.n_top]]
    n_q = len(card.quantile_examples)
    samples = [
        _from_example(e, f"q{q + 1}")
        for q in reversed(range(n_q))
        for e in card.quantile_examples[q][: config.n_per_quantile]
    ]
    activating = tuple(top + samples)
    negatives = () if pool is None else tuple(pool.negatives(
        latent, activating, config.n_negatives, config.matched_fraction, config.seed))  # fmt: skip
    promoted = tuple(e.token if e.token is not None else f"<{e.token_id}>" for e in card.promoted)
    return LatentContexts(latent, activating, negatives, promoted)


def _from_example(e: Any, kind: str) -> Window:
    tokens = e.tokens if e.tokens is not None else tuple(f"<{i}>" for i in e.token_ids)
    skip = 1 if e.window_start == 0 else 0  # position 0 holds the BOS token of every stored context: not text
    return Window(tuple(tokens[skip:]), tuple(e.activations[skip:]), kind, e.context, e.window_start + skip)


def store_context_tokens(store: ActivationStore, db_path: str | Path) -> Callable[[int], tuple[str, ...]]:
    """Store context index -> its tokens' text (from the database's vocabulary; the leading BOS as ``""``).

    What ``ContextStates`` embeds: the windows of ``gather`` and ``NegativePool`` are runs of these tokens.
    """
    ids = store.tokens()  # [n_ctx ctx_len]
    bos = store.provenance.bos_id
    vocab = _vocab(Path(db_path), ids.unique().tolist())

    def tokens(context: int) -> tuple[str, ...]:
        if not 0 <= context < len(ids):
            raise IndexError(f"context {context} is not in the store {store.path} ({len(ids)} contexts)")
        row = ids[context].tolist()
        return tuple("" if k == 0 and i == bos else vocab[i] for k, i in enumerate(row))

    return tokens


def _vocab(path: Path, ids: list[int]) -> dict[int, str]:
    """Decoded text of ``ids`` from the database's vocabulary (``<id>`` where it has none)."""
    con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        found: dict[int, str] = {}
        for k in range(0, len(ids), 500):
            part = ids[k : k + 500]
            marks = ",".join("?" * len(part))
            found.update(con.execute(f"SELECT token_id, text FROM vocab WHERE token_id IN ({marks})", part))
    finally:
        con.close()
    return {i: found.get(i, f"<{i}>") for i in ids}
