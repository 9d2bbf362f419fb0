"""``attribute``: the attribution graph of a prompt, from per-layer transcoders, in batched backward passes.

The procedure is circuit-tracer's (Ameisen et al. 2025, "Circuit Tracing", §2 and Appendix "Attribution graph
computation"): run the prompt once; pick the output logits (the most probable tokens until their probabilities sum
to ``logit_prob``, at most ``max_logits``, or one given ``target``); compute their rows of direct effects; then,
while fewer than ``max_feature_nodes`` features have rows, rank the features not yet visited by their influence on
the logits through the rows computed so far and compute the rows of the next ``4 * batch_size`` of them. Features
that never get a row are dropped from the graph (their columns too). Every row comes from a backward pass over one
linearised forward pass (``_linear``), ``batch_size`` rows per pass.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.core import Model
from mechscope.features import Dictionary
from mechscope.graphs._graph import AttributionGraph, GraphNode, GraphStats, normalize
from mechscope.graphs._linear import Linearised, Sources
from mechscope.graphs._registry import METHODS
from mechscope.graphs._replacement import ReplacementModel, Trace

UPDATE_INTERVAL = 4
"""Batches of feature rows computed between two re-rankings by influence (circuit-tracer's ``update_interval``)."""


@dataclass(frozen=True)
class GraphConfig:
    """Settings of an attribution graph (``attribute``)."""

    max_logits: int = 10
    """At most this many output logits become nodes (the most probable tokens at the last position)."""
    logit_prob: float = 0.95
    """Logit nodes are added in order of probability until their probabilities sum to this much."""
    max_feature_nodes: int | None = 1024
    """At most this many active features get rows and become nodes, chosen by influence on the logits (None:
    every active feature). The dense adjacency has ``(features + (layers + 1) * positions + logits)²`` entries."""
    batch_size: int = 32
    """Target rows per backward pass (the forward pass runs once on this many copies of the prompt)."""
    node_threshold: float = 0.8
    """``prune`` keeps the nodes that hold this share of the total influence on the logits."""
    edge_threshold: float = 0.98
    """``prune`` keeps the edges that hold this share of the total edge influence."""

    def __post_init__(self) -> None:
        if self.max_logits < 1:
            raise ValueError(f"max_logits must be at least 1, got {self.max_logits}")
        if not 0 < self.logit_prob <= 1:
            raise ValueError(f"logit_prob must be in (0, 1], got {self.logit_prob}")
        if self.max_feature_nodes is not None and self.max_feature_nodes < 0:
            raise ValueError(f"max_feature_nodes must be >= 0 or None, got {self.max_feature_nodes}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        for name in ("node_threshold", "edge_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@METHODS.declare("attribution-graph", config=GraphConfig, result=AttributionGraph)
def attribute(
    model: Model | ReplacementModel,
    prompt: str | Tensor,
    transcoders: Mapping[int, Dictionary] | None = None,
    config: GraphConfig = GraphConfig(),
    *,
    target: str | int | None = None,
) -> AttributionGraph:
    """The attribution graph of ``prompt``: features, errors, embeddings and logits with their direct effects.

    ``model`` is a mechscope model with ``transcoders`` (one per layer), or a ``ReplacementModel``. ``target``, a
    single-token string (mind the leading space: ``" Paris"``) or a token id, makes that token the only logit node.
    """
    start = time.perf_counter()
    rm = model if isinstance(model, ReplacementModel) else _replacement(model, transcoders)
    trace = rm.trace(prompt)
    features, acts = (t.cpu() for t in trace.active())
    logit_ids, logit_probs = _logits(rm, trace, config, target)
    sources = _sources(rm, trace, features, acts)
    n_select = len(features) if config.max_feature_nodes is None else min(config.max_feature_nodes, len(features))
    batch = max(1, min(config.batch_size, len(logit_ids) + n_select))
    lin = Linearised(rm, trace, sources, batch)
    try:
        logit_rows = _logit_rows(lin, rm, trace, logit_ids)
        visited, feature_rows = _feature_rows(lin, rm, features, logit_rows, logit_probs, n_select, batch)
    finally:
        lin.close()
    stats = GraphStats(len(features), len(logit_ids) + len(visited), batch, lin.n_backward,
                       time.perf_counter() - start)  # fmt: skip
    return _assemble(rm, trace, config, features, acts, visited, feature_rows, logit_ids, logit_probs, logit_rows,
                     stats)  # fmt: skip


def _replacement(model: Model, transcoders: Mapping[int, Dictionary] | None) -> ReplacementModel:
    if transcoders is None:
        raise TypeError("attribute(model, prompt, transcoders): pass one transcoder per layer, or a ReplacementModel")
    return ReplacementModel(model, transcoders)


def _logits(
    rm: ReplacementModel, trace: Trace, config: GraphConfig, target: str | int | None
) -> tuple[Int[Tensor, " k"], Float[Tensor, " k"]]:
    """The logit nodes' token ids and probabilities at the last position."""
    probs = torch.softmax(trace.logits[-1].double(), -1)
    if target is not None:
        token = rm.model.to_single_token(target) if isinstance(target, str) else int(target)
        if not 0 <= token < probs.shape[0]:
            raise ValueError(f"target token id {token} is outside the vocabulary (0 .. {probs.shape[0] - 1})")
        return torch.tensor([token]), probs[[token]].float().cpu()
    top = torch.topk(probs, min(config.max_logits, probs.shape[0]))
    cut = int(torch.searchsorted(torch.cumsum(top.values, 0), torch.tensor(config.logit_prob, dtype=probs.dtype))) + 1
    return top.indices[:cut].cpu(), top.values[:cut].float().cpu()


def _sources(rm: ReplacementModel, trace: Trace, features: Tensor, acts: Tensor) -> Sources:
    """What every source writes, on the model's device (feature indices stay on the CPU)."""
    device = trace.embed.device
    writes = {}
    for src in range(rm.n_layers):
        idx = (features[:, 0] == src).nonzero().squeeze(1)
        for dst in rm.coders.writes_to(src):
            w = rm.coders.decoder_rows(src, dst, features[idx, 2])  # [n d_model]
            writes[(src, dst)] = (w * acts[idx, None].to(w)).float().to(device)
    errors = torch.stack(trace.errors).float()
    return Sources(features, writes, errors, trace.embed.float())


def _logit_rows(lin: Linearised, rm: ReplacementModel, trace: Trace, ids: Tensor) -> Float[Tensor, "k n_columns"]:
    """Rows of the logits minus their mean over the vocabulary (circuit-tracer's demeaned unembedding)."""
    d_vocab, last = trace.logits.shape[-1], len(trace.tokens) - 1
    rows = []
    for chunk in ids.split(lin.batch):
        vectors = torch.full((len(chunk), d_vocab), -1.0 / d_vocab)
        vectors[torch.arange(len(chunk)), chunk] += 1.0
        layers = torch.full((len(chunk),), rm.n_layers)
        rows.append(lin.rows(layers, torch.full((len(chunk),), last), vectors))
    return torch.cat(rows)


def _feature_rows(
    lin: Linearised,
    rm: ReplacementModel,
    features: Tensor,
    logit_rows: Tensor,
    logit_probs: Tensor,
    n_select: int,
    batch: int,
) -> tuple[list[int], Tensor]:
    """Rows of the ``n_select`` features of most influence, re-ranked every ``UPDATE_INTERVAL`` batches."""
    n_feat = len(features)
    visited = torch.zeros(n_feat, dtype=torch.bool)
    order: list[int] = []
    rows: list[Tensor] = []
    while len(order) < n_select:
        if n_select == n_feat:
            pending = torch.arange(n_feat)
        else:
            inf = _partial_influence(logit_rows, logit_probs, rows, order, n_feat)
            ranked = torch.argsort(inf, descending=True)
            pending = ranked[~visited[ranked]][: min(UPDATE_INTERVAL * batch, n_select - len(order))]
            # a backward pass runs from its deepest target down: batches of one depth stop early
            pending = pending[torch.argsort(features[pending, 0], stable=True)]
        for chunk in pending.split(batch):
            layers, positions = features[chunk, 0], features[chunk, 1]
            vectors = torch.stack([rm.coders.encoder_column(int(f[0]), int(f[2])).float() for f in features[chunk]])
            rows.append(lin.rows(layers, positions, vectors))
            visited[chunk] = True
            order.extend(chunk.tolist())
    return order, torch.cat(rows) if rows else torch.zeros(0, logit_rows.shape[1])


def _partial_influence(
    logit_rows: Tensor, logit_probs: Tensor, rows: list[Tensor], order: list[int], n_feat: int
) -> Float[Tensor, " n_feat"]:
    """Influence of every active feature on the logits through the rows computed so far (unvisited: sources only)."""
    computed = torch.cat([logit_rows, *rows])  # [k + visited, n_columns]
    k = len(logit_rows)
    a = normalize(computed)
    # node space: the columns; each computed row is a node among them (features) or a logit (weights start there)
    row_node = torch.tensor(order, dtype=torch.long)
    current = logit_probs.double() / logit_probs.sum() @ a[:k]  # [n_columns]
    total = current.clone()
    for _ in range(10_000):
        nxt = current[row_node] @ a[k:] if len(order) else torch.zeros_like(current)
        if not bool(nxt.any()):
            break
        total += nxt
        current = nxt
    return total[:n_feat]


def _assemble(
    rm: ReplacementModel,
    trace: Trace,
    config: GraphConfig,
    features: Tensor,
    acts: Tensor,
    visited: list[int],
    feature_rows: Tensor,
    logit_ids: Tensor,
    logit_probs: Tensor,
    logit_rows: Tensor,
    stats: GraphStats,
) -> AttributionGraph:
    """Nodes in graph order and the square adjacency over them (unvisited features' columns dropped)."""
    keep = torch.tensor(sorted(visited), dtype=torch.long)
    rank = {f: i for i, f in enumerate(sorted(visited))}
    n_feat, n_sel = len(features), len(keep)
    n_layers, n_pos = rm.n_layers, len(trace.tokens)
    other = torch.arange(n_feat, n_feat + (n_layers + 1) * n_pos)
    cols = torch.cat([keep, other])
    n = n_sel + len(other) + len(logit_ids)
    adjacency = torch.zeros(n, n)
    if n_sel:
        rows = feature_rows[torch.tensor([visited.index(f) for f in keep.tolist()])]
        adjacency[:n_sel, : len(cols)] = rows[:, cols]
    adjacency[n - len(logit_ids) :, : len(cols)] = logit_rows[:, cols]
    texts = [_decode(rm, int(t)) for t in trace.tokens]
    ids = [int(t) for t in trace.tokens]
    nodes: list[GraphNode] = []
    for f in sorted(visited):
        layer, pos, feat = (int(v) for v in features[f])
        nodes.append(GraphNode("feature", layer, pos, feat, float(acts[f]), texts[pos], ids[pos]))
    for layer in range(n_layers):
        for pos in range(n_pos):
            norm = float(trace.errors[layer][pos].norm())
            nodes.append(GraphNode("error", layer, pos, None, norm, texts[pos], ids[pos]))
    nodes += [GraphNode("embedding", -1, pos, None, None, texts[pos], ids[pos]) for pos in range(n_pos)]
    last = trace.logits[-1]
    for token, p in zip(logit_ids.tolist(), logit_probs.tolist(), strict=True):
        nodes.append(GraphNode("logit", n_layers, n_pos - 1, None, float(last[token]), _decode(rm, token), token, p))
    assert len(nodes) == n and len(rank) == n_sel
    prompt = rm.model.tokenizer.decode(ids) if rm.model.tokenizer is not None else ""
    return AttributionGraph(prompt, tuple(texts), tuple(ids), nodes, adjacency, n_layers, dict(rm.model.provenance),
                            asdict(config), stats)  # fmt: skip


def _decode(rm: ReplacementModel, token: int) -> str:
    tok = rm.model.tokenizer
    return str(tok.decode([token])) if tok is not None else str(token)
