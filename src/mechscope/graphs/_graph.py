"""The attribution graph of one prompt: nodes, direct-effect adjacency, influence, pruning, scores and files.

Nodes come in circuit-tracer's order: active features (layer-major), error nodes (layer-major, then position),
token embeddings (per position), output logits. ``adjacency[t, s]`` is the direct linear effect of source ``s`` on
target ``t`` (rows are targets, columns sources); only features and logits have rows.

Influence (Ameisen et al. 2025, "Circuit Tracing", §"Graph pruning"; circuit-tracer's ``graph.py``): with ``Â`` the
adjacency with absolute values and each row normalised to sum 1, and ``w`` the logit nodes' probabilities, a node's
influence on the logits is ``(w (Â + Â² + ...))``, every path's product of normalised edge weights.
``prune`` keeps the nodes holding ``node_threshold`` of the total influence (tokens and logits always), then the
edges holding ``edge_threshold`` of the total edge influence, then drops features left without edges.

The two scores (same source): replacement score = the share of the tokens' and error nodes' influence that starts
at tokens (paths through features only); completeness score = the influence-weighted mean, over nodes, of the share
of each node's incoming (normalised) edge weight that does not come from error nodes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

NodeKind = Literal["feature", "error", "embedding", "logit"]
KINDS: tuple[NodeKind, ...] = ("feature", "error", "embedding", "logit")
FORMAT = "mechscope.attribution_graph"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GraphNode:
    """One node of an attribution graph."""

    kind: NodeKind
    """``feature`` (an active transcoder feature), ``error`` (a layer's MLP error at a position), ``embedding`` (the
    residual stream entering block 0 at a position) or ``logit`` (an output token at the last position)."""
    layer: int
    """Transcoder layer for features and errors; -1 for embeddings; ``n_layers`` for logits."""
    position: int
    """Token position."""
    feature: int | None = None
    """Feature id within its layer's transcoder (feature nodes only)."""
    activation: float | None = None
    """Feature activation (features); the logit (logits); the error vector's norm (errors); None for embeddings."""
    token: str = ""
    """The input token at ``position`` (features, errors, embeddings) or the output token (logits)."""
    token_id: int | None = None
    """Id of ``token``."""
    probability: float | None = None
    """Softmax probability of the output token (logit nodes)."""

    @property
    def id(self) -> str:
        """Stable name: ``feature:L:F@P``, ``error:L@P``, ``embedding@P``, ``logit:TOKEN_ID``."""
        if self.kind == "feature":
            return f"feature:{self.layer}:{self.feature}@{self.position}"
        if self.kind == "error":
            return f"error:{self.layer}@{self.position}"
        if self.kind == "embedding":
            return f"embedding@{self.position}"
        return f"logit:{self.token_id}"


@dataclass(frozen=True)
class GraphStats:
    """How a graph was computed: its size and its cost."""

    n_active_features: int
    """Active features on the prompt (all of them are sources in the computed rows; ``max_feature_nodes`` of them
    became nodes)."""
    n_rows: int
    """Target rows computed (logits plus feature nodes)."""
    batch_size: int
    """Rows per backward pass (the forward pass ran at this batch size once)."""
    n_backward: int
    """Backward passes, each over ``batch_size`` rows."""
    seconds: float
    """Wall time of ``attribute``."""


@dataclass(frozen=True, eq=False)
class AttributionGraph:
    """Nodes, direct-effect adjacency (rows targets, columns sources) and the prompt they explain."""

    prompt: str
    """The prompt's text (decoded from its tokens when given as ids)."""
    tokens: tuple[str, ...]
    """The prompt's tokens, as text."""
    token_ids: tuple[int, ...]
    """The prompt's token ids."""
    nodes: list[GraphNode]
    """Features, errors, embeddings, logits, in that order."""
    adjacency: Float[Tensor, "n_nodes n_nodes"]
    """``adjacency[t, s]``: direct effect of node ``s`` on node ``t`` (feature pre-activation, or the logit minus
    the mean logit), through the frozen residual stream and attention OV paths."""
    n_layers: int
    """Layers of the model (one transcoder each)."""
    model: dict[str, Any] = field(default_factory=dict)
    """The model's provenance (name, weights checksum, dtype)."""
    config: dict[str, Any] = field(default_factory=dict)
    """The ``GraphConfig`` it was built with, as a dict."""
    stats: GraphStats | None = None
    """Size and cost of the computation (None after loading a file without them)."""
    supernodes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """User groupings of nodes: a name to node ids (``GraphNode.id``); saved with the graph."""
    pruned: dict[str, float] | None = None
    """The thresholds ``prune`` kept this graph at; None for a full graph."""

    def __post_init__(self) -> None:
        n = len(self.nodes)
        if tuple(self.adjacency.shape) != (n, n):
            raise ValueError(f"adjacency has shape {list(self.adjacency.shape)}; {n} nodes need [{n}, {n}]")
        known = {node.id for node in self.nodes}
        for name, ids in self.supernodes.items():
            unknown = [i for i in ids if i not in known]
            if unknown:
                raise ValueError(f"supernode {name!r} names nodes that are not in the graph: {unknown[:5]}")

    # --- structure -------------------------------------------------------------------------------------------

    def mask(self, kind: NodeKind) -> torch.Tensor:
        """Boolean mask of the nodes of ``kind``."""
        return torch.tensor([node.kind == kind for node in self.nodes], dtype=torch.bool)

    def index(self, node_id: str) -> int:
        """Position of the node named ``node_id`` in ``nodes`` (KeyError naming it when absent)."""
        for i, node in enumerate(self.nodes):
            if node.id == node_id:
                return i
        raise KeyError(f"no node {node_id!r} in this graph ({len(self.nodes)} nodes)")

    def logit_weights(self) -> Float[Tensor, " n_nodes"]:
        """The logit nodes' probabilities (renormalised to sum 1), zero elsewhere: where influence starts."""
        w = torch.zeros(len(self.nodes), dtype=torch.float64)
        for i, node in enumerate(self.nodes):
            if node.kind == "logit":
                w[i] = node.probability if node.probability is not None else 1.0
        total = float(w.sum())
        return w / total if total > 0 else w

    def node_influence(self) -> Float[Tensor, " n_nodes"]:
        """Each node's influence on the logits: ``w (Â + Â² + ...)`` (see the module docstring)."""
        return influence(normalize(self.adjacency), self.logit_weights())

    def replacement_score(self) -> float:
        """Share of the tokens' and errors' influence on the logits that starts at tokens (1: no error on any path)."""
        inf = self.node_influence()
        tokens, errors = float(inf[self.mask("embedding")].sum()), float(inf[self.mask("error")].sum())
        return tokens / (tokens + errors) if tokens + errors > 0 else float("nan")

    def completeness_score(self) -> float:
        """Influence-weighted share of the nodes' incoming edge weight that comes from features and tokens."""
        a = normalize(self.adjacency)
        w = self.logit_weights()
        out = influence(a, w) + w
        non_error = 1 - a[:, self.mask("error")].sum(-1)
        return float((non_error * out).sum() / out.sum()) if float(out.sum()) > 0 else float("nan")

    # --- pruning ---------------------------------------------------------------------------------------------

    def prune(self, node_threshold: float | None = None, edge_threshold: float | None = None) -> AttributionGraph:
        """Keep the nodes and edges holding these shares of the influence on the logits (defaults: the config's).

        Tokens and logits always stay; features and errors without an outgoing edge, and features without an
        incoming one, go (repeatedly, as removing one can strand another). Supernodes keep their surviving members.
        """
        node_threshold = self.config.get("node_threshold", 0.8) if node_threshold is None else node_threshold
        edge_threshold = self.config.get("edge_threshold", 0.98) if edge_threshold is None else edge_threshold
        for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        w = self.logit_weights()
        always = self.mask("embedding") | self.mask("logit")
        node_inf = influence(normalize(self.adjacency), w)
        keep = (node_inf >= cumulative_threshold(node_inf, node_threshold)) | always
        a = self.adjacency.clone()
        a[~keep] = 0
        a[:, ~keep] = 0
        an = normalize(a)
        edge_scores = an * (influence(an, w) + w)[:, None]
        edges = (edge_scores >= cumulative_threshold(edge_scores.flatten(), edge_threshold)) & (a != 0)
        features, middle = self.mask("feature"), ~always
        while True:
            before = keep.clone()
            edges &= keep[:, None] & keep[None, :]
            keep &= ~middle | edges.any(0)  # features and errors need an outgoing edge
            keep &= ~features | edges.any(1)  # features need an incoming edge
            if bool((keep == before).all()):
                break
        idx = keep.nonzero().squeeze(1)
        adjacency = torch.where(edges, self.adjacency, torch.zeros_like(self.adjacency))[idx][:, idx]
        nodes = [self.nodes[i] for i in idx.tolist()]
        kept = {node.id for node in nodes}
        supernodes = {name: tuple(i for i in ids if i in kept) for name, ids in self.supernodes.items()}
        thresholds = {"node_threshold": float(node_threshold), "edge_threshold": float(edge_threshold)}
        return replace(self, nodes=nodes, adjacency=adjacency, supernodes=supernodes, pruned=thresholds)

    def with_supernodes(self, **groups: list[str] | tuple[str, ...]) -> AttributionGraph:
        """A copy with these supernodes added (name -> node ids); saved with the graph and exported to viewers."""
        return replace(self, supernodes={**self.supernodes, **{k: tuple(v) for k, v in groups.items()}})

    # --- files -----------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: nodes, nonzero edges as ``[target, source, weight]``, supernodes, config, provenance."""
        t, s = self.adjacency.nonzero(as_tuple=True)
        weights = self.adjacency[t, s].tolist()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "prompt": self.prompt,
            "tokens": list(self.tokens),
            "token_ids": list(self.token_ids),
            "n_layers": self.n_layers,
            "nodes": [{"id": n.id, **asdict(n)} for n in self.nodes],
            "edges": [[int(a), int(b), float(c)] for a, b, c in zip(t.tolist(), s.tolist(), weights, strict=True)],
            "supernodes": {k: list(v) for k, v in self.supernodes.items()},
            "model": self.model,
            "config": self.config,
            "stats": asdict(self.stats) if self.stats is not None else None,
            "pruned": self.pruned,
            "scores": {
                "replacement": _finite(self.replacement_score()),
                "completeness": _finite(self.completeness_score()),
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttributionGraph:
        """Rebuild a graph from ``to_dict``'s output (ValueError naming what is wrong with it)."""
        if data.get("format") != FORMAT:
            raise ValueError(f"not a mechscope attribution graph (format {data.get('format')!r}, expected {FORMAT!r})")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"graph format version {data['format_version']} is newer than this mechscope reads "
                             f"({FORMAT_VERSION}): upgrade mechscope")  # fmt: skip
        nodes = [GraphNode(**{k: v for k, v in n.items() if k != "id"}) for n in data["nodes"]]
        adjacency = torch.zeros(len(nodes), len(nodes))
        if data["edges"]:
            edges = torch.tensor(data["edges"], dtype=torch.float64)
            adjacency[edges[:, 0].long(), edges[:, 1].long()] = edges[:, 2].float()
        stats = GraphStats(**data["stats"]) if data.get("stats") else None
        return cls(data["prompt"], tuple(data["tokens"]), tuple(data["token_ids"]), nodes, adjacency,
                   data["n_layers"], data.get("model", {}), data.get("config", {}), stats,
                   {k: tuple(v) for k, v in data.get("supernodes", {}).items()}, data.get("pruned"))  # fmt: skip

    def to_json(self) -> str:
        """``to_dict`` as JSON text."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> AttributionGraph:
        """Rebuild a graph from ``to_json``'s text."""
        return cls.from_dict(json.loads(text))

    def to_graph_json(self, slug: str = "mechscope-graph", scan: str | None = None) -> dict[str, Any]:
        """The graph in the JSON that circuit-tracer's and Neuronpedia's graph viewers read.

        Fields map as in circuit-tracer's ``create_graph_files``: node ids ``{layer}_{feature}_{pos}`` (features),
        ``0_{layer}_{pos}`` (errors), ``E_{token_id}_{pos}`` (embeddings), ``{n_layers+1}_{token_id}_{pos}``
        (logits); ``influence`` is the node's cumulative influence share; links carry the adjacency's weights;
        supernodes go to ``qParams.supernodes`` as ``[name, node_id, ...]``. Prune first for a viewable size.
        """
        inf = self.node_influence()
        order = torch.argsort(inf, descending=True)
        cumulative = torch.zeros_like(inf)
        total = float(inf.sum())
        if total > 0:
            cumulative[order] = torch.cumsum(inf[order], 0) / total
        ids = [_viewer_id(n, self.n_layers) for n in self.nodes]
        first_logit = next((i for i, n in enumerate(self.nodes) if n.kind == "logit"), -1)
        nodes = [_viewer_node(n, ids[i], self.n_layers, float(cumulative[i])) for i, n in enumerate(self.nodes)]
        if first_logit >= 0:  # circuit-tracer marks the most probable logit as the target
            nodes[first_logit]["is_target_logit"] = True
        t, s = self.adjacency.nonzero(as_tuple=True)
        links = [{"source": ids[b], "target": ids[a], "weight": float(self.adjacency[a, b])}
                 for a, b in zip(t.tolist(), s.tolist(), strict=True)]  # fmt: skip
        by_id = dict(zip((n.id for n in self.nodes), ids, strict=True))
        supernodes = [[name, *(by_id[i] for i in members)] for name, members in self.supernodes.items()]
        return {
            "metadata": {
                "slug": slug,
                "scan": scan or self.model.get("model", "mechscope"),
                "transcoder_list": [],
                "prompt_tokens": [_viewer_token(t) for t in self.tokens],
                "prompt": self.prompt,
                "node_threshold": (self.pruned or {}).get("node_threshold"),
            },
            "qParams": {"pinnedIds": [], "supernodes": supernodes, "linkType": "both", "clickedId": "", "sg_pos": ""},
            "nodes": nodes,
            "links": links,
        }


def normalize(matrix: Tensor) -> Float[Tensor, "n n"]:
    """Absolute values, each row scaled to sum 1 (rows of zeros stay zero); float64."""
    a = matrix.abs().double()
    return a / a.sum(1, keepdim=True).clamp(min=1e-30)


def influence(a: Tensor, weights: Tensor, max_iter: int = 10_000) -> Float[Tensor, " n"]:
    """``weights (a + a² + ...)`` for a nilpotent ``a`` (a DAG), summed until the paths run out."""
    current = weights.double() @ a
    total = current.clone()
    for _ in range(max_iter):
        if not bool(current.any()):
            return total
        current = current @ a
        total += current
    raise RuntimeError("influence did not converge: the adjacency has a cycle (a graph's edges must point forward)")


def cumulative_threshold(scores: Tensor, share: float) -> float:
    """The score above which the largest scores add up to ``share`` of the total (circuit-tracer's rule)."""
    ordered = torch.sort(scores.flatten(), descending=True).values
    total = float(ordered.sum())
    if total <= 0:
        return math.inf
    cum = torch.cumsum(ordered, 0) / total
    i = min(int(torch.searchsorted(cum, torch.tensor(share, dtype=cum.dtype))), len(cum) - 1)
    return float(ordered[i])


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _viewer_token(text: str) -> str:
    return text.replace("\n", "⏎").replace("\t", "→").replace("\r", "↵")


def _viewer_id(node: GraphNode, n_layers: int) -> str:
    if node.kind == "feature":
        return f"{node.layer}_{node.feature}_{node.position}"
    if node.kind == "error":
        return f"0_{node.layer}_{node.position}"
    if node.kind == "embedding":
        return f"E_{node.token_id}_{node.position}"
    return f"{n_layers + 1}_{node.token_id}_{node.position}"


def _viewer_node(node: GraphNode, node_id: str, n_layers: int, influence_share: float) -> dict[str, Any]:
    base = {"node_id": node_id, "ctx_idx": node.position, "run_idx": 0, "reverse_ctx_idx": 0, "clerp": "",
            "influence": influence_share, "token_prob": 0.0, "is_target_logit": False}  # fmt: skip
    if node.kind == "feature":
        return {**base, "feature": node.feature, "layer": str(node.layer), "feature_type": "cross layer transcoder",
                "jsNodeId": f"{node.layer}_{node.feature}-0", "activation": node.activation}  # fmt: skip
    if node.kind == "error":
        return {**base, "feature": -1, "layer": str(node.layer), "feature_type": "mlp reconstruction error",
                "jsNodeId": f"{node.layer}_{node.position}-0", "activation": None}  # fmt: skip
    if node.kind == "embedding":
        return {**base, "feature": node.position, "layer": "E", "feature_type": "embedding",
                "jsNodeId": f"E_{node.token_id}-{node.position}", "activation": None}  # fmt: skip
    p = node.probability or 0.0
    return {**base, "feature": node.token_id, "layer": str(n_layers + 1), "feature_type": "logit", "token_prob": p,
            "is_target_logit": False, "jsNodeId": f"L_{node.token_id}-{node.position}", "activation": None,
            "clerp": f'Output "{_viewer_token(node.token)}" (p={p:.3f})'}  # fmt: skip
