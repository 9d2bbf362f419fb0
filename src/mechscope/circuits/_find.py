"""``find_circuit``: find a circuit, check it against random circuits of its size, and trace its faithfulness curve.

The pipeline every front end shares (``mechscope circuit``, the bench, the demo's analysis): run one declared
circuit method (``METHODS``) with its config; pick the circuit (an edge method's top ``n`` edges or those above
a threshold, or a node method's own circuit); measure the faithfulness of that circuit and of ``random`` random
circuits of the same size (Hanna et al. 2024, "Have Faith in Faithfulness", section 2); and, for edge methods,
the faithfulness curve of the method's top circuits at MIB's fixed sizes against random circuits, with CPR and
CMD (Mueller et al. 2025, "MIB", section 4). The result, ``CircuitRun``, is data: ``mechscope.report`` writes
its files and pictures.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..core._model import Model
from ..core._registry import MethodSpec
from ..data._task import Task
from ._faithfulness import SIZES, FaithfulnessCurve, faithfulness, ranking_curve, tie_orders
from ._graph import Circuit, EdgeScores, Graph
from ._registry import METHODS

DEFAULT_FRACTION = 0.005
"""Circuit size when neither ``top`` nor ``threshold`` is given: this fraction of the graph's edges."""


@runtime_checkable
class NodeCircuit(Protocol):
    """What a node-level circuit method returns (e.g. ``ACDCResult``): its graph, its circuit, a JSON form."""

    @property
    def graph(self) -> Graph: ...

    def circuit(self) -> Circuit: ...

    def to_dict(self) -> dict[str, Any]: ...


SAVED_EDGES = 5000
"""Most scored edges a ``CircuitRun`` keeps (``ranked_edges``): enough for the explorer's size slider on a saved
run up to the curve's sizes that hold at most this many edges, and about 340 KB of
indented JSON in ``summary.json`` (measured on random SmolLM2 edge names)."""


@dataclass(frozen=True)
class FindConfig:
    """Settings of :func:`find_circuit`; the method's own settings are its config (``method_config``)."""

    method: str = "eap-ig"
    """Circuit method, as declared in ``mechscope.circuits.METHODS`` (eap, eap-ig, acdc, …)."""
    method_config: Any = None
    """The method's config (its dataclass, e.g. ``EAPIGConfig(steps=10)``); None: its defaults."""
    top: int | None = None
    """Keep the top-N edges by |score| (default: 0.5 % of the graph's edges). Edge methods only."""
    threshold: float | None = None
    """Keep edges with |score| >= T instead of the top N. Edge methods only."""
    random: int = 3
    """Random circuits of the same size (the baseline), per size on the curve too."""
    curve: bool = True
    """Edge methods: faithfulness curve over MIB's sizes, against random circuits."""
    sizes: tuple[float, ...] = SIZES
    """Circuit sizes of the curve, as fractions of the graph's edges (those holding no edge are dropped)."""
    ablation: Literal["patch", "mean", "resample"] = "patch"
    """What edges outside a circuit carry: their corrupt run, the corrupt runs' mean, or a random corrupt prompt."""
    seed: int = 0
    """Random circuit ``i`` uses seed ``seed + i``."""
    batch_size: int = 32
    """Rows per forward pass of the faithfulness runs."""

    def __post_init__(self) -> None:
        if self.top is not None and self.threshold is not None:
            raise ValueError("give top or threshold, not both")
        if self.top is not None and self.top < 1:
            raise ValueError(f"top must be at least 1, got {self.top}")
        if self.random < 0 or self.batch_size < 1 or not self.sizes:
            raise ValueError(f"need random >= 0, batch_size >= 1 and some sizes; got {self}")


@dataclass(frozen=True, eq=False)
class CircuitRun:
    """What :func:`find_circuit` found and measured (JSON with ``to_dict``, back with ``from_dict``)."""

    method: str
    config: dict[str, Any]
    """The method's settings."""
    task: str
    n_prompts: int
    circuit: Circuit
    faithfulness: float
    """Faithfulness of ``circuit`` (1 = the full model, 0 = every edge ablated)."""
    random_faithfulness: tuple[float, ...]
    """Faithfulness of random circuits with as many edges."""
    scores: dict[str, Any]
    """The method's own summary: for edge methods steps, completeness, top edges (and the self-check when asked
    for); for node methods their result's ``to_dict()`` (e.g. ACDC's kept nodes and decisions)."""
    edge_scores: dict[str, float] = field(default_factory=dict)
    """Score of every edge of the circuit (edge methods; empty for node methods)."""
    curve: FaithfulnessCurve | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each step (``method``, ``faithfulness``, ``curve``) and the ``total``."""
    model: dict[str, Any] = field(default_factory=dict)
    ranked_edges: tuple[tuple[str, float], ...] = ()
    """Edge methods: the scored edges by ``|score|``, strongest first, with their scores: every edge of the graph,
    or the ``SAVED_EDGES`` strongest when it has more (so a saved run can be re-pruned to any size up to that)."""

    def to_dict(self) -> dict[str, Any]:
        c = self.circuit
        return {
            "method": self.method,
            "config": self.config,
            "task": self.task,
            "n_prompts": self.n_prompts,
            "circuit": {**c.to_dict(), "of_edges": c.graph.n_edges, "n_nodes": len(c.nodes()),
                        "faithfulness": self.faithfulness, "random_faithfulness": list(self.random_faithfulness)},
            "scores": self.scores,
            "edge_scores": self.edge_scores,
            "curve": self.curve.to_dict() if self.curve is not None else None,
            "seconds": self.seconds,
            "model": self.model,
            "ranked_edges": [list(e) for e in self.ranked_edges],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CircuitRun:
        c = d["circuit"]
        circuit = Circuit.from_edge_names(Graph.from_dict(c["graph"]), list(c["edges"]))
        curve = curve_from_dict(d["curve"]) if d.get("curve") is not None else None
        return cls(d["method"], dict(d["config"]), d["task"], d["n_prompts"], circuit, c["faithfulness"],
                   tuple(c["random_faithfulness"]), dict(d["scores"]), dict(d.get("edge_scores", {})), curve,
                   dict(d.get("seconds", {})), dict(d.get("model", {})),
                   tuple((str(n), float(v)) for n, v in d.get("ranked_edges", ())))  # fmt: skip


def curve_from_dict(d: dict[str, Any]) -> FaithfulnessCurve:
    """A ``FaithfulnessCurve`` back from its ``to_dict()`` (the areas and means are recomputed)."""
    names = {f.name for f in dataclasses.fields(FaithfulnessCurve)}
    values = {k: v for k, v in d.items() if k in names}
    for k in ("sizes", "n_edges", "faithfulness"):
        values[k] = tuple(values[k])
    values["random"] = tuple(tuple(r) for r in values["random"])
    values["orders"] = tuple(tuple(r) for r in values.get("orders", ()))
    return FaithfulnessCurve(**values)


def find_circuit(model: Model, task: Task, config: FindConfig = FindConfig(), *, progress: bool = False) -> CircuitRun:
    """Run ``config.method`` on ``task``, pick its circuit, and measure it against random circuits (see above)."""
    start = time.perf_counter()
    spec = METHODS[config.method]
    settings = config.method_config if config.method_config is not None else spec.config()
    if not isinstance(settings, spec.config):
        raise TypeError(f"{spec.name} takes a {spec.config.__name__}, got {type(settings).__name__}")
    seconds: dict[str, float] = {}
    result = run_method(spec, model, task, settings, progress=progress)
    seconds["method"] = time.perf_counter() - start
    circuit = choose_circuit(result, config)
    tick = time.perf_counter()
    randoms = [Circuit.random(circuit.graph, circuit.n_edges, seed=config.seed + i) for i in range(config.random)]
    faith = faithfulness(model, task, [circuit, *randoms], ablation=config.ablation, seed=config.seed,
                         batch_size=config.batch_size, progress=progress)  # fmt: skip
    seconds["faithfulness"] = time.perf_counter() - tick
    curve = None
    if config.curve and isinstance(result, EdgeScores):
        tick = time.perf_counter()
        orders = tie_orders(result.scores.abs(), seed=config.seed)  # ties in random orders, as the bench does
        curve = ranking_curve(model, task, result.graph, orders, spec.name, sizes=config.sizes,
                              random=config.random, ablation=config.ablation, seed=config.seed,
                              batch_size=config.batch_size, progress=progress)  # fmt: skip
        seconds["curve"] = time.perf_counter() - tick
    edge_scores: dict[str, float] = {}
    ranked: tuple[tuple[str, float], ...] = ()
    if isinstance(result, EdgeScores):
        kept = torch.nonzero(circuit.edges).flatten().tolist()
        names = result.graph.edge_names()
        edge_scores = {names[i]: float(result.scores[i]) for i in kept}
        ranked = tuple(result.top_edges(SAVED_EDGES))
    seconds["total"] = time.perf_counter() - start
    return CircuitRun(spec.name, dataclasses.asdict(settings), task.name, len(task), circuit, faith[0],
                      tuple(faith[1:]), summarise(result), edge_scores, curve, seconds, model.provenance,
                      ranked)  # fmt: skip


def run_method(spec: MethodSpec[Any, Any], model: Model, task: Task, config: Any, *, progress: bool = False) -> Any:
    """``spec``'s function on ``(model, task, config)``, passing ``progress`` where the function takes it."""
    if "progress" in inspect.signature(spec.fn).parameters:
        return spec.fn(model, task, config, progress=progress)
    return spec.fn(model, task, config)


def choose_circuit(result: EdgeScores | NodeCircuit, config: FindConfig) -> Circuit:
    """The circuit of a method's result: top ``n`` / thresholded edges of edge scores, a node method's own."""
    if isinstance(result, EdgeScores):
        if config.threshold is not None:
            return result.threshold(config.threshold)
        n = config.top if config.top is not None else max(1, int(DEFAULT_FRACTION * result.graph.n_edges))
        return result.top(n)
    if config.top is not None or config.threshold is not None:
        raise ValueError(f"top and threshold pick edges from edge scores; {config.method} finds its own circuit")
    if not isinstance(result, NodeCircuit):
        raise TypeError(f"a circuit method returns EdgeScores or a node circuit (with circuit()), got {result!r}")
    return result.circuit()


def edge_ranking(result: EdgeScores | NodeCircuit) -> Tensor:
    """Edge indices, most important first: by |score| for edge scores; a node circuit's edges first otherwise.

    Ties keep edge order (a stable sort), so a node circuit's curve takes its edges in graph order; for curves
    that should not favour the graph's order, rank by ``tie_orders`` (as ``find_circuit`` and the bench do).
    """
    if isinstance(result, EdgeScores):
        return result.ranking()
    return torch.sort(result.circuit().edges.float(), descending=True, stable=True).indices


def summarise(result: Any) -> dict[str, Any]:
    """A method result's JSON summary for ``CircuitRun.scores`` (edge scores: without the full score vector)."""
    if isinstance(result, EdgeScores):
        return {"method": result.method, "direction": result.direction, "steps": result.steps,
                "completeness": result.completeness, "clean_metric": result.clean_metric,
                "corrupt_metric": result.corrupt_metric, "top_edges": result.top_edges(20),
                "seconds": result.seconds,
                "check": result.check.to_dict() if result.check is not None else None}  # fmt: skip
    return dict(result.to_dict())
