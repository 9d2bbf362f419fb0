"""The graphs family's one adapter: attribution graphs from transcoders of every declared kind, against planted edges.

On an organism whose MLPs are exactly sparse over known features (``organisms.PlantedGraph``), each dictionary kind
declared in ``mechscope.features.KINDS`` becomes one bench method, ``<kind>_transcoder``: per layer, a transcoder
``ln2.L -> mlp_out.L`` of that kind is trained by ``mechscope.features.train`` on the organism's activations over
``TRAIN_PROMPTS`` random prompts (``EXPANSION`` x the true features, ``K`` active where the kind has a ``k``,
``QUICK_STEPS`` / ``FULL_STEPS`` steps of ``BATCH`` rows, seeded with ``ctx.seed``); then
``mechscope.graphs.attribute`` builds the graph of each of ``N_PROMPTS`` (quick: ``QUICK_PROMPTS``) prompts that
exercise the planted mechanism, with every active feature kept. Two baselines: ``oracle`` (the same graphs from the
organism's true transcoders) and ``random`` (a seeded uniform score on every candidate edge).

**Scoring edges against the planted ones** (``graph_edge_auroc``). Nodes are named by the truth's keys,
``(kind, layer, position, index)``. A learned latent is matched to the true feature of its layer whose decoder
direction is most cosine-similar to its own (``MATCH_COSINE`` at least, else it matches nothing and its edges are
dropped); error nodes match nothing. A candidate edge's score is the sum of ``|adjacency|`` over the graph's edges
between nodes that map to its two ends. Candidates, the same for every method: every (source, target) pair with the
source in an earlier layer (embeddings -1, then the MLPs, then the logits) and at the same or an earlier position,
over the embeddings, every true feature at every position, and the organism's output tokens at the last position;
the planted edges of the prompt (``true_graph``) are the positives. AUROC pooled over the prompts; chance 0.5.

**Graph scores** (``graph_scores``): mean ``replacement_score`` and ``completeness_score`` over the prompts, and the
``error_share`` (the error nodes' share of all nodes' influence on the logits; lower is better). Their chance is the
same score with transcoders that never fire (every MLP output left in its error node), computed on the same prompts.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..core._registry import MethodSpec as Declared
from ..features._dictionary import Dictionary, DictionaryConfig, ReLUDictionary
from ..features._kinds import KINDS, train_config
from ..features._train import train
from ..graphs._attribute import GraphConfig, attribute
from ..graphs._graph import AttributionGraph
from ..organisms._protocols import GraphsOrganism
from ._registry import MethodSpec, RunContext
from ._scorers import Score, auroc

FAMILY = "graphs"
"""The organism family these methods run on (models with exact sparse MLPs and a true feature graph)."""

EXPANSION = 4
"""Latents per true feature of a layer."""
K = 2
"""Active latents per row of the kinds that have a ``k``."""
QUICK_STEPS, FULL_STEPS = 600, 3000
"""Optimiser steps per layer of a quick and of a full run."""
BATCH = 256
"""Rows per step."""
LR = 1e-3
"""Adam learning rate."""
TRAIN_PROMPTS = 2048
"""Random prompts whose activations (every position) train the transcoders."""
QUICK_PROMPTS, N_PROMPTS = 8, 32
"""Prompts whose graphs are scored, quick and full."""
MATCH_COSINE = 0.5
"""A learned latent matches a true feature only if their decoder directions have at least this cosine."""
GRAPH = GraphConfig(max_feature_nodes=None)
"""Every active feature becomes a node (the organisms are small)."""

Key = tuple[str, int, int, int]
"""A true node: ``(kind, layer, position, index)`` (``organisms.PlantedEdge``)."""


class GraphRun(NamedTuple):
    """A graphs method's output: one graph per prompt, its edges on the true nodes, and how latents were matched."""

    tokens: Tensor
    """The prompts ``[n pos]``."""
    graphs: tuple[AttributionGraph, ...]
    """One graph per prompt (empty for the random baseline)."""
    edge_scores: tuple[dict[tuple[Key, Key], float], ...]
    """Per prompt, the score of each candidate edge the method gives a non-zero score to."""
    matches: dict[int, list[int]]
    """Per layer, the true feature each latent matches (-1: none)."""
    chance_graphs: tuple[AttributionGraph, ...] = ()
    """The same prompts' graphs with transcoders that never fire (the chance level of the graph scores)."""


# --- methods -----------------------------------------------------------------------------------------------------


def method_name(kind: str) -> str:
    """The bench method of dictionary kind ``kind`` (``topk`` -> ``topk_transcoder``)."""
    return f"{kind}_transcoder"


def prompts(organism: GraphsOrganism, ctx: RunContext) -> Tensor:
    """The prompts a run's graphs are built for (the same for every method of a run)."""
    return organism.graph_prompts(QUICK_PROMPTS if ctx.quick else N_PROMPTS, organism.seed + 1)


def train_transcoders(spec: Declared[Any, Any], organism: GraphsOrganism, ctx: RunContext) -> dict[int, Dictionary]:
    """One transcoder of kind ``spec`` per layer, trained on the organism's MLP inputs and outputs."""
    oracle = organism.transcoders()
    tokens = organism.prompts(TRAIN_PROMPTS, ctx.seed)
    sites = [s for layer in oracle for s in (f"ln2.{layer}", f"mlp_out.{layer}")]
    cache = organism.model.run(tokens, cache=sites).cache
    steps = QUICK_STEPS if ctx.quick else FULL_STEPS
    settings = spec.make_config(**({"k": K} if "k" in {f.name for f in spec.fields()} else {}))
    out: dict[int, Dictionary] = {}
    for layer, tc in oracle.items():
        x, y = cache[f"ln2.{layer}"].flatten(0, 1), cache[f"mlp_out.{layer}"].flatten(0, 1)
        config = train_config(
            spec.name, x.shape[1], EXPANSION * tc.cfg.d_sae, settings, d_out=y.shape[1], site=f"ln2.{layer}",
            target_site=f"mlp_out.{layer}", lr=LR, batch_size=BATCH, n_tokens=BATCH * steps, seed=ctx.seed + layer,
            dead_after_tokens=BATCH * 50, checkpoint_every=10**9, log_every=max(1, steps // 10),
        )  # fmt: skip
        out[layer] = train(config, (x, y), ctx.workdir / f"{spec.name}_transcoder_{layer}", progress=False).dictionary
    return out


def match(learned: Mapping[int, Dictionary], true: Mapping[int, Dictionary]) -> dict[int, list[int]]:
    """Per layer, each learned latent's true feature by decoder cosine (``MATCH_COSINE`` at least; -1: none)."""
    out = {}
    for layer, tc in learned.items():
        a = torch.nn.functional.normalize(tc.W_dec.detach().float(), dim=1)
        b = torch.nn.functional.normalize(true[layer].W_dec.detach().float(), dim=1)
        best = (a @ b.T).max(1)
        out[layer] = torch.where(best.values >= MATCH_COSINE, best.indices, -1).tolist()
    return out


def graph_run(organism: GraphsOrganism, transcoders: Mapping[int, Dictionary], ctx: RunContext) -> GraphRun:
    """Graphs of the run's prompts from ``transcoders``, mapped onto the true nodes."""
    tokens = prompts(organism, ctx)
    matches = match(transcoders, organism.transcoders())
    graphs = tuple(attribute(organism.model, t, transcoders, GRAPH) for t in tokens)
    scores = tuple(true_edge_scores(g, matches) for g in graphs)
    empty = silent(organism.transcoders())
    chance = tuple(attribute(organism.model, t, empty, GRAPH) for t in tokens)
    return GraphRun(tokens, graphs, scores, matches, chance)


def transcoder_graphs(spec: Declared[Any, Any], organism: GraphsOrganism, ctx: RunContext) -> GraphRun:
    """Train transcoders of kind ``spec`` on the organism and build the graphs of the run's prompts."""
    return graph_run(organism, train_transcoders(spec, organism, ctx), ctx)


def oracle_graphs(organism: GraphsOrganism, ctx: RunContext) -> GraphRun:
    """Graphs from the organism's true transcoders (the MLPs' own weights)."""
    return graph_run(organism, organism.transcoders(), ctx)


def random_graphs(organism: GraphsOrganism, ctx: RunContext) -> GraphRun:
    """A seeded uniform score on every candidate edge."""
    tokens = prompts(organism, ctx)
    gen = torch.Generator().manual_seed(ctx.seed)
    scores = []
    for t in tokens:
        cands = candidates(organism, t)
        scores.append(dict(zip(cands, torch.rand(len(cands), generator=gen).tolist(), strict=True)))
    return GraphRun(tokens, (), tuple(scores), {})


def graph_methods() -> list[MethodSpec]:
    """One bench method per declared dictionary kind (read from the registry now)."""
    return [MethodSpec(method_name(s.name), FAMILY, partial(transcoder_graphs, s), None, False,
                       f"attribution graphs from {s.name} transcoders trained by mechscope.features.train")
            for s in KINDS.specs()]  # fmt: skip


def silent(transcoders: Mapping[int, Dictionary]) -> dict[int, Dictionary]:
    """Transcoders of the same shapes that never fire: the replacement is all error nodes."""
    out: dict[int, Dictionary] = {}
    for layer, tc in transcoders.items():
        c = tc.cfg
        cfg = DictionaryConfig("relu", d_in=c.d_in, d_sae=c.d_sae, d_out=c.width_out, apply_b_dec_to_input=False,
                               site=c.site, target_site=c.target_site)  # fmt: skip
        empty = ReLUDictionary(cfg)
        with torch.no_grad():
            empty.W_enc.zero_()
            empty.W_dec.zero_()
            empty.b_enc.fill_(-1.0)
        out[layer] = empty.eval().requires_grad_(False)
    return out


# --- mapping graphs onto the truth -------------------------------------------------------------------------------


def true_edge_scores(graph: AttributionGraph, matches: Mapping[int, list[int]]) -> dict[tuple[Key, Key], float]:
    """Summed ``|adjacency|`` of the graph's edges between nodes that map to true nodes, by true edge."""
    keys: list[Key | None] = []
    for node in graph.nodes:
        if node.kind == "embedding":
            keys.append(("embed", -1, node.position, int(node.token_id or 0)))
        elif node.kind == "logit":
            keys.append(("logit", graph.n_layers, node.position, int(node.token_id or 0)))
        elif node.kind == "feature" and node.feature is not None and matches[node.layer][node.feature] >= 0:
            keys.append(("feature", node.layer, node.position, matches[node.layer][node.feature]))
        else:
            keys.append(None)
    out: dict[tuple[Key, Key], float] = {}
    for t, s in graph.adjacency.nonzero().tolist():
        source, target = keys[s], keys[t]
        if source is not None and target is not None:
            out[(source, target)] = out.get((source, target), 0.0) + abs(float(graph.adjacency[t, s]))
    return out


def candidates(organism: GraphsOrganism, tokens: Tensor) -> list[tuple[Key, Key]]:
    """Every candidate edge of a prompt (see the module docstring), in a fixed order."""
    oracle = organism.transcoders()
    n_layers, n_pos = len(oracle), len(tokens)
    outputs = organism.output_ids
    nodes: list[Key] = [("embed", -1, p, int(t)) for p, t in enumerate(tokens.tolist())]
    nodes += [
        ("feature", layer, p, i) for layer, tc in oracle.items() for p in range(n_pos) for i in range(tc.cfg.d_sae)
    ]
    nodes += [("logit", n_layers, n_pos - 1, t) for t in outputs]
    return [(s, t) for t in nodes for s in nodes if s[1] < t[1] and s[2] <= t[2]]


# --- scorers -----------------------------------------------------------------------------------------------------


def _score(
    organism: GraphsOrganism, method: str, metric: str, value: float, chance: float, higher: bool = True
) -> Score:
    return Score(method, organism.organism, organism.seed, metric, float(value), float(chance), higher)


def graph_edge_auroc(output: Any, organism: GraphsOrganism, method: str) -> Score | None:
    """AUROC of the graph's edges, mapped onto the true nodes, against the planted edges (chance 0.5)."""
    if not isinstance(output, GraphRun):
        return None
    scores, labels = [], []
    for tokens, got in zip(output.tokens, output.edge_scores, strict=True):
        planted = {(e.source, e.target) for e in organism.true_graph(tokens).edges}
        for edge in candidates(organism, tokens):
            scores.append(got.get(edge, 0.0))
            labels.append(edge in planted)
    return _score(organism, method, "edge_auroc", auroc(scores, labels), 0.5)


def graph_scores(output: Any, organism: GraphsOrganism, method: str) -> list[Score] | None:
    """Mean replacement and completeness scores and error-node share over the prompts' graphs."""
    if not isinstance(output, GraphRun) or not output.graphs:
        return None
    got, chance = _mean_scores(output.graphs), _mean_scores(output.chance_graphs)
    return [_score(organism, method, "replacement_score", got[0], chance[0]),
            _score(organism, method, "completeness_score", got[1], chance[1]),
            _score(organism, method, "error_share", got[2], chance[2], higher=False)]  # fmt: skip


def _mean_scores(graphs: tuple[AttributionGraph, ...]) -> tuple[float, float, float]:
    rows = []
    for g in graphs:
        inf = g.node_influence()
        total = float(inf[~g.mask("logit")].sum())
        share = float(inf[g.mask("error")].sum()) / total if total > 0 else 1.0
        rows.append((_finite(g.replacement_score()), _finite(g.completeness_score()), share))
    return tuple(sum(col) / len(col) for col in zip(*rows, strict=True))  # type: ignore[return-value]


def _finite(x: float) -> float:
    return 0.0 if x != x else x  # nan (no influence reaches tokens or errors) counts as none through features
