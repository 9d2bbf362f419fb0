"""``verify``: how well the graph predicts what intervening on its features really does to the model.

For each of the ``n`` feature nodes of most influence on the logits, the feature is scaled (by default ablated,
``factor=0``) or clamped (``value=``) at its layer and position in the REAL model: ``(new - a) * W_dec[f]`` is added
to the MLP output
there, which is the feature intervention of ``features._intervene`` (``x + (z' - z) @ W_dec``, error term kept)
written at the transcoder's target site; the feature's own activation is the clean one because its input lies
upstream. The real model then recomputes everything downstream, attention patterns and norms included.

The graph's prediction is its linear propagation: the change ``d`` of the intervened feature flows along the
adjacency, each downstream feature passing its pre-activation change on in full (its active, linear regime) and
each edge scaled by its source's activation, ``d_t = sum_m A[t, m] / a_m * d_m``; errors and embeddings stay fixed.
The real change is read at the same nodes: the pre-activations of the downstream feature nodes (from the
transcoders applied to the intervened run) and the logits minus their mean. ``GraphVerification`` holds both, per
intervention, and their Pearson correlation (as the circuits family's self-check compares estimates with real
interventions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mechscope import _numerics
from mechscope.core import Add, Model
from mechscope.features import Dictionary
from mechscope.graphs._graph import AttributionGraph
from mechscope.graphs._replacement import ReplacementModel, Trace


@dataclass(frozen=True)
class InterventionCheck:
    """One intervention: the graph's predicted changes and the real ones, at the same nodes."""

    node: str
    """The intervened feature node's id."""
    factor: float | None
    """Its activation was multiplied by this (0: ablated); None when it was clamped to ``value``."""
    targets: list[str]
    """Downstream feature nodes (later layer, same or later position) and logit nodes, by id."""
    predicted: list[float]
    """Predicted change of each target (feature pre-activation; logit minus mean logit)."""
    real: list[float]
    """Real change of each target in the intervened model."""
    correlation: float | None
    """Pearson correlation of predicted and real (None with fewer than 3 targets or no variation)."""
    value: float = 0.0
    """The feature's activation during the intervention."""


@dataclass(frozen=True)
class GraphVerification:
    """Predicted against real effects of intervening on a graph's most influential features."""

    checks: list[InterventionCheck]
    """One per intervened feature, most influential first."""
    correlation: float | None
    """Pearson correlation of all (predicted, real) pairs pooled."""
    spearman: float | None = None
    """Spearman rank correlation of the pooled pairs."""
    slope: float | None = None
    """Least-squares slope of real on predicted through the origin (1: the graph gets the sizes right)."""
    mean_abs_error: float | None = None
    """Mean |predicted - real| over the pooled pairs."""

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)


def verify(
    model: Model | ReplacementModel,
    graph: AttributionGraph,
    transcoders: Mapping[int, Dictionary] | None = None,
    n: int = 5,
    *,
    factor: float = 0.0,
    value: float | None = None,
) -> GraphVerification:
    """Intervene on the ``n`` most influential feature nodes of ``graph`` in the real model; compare with the graph.

    Each feature's activation is multiplied by ``factor`` (0: ablation, 2: doubling), or set to ``value`` when given
    (a clamp), at its layer and position.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if isinstance(model, ReplacementModel):
        rm = model
    elif transcoders is None:
        raise TypeError("verify(model, graph, transcoders): pass the transcoders the graph was built with")
    else:
        rm = ReplacementModel(model, transcoders)
    if graph.n_layers != rm.n_layers:
        raise ValueError(f"the graph has {graph.n_layers} layers but the model has {rm.n_layers}")
    trace = rm.trace(torch.tensor(graph.token_ids))
    is_feature = graph.mask("feature")
    if not bool(is_feature.any()):
        raise ValueError("the graph has no feature nodes to intervene on")
    inf = graph.node_influence()
    inf[~is_feature] = -1
    chosen = torch.argsort(inf, descending=True)[: min(n, int(is_feature.sum()))].tolist()
    clean_pre = _pre_activations(rm, trace.inputs)
    clean_logit = _centred(trace.logits[-1])
    checks = [_check(rm, graph, trace, s, factor, value, clean_pre, clean_logit) for s in chosen]
    pred = torch.tensor([p for c in checks for p in c.predicted], dtype=torch.float64)
    real = torch.tensor([r for c in checks for r in c.real], dtype=torch.float64)
    rho = float(_numerics.spearman(pred, real)) if len(pred) >= 3 else None
    slope = float((pred * real).sum() / (pred * pred).sum()) if bool((pred != 0).any()) else None
    mae = float((pred - real).abs().mean()) if len(pred) else None
    return GraphVerification(checks, _pearson(pred.tolist(), real.tolist()), _finite(rho), slope, mae)


def _check(
    rm: ReplacementModel,
    graph: AttributionGraph,
    trace: Trace,
    s: int,
    factor: float,
    value: float | None,
    clean_pre: list[Tensor],
    clean_logit: Tensor,
) -> InterventionCheck:
    node = graph.nodes[s]
    assert node.feature is not None and node.activation is not None
    new = factor * node.activation if value is None else value
    delta = new - node.activation
    targets = [i for i, t in enumerate(graph.nodes)
               if (t.kind == "feature" and t.layer > node.layer and t.position >= node.position)
               or t.kind == "logit"]  # fmt: skip
    predicted = propagate(graph, s, delta)[targets]
    feature = torch.tensor([node.feature])
    adds = [Add(f"mlp_out.{dst}", vector=(delta * rm.coders.decoder_rows(node.layer, dst, feature)[0]).to(
                trace.mlp_out[0]), pos=[node.position]) for dst in rm.coders.writes_to(node.layer)]  # fmt: skip
    with torch.no_grad(), rm.model.intervene(*adds):
        run = rm.model.run(trace.tokens[None], cache=[site.name for site in rm.input_sites])
    assert run.logits is not None
    pre = _pre_activations(rm, tuple(run.cache[site.name][0] for site in rm.input_sites))
    logit = _centred(run.logits[0, -1])
    real = []
    for i in targets:
        t = graph.nodes[i]
        if t.kind == "logit":
            assert t.token_id is not None
            real.append(float(logit[t.token_id] - clean_logit[t.token_id]))
        else:
            real.append(float(pre[t.layer][t.position, t.feature] - clean_pre[t.layer][t.position, t.feature]))
    pred_list = [float(x) for x in predicted]
    return InterventionCheck(node.id, factor if value is None else None, [graph.nodes[i].id for i in targets],
                             pred_list, real, _pearson(pred_list, real), float(new))  # fmt: skip


def propagate(graph: AttributionGraph, source: int, delta: float) -> Float[Tensor, " n_nodes"]:
    """The graph's linear prediction of every node's change when feature node ``source`` changes by ``delta``."""
    acts = torch.tensor([n.activation if n.kind == "feature" and n.activation else 0.0 for n in graph.nodes],
                        dtype=torch.float64)  # fmt: skip
    is_feature = graph.mask("feature")
    jac = torch.zeros_like(graph.adjacency, dtype=torch.float64)
    jac[:, is_feature] = graph.adjacency.double()[:, is_feature] / acts[is_feature].clamp(min=1e-30)
    jac[source] = 0  # the intervened feature is set, not recomputed
    d = torch.zeros(len(graph.nodes), dtype=torch.float64)
    d[source] = delta
    for _ in range(graph.n_layers + 2):  # a DAG over layers: settled after at most n_layers + 1 steps
        new = jac @ d
        new[source] = delta
        if torch.equal(new, d):
            break
        d = new
    return d


def _pre_activations(rm: ReplacementModel, inputs: tuple[Tensor, ...]) -> list[Tensor]:
    with torch.no_grad():
        return [rm.coders.pre_activations(layer, x) for layer, x in enumerate(inputs)]


def _centred(logits: Tensor) -> Tensor:
    logits = logits.double()
    return logits - logits.mean()


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _pearson(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3:
        return None
    a, b = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    if denom == 0 or not math.isfinite(denom):
        return None
    return float((a * b).sum()) / denom
