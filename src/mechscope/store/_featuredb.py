"""The feature database: what every latent of a dictionary does over a store, in one SQLite file.

``build_feature_db`` encodes the store's activations of one site, chunk by chunk in one streaming pass, and
keeps per latent (``_accumulate``): how often it fires, its mean and largest activation, a histogram over
fixed log-spaced bins, its top-k contexts, and a uniform sample of firing tokens per histogram bin. At the
end each sampled token is placed in an activation quantile (by the histogram, interpolating inside its bin)
and each quantile draws its samples from its tokens, weighted by how many tokens each stands for.
Logit effects are the decoder directions through the unembedding, ``W_dec @ W_U`` (no final norm; as in
Bricken et al. 2023, "Towards Monosemanticity", feature dashboards).

Schema (all keys indexed)::

    meta(key PRIMARY KEY, value JSON)          format, site, store provenance, dictionary config, build config,
                                               tokens counted, histogram edges
    latents(latent PRIMARY KEY, n_active, frequency, mean_activation, max_activation)
    histograms(latent, bin, count)             non-empty bins only; PRIMARY KEY (latent, bin)
    examples(latent, kind, quantile, rank, context, position, activation, window_start, token_ids, activations)
                                               kind 'top' (quantile 0) or 'sample'; PRIMARY KEY (latent, kind,
                                               quantile, rank); token_ids int32 and activations float32 blobs,
                                               little-endian, ``window`` values each
    logit_effects(latent, direction, rank, token_id, effect)
                                               direction 'promoted' or 'suppressed'; PRIMARY KEY (latent,
                                               direction, rank), INDEX (token_id, direction)
    vocab(token_id PRIMARY KEY, text)          decoded tokens, when a tokenizer was given
    explanations(latent, explainer, text, score, scorer)
                                               added later, by ``add_explanations`` (``_explanations``)

The file is built under a temporary name and renamed into place, so readers never see half a database.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechscope.store._accumulate import HIST_EDGES, N_BINS, Counts, Reservoirs, TopContexts, bin_of
from mechscope.store._featuredb_query import FORMAT, FORMAT_VERSION, FeatureDB
from mechscope.store._store import ActivationStore, ProvenanceError

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE latents (latent INTEGER PRIMARY KEY, n_active INTEGER NOT NULL, frequency REAL NOT NULL,
                      mean_activation REAL NOT NULL, max_activation REAL NOT NULL);
CREATE INDEX latents_frequency ON latents (frequency);
CREATE INDEX latents_mean ON latents (mean_activation);
CREATE INDEX latents_max ON latents (max_activation);
CREATE TABLE histograms (latent INTEGER NOT NULL, bin INTEGER NOT NULL, count INTEGER NOT NULL,
                         PRIMARY KEY (latent, bin)) WITHOUT ROWID;
CREATE TABLE examples (latent INTEGER NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('top', 'sample')),
                       quantile INTEGER NOT NULL, rank INTEGER NOT NULL, context INTEGER NOT NULL,
                       position INTEGER NOT NULL, activation REAL NOT NULL, window_start INTEGER NOT NULL,
                       token_ids BLOB NOT NULL, activations BLOB NOT NULL,
                       PRIMARY KEY (latent, kind, quantile, rank)) WITHOUT ROWID;
CREATE TABLE logit_effects (latent INTEGER NOT NULL,
                            direction TEXT NOT NULL CHECK (direction IN ('promoted', 'suppressed')),
                            rank INTEGER NOT NULL, token_id INTEGER NOT NULL, effect REAL NOT NULL,
                            PRIMARY KEY (latent, direction, rank)) WITHOUT ROWID;
CREATE INDEX logit_effects_token ON logit_effects (token_id, direction);
CREATE TABLE vocab (token_id INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE INDEX vocab_text ON vocab (text);
"""


@dataclass(frozen=True)
class FeatureDBConfig:
    """What the feature database keeps for each latent."""

    site: str | None = None
    """Store site the dictionary reads; None: the dictionary's ``cfg.site``, else the store's only site."""
    top_k: int = 20
    """Top activating contexts kept per latent (ranked by the context's largest activation)."""
    window: int = 24
    """Tokens kept around each example's peak token (with the latent's activation on each)."""
    before: int = 16
    """Tokens of the window before the peak token, where the context allows."""
    n_quantiles: int = 5
    """Activation quantiles (of each latent's non-zero activations) to draw random samples from."""
    samples_per_quantile: int = 4
    """Random firing tokens kept per quantile, and per histogram bin while streaming; a quantile gets fewer
    when one histogram bin holds more than a quantile's worth of tokens (its sample is shared)."""
    n_logits: int = 10
    """Most promoted and most suppressed tokens kept per latent."""
    chunk_contexts: int = 16
    """Contexts encoded at once (memory: ``chunk_contexts * ctx_len * d_sae`` floats)."""
    skip_bos: bool = True
    """Leave position 0 (the BOS token, an attention sink with outsized activations) out of every statistic;
    it shows as 0 inside windows."""
    seed: int = 0
    """Seed of the random samples."""

    def __post_init__(self) -> None:
        positive = (self.top_k, self.window, self.n_quantiles, self.samples_per_quantile, self.chunk_contexts)
        if min(positive) < 1 or self.n_logits < 0:
            raise ValueError("top_k, window, n_quantiles, samples_per_quantile and chunk_contexts must be >= 1")
        if not 0 <= self.before < self.window:
            raise ValueError(f"before must be in [0, window={self.window}), got {self.before}")


@dataclass
class _Pass:
    """Everything the streaming pass accumulates."""

    counts: Counts
    top: TopContexts
    samples: Reservoirs
    n_tokens: int  # tokens counted (BOS positions excluded with skip_bos)


def build_feature_db(
    store: ActivationStore,
    dictionary: Any,
    path: str | Path,
    config: FeatureDBConfig = FeatureDBConfig(),
    *,
    W_U: Float[Tensor, "d_model d_vocab"] | None = None,
    tokenizer: Any = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> FeatureDB:
    """Build the feature database of ``dictionary`` over ``store`` at ``path`` (replacing any file there).

    ``W_U`` (the unembedding, ``[d_model d_vocab]``; for a mechscope model
    ``model.module.get_output_embeddings().weight.T``) adds logit effects; ``tokenizer`` adds the decoded
    vocabulary, so examples and token searches show text. The dictionary encodes on ``device``.
    """
    site = _site(store, dictionary, config)
    if config.window > store.provenance.ctx_len:
        raise ValueError(f"window ({config.window}) is longer than the store's contexts ({store.provenance.ctx_len})")
    stats = _stream(store, dictionary, site, config, torch.device(device), progress)
    effects = None if W_U is None else logit_effects(dictionary.W_dec.detach().cpu(), W_U, config.n_logits)
    samples = _quantile_samples(stats, config)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "site": site,
        "store": str(store.path),
        "store_provenance": dataclasses.asdict(store.provenance),
        "dictionary": dataclasses.asdict(dictionary.cfg),
        "config": dataclasses.asdict(config),
        "n_tokens": stats.n_tokens,
        "hist_edges": HIST_EDGES.tolist(),
    }
    _write(Path(path), meta, stats, samples, effects, store.tokens(), tokenizer)
    return FeatureDB(path)


def _site(store: ActivationStore, dictionary: Any, config: FeatureDBConfig) -> str:
    """The store site to read, checked against the dictionary's site and width."""
    cfg = dictionary.cfg
    sites = list(store.provenance.sites)
    site = config.site or cfg.site or (sites[0] if len(sites) == 1 else None)
    if site is None:
        raise ValueError(f"the store holds sites {sites}: say which one the dictionary reads (config.site)")
    width = store.width(site)
    if cfg.site is not None and cfg.site != site:
        raise ProvenanceError(f"the dictionary reads {cfg.site!r} but the feature database was asked for {site!r}")
    if width != cfg.d_in:
        raise ProvenanceError(
            f"the dictionary reads d_in={cfg.d_in} (site {cfg.site!r}) but store site {site!r} has width {width}"
        )
    return site


def _stream(
    store: ActivationStore,
    dictionary: Any,
    site: str,
    config: FeatureDBConfig,
    device: torch.device,
    progress: bool,
) -> _Pass:
    """One pass over the store: encode each chunk of contexts and update every accumulator."""
    d_sae, ctx_len = dictionary.cfg.d_sae, store.provenance.ctx_len
    stats = _Pass(
        Counts.empty(d_sae),
        TopContexts.empty(d_sae, config.top_k, config.window),
        Reservoirs.empty(d_sae, config.samples_per_quantile, config.window),
        0,
    )
    gen = torch.Generator().manual_seed(config.seed)
    bar = tqdm(total=store.manifest.n_tokens, unit="tok", unit_scale=True, desc="features", disable=not progress)
    with bar, torch.inference_mode():
        for shard in store.shards(site):
            for c in range(0, len(shard.tokens), config.chunk_contexts):
                n = min(config.chunk_contexts, len(shard.tokens) - c)
                x = shard.acts[c * ctx_len : (c + n) * ctx_len].to(device, torch.float32)
                latents = dictionary.encode(x).float().cpu().view(n, ctx_len, d_sae)  # [n_ctx pos d_sae]
                _update(stats, latents, shard.start + c, config, gen)
                bar.update(n * ctx_len)
    return stats


def _update(stats: _Pass, lat3: Tensor, first_ctx: int, config: FeatureDBConfig, gen: torch.Generator) -> None:
    if config.skip_bos:
        lat3[:, 0] = 0
    flat = lat3.view(-1, lat3.shape[2])  # [rows d_sae]
    rows, latent = (flat > 0).nonzero(as_tuple=True)
    acts = flat[rows, latent]
    bins = bin_of(acts)
    stats.counts.update(latent, acts, bins)
    stats.top.update(lat3, first_ctx, config.before)
    keys = torch.rand(len(rows), generator=gen)
    stats.samples.update(lat3, first_ctx, rows, latent, bins, keys, config.before)
    stats.n_tokens += lat3.shape[0] * (lat3.shape[1] - int(config.skip_bos))


def _quantile_samples(stats: _Pass, config: FeatureDBConfig) -> dict[str, Tensor]:
    """Choose ``samples_per_quantile`` samples per (latent, quantile) from the per-bin reservoirs.

    A sampled token's quantile is read off the latent's histogram: the tokens in lower bins, plus the share of
    its own bin below it, taking the bin's tokens as spread evenly across the bin (the last, open bin ends at
    the latent's maximum). Each entry stands for ``count / kept`` tokens of its bin, and a quantile draws its
    samples from its entries with those weights, without replacement (Efraimidis & Spirakis 2006: keep the
    largest ``log(u) / w``).
    """
    res, hist, q = stats.samples, stats.counts.hist, config.n_quantiles
    slot, place = (res.key > -torch.inf).nonzero(as_tuple=True)  # every kept entry
    latent, bin_ = res.group[slot] // N_BINS, res.group[slot] % N_BINS
    act = res.act[slot, place].double()
    lo = HIST_EDGES.double()[bin_]
    hi = torch.cat([HIST_EDGES[1:].double(), torch.zeros(1)])[bin_]
    hi = torch.where(bin_ == N_BINS - 1, stats.counts.max[latent].double(), hi)
    within = ((act - lo) / (hi - lo).clamp_min(1e-30)).clamp(0, 1)
    count = hist[latent, bin_].double()
    below = (hist.cumsum(1) - hist)[latent, bin_].double()  # tokens of the latent in lower bins
    quantile = (q * (below + count * within) / hist.sum(1)[latent].double()).long().clamp(0, q - 1)
    kept = (res.key > -torch.inf).sum(1)[slot].double()
    gen = torch.Generator().manual_seed(config.seed + 1)
    es_key = torch.rand(len(slot), generator=gen, dtype=torch.float64).log() / (count / kept)
    order = torch.argsort(-es_key, stable=True)
    order = order[torch.argsort((latent * q + quantile)[order], stable=True)]  # by (latent, quantile), key
    slot, place, latent, quantile = slot[order], place[order], latent[order], quantile[order]
    keep = _rank_in_runs(latent * q + quantile) < config.samples_per_quantile
    slot, place, latent, quantile = slot[keep], place[keep], latent[keep], quantile[keep]
    return {
        "latent": latent,
        "quantile": quantile,
        "rank": _rank_in_runs(latent * q + quantile),
        "ctx": res.ctx[slot, place],
        "pos": res.pos[slot, place],
        "act": res.act[slot, place],
        "start": res.start[slot, place],
        "win": res.win[slot, place],
    }


def _rank_in_runs(values: Tensor) -> Tensor:
    """Each element's index within its run of equal values (``values`` grouped)."""
    _, counts = torch.unique_consecutive(values, return_counts=True)
    return torch.arange(len(values)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)


def logit_effects(
    W_dec: Float[Tensor, "d_sae d_model"], W_U: Float[Tensor, "d_model d_vocab"], n: int, chunk: int = 256
) -> dict[str, Tensor]:
    """The ``n`` most promoted and most suppressed tokens of each latent's decoder direction: ``W_dec @ W_U``."""
    W_U = W_U.detach().to("cpu", torch.float32)
    if W_U.shape[0] != W_dec.shape[1]:
        raise ValueError(
            f"W_U must be [d_model d_vocab] with d_model={W_dec.shape[1]} (the decoder's width), got "
            f"{list(W_U.shape)}; for a mechscope model pass model.module.get_output_embeddings().weight.T"
        )
    n = min(n, W_U.shape[1])
    parts: dict[str, list[Tensor]] = {"promoted": [], "promoted_ids": [], "suppressed": [], "suppressed_ids": []}
    for i in range(0, len(W_dec), chunk):
        effect = W_dec[i : i + chunk].float() @ W_U  # [chunk d_vocab]
        up, down = effect.topk(n, dim=1), effect.topk(n, dim=1, largest=False)
        parts["promoted"].append(up.values)
        parts["promoted_ids"].append(up.indices)
        parts["suppressed"].append(down.values)
        parts["suppressed_ids"].append(down.indices)
    return {k: torch.cat(v) for k, v in parts.items()}


def _write(
    path: Path,
    meta: dict[str, Any],
    stats: _Pass,
    samples: dict[str, Tensor],
    effects: dict[str, Tensor] | None,
    tokens: Tensor,
    tokenizer: Any,
) -> None:
    """Write the database under a temporary name, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(_SCHEMA)
            con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            _write_latents(con, stats)
            _write_examples(con, stats.top, samples, tokens)
            if effects is not None:
                _write_effects(con, effects)
            if tokenizer is not None:
                texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
                con.executemany("INSERT INTO vocab VALUES (?, ?)", enumerate(texts))
            con.commit()
        finally:
            con.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_latents(con: sqlite3.Connection, stats: _Pass) -> None:
    c = stats.counts
    n_active = c.n_active.tolist()
    freq = (c.n_active.double() / max(stats.n_tokens, 1)).tolist()
    mean = (c.total / c.n_active.clamp(min=1)).tolist()
    rows = zip(range(len(n_active)), n_active, freq, mean, c.max.tolist(), strict=True)
    con.executemany("INSERT INTO latents VALUES (?, ?, ?, ?, ?)", rows)
    latent, bin_ = c.hist.nonzero(as_tuple=True)
    con.executemany(
        "INSERT INTO histograms VALUES (?, ?, ?)",
        zip(latent.tolist(), bin_.tolist(), c.hist[latent, bin_].tolist(), strict=True),
    )


def _write_examples(con: sqlite3.Connection, top: TopContexts, samples: dict[str, Tensor], tokens: Tensor) -> None:
    latent, rank = (top.val > 0).nonzero(as_tuple=True)  # contexts where the latent fired at all
    top_rows = {
        "latent": latent,
        "quantile": torch.zeros_like(latent),
        "rank": rank,
        "ctx": top.ctx[latent, rank],
        "pos": top.pos[latent, rank],
        "act": top.val[latent, rank],
        "start": top.start[latent, rank],
        "win": top.win[latent, rank],
    }
    for kind, ex in (("top", top_rows), ("sample", samples)):
        width = ex["win"].shape[1]
        ids = tokens[ex["ctx"][:, None], ex["start"][:, None] + torch.arange(width)]  # [m window]
        id_blobs = _blobs(ids.numpy().astype("<i4"))
        act_blobs = _blobs(ex["win"].numpy().astype("<f4"))
        first, *rest = (ex[k].tolist() for k in ("latent", "quantile", "rank", "ctx", "pos", "act", "start"))
        rows = zip(first, [kind] * len(first), *rest, id_blobs, act_blobs, strict=True)
        con.executemany("INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _blobs(array: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in array]


def _write_effects(con: sqlite3.Connection, effects: dict[str, Tensor]) -> None:
    for direction in ("promoted", "suppressed"):
        values, ids = effects[direction], effects[f"{direction}_ids"]
        latent, rank = torch.meshgrid(torch.arange(values.shape[0]), torch.arange(values.shape[1]), indexing="ij")
        rows = zip(
            latent.flatten().tolist(),
            [direction] * values.numel(),
            rank.flatten().tolist(),
            ids.flatten().tolist(),
            values.flatten().tolist(),
            strict=True,
        )
        con.executemany("INSERT INTO logit_effects VALUES (?, ?, ?, ?, ?)", rows)
