"""The circuits family's one adapter: every declared circuit method, run on the circuits organisms, scored as is.

Each method declared in ``mechscope.circuits.METHODS`` (circuit discovery: EAP, EAP-IG, ACDC, …) or
``NODE_METHODS`` (node scores: activation and attribution patching, direct logit attribution) runs on every
organism of the ``circuits`` family with its own config, at its defaults but for the bench's two settings:

- ``direction="noising"`` wherever the method has a direction (clean run, one component corrupted): the induction
  circuit is an AND of two heads, which denoising a single component cannot reveal (Heimersheim & Nanda 2024,
  "How to use and interpret activation patching", section 3);
- ``seed`` from the run's ``RunContext`` wherever the method has a seed.

No circuit method has a training budget, so quick and full runs use the same settings. The method returns the
library's own result (``EdgeScores``, ``ACDCResult``, ``PatchingResult``, ``AttributionResult``, ``DLAResult``, or
any other type with a ``circuit()``); ``circuit_scores`` turns it into the node and edge scores the AUROC scorers
read, and ``_faithfulness`` ranks its edges (signed and by magnitude, ``edge_keys``) for MIB's areas. The
methods are listed from the registries each time the bench asks, so a method declared later is scored too.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from ..circuits._acdc import ACDCResult
from ..circuits._attribution import AttributionResult
from ..circuits._dla import DLAResult
from ..circuits._find import NodeCircuit, run_method
from ..circuits._graph import EdgeScores, Graph
from ..circuits._nodes import Node
from ..circuits._registry import METHODS as CIRCUIT_METHODS
from ..circuits._registry import NODE_METHODS
from ..circuits._result import PatchingResult
from ..core._registry import MethodSpec as Declared
from ..organisms._protocols import CircuitsOrganism
from ._registry import MethodSpec, RunContext
from ._scorers import CircuitScores

FAMILY = "circuits"
"""The organism family these methods run on (organisms with ``model``, ``task`` and a ``CircuitTruth``)."""


def bench_config(spec: Declared[Any, Any], ctx: RunContext) -> Any:
    """``spec``'s config as the bench runs it (see the module docstring)."""
    fields = {f.name for f in spec.fields()}
    values: dict[str, Any] = {"direction": "noising"} if "direction" in fields else {}
    if "seed" in fields:
        values["seed"] = ctx.seed
    return spec.make_config(**values)


def run_declared(spec: Declared[Any, Any], organism: CircuitsOrganism, ctx: RunContext) -> Any:
    """Run a declared circuit method on a circuits organism (its ``model`` and ``task``); returns its own result."""
    return run_method(spec, organism.model, organism.task, bench_config(spec, ctx), progress=False)


def circuit_methods() -> list[MethodSpec]:
    """Every declared circuit and node method, as the bench's method specs (read from the registries now)."""
    declared = [*CIRCUIT_METHODS.specs(), *NODE_METHODS.specs()]
    return [MethodSpec(s.name, FAMILY, partial(run_declared, s), None, False, s.summary) for s in declared]


def circuit_scores(output: Any) -> CircuitScores:
    """The node labels and edge names a circuit scorer compares with the truth, from a method's own result.

    Edge scores: ``|score|`` per edge, and per head the summed ``|score|`` of the edges it sends. ACDC: per head
    the KL rise when it was tried (``max(0, after - before)``), 1 per edge of the circuit. Any other node circuit:
    1 per head and per edge in it. Patching grids: ``|effect - unpatched|`` per node (noising: how far patching
    the node moves the metric from the clean run). DLA: ``|attribution|`` per head.
    """
    if isinstance(output, CircuitScores):
        return output
    if isinstance(output, EdgeScores):
        return _from_edges(output)
    if isinstance(output, ACDCResult):
        senders = {s.name: s for s in output.graph.senders}
        nodes = {_head_label(senders[step.node]): max(0.0, step.after - step.before)
                 for step in output.steps if senders[step.node].kind == "head"}  # fmt: skip
        return CircuitScores(nodes, _circuit_edges(output))
    if isinstance(output, NodeCircuit):
        kept = set(output.circuit().nodes())
        kept_heads = [s for s in output.graph.senders if s.kind == "head" and s.name in kept]
        return CircuitScores({_head_label(s): 1.0 for s in kept_heads}, _circuit_edges(output))
    if isinstance(output, AttributionResult):
        return CircuitScores({k: v for grid in output.grids.values() for k, v in _importance(grid).items()})
    if isinstance(output, DLAResult):
        layers, heads = output.heads.shape
        return CircuitScores({Node("head.z", i, h).label(): float(abs(output.heads[i, h]))
                              for i in range(layers) for h in range(heads)})  # fmt: skip
    if isinstance(output, Mapping):
        return CircuitScores(output)
    if isinstance(output, PatchingResult):
        return CircuitScores(_importance(output))
    raise TypeError(f"the circuits scorers cannot read a {type(output).__name__}")


def _head_label(sender: Any) -> str:
    """A head sender of the graph as the organisms name candidate nodes (``head.L.z[hH]``)."""
    return Node("head.z", sender.layer, sender.head).label()


def _from_edges(scores: EdgeScores) -> CircuitScores:
    edges = dict(zip(scores.graph.edge_names(), scores.scores.abs().tolist(), strict=True))
    nodes: dict[str, float] = {}
    for (sender, _), value in zip(scores.graph.edges(), edges.values(), strict=True):
        if sender.kind == "head":
            label = _head_label(sender)
            nodes[label] = nodes.get(label, 0.0) + value
    return CircuitScores(nodes, edges)


def _circuit_edges(output: NodeCircuit) -> dict[str, float]:
    return dict.fromkeys(output.circuit().edge_names(), 1.0)


def _importance(grid: PatchingResult) -> dict[str, float]:
    """Node label -> |effect - unpatched| (unpatched: 1 when noising, 0 when denoising)."""
    base = 1.0 if grid.direction == "noising" else 0.0
    return {n.label(): float(abs(e - base)) for n, e in zip(grid.nodes(), grid.effect.flatten().tolist(), strict=True)}


def graph_of(output: Any, organism: CircuitsOrganism) -> Graph:
    """The graph a method's edges live on: its result's own, or the organism model's."""
    graph = getattr(output, "graph", None)
    if isinstance(graph, Graph):
        return graph
    if organism.model.cfg is None:
        raise TypeError(f"{organism.organism}'s model has no ModelConfig: its circuit graph cannot be built")
    return Graph.of(organism.model.cfg)
