"""The attribution-graph view: a prompt's graph (``mechscope.graphs``) computed as a job or opened from a graph.json.

A graph is computed with the graphs family's declared method (``graphs.METHODS["attribution-graph"]``: the form's
settings are its config fields) over the transcoders the server was started with (``mechscope serve --transcoders
DIR``), and held in memory as ``graph:N``; a saved ``graph.json`` under the run directories opens too (its
reference). The view prunes the held graph at the node and edge thresholds the sliders set (``AttributionGraph.
prune``, on the server: the page draws what the library kept), lists a node's strongest incoming and outgoing
edges in the full graph, adds supernodes to the held graph (downloaded with it), and verifies a feature node by
intervening on it in the real model (``graphs.verify`` on that node: predicted against real changes downstream).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from ._lab import BadRequest

METHOD = "attribution-graph"
"""The graphs family's declared method the view runs."""
MAX_VIEW_NODES = 2000
"""The most nodes a view returns: a looser pruning than this is refused with a sentence (lower the threshold)."""
MAX_VIEW_EDGES = 5000
"""The strongest edges a view returns (``n_edges`` counts all the pruned graph keeps), as the circuit view draws."""


def spec() -> Any:
    from ..graphs import METHODS

    return METHODS[METHOD]


def describe(transcoders: Any) -> dict[str, Any]:
    """The declared method (its settings come from its config's fields) and what the server's transcoders are."""
    return {"method": spec().describe(), "transcoders": transcoders_info(transcoders)}


def transcoders_info(transcoders: Any) -> dict[str, Any] | None:
    if transcoders is None:
        return None
    if isinstance(transcoders, dict):
        first = next(iter(transcoders.values()))
        return {"kind": "per-layer", "layers": sorted(transcoders), "d_sae": int(first.cfg.d_sae)}
    return {"kind": "cross-layer", "layers": list(range(int(transcoders.cfg.n_layers))),
            "d_sae": int(transcoders.cfg.d_sae)}  # fmt: skip


def run(rm: Any, prompt: str, target: str | None, settings: dict[str, Any]) -> Any:
    """The graph of ``prompt`` (a job on the model worker): the declared method with these settings."""
    s = spec()
    config = s.make_config(**settings)
    return s.fn(rm, prompt, None, config, target=target or None)


def view(graph: Any, ref: str, node_threshold: float, edge_threshold: float) -> dict[str, Any]:
    """The graph pruned at these thresholds: nodes (with their influence), edges, scores and supernodes."""
    full_influence = graph.node_influence()
    pruned = graph.prune(node_threshold, edge_threshold)
    if len(pruned.nodes) > MAX_VIEW_NODES:
        raise BadRequest(f"the graph pruned at node threshold {node_threshold} keeps {len(pruned.nodes)} nodes; at "
                         f"most {MAX_VIEW_NODES} are drawn: lower the node threshold")  # fmt: skip
    index = {n.id: i for i, n in enumerate(graph.nodes)}
    t, s = pruned.adjacency.nonzero(as_tuple=True)
    weights = pruned.adjacency[t, s].tolist()
    edges = sorted(zip(t.tolist(), s.tolist(), weights, strict=True), key=lambda e: -abs(e[2]))
    return {
        "ref": ref,
        "prompt": graph.prompt,
        "tokens": list(graph.tokens),
        "n_layers": graph.n_layers,
        "model": graph.model,
        "config": graph.config,
        "stats": None if graph.stats is None else asdict(graph.stats),
        "full": {
            "nodes": len(graph.nodes),
            "edges": int((graph.adjacency != 0).sum()),
            "features": int(graph.mask("feature").sum()),
            "replacement": graph.replacement_score(),
            "completeness": graph.completeness_score(),
        },
        "pruned": {
            **(pruned.pruned or {}),
            "replacement": pruned.replacement_score(),
            "completeness": pruned.completeness_score(),
        },
        "nodes": [{**_node(n), "influence": float(full_influence[index[n.id]])} for n in pruned.nodes],
        "edges": [[int(a), int(b), float(w)] for a, b, w in edges[:MAX_VIEW_EDGES]],
        "n_edges": len(edges),
        "supernodes": {k: list(v) for k, v in graph.supernodes.items()},
    }


def _node(n: Any) -> dict[str, Any]:
    return {"id": n.id, **asdict(n)}


def node(graph: Any, node_id: str, k: int) -> dict[str, Any]:
    """A node of the full graph: its activation and influence, its ``k`` strongest incoming and outgoing edges."""
    i = graph.index(node_id)
    inf = graph.node_influence()

    def strongest(weights: torch.Tensor) -> list[dict[str, Any]]:
        nz = weights.nonzero().squeeze(1)
        order = nz[torch.argsort(weights[nz].abs(), descending=True)][:k]
        return [{"node": graph.nodes[j].id, "weight": float(weights[j])} for j in order.tolist()]

    return {
        "node": {**_node(graph.nodes[i]), "influence": float(inf[i])},
        "incoming": strongest(graph.adjacency[i]),
        "outgoing": strongest(graph.adjacency[:, i]),
        "supernodes": [name for name, ids in graph.supernodes.items() if node_id in ids],
    }


def supernode(graph: Any, name: str, nodes: list[Any]) -> Any:
    """The graph with supernode ``name`` (node ids) added; a name already used is replaced."""
    if not name.strip():
        raise BadRequest("name the supernode (a non-empty name)")
    if not nodes or not all(isinstance(n, str) for n in nodes):
        raise BadRequest("nodes must be a non-empty list of node ids, e.g. 'feature:0:5@2'")
    if len(set(nodes)) != len(nodes):
        raise BadRequest("a supernode lists each node once")
    return graph.with_supernodes(**{name.strip(): nodes})


def check_model(graph: Any, model: Any) -> None:
    """Refuse a graph computed on another model (its weights' checksum differs from the served model's)."""
    theirs = graph.model.get("weights_sha256")
    ours = model.provenance.get("weights_sha256")
    if theirs and ours and theirs != ours:
        raise BadRequest(f"the graph was computed on {graph.model.get('model', 'another model')} (weights "
                         f"{theirs[:12]}…), not on the served {model.name} ({ours[:12]}…): start the server with "
                         "that model to verify it")  # fmt: skip


def verify_node(rm: Any, graph: Any, node_id: str, factor: float, value: float | None) -> dict[str, Any]:
    """Intervene on one feature node in the real model (a job): the graph's predicted changes beside the real ones."""
    from ..graphs import verify

    result = verify(rm, graph, n=1, factor=factor, value=value, nodes=[node_id])
    check = result.checks[0]
    return {
        "node": check.node,
        "factor": check.factor,
        "value": check.value,
        "rows": [
            {"target": t, "predicted": p, "real": r}
            for t, p, r in zip(check.targets, check.predicted, check.real, strict=True)
        ],
        "correlation": check.correlation,
        "slope": result.slope,
        "mean_abs_error": result.mean_abs_error,
    }
