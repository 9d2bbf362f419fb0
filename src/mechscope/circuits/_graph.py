"""The computational graph of a transformer, circuits as sets of its edges, and edge scores.

The residual stream is a sum: block ``L`` reads ``embed + sum of what every earlier head and MLP wrote`` (plus
constant biases). Splitting each reader's input into one term per writer gives a graph whose *edges* can be kept
or ablated one at a time (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits"; Hanna et al.
2024, "Have Faith in Faithfulness", section 2; the graph of the MIB benchmark, Mueller et al. 2025, section 3).

*Senders* write to the residual stream: ``input`` (the residual stream entering block 0: token embeddings, plus
position embeddings where the model adds them there), every attention head ``a{L}.h{H}`` and every MLP ``m{L}``.
*Receivers* read it: each head's query, key and value inputs (``a{L}.h{H}<q>``; under grouped-query attention
keys and values are computed once per key/value head, so those receivers are ``a{L}.kv{K}<k>`` and
``a{L}.kv{K}<v>``), each MLP's input ``m{L}`` and the ``logits``. Every sender upstream of a receiver has an edge
to it: heads of layer ``L`` read senders of layers ``< L``; MLP ``L`` also reads layer ``L``'s heads unless
attention and MLP run in parallel (GPT-NeoX); the logits read every sender. Names match MIB's where the graphs
coincide.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..core._sites import ModelConfig
from ._ids import EdgeId, NodeId, Part, receiver_name

if TYPE_CHECKING:
    from ._eap import EdgeCheck


class Sender(NamedTuple):
    """A node that writes to the residual stream."""

    name: str
    kind: Literal["input", "head", "mlp"]
    layer: int
    """-1 for the input."""
    head: int | None = None

    @property
    def node(self) -> NodeId:
        if self.kind == "input":
            return NodeId("input")
        return NodeId(self.kind, self.layer, self.head)


class Receiver(NamedTuple):
    """A node input that reads the residual stream; senders ``0 .. n_upstream - 1`` feed it."""

    name: str
    kind: Literal["q", "k", "v", "mlp", "logits"]
    layer: int
    """``n_layers`` for the logits."""
    head: int | None
    """Query head (``q``) or key/value head (``k``, ``v``)."""
    n_upstream: int
    grouped: bool = False
    """Keys and values are per key/value head (grouped-query attention): ``k``/``v`` receivers are ``a{L}.kv{K}``."""

    @property
    def node(self) -> NodeId:
        """The receiving node (a head, a key/value head, an MLP or the logits), without the input it reads."""
        if self.kind == "logits":
            return NodeId("logits")
        if self.kind == "mlp":
            return NodeId.mlp(self.layer)
        return NodeId("kv" if self.grouped and self.kind != "q" else "head", self.layer, self.head)

    @property
    def part(self) -> Part | None:
        return self.kind if self.kind in ("q", "k", "v") else None  # type: ignore[return-value]


@dataclass(frozen=True)
class Graph:
    """Senders, receivers and edges of a transformer with these dimensions.

    Edges are numbered receiver by receiver (in forward order), and within a receiver by sender; ``dense`` and
    ``flat`` convert between that numbering and a ``[sender receiver]`` matrix (zero where there is no edge).
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    parallel: bool
    """Attention and MLP read the same residual stream, so MLP ``L`` does not see layer ``L``'s heads."""

    @classmethod
    def of(cls, cfg: ModelConfig) -> Graph:
        """The graph of a model with config ``cfg`` (``model.cfg``)."""
        return cls(cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.parallel)

    def head_index(self, layer: int, head: int) -> int:
        """Sender index of head ``(layer, head)``."""
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_index(self, layer: int) -> int:
        """Sender index of MLP ``layer``."""
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    @cached_property
    def senders(self) -> tuple[Sender, ...]:
        out = [Sender("input", "input", -1)]
        for layer in range(self.n_layers):
            out += [Sender(NodeId.head(layer, h).format(), "head", layer, h) for h in range(self.n_heads)]
            out.append(Sender(NodeId.mlp(layer).format(), "mlp", layer))
        return tuple(out)

    @cached_property
    def receivers(self) -> tuple[Receiver, ...]:
        grouped = self.n_kv_heads != self.n_heads
        out = []

        def add(kind: Any, layer: int, head: int | None, n_up: int) -> None:
            r = Receiver("", kind, layer, head, n_up, grouped)
            out.append(r._replace(name=receiver_name(r.node, r.part)))

        for layer in range(self.n_layers):
            before = self.head_index(layer, 0)  # input and everything in earlier layers
            for h in range(self.n_heads):
                add("q", layer, h, before)
            for part in ("k", "v"):
                for g in range(self.n_kv_heads):
                    add(part, layer, g, before)
            add("mlp", layer, None, before if self.parallel else self.mlp_index(layer))
        add("logits", self.n_layers, None, len(self.senders))
        return tuple(out)

    @cached_property
    def upstream(self) -> Bool[Tensor, "sender receiver"]:
        """Which ``[sender, receiver]`` pairs are edges."""
        n_up = torch.tensor([r.n_upstream for r in self.receivers])
        return torch.arange(len(self.senders))[:, None] < n_up[None, :]

    @cached_property
    def n_edges(self) -> int:
        return sum(r.n_upstream for r in self.receivers)

    def edges(self) -> list[tuple[Sender, Receiver]]:
        """Every edge as ``(sender, receiver)``, in edge order."""
        return [(self.senders[u], r) for r in self.receivers for u in range(r.n_upstream)]

    def edge_ids(self) -> list[EdgeId]:
        """Every edge as a typed ``EdgeId``, in edge order."""
        return [EdgeId(s.node, r.node, r.part) for s, r in self.edges()]

    def edge_names(self) -> list[str]:
        """Every edge as ``"sender->receiver"`` (MIB's format, ``EdgeId.format``), in edge order."""
        return [e.format() for e in self.edge_ids()]

    def dense(self, values: Tensor) -> Tensor:
        """``[edge ...]`` values as a ``[sender receiver ...]`` matrix, zero where there is no edge."""
        out = values.new_zeros((len(self.receivers), len(self.senders), *values.shape[1:]))
        out[self.upstream.T.to(values.device)] = values
        return out.transpose(0, 1)

    def flat(self, matrix: Tensor) -> Tensor:
        """The edges of a ``[sender receiver ...]`` matrix, in edge order."""
        return matrix.transpose(0, 1)[self.upstream.T.to(matrix.device)]

    def to_dict(self) -> dict[str, Any]:
        return {"n_layers": self.n_layers, "n_heads": self.n_heads, "n_kv_heads": self.n_kv_heads,
                "parallel": self.parallel, "n_edges": self.n_edges}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Graph:
        return cls(d["n_layers"], d["n_heads"], d["n_kv_heads"], d["parallel"])


@dataclass(frozen=True, eq=False)
class Circuit:
    """A subgraph: the set of edges kept. Everything else carries the ablated (corrupt) value."""

    graph: Graph
    edges: Bool[Tensor, " edge"]
    """Mask over the graph's edges, in edge order."""

    def __post_init__(self) -> None:
        if self.edges.dtype != torch.bool or tuple(self.edges.shape) != (self.graph.n_edges,):
            raise ValueError(f"a circuit's edges must be a bool mask of shape [{self.graph.n_edges}], "
                             f"got {self.edges.dtype} {list(self.edges.shape)}")  # fmt: skip

    def __repr__(self) -> str:
        return f"Circuit({self.n_edges} of {self.graph.n_edges} edges, {len(self.nodes())} nodes)"

    @classmethod
    def full(cls, graph: Graph) -> Circuit:
        return cls(graph, torch.ones(graph.n_edges, dtype=torch.bool))

    @classmethod
    def empty(cls, graph: Graph) -> Circuit:
        return cls(graph, torch.zeros(graph.n_edges, dtype=torch.bool))

    @classmethod
    def random(cls, graph: Graph, n: int, seed: int = 0) -> Circuit:
        """``n`` edges drawn uniformly without replacement (the baseline of faithfulness curves)."""
        picked = _random.Random(seed).sample(range(graph.n_edges), min(n, graph.n_edges))
        mask = torch.zeros(graph.n_edges, dtype=torch.bool)
        mask[picked] = True
        return cls(graph, mask)

    @classmethod
    def from_edge_names(cls, graph: Graph, names: list[str] | list[EdgeId]) -> Circuit:
        """A circuit from edges, typed or named ``"sender->receiver"`` (as ``to_dict`` writes them).

        A malformed name raises ``ComponentNameError``; an edge the graph lacks, ValueError.
        """
        index = {edge: i for i, edge in enumerate(graph.edge_ids())}
        edges = [EdgeId.parse(n) if isinstance(n, str) else n for n in names]
        unknown = [e.format() for e in edges if e not in index]
        if unknown:
            raise ValueError(f"not edges of this graph: {unknown[:5]} (e.g. {graph.edge_names()[0]!r})")
        mask = torch.zeros(graph.n_edges, dtype=torch.bool)
        mask[[index[e] for e in edges]] = True
        return cls(graph, mask)

    @classmethod
    def from_nodes(cls, graph: Graph, senders: list[str]) -> Circuit:
        """Every edge out of the given senders (and out of ``input``): a node-level circuit as edges.

        Removing a node means every reader sees its ablated output, which is exactly ablating all its out-edges.
        """
        keep = {NodeId("input"), *(NodeId.parse(s) for s in senders)}
        mask = torch.tensor([s.node in keep for s, _ in graph.edges()], dtype=torch.bool)
        return cls(graph, mask)

    @property
    def n_edges(self) -> int:
        return int(self.edges.sum())

    @property
    def fraction(self) -> float:
        """Share of the graph's edges kept."""
        return self.n_edges / self.graph.n_edges

    def edge_names(self) -> list[str]:
        names = self.graph.edge_names()
        return [names[i] for i in torch.nonzero(self.edges).flatten().tolist()]

    def nodes(self) -> list[str]:
        """Senders and receivers touched by a kept edge, in graph order."""
        pairs = [e for e, keep in zip(self.graph.edges(), self.edges.tolist(), strict=True) if keep]
        used = {s.name for s, _ in pairs} | {r.name for _, r in pairs}
        order = [s.name for s in self.graph.senders] + [r.name for r in self.graph.receivers]
        return [n for n in dict.fromkeys(order) if n in used]

    def to_dict(self) -> dict[str, Any]:
        return {"graph": self.graph.to_dict(), "n_edges": self.n_edges, "edges": self.edge_names()}

    def to_dot(self) -> str:
        """The circuit as a Graphviz DOT graph (receivers of a head drawn as the head, edges labelled q/k/v)."""
        lines = ["digraph circuit {", "  rankdir=BT; node [shape=box, fontsize=10];"]
        for s, r in [e for e, keep in zip(self.graph.edges(), self.edges.tolist(), strict=True) if keep]:
            target = r.node.format()
            label = f' [label="{r.kind}"]' if r.kind in ("q", "k", "v") else ""
            lines.append(f'  "{s.name}" -> "{target}"{label};')
        lines.append("}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class EdgeScores:
    """Estimated effect of every edge of the graph on the task metric (EAP or EAP-IG).

    ``scores[e]`` estimates how much the mean metric moves when edge ``e`` alone is patched: in the denoising
    direction the corrupt run with that edge carrying its clean value, minus the corrupt run; in the noising
    direction the clean run with the edge corrupted, minus the clean run. Units are the metric's.
    """

    graph: Graph
    scores: Float[Tensor, " edge"]
    method: Literal["eap", "eap-ig"]
    direction: Literal["denoising", "noising"]
    steps: int
    """Integrated-gradient steps (1 for EAP)."""
    clean_metric: float
    corrupt_metric: float
    metric: str
    task: str
    model: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    check: EdgeCheck | None = None
    """Agreement with real edge patching on a sample, when asked for (``verify=n``)."""

    @property
    def completeness(self) -> float:
        """Sum of the scores of the edges out of ``input`` over the whole change they estimate (ideally 1).

        Every path starts at the input, so for EAP-IG this is integrated gradients' completeness (Hanna et al.
        2024, section 3): far from 1 means the Riemann sum is too coarse, so raise ``steps``. For EAP it measures
        how linear the model is between the two runs.
        """
        inputs = torch.tensor([s.kind == "input" for s, _ in self.graph.edges()])
        change = self.clean_metric - self.corrupt_metric
        change = change if self.direction == "denoising" else -change
        return float(self.scores[inputs].sum()) / change if change else float("nan")

    def matrix(self) -> Float[Tensor, "sender receiver"]:
        """Scores as a ``[sender receiver]`` matrix (zero where there is no edge)."""
        return self.graph.dense(self.scores)

    @property
    def gain(self) -> Float[Tensor, " edge"]:
        """Signed scores oriented so that positive means keeping the edge raises the metric.

        Denoising scores already are (restoring the edge's clean value moves the corrupt run toward the clean
        one); noising scores are negated (corrupting an edge that carries the behaviour lowers the metric). MIB
        ranks edges by this for CPR (Mueller et al. 2025, section 4).
        """
        return self.scores if self.direction == "denoising" else -self.scores

    def ranking(self, absolute: bool = True) -> Tensor:
        """Edge indices from the highest ``|score|`` down (``absolute=False``: highest ``gain``); ties by edge order."""
        key = self.scores.abs() if absolute else self.gain
        return torch.sort(key, descending=True, stable=True).indices

    def top(self, n: int, *, absolute: bool = True) -> Circuit:
        """The circuit of the ``n`` highest-scoring edges (by ``|score|``; by ``gain`` when ``absolute=False``)."""
        mask = torch.zeros(self.graph.n_edges, dtype=torch.bool)
        mask[self.ranking(absolute)[: max(0, n)]] = True
        return Circuit(self.graph, mask)

    def threshold(self, t: float, *, absolute: bool = True) -> Circuit:
        """The circuit of every edge scoring at least ``t`` (``|score| >= t``; ``gain >= t`` if not ``absolute``)."""
        key = self.scores.abs() if absolute else self.gain
        return Circuit(self.graph, key >= t)

    def top_edges(self, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` edges with the largest ``|score|``, with their scores."""
        names = self.graph.edge_names()
        return [(names[i], float(self.scores[i])) for i in self.ranking()[:n].tolist()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph.to_dict(),
            "senders": [s.name for s in self.graph.senders],
            "receivers": [r.name for r in self.graph.receivers],
            "edges": self.graph.edge_names(),
            "scores": self.scores.tolist(),
            "method": self.method,
            "direction": self.direction,
            "steps": self.steps,
            "completeness": self.completeness,
            "clean_metric": self.clean_metric,
            "corrupt_metric": self.corrupt_metric,
            "metric": self.metric,
            "task": self.task,
            "model": self.model,
            "seconds": self.seconds,
            "check": self.check.to_dict() if self.check is not None else None,
        }
