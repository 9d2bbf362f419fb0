"""Circuit methods judged by what their circuits do: MIB's CPR and CMD.

Node and edge AUROC ask whether a method ranks the true circuit first; faithfulness asks whether the circuits it
proposes carry the behaviour. For any method that ranks edges (edge scores, a node circuit such as ACDC's, or a
bench method's edge scores), ``faithfulness_areas`` takes its top-ranked circuits at MIB's fixed sizes (0.1 % to
100 % of edges), runs the model with every other edge patched to its corrupt value
(``mechscope.circuits.ranking_curve``, the curve step of ``find_circuit``), and reports CPR, the area under the
faithfulness curve (higher is better), and CMD, the area between the curve and 1 (lower is better) (Mueller et
al. 2025, "MIB: A Mechanistic Interpretability Benchmark", section 4). Chance is the same area for random
circuits of the same sizes (mean of 2). The curve travels with the score, so the leaderboard page can draw it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ..circuits._find import NodeCircuit, edge_ranking, ranking_curve
from ..circuits._graph import EdgeScores
from ..organisms._protocols import CircuitsOrganism
from ._circuits import graph_of
from ._scorers import CircuitScores, Score, _score

RANDOM_CIRCUITS = 2
"""Random circuits per size behind the chance level."""


def ranking_of(output: Any, organism: CircuitsOrganism) -> Tensor | None:
    """Edge indices of the organism's graph, most important first; None for an output that ranks no edges.

    Bench methods' edge scores rank by ``|score|`` (edges they do not score count 0), ties in edge order.
    """
    if isinstance(output, EdgeScores | NodeCircuit):
        return edge_ranking(output)
    if not isinstance(output, CircuitScores) or output.edges is None:
        return None
    edges = output.edges
    values = torch.tensor([float(edges.get(e, 0.0)) for e in graph_of(output, organism).edge_names()])
    return torch.sort(values.abs(), descending=True, stable=True).indices


def faithfulness_areas(output: Any, organism: CircuitsOrganism, method: str) -> list[Score] | None:
    """CPR and CMD of the method's top-ranked circuits, with random circuits' areas as chance."""
    ranking = ranking_of(output, organism)
    if ranking is None:
        return None
    curve = ranking_curve(organism.model, organism.task, graph_of(output, organism), ranking, method,
                          random=RANDOM_CIRCUITS, seed=organism.seed)  # fmt: skip
    points = tuple(zip(curve.sizes, curve.faithfulness, strict=True))
    return [
        replace(_score(organism, method, "cpr", curve.cpr, curve.random_cpr), curve=points),
        replace(_score(organism, method, "cmd", curve.cmd, curve.random_cmd, higher=False), curve=points),
    ]
