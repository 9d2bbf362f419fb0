"""Scorers: how close a method's output is to an organism's ground truth, next to what chance would score.

Each scorer reads one kind of method output and returns a ``Score`` (or None when the output has nothing for it,
e.g. edge AUROC for a node-only method). Every score carries its chance level, so a number is never shown without
the floor it must beat:

- **circuits** — ``node_auroc`` / ``edge_auroc``: area under the ROC curve of the method's scores (higher = more
  in the circuit) against membership in the true circuit, over every candidate node / edge (the node- and
  edge-level AUROC of Conmy et al. 2023, "Towards Automated Circuit Discovery", section 4.1). Chance is 0.5;
  candidates a method does not score count as 0. Where the truth leaves out edges its task cannot reveal
  (``CircuitTruth.unseen_edges``), ``full_edge_auroc`` adds a row against the full mechanism,
  ``edge_auroc_full``.
- **features** — ``mmcs``, ``f1`` and ``absorption`` of a dictionary against the true features
  (``mechscope.features.recovery``). Chance is the same metric for a random dictionary of the method's width and
  L0 (``random_dictionary``), which depends on both.
- **circuits**, head pairs — ``head_pair_auroc``: the same AUROC over the edges from one head into another's query,
  key or value only (what composition scores read from the weights can rank); chance 0.5.
- **frequencies** — ``frequency_auroc``: AUROC of per-frequency scores against the key frequencies; chance 0.5.
  ``frequency_overlap``: share of the key frequencies among the ``|key|`` top-scored; chance ``|key| / |all|``.
- **descriptions** — ``interval_iou``: intersection over union of a predicted corrupted interval with the true
  one, averaged over functions; chance is the IoU of uniformly random intervals (Monte Carlo, fixed seed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from ..circuits._ids import EdgeId
from ..features._dictionary import Dictionary
from ..features._metrics import recovery
from ..features._synthetic import SyntheticData
from ..features._train import TrainResult

if TYPE_CHECKING:
    from ..organisms._protocols import (
        BuiltOrganism,
        CircuitsOrganism,
        CompiledOrganism,
        DescriptionsOrganism,
        FeaturesOrganism,
        FrequenciesOrganism,
    )
    from ..organisms._truth import CircuitTruth, Edge


@dataclass(frozen=True)
class Score:
    """One method's score on one seed of one organism, with its chance level and baselines."""

    method: str
    organism: str
    seed: int
    metric: str
    """What is measured (``node_auroc``, ``mmcs``...)."""
    value: float
    chance: float
    """What a method with no information scores (expected value)."""
    higher_is_better: bool = True
    baselines: dict[str, float] = field(default_factory=dict)
    """Other reference values on the same organism and seed (filled by the harness from baseline methods)."""
    seconds: float = 0.0
    """Wall time of the method."""
    curve: tuple[tuple[float, float], ...] = ()
    """``(x, y)`` points of a curve behind the score, when there is one (faithfulness over circuit size)."""
    spread: float = 0.0
    """Standard deviation of ``value`` over what it averages within this seed (CPR/CMD: random orders of tied
    scores); 0 when it averages nothing."""
    chance_spread: float = 0.0
    """Standard deviation of the chance level's draws (CPR/CMD: the random circuits' areas); 0 when exact."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        """The score ``to_dict`` wrote (after a JSON round trip)."""
        curve = tuple((float(x), float(y)) for x, y in data.get("curve", ()))
        return cls(**{**data, "baselines": dict(data.get("baselines", {})), "curve": curve})


# --- method outputs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CircuitScores:
    """A circuit method's output: a score per node label, and optionally per edge (higher = more in the circuit)."""

    nodes: Mapping[str, float]
    edges: Mapping[Edge, float] | None = None
    signed_edges: Mapping[Edge, float] | None = None
    """Edge scores with their sign, positive where keeping the edge raises the metric (MIB ranks CPR's curve by
    them); None when ``edges`` are already that (non-negative scores such as an oracle's or a circuit's)."""


@dataclass(frozen=True)
class DictionaryOutput:
    """A features method's output: decoder directions and the latents it assigns to the organism's data."""

    decoder: Float[Tensor, "d_sae d"]
    latents: Float[Tensor, "n d_sae"]


def _score(
    organism: BuiltOrganism, method: str, metric: str, value: float, chance: float, higher: bool = True
) -> Score:
    return Score(method, organism.organism, organism.seed, metric, float(value), float(chance), higher)


# --- circuits ----------------------------------------------------------------------------------------------------


def auroc(scores: Tensor | list[float], labels: Tensor | list[bool]) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative (ties count half)."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one positive and one negative")
    greater = (s[y][:, None] > s[~y][None, :]).double().sum()
    ties = (s[y][:, None] == s[~y][None, :]).double().sum()
    return float((greater + 0.5 * ties) / (n_pos * n_neg))


def node_auroc(output: CircuitScores | Mapping[str, float] | Any, organism: CircuitsOrganism | CompiledOrganism,
               method: str) -> Score:  # fmt: skip
    """Node-level AUROC of a circuit method (scores, or a ``mechscope.circuits`` result) against the truth."""
    from ._circuits import circuit_scores  # the circuits adapter reads the library's result types

    output = circuit_scores(output)
    truth = organism.circuit
    nodes = output.nodes if isinstance(output, CircuitScores) else output
    scores = [float(nodes.get(n, 0.0)) for n in truth.nodes]
    return _score(organism, method, "node_auroc", auroc(scores, [n in truth.circuit for n in truth.nodes]), 0.5)


def edge_auroc(output: CircuitScores | Mapping[str, float] | Any, organism: CircuitsOrganism | CompiledOrganism,
               method: str) -> Score | None:  # fmt: skip
    """Edge-level AUROC against ``organism.circuit``; None for methods that score no edges."""
    from ._circuits import circuit_scores

    output = circuit_scores(output)
    truth = organism.circuit
    if not isinstance(output, CircuitScores) or output.edges is None or not truth.edges:
        return None
    return _score(organism, method, "edge_auroc", _edge_auroc(output.edges, truth), 0.5)


def full_edge_auroc(output: CircuitScores | Mapping[str, float] | Any, organism: CircuitsOrganism | CompiledOrganism,
                    method: str) -> Score | None:  # fmt: skip
    """Edge AUROC against the full mechanism (``CircuitTruth.full()``), as the metric ``edge_auroc_full``.

    None where the truth leaves out no edge (``unseen_edges``) or the method scores no edges. The truth scored by
    ``edge_auroc`` holds only what the organism's task lets a patching method see; this row beside it shows how far
    that choice flatters the methods (and the oracle, which reads the seen truth).
    """
    from ._circuits import circuit_scores

    output = circuit_scores(output)
    truth = organism.circuit
    if not truth.unseen_edges or not isinstance(output, CircuitScores) or output.edges is None:
        return None
    return _score(organism, method, "edge_auroc_full", _edge_auroc(output.edges, truth.full()), 0.5)


def head_pair_auroc(output: CircuitScores | Mapping[str, float] | Any,
                    organism: CircuitsOrganism | CompiledOrganism, method: str) -> Score | None:  # fmt: skip
    """AUROC over head pairs: scores of the edges between heads against the true circuit's head-to-head edges.

    The edges from one head into another's query, key or value (``a0.h1->a1.h3<k>``): what weight readings
    (composition scores) can rank, where the embedding and logits edges of ``edge_auroc`` are out of their reach.
    None where the method scores no edges or the truth has no head-to-head edge (or only such edges).
    """
    from ._circuits import circuit_scores

    output = circuit_scores(output)
    truth = organism.circuit
    if not isinstance(output, CircuitScores) or output.edges is None:
        return None
    pairs = [e for e in truth.edges if _between_heads(EdgeId.parse(e))]
    labels = [e in truth.circuit_edges for e in pairs]
    if not any(labels) or all(labels):
        return None
    by_id = {EdgeId.parse(e): float(v) for e, v in output.edges.items()}
    scores = [by_id.get(EdgeId.parse(e), 0.0) for e in pairs]
    return _score(organism, method, "head_pair_auroc", auroc(scores, labels), 0.5)


def _between_heads(edge: EdgeId) -> bool:
    return edge.sender.kind == "head" and edge.receiver.kind in ("head", "kv")


def _edge_auroc(edges: Mapping[Edge, float], truth: CircuitTruth) -> float:
    by_id = {EdgeId.parse(e): float(v) for e, v in edges.items()}  # malformed names raise, with the format
    scores = [by_id.get(EdgeId.parse(e), 0.0) for e in truth.edges]
    return auroc(scores, [e in truth.circuit_edges for e in truth.edges])


# --- features ----------------------------------------------------------------------------------------------------


class _Recovered(NamedTuple):
    mmcs: float
    f1: float
    absorption: float


def _as_output(output: DictionaryOutput | Dictionary | TrainResult, data: SyntheticData) -> DictionaryOutput:
    if isinstance(output, DictionaryOutput):
        return output
    if isinstance(output, TrainResult):  # a dictionary kind's bench method (``_features``): score what it trained
        output = output.dictionary
    with torch.no_grad():
        return DictionaryOutput(output.W_dec.detach(), output.eval().encode(data.x))


def _recover(out: DictionaryOutput, data: SyntheticData) -> _Recovered:
    """MMCS, mean F1 and absorption rate of a decoder + latents (``recovery`` on a fixed-latent dictionary)."""
    rec = recovery(_Fixed(out), data)  # type: ignore[arg-type]  # duck-typed: encode + W_dec
    rate = rec.absorption.rate
    return _Recovered(rec.mmcs, rec.mean_f1, 0.0 if rate != rate else rate)  # nan (no hierarchy) -> 0


class _Fixed(torch.nn.Module):
    """Adapter giving precomputed latents the ``encode`` / ``W_dec`` interface that ``recovery`` reads."""

    def __init__(self, out: DictionaryOutput) -> None:
        super().__init__()
        self.W_dec, self.latents = out.decoder, out.latents

    def encode(self, x: Tensor) -> Tensor:
        return self.latents


def random_dictionary(d_sae: int, data: SyntheticData, k: int, seed: int) -> DictionaryOutput:
    """Random unit decoder rows, and latents firing on ``k`` random latents per row (the features chance level)."""
    gen = torch.Generator().manual_seed(seed)
    decoder = torch.randn(d_sae, data.x.shape[1], generator=gen)
    decoder = decoder / decoder.norm(dim=1, keepdim=True)
    top = torch.rand(len(data.x), d_sae, generator=gen).topk(max(1, min(k, d_sae)), dim=1).indices
    latents = torch.zeros(len(data.x), d_sae).scatter_(1, top, 1.0)
    return DictionaryOutput(decoder, latents)


def _features_chance(out: DictionaryOutput, data: SyntheticData) -> _Recovered:
    l0 = round(float((out.latents != 0).sum(1).float().mean()))
    seeds = (7_919_001, 7_919_002, 7_919_003)  # fixed, and far from the small seeds organisms are built with
    draws = [_recover(random_dictionary(out.decoder.shape[0], data, l0, seed=s), data) for s in seeds]
    return _Recovered(*(sum(v) / len(draws) for v in zip(*draws, strict=True)))


def features_scores(output: DictionaryOutput | Dictionary | TrainResult, organism: FeaturesOrganism,
                    method: str) -> list[Score]:  # fmt: skip
    """MMCS, F1 and absorption of a dictionary against ``organism.data``, each with its random-dictionary chance.

    ``output`` is a trained dictionary (or its ``TrainResult``), or fixed decoder rows and latents (baselines).

    Absorption is scored only where the truth has a parent/child hierarchy; without one every dictionary scores
    0 and the row would say nothing.
    """
    data: SyntheticData = organism.data
    out = _as_output(output, data)
    got, chance = _recover(out, data), _features_chance(out, data)
    scores = [
        _score(organism, method, "mmcs", got.mmcs, chance.mmcs),
        _score(organism, method, "f1", got.f1, chance.f1),
    ]
    if data.hierarchy:
        scores.append(_score(organism, method, "absorption", got.absorption, chance.absorption, higher=False))
    return scores


# --- frequencies and descriptions --------------------------------------------------------------------------------


def frequency_auroc(output: Mapping[int, float], organism: FrequenciesOrganism, method: str) -> Score:
    """AUROC of per-frequency scores against ``organism.key_frequencies``."""
    key = set(organism.key_frequencies)
    freqs = organism.frequencies
    value = auroc([float(output.get(k, 0.0)) for k in freqs], [k in key for k in freqs])
    return _score(organism, method, "frequency_auroc", value, 0.5)


def frequency_overlap(output: Mapping[int, float], organism: FrequenciesOrganism, method: str) -> Score:
    """Share of the key frequencies among the method's ``|key|`` top-scoring frequencies (ties broken by frequency).

    Chance: ``|key| / |frequencies|``, the expected share for a random pick of ``|key|`` frequencies.
    """
    key, freqs = set(organism.key_frequencies), organism.frequencies
    ranked = sorted(freqs, key=lambda k: (-float(output.get(k, 0.0)), k))
    value = len(key & set(ranked[: len(key)])) / len(key)
    return _score(organism, method, "frequency_overlap", value, len(key) / len(freqs))


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two intervals (0 for an empty or reversed one)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 and a[1] > a[0] else 0.0


def random_interval(domain: tuple[float, float], gen: torch.Generator) -> tuple[float, float]:
    """An interval with both ends uniform over ``domain``."""
    ends = (domain[0] + (domain[1] - domain[0]) * torch.rand(2, generator=gen)).sort().values
    return float(ends[0]), float(ends[1])


def interval_iou(output: Mapping[str, tuple[float, float]], organism: DescriptionsOrganism, method: str) -> Score:
    """Mean IoU of predicted corrupted intervals (by function name) with the true ones; missing ones score 0."""
    fns = organism.functions
    found = [(float(output[f.name][0]), float(output[f.name][1])) if f.name in output else None for f in fns]
    value = sum(iou(got, f.interval) if got is not None else 0.0 for got, f in zip(found, fns, strict=True)) / len(fns)
    gen = torch.Generator().manual_seed(7_919_000)
    lo, hi = organism.domain
    ends = (lo + (hi - lo) * torch.rand(1000, 2, generator=gen, dtype=torch.float64)).sort(dim=1).values
    chance = 0.0
    for f in fns:  # IoU of 1000 random intervals with the true one, vectorised
        inter = (
            torch.minimum(ends[:, 1], torch.tensor(f.interval[1]))
            - torch.maximum(ends[:, 0], torch.tensor(f.interval[0]))
        ).clamp(min=0)
        union = (ends[:, 1] - ends[:, 0]) + (f.interval[1] - f.interval[0]) - inter
        chance += float((inter / union).mean()) / len(fns)
    return _score(organism, method, "interval_iou", value, chance)


SCORERS: dict[str, tuple[Callable[..., Score | list[Score] | None], ...]] = {
    "circuits": (node_auroc, edge_auroc, full_edge_auroc, head_pair_auroc),
    "features": (features_scores,),
    "frequencies": (frequency_auroc, frequency_overlap),
    "descriptions": (interval_iou,),
}
"""The scorers defined here, by organism family; ``default_suite()`` adds them to the others (faithfulness,
compiled programs, trojans, attribution)."""
