"""Ground truth as data: what each organism family's scorers compare a method's output against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..circuits._ids import EdgeId

Edge = str
"""An edge named by ``mechscope.circuits.EdgeId.format`` (MIB's format, as ``Graph.edge_names()``), e.g.
``a0.h1->a1.h3<k>``: head 1 of layer 0 into the key of head 3 of layer 1."""


@dataclass(frozen=True)
class CircuitTruth:
    """The candidate nodes and edges of a model, and which of them form the true circuit.

    Nodes are named as the methods scored on the organism name them: graph nodes (``mechscope.circuits.NodeId``:
    ``a1.h0``, ``m0``) for compiled programs, patching-grid cells (``mechscope.circuits.Node.label()``:
    ``head.0.z[h1]``, head 1 of layer 0, all positions) for the induction organism; edges are always
    ``mechscope.circuits.EdgeId`` names (``a0.h1->a1.h3<k>``), checked when the truth is made.
    """

    nodes: tuple[str, ...]
    """Every candidate node a method should score."""
    circuit: frozenset[str]
    """The nodes of the true circuit."""
    edges: tuple[Edge, ...] = ()
    """Every candidate edge."""
    circuit_edges: frozenset[Edge] = frozenset()
    """The edges of the true circuit: those the organism's task lets a patching method see."""
    unseen_edges: frozenset[Edge] = frozenset()
    """Edges of the mechanism that the task cannot reveal (e.g. an input that clean and corrupt prompts share),
    left out of ``circuit_edges``; ``full()`` adds them back, and the bench scores against both."""

    def __post_init__(self) -> None:
        if not self.circuit <= set(self.nodes) or not self.circuit_edges <= set(self.edges):
            raise ValueError("the true circuit must be a subset of the candidate nodes and edges")
        if not self.unseen_edges <= set(self.edges) or self.unseen_edges & self.circuit_edges:
            raise ValueError("unseen edges must be candidate edges outside circuit_edges")
        for edge in self.edges:
            if EdgeId.parse(edge).format() != edge:  # one spelling per edge: scorers compare the names
                raise ValueError(f"edge {edge!r} is not written as EdgeId formats it: {EdgeId.parse(edge).format()!r}")

    def full(self) -> CircuitTruth:
        """The whole mechanism: ``circuit_edges`` with the ``unseen_edges`` added."""
        return CircuitTruth(self.nodes, self.circuit, self.edges, self.circuit_edges | self.unseen_edges)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "nodes": list(self.nodes),
            "circuit": sorted(self.circuit),
            "edges": list(self.edges),
            "circuit_edges": sorted(self.circuit_edges),
            "unseen_edges": sorted(self.unseen_edges),
        }
