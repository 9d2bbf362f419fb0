"""Circuit methods judged by what their circuits do: MIB's CPR and CMD, and ACDC as a registered method.

Node and edge AUROC ask whether a method ranks the true circuit first; faithfulness asks whether the circuits it
proposes carry the behaviour. For any method that scores edges, ``faithfulness_areas`` takes its top-scoring
circuits at MIB's fixed sizes (0.1 % to 100 % of edges), runs the model with every other edge patched to its
corrupt value (``mechscope.circuits.faithfulness_curve``), and reports CPR, the area under the faithfulness curve
(higher is better), and CMD, the area between the curve and 1 (lower is better) (Mueller et al. 2025, "MIB: A
Mechanistic Interpretability Benchmark", section 4). Chance is the same area for random circuits of the same
sizes (mean of 2). The curve travels with the score, so the leaderboard page can draw it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ..circuits._acdc import acdc
from ..circuits._faithfulness import faithfulness_curve
from ..circuits._graph import Circuit, EdgeScores, Graph
from ..circuits._nodes import Node
from ._registry import RunContext
from ._scorers import CircuitScores, Score, _score

RANDOM_CIRCUITS = 2
"""Random circuits per size behind the chance level."""


def edge_scores(output: CircuitScores, model: Any, method: str) -> EdgeScores:
    """A method's edge scores as ``EdgeScores`` over the model's graph (edges it does not score count 0)."""
    graph = Graph.of(model.cfg)
    assert output.edges is not None
    values = torch.tensor([float(output.edges.get(e, 0.0)) for e in graph.edge_names()])
    return EdgeScores(graph, values, method, "noising", 1, float("nan"), float("nan"), "logit_diff", "bench")  # type: ignore[arg-type]


def faithfulness_areas(output: Any, organism: Any, method: str) -> list[Score] | None:
    """CPR and CMD of the method's top-scoring circuits, with random circuits' areas as chance."""
    if not isinstance(output, CircuitScores) or output.edges is None:
        return None
    curve = faithfulness_curve(organism.model, organism.task, edge_scores(output, organism.model, method),
                               random=RANDOM_CIRCUITS, seed=organism.seed, progress=False)  # fmt: skip
    points = tuple(zip(curve.sizes, curve.faithfulness, strict=True))
    return [
        replace(_score(organism, method, "cpr", curve.cpr, curve.random_cpr), curve=points),
        replace(_score(organism, method, "cmd", curve.cmd, curve.random_cmd, higher=False), curve=points),
    ]


def acdc_nodes(organism: Any, ctx: RunContext) -> CircuitScores:
    """ACDC (Conmy et al. 2023) over heads and MLPs, KL metric, tau 0.01; node score = KL rise when tried."""
    result = acdc(organism.model, organism.task, tau=0.01, metric="kl", progress=False)
    nodes: dict[str, float] = {}
    for step in result.steps:
        if step.node.startswith("a"):  # a{L}.h{H}; MLPs (m{L}) are not candidate nodes of the organism
            layer, head = step.node[1:].split(".h")
            nodes[Node("head.z", int(layer), int(head)).label()] = max(0.0, step.after - step.before)
    circuit: Circuit = result.circuit()
    names = result.graph.edge_names()
    edges = {names[i]: 1.0 for i in circuit.edges.nonzero().flatten().tolist()}
    return CircuitScores(nodes, edges)
