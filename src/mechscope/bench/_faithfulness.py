"""Circuit methods judged by what their circuits do: MIB's CPR and CMD.

Node and edge AUROC ask whether a method ranks the true circuit first; faithfulness asks whether the circuits it
proposes carry the behaviour. For any method that scores edges (edge scores, a node circuit such as ACDC's, or a
bench method's edge scores), ``faithfulness_areas`` takes its top-ranked circuits at MIB's fixed sizes (0.1 % to
100 % of edges, those that hold at least one edge), runs the model with every other edge patched to its corrupt
value (``mechscope.circuits.mib_curves``), and reports MIB's two areas (Mueller et al. 2025, "MIB: A Mechanistic
Interpretability Benchmark", section 4): CPR, the area under the faithfulness curve of the top edges by *signed*
score (positive = keeping the edge raises the metric; higher is better), and CMD, the area between 1 and the
curve of the top edges by ``|score|`` (lower is better). Tied scores are put in ``TIE_ORDERS`` random orders and
each area is the mean over them, with its spread (``Score.spread``); chance is the mean of ``RANDOM_CIRCUITS``
random circuits' own areas, with their spread (``Score.chance_spread``). Each score carries its own curve, so the
leaderboard page can draw it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ..circuits._faithfulness import TIE_ORDERS, MIBCurves, mib_curves
from ..circuits._find import NodeCircuit
from ..circuits._graph import EdgeScores, Graph
from ..circuits._ids import EdgeId
from ..organisms._protocols import BuiltOrganism, CircuitsOrganism
from ._circuits import graph_of
from ._scorers import CircuitScores, Score, _score

RANDOM_CIRCUITS = 5
"""Random circuits per size behind the chance level (its spread is theirs)."""

CIRCUITS_PER_PASS = 8
"""Circuits evaluated in one forward pass (one copy of the task's prompts each): the organisms are small, and a
method's two curves, tie orders and random circuits make 20-60 distinct circuits."""


def edge_keys(output: Any, graph: Graph) -> tuple[Tensor, Tensor] | None:
    """``(signed, absolute)`` per-edge keys of ``graph`` that rank a method's circuits; None if it ranks no edges.

    Edge scores: ``EdgeScores.gain`` and ``|score|``. A node circuit: 1 for its edges, 0 for the rest (both).
    Bench scores (``CircuitScores``): ``signed_edges`` (else ``edges``) and ``|edges|``; edges a method does not
    score count 0.
    """
    if isinstance(output, EdgeScores):
        return output.gain, output.scores.abs()
    if isinstance(output, NodeCircuit):
        kept = output.circuit().edges.float()
        return kept, kept
    if not isinstance(output, CircuitScores) or output.edges is None:
        return None
    signed = output.signed_edges if output.signed_edges is not None else output.edges

    def values(edges: Any) -> Tensor:
        by_id = {EdgeId.parse(e): float(v) for e, v in edges.items()}
        return torch.tensor([by_id.get(e, 0.0) for e in graph.edge_ids()])

    return values(signed), values(output.edges).abs()


def area_scores(curves: MIBCurves, organism: BuiltOrganism, method: str) -> list[Score]:
    """The CPR and CMD scores of a method's two curves, with chance, spreads and each curve's points."""
    signed, absolute = curves
    cpr = _score(organism, method, "cpr", signed.cpr, signed.random_cpr)
    cmd = _score(organism, method, "cmd", absolute.cmd, absolute.random_cmd, higher=False)
    return [
        replace(cpr, spread=signed.cpr_spread, chance_spread=signed.random_cpr_spread,
                curve=tuple(zip(signed.sizes, signed.faithfulness, strict=True))),
        replace(cmd, spread=absolute.cmd_spread, chance_spread=absolute.random_cmd_spread,
                curve=tuple(zip(absolute.sizes, absolute.faithfulness, strict=True))),
    ]  # fmt: skip


def faithfulness_areas(output: Any, organism: CircuitsOrganism, method: str) -> list[Score] | None:
    """MIB's CPR (signed ranking) and CMD (absolute ranking) of the method's circuits, random circuits as chance."""
    graph = graph_of(output, organism)
    keys = edge_keys(output, graph)
    if keys is None:
        return None
    task = organism.task
    curves = mib_curves(organism.model, task, graph, keys[0], method, magnitude=keys[1], ties=TIE_ORDERS,
                        random=RANDOM_CIRCUITS, seed=organism.seed,
                        batch_size=CIRCUITS_PER_PASS * len(task))  # fmt: skip
    return area_scores(curves, organism, method)
