"""The compiled family on the bench: the library's circuit methods scored on RASP programs compiled by tracr.

The organisms live in ``mechscope.organisms`` (``_tracr``); their ``residual`` adapter gives the library's circuit
methods what they need, so the methods here are the library's own, run the same way on every program:

- ``eap`` (function ``edge_attribution_patching``): ``circuits.eap`` (noising: the gradient at the real inputs,
  each sender moved to its mean) and ``eap-ig`` (``edge_attribution_patching_ig``): ``circuits.eap_ig``
  (denoising from the mean: the path walks from the mean input to each real one), both toward mean ablation
  (``global_mean``: over the inputs and positions of one length, since compiled programs read positions), on every
  length; an edge scores the input-weighted mean of its ``|score|`` over lengths, a node the sum of its outgoing
  edges;
- ``acdc``: ``circuits.acdc`` over heads and MLPs with the same ablation, on the inputs of the longest length;
- ``zero_ablation`` / ``mean_ablation``: accuracy lost when one component is ablated (``ms.Ablate``).

- ``qk-selectors`` (``qk_selectors``, weights only): every emitted head's ``W_QK`` and ``W_OV``
  (``lenses.head_weights``) read in the residual basis the compiler laid out: the block of query-value rows by
  key-value columns is the head's recovered selector, the block of attended-value rows by output-value columns its
  recovered value map.

Scorers: node and edge AUROC against the emitted components and the program's data flow, with numerically-zero
scores tied at zero; and for every method that scores edges, MIB's CPR and CMD (Mueller et al. 2025, section 4)
of its top-scoring circuits under mean ablation (``circuits.mib_curves``: CPR ranks by signed score, CMD by
``|score|``, ties in random orders), the mean area of random circuits of the same sizes as chance. For
``qk-selectors``: ``selector_auroc`` and ``ov_map_accuracy`` (``_selector_scores``), each with its chance level,
a random matrix read the same way, and the oracle (the compiled selector and map themselves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ..circuits._acdc import acdc
from ..circuits._eap import eap, eap_ig
from ..circuits._faithfulness import TIE_ORDERS, mib_curves
from ..circuits._graph import EdgeScores, Graph
from ..core._interventions import Ablate, Intervention
from ..lenses._weights import head_weights
from ..organisms._protocols import CompiledOrganism
from ..organisms._tracr import program_output
from ..organisms._tracr_model import node_of
from ._faithfulness import area_scores, edge_keys
from ._registry import RunContext
from ._scorers import CircuitScores, Score, auroc, edge_auroc, node_auroc

NUMERICALLY_ZERO = 1e-6
"""Node scores below this fraction of a method's largest count as zero (ties) when ranked: the unused blocks of a
compiled model output exact zeros, and a gradient estimate of 1e-12 on a block that matters should not outrank
them by rounding (it would tell a user nothing)."""

IG_STEPS = 8
"""Integration steps of EAP-IG on the compiled programs."""

ACDC_TAU = 0.01
"""ACDC keeps a removal when the task metric moves by less than this (log-probability or output units)."""

RANDOM_CIRCUITS = 5
"""Random circuits per size behind the CPR/CMD chance level (its spread is theirs)."""


# --- scorers ------------------------------------------------------------------------------------------------------


def _tied(values: dict[Any, float]) -> dict[Any, float]:
    top = max((abs(v) for v in values.values()), default=0.0)
    return {k: v if abs(v) > NUMERICALLY_ZERO * top else 0.0 for k, v in values.items()}


def _node_auroc(output: CircuitScores, organism: CompiledOrganism, method: str) -> Score | None:
    """Node AUROC (``_scorers.node_auroc``) with numerically-zero scores tied at zero.

    None when every candidate is in the circuit (``hist``: nothing to rank).
    """
    truth = organism.circuit
    if not isinstance(output, CircuitScores) or not set(truth.nodes) - truth.circuit:
        return None
    return node_auroc(CircuitScores(_tied(dict(output.nodes)), output.edges), organism, method)


def _edge_auroc(output: CircuitScores, organism: CompiledOrganism, method: str) -> Score | None:
    """Edge AUROC (``_scorers.edge_auroc``) with numerically-zero scores tied at zero, as for nodes."""
    if not isinstance(output, CircuitScores) or output.edges is None:
        return None
    return edge_auroc(CircuitScores(output.nodes, _tied(dict(output.edges))), organism, method)


def _faithfulness_areas(output: Any, organism: CompiledOrganism, method: str) -> list[Score] | None:
    """MIB's CPR (signed ranking) and CMD (``|score|`` ranking) under mean ablation; random circuits as chance.

    As for the circuits family (``_faithfulness``): sizes that hold an edge, ties in ``TIE_ORDERS`` random orders
    (numerically-zero scores tie at zero, as for AUROC), chance as the mean of ``RANDOM_CIRCUITS`` random circuits'
    areas.
    """
    assert organism.model.cfg is not None
    graph = Graph.of(organism.model.cfg)
    keys = edge_keys(output, graph)
    if keys is None:
        return None
    signed, magnitude = (torch.where(k.abs() > NUMERICALLY_ZERO * k.abs().max(), k, 0.0) for k in keys)  # as AUROC
    task = organism.task()
    curves = mib_curves(organism.residual, task, graph, signed, method, magnitude=magnitude, ties=TIE_ORDERS,
                        random=RANDOM_CIRCUITS, ablation="global_mean", metric=program_output, seed=organism.seed,
                        batch_size=4 * len(task))  # fmt: skip
    return area_scores(curves, organism, method)


# --- methods ------------------------------------------------------------------------------------------------------


def _ablation_scores(organism: CompiledOrganism, how: Literal["zero", "mean"]) -> CircuitScores:
    """Node score = accuracy lost when the component is ablated (mean: over the batch and positions of each length)."""
    nodes = {}
    for node in organism.circuit.nodes:
        site = organism.site(node)

        def ablate(tokens: torch.Tensor, site: str = site) -> list[Intervention]:
            return [Ablate(site, how=how, reference=tokens, over="batch_pos") if how == "mean" else Ablate(site)]

        nodes[node] = 1.0 - organism.accuracy(ablate)
    return CircuitScores(nodes)


def zero_ablation(organism: CompiledOrganism, ctx: RunContext) -> CircuitScores:
    """Accuracy lost when each head or MLP output is set to zero (``ms.Ablate``)."""
    return _ablation_scores(organism, "zero")


def mean_ablation(organism: CompiledOrganism, ctx: RunContext) -> CircuitScores:
    """Accuracy lost when each head or MLP output is replaced by its mean over inputs and positions."""
    return _ablation_scores(organism, "mean")


def edge_scores(organism: CompiledOrganism, steps: int) -> list[EdgeScores]:
    """The library's EAP (``steps=1``) or EAP-IG on the inputs of every length, toward mean ablation."""
    out = []
    for task in organism.tasks():
        if steps == 1:  # the gradient at the real inputs; each sender moves to its mean
            s = eap(organism.residual, task, direction="noising", ablation="global_mean", metric=program_output,
                    batch_size=len(task), progress=False)  # fmt: skip
        else:  # the path from the mean input to each real one
            s = eap_ig(organism.residual, task, steps=steps, direction="denoising", ablation="global_mean",
                       metric=program_output, batch_size=steps * len(task), progress=False)  # fmt: skip
        out.append(s)
    return out


def _combined(organism: CompiledOrganism, per_length: list[EdgeScores]) -> CircuitScores:
    """Edge score: the input-weighted mean of ``|score|`` (signed: of ``gain``) over lengths; node: its out-edges'."""
    sizes = torch.tensor([float(len(t)) for t in organism.tasks()])
    weights = sizes / sizes.sum()
    values = torch.stack([s.scores.abs() for s in per_length]).T @ weights  # [edge]
    gains = torch.stack([s.gain for s in per_length]).T @ weights  # [edge]
    graph = per_length[0].graph
    edges = dict(zip(graph.edge_names(), values.tolist(), strict=True))
    nodes = dict.fromkeys(organism.circuit.nodes, 0.0)
    for (sender, _), v in zip(graph.edges(), values.tolist(), strict=True):
        if sender.name in nodes:
            nodes[sender.name] += v
    return CircuitScores(nodes, edges, dict(zip(graph.edge_names(), gains.tolist(), strict=True)))


def edge_attribution_patching(organism: CompiledOrganism, ctx: RunContext) -> CircuitScores:
    """``circuits.eap`` toward mean ablation (Syed et al. 2023), on every input length."""
    return _combined(organism, edge_scores(organism, 1))


def edge_attribution_patching_ig(organism: CompiledOrganism, ctx: RunContext) -> CircuitScores:
    """``circuits.eap_ig`` from the mean input to each real one (Hanna et al. 2024), ``IG_STEPS`` steps."""
    return _combined(organism, edge_scores(organism, IG_STEPS))


def acdc_components(organism: CompiledOrganism, ctx: RunContext) -> CircuitScores:
    """``circuits.acdc`` (Conmy et al. 2023) over heads and MLPs, mean ablation, task metric, tau ``ACDC_TAU``.

    Node score: how much the metric moved when the node was tried; edges: 1 for the edges of the found circuit.
    """
    result = acdc(organism.residual, organism.task(), tau=ACDC_TAU, metric=program_output, ablation="global_mean",
                  progress=False)  # fmt: skip
    nodes = dict.fromkeys(organism.circuit.nodes, 0.0)
    nodes |= {step.node: abs(step.after - step.before) for step in result.steps if step.node in nodes}
    return CircuitScores(nodes, dict.fromkeys(result.circuit().edge_names(), 1.0))


def random_components(organism: CompiledOrganism, ctx: RunContext) -> CircuitScores:
    """Uniform random score for every candidate node and edge."""
    gen = torch.Generator().manual_seed(ctx.seed)
    truth = organism.circuit
    nodes = torch.rand(len(truth.nodes), generator=gen).tolist()
    edges = torch.rand(len(truth.edges), generator=gen).tolist()
    return CircuitScores(dict(zip(truth.nodes, nodes, strict=True)), dict(zip(truth.edges, edges, strict=True)))


def oracle_components(organism: CompiledOrganism, ctx: RunContext) -> CircuitScores:
    """Reads the ground truth: 1 for the emitted components and the program's edges, 0 for the rest."""
    truth = organism.circuit
    return CircuitScores({n: float(n in truth.circuit) for n in truth.nodes},
                         {e: float(e in truth.circuit_edges) for e in truth.edges})  # fmt: skip


# --- selectors read from the weights ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectorReadings:
    """What ``qk_selectors`` reads from each emitted head's weights, by head site (``blocks.1.attn.heads.0``)."""

    qk: dict[str, Tensor]
    """``[query value, key value]``: ``W_QK`` between the one-hot directions of the selector's query and key values;
    higher = the query value attends more to the key value."""
    ov: dict[str, Tensor]
    """``[input value, output value]``: ``W_OV`` from the one-hot directions of the attended value to those of the
    written one; only heads that aggregate a categorical value."""


def qk_selectors(organism: CompiledOrganism, ctx: RunContext) -> SelectorReadings:
    """Each compiled head's selector and value map, read from ``W_QK`` and ``W_OV`` in the compiler's residual basis.

    Weights only (``lenses.head_weights``, no forward pass). tracr lays out the residual stream as labelled
    one-hot blocks (``tokens:3``, ``indices:0``); the organism records which dimensions hold each head's query,
    key, attended and output values, and the method reads the bilinear forms between them: ``e_q W_QK e_kᵀ``
    for every (query value, key value) pair and ``e_v W_OV e_oᵀ`` for every (attended value, output value) pair.
    """
    qk, ov = {}, {}
    for site, s in organism.selectors.items():
        node = node_of(site)
        assert node.layer is not None and node.index is not None
        w = head_weights(organism.residual, node.layer)
        qk[site] = w.qk()[node.index][s["query"]][:, s["key"]]
        if s["ov"] is not None:
            ov[site] = w.ov()[node.index][s["ov"]["input"]][:, s["ov"]["output"]]
    return SelectorReadings(qk, ov)


RANDOM_MATRIX_SEED = 7_919
"""Seed of the random ``W_QK`` / ``W_OV`` blocks behind the random-matrix baseline."""

RANDOM_MATRICES = 100
"""Random blocks per head whose scores the random-matrix baseline averages."""


def _selector_scores(output: Any, organism: CompiledOrganism, method: str) -> list[Score] | None:
    """``selector_auroc`` and ``ov_map_accuracy`` of a ``SelectorReadings``; None for other outputs.

    ``selector_auroc``: per head, the AUROC of the read ``W_QK`` block over (query value, key value) pairs against
    the compiled selector (1 exactly when one threshold recovers the boolean selector), averaged over the heads
    whose selector is not constant (a ``TRUE`` selector, as in ``length``, has nothing to rank); chance 0.5.
    ``ov_map_accuracy``: share of attended values whose largest read output is the value the program writes,
    pooled over the heads that aggregate a categorical value; chance ``1 / |output values|`` (averaged the same
    way). Baselines: ``random_matrix`` (Gaussian blocks of the same shape read the same way, the mean over
    ``RANDOM_MATRICES`` per head, seed ``RANDOM_MATRIX_SEED``) and ``oracle`` (the compiled selector and map as
    the reading).
    """
    if not isinstance(output, SelectorReadings):
        return None
    gen = torch.Generator().manual_seed(RANDOM_MATRIX_SEED + organism.seed)
    truth = organism.selectors
    ranked = [
        site for site in sorted(output.qk) if 0 < sum(map(sum, truth[site]["selector"])) < output.qk[site].numel()
    ]
    scores = []
    if ranked:
        aurocs: dict[str, list[float]] = {"value": [], "random_matrix": [], "oracle": []}
        for site in ranked:
            labels = torch.tensor(truth[site]["selector"])
            aurocs["value"].append(auroc(output.qk[site].flatten(), labels.flatten()))
            aurocs["oracle"].append(auroc(labels.double().flatten(), labels.flatten()))
            noise = torch.randn(RANDOM_MATRICES, labels.numel(), generator=gen)
            aurocs["random_matrix"].append(sum(auroc(n, labels.flatten()) for n in noise) / RANDOM_MATRICES)
        scores.append(_mean_score(organism, method, "selector_auroc", aurocs, 0.5))
    mapped = sorted(output.ov)
    if mapped:
        right: dict[str, list[float]] = {"value": [], "random_matrix": [], "oracle": []}
        chance = []
        for site in mapped:
            want = torch.tensor(truth[site]["ov"]["map"])
            block = output.ov[site]
            oracle = torch.nn.functional.one_hot(want.clamp(min=0), block.shape[1]).double()
            right["value"] += (block.argmax(1) == want).double().tolist()
            right["oracle"] += (oracle.argmax(1) == want).double().tolist()
            noise = torch.randn(RANDOM_MATRICES, *block.shape, generator=gen)
            right["random_matrix"] += (noise.argmax(2) == want).double().mean(0).tolist()
            chance += [1 / block.shape[1]] * len(want)
        scores.append(_mean_score(organism, method, "ov_map_accuracy", right, sum(chance) / len(chance)))
    return scores


def _mean_score(organism: CompiledOrganism, method: str, metric: str, values: dict[str, list[float]],
                chance: float) -> Score:  # fmt: skip
    mean = {k: sum(v) / len(v) for k, v in values.items()}
    baselines = {k: v for k, v in mean.items() if k != "value"}
    return Score(method, organism.organism, organism.seed, metric, mean["value"], chance, baselines=baselines)
