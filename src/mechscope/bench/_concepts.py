"""The representations family: probes and steering vectors against a planted concept direction.

On a model that computes a known linear concept and reads it out as one behaviour (``organisms.PlantedConcept``:
the concept direction ``u`` at ``resid_post.0`` drives the logit difference ``+`` vs ``-`` and not ``<`` vs
``>``), each method names a direction at the organism's site:

- ``probe``: the lenses family's declared ``probe`` (``lenses.probe``: L2 logistic regression, ``FOLDS``-fold
  cross-validated, with Hewitt & Liang's control task, the word type being the last token) on ``N_PROMPTS`` random
  prompts labelled by the sign of their mean concept value; its direction is class 1 minus class 0;
- ``caa``: ``lenses.steering_vector`` (contrastive activation addition, Rimsky et al. 2023) of ``N_PAIRS``
  positive/negative prompt pairs;
- baselines: ``shuffled-labels`` (the linear probe on the same prompts with their labels permuted, seeded: its
  accuracy must stay at chance), ``random`` (a seeded uniform random direction) and ``oracle`` (``u`` itself).

Scores (``concept_scores``):

- ``direction_cosine``: ``|cos|`` of the method's direction with ``u``; chance is the expected ``|cos|`` of a uniform
  random direction in ``d_model`` dimensions (about ``sqrt(2 / (pi d))``).
- ``probe_accuracy``: the probe's cross-validated accuracy; chance is the majority label's share.
  ``probe_selectivity``: accuracy minus the control task's accuracy (Hewitt & Liang 2019); chance 0.
- ``steer_planted``: the mean change of the planted behaviour on ``N_STEER`` held-out prompts when
  ``steer_norm * direction / |direction|`` is added at the site (every position, a real ``Add`` intervention through
  the model's hooks), divided by the same change for ``u``: 1 for the oracle; chance 0 (a random direction's sign
  is random).
- ``steer_other``: ``|mean change|`` of the other behaviour under the same intervention, divided by the planted
  change ``u`` makes (lower is better): how much else the vector moves. Chance: its mean over ``CHANCE_DIRECTIONS``
  random directions (seeded, fixed per organism seed).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from ..core._interventions import Add
from ..lenses._probes import ProbeConfig, ProbeResult
from ..lenses._registry import METHODS
from ..lenses._steering import steering_vector
from ..organisms._protocols import RepresentationsOrganism
from ._registry import RunContext
from ._scorers import Score

FAMILY = "representations"
N_PROMPTS = 512
"""Labelled prompts the probes fit and cross-validate on (the same for every probe on one organism seed)."""
FOLDS = 5
N_PAIRS = 64
"""Contrastive pairs behind the CAA vector."""
N_STEER = 128
"""Held-out prompts the steering effects are measured on."""
CHANCE_DIRECTIONS = 16
"""Random directions behind ``steer_other``'s chance level (computed once per built organism)."""


@dataclass(frozen=True)
class ConceptReading:
    """A representations method's output: a direction at the organism's site, and a probe's accuracies if any."""

    direction: Float[Tensor, " d"]
    accuracy: float | None = None
    """Cross-validated accuracy (probes only)."""
    control_accuracy: float | None = None
    """The control task's accuracy (probes only)."""
    chance: float | None = None
    """The majority label's share (probes only)."""


def random_cosine_mean(d: int) -> float:
    """Expected ``|cos|`` of a fixed and a uniform random direction in ``d`` dimensions (about ``sqrt(2/(pi d))``)."""
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)


def _data_seed(organism: RepresentationsOrganism) -> int:
    return 10_000 + organism.seed  # the same prompts for every method on one organism seed


def _probe(organism: RepresentationsOrganism, labels: Tensor | None, seed: int) -> ConceptReading:
    tokens, true = organism.labelled(N_PROMPTS, _data_seed(organism))
    config = ProbeConfig(site=organism.site, folds=FOLDS, seed=seed % 2**31)
    result: ProbeResult = METHODS["probe"](organism.model, tokens, true if labels is None else labels, config=config)
    return ConceptReading(result.direction, result.accuracy, result.control_accuracy, result.chance)


def probe(organism: RepresentationsOrganism, ctx: RunContext) -> ConceptReading:
    """Linear probe (declared ``probe``) with its control task, on labelled prompts."""
    return _probe(organism, None, ctx.seed)


def caa(organism: RepresentationsOrganism, ctx: RunContext) -> ConceptReading:
    """Contrastive activation addition: mean positive-minus-negative activation over prompt pairs."""
    positive, negative = organism.pairs(N_PAIRS, _data_seed(organism) + 1)
    return ConceptReading(steering_vector(organism.model, positive, negative, organism.site).vector)


def shuffled_labels(organism: RepresentationsOrganism, ctx: RunContext) -> ConceptReading:
    """The linear probe on the same prompts with their labels permuted (seeded): chance by construction."""
    _, labels = organism.labelled(N_PROMPTS, _data_seed(organism))
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(ctx.seed))
    return _probe(organism, labels[perm], ctx.seed)


def random_direction(organism: RepresentationsOrganism, ctx: RunContext) -> ConceptReading:
    """A uniform random direction (seeded)."""
    gen = torch.Generator().manual_seed(ctx.seed)
    return ConceptReading(torch.randn(organism.direction.shape[-1], generator=gen, dtype=torch.float64).float())


def oracle(organism: RepresentationsOrganism, ctx: RunContext) -> ConceptReading:
    """The planted concept direction itself."""
    return ConceptReading(organism.direction.clone())


# --- scoring ------------------------------------------------------------------------------------------------------


class _Reference(NamedTuple):
    tokens: Tensor
    plain: tuple[Tensor, Tensor]
    """Both behaviours of ``tokens``, unsteered."""
    full: float
    """The planted behaviour's mean change under the oracle's vector (what ``steer_planted`` divides by)."""
    chance_other: float


_REFERENCE: weakref.WeakKeyDictionary[Any, _Reference] = weakref.WeakKeyDictionary()
"""Per built organism: what every method's steering scores are measured against (computed once)."""


def _effects(organism: RepresentationsOrganism, direction: Tensor, tokens: Tensor,
             plain: tuple[Tensor, Tensor]) -> tuple[float, float]:  # fmt: skip
    """Mean change of both behaviours when ``steer_norm`` times the unit ``direction`` is added at the site."""
    unit = direction.float() / direction.float().norm().clamp_min(1e-12)
    with organism.model.intervene(Add(organism.site, organism.steer_norm * unit)):
        planted, other = organism.behaviours(tokens)
    return float((planted - plain[0]).mean()), float((other - plain[1]).mean())


def _reference(organism: RepresentationsOrganism) -> _Reference:
    if organism not in _REFERENCE:
        tokens = organism.prompts(N_STEER, _data_seed(organism) + 2)
        plain = organism.behaviours(tokens)
        full = _effects(organism, organism.direction, tokens, plain)[0]
        gen = torch.Generator().manual_seed(_data_seed(organism) + 3)
        d = organism.direction.shape[-1]
        draws = [_effects(organism, torch.randn(d, generator=gen, dtype=torch.float64).float(), tokens, plain)[1]
                 for _ in range(CHANCE_DIRECTIONS)]  # fmt: skip
        _REFERENCE[organism] = _Reference(tokens, plain, full, sum(abs(x) for x in draws) / len(draws) / full)
    return _REFERENCE[organism]


def concept_scores(output: ConceptReading, organism: RepresentationsOrganism, method: str) -> list[Score]:
    """Direction cosine, probe accuracy and selectivity, and the steering effects (see the module docstring)."""

    def score(metric: str, value: float, chance: float, higher: bool = True) -> Score:
        return Score(method, organism.organism, organism.seed, metric, float(value), float(chance), higher)

    u = organism.direction.float()
    d = output.direction.float()
    cos = float(d @ u / (d.norm() * u.norm()).clamp_min(1e-12))
    scores = [score("direction_cosine", abs(cos), random_cosine_mean(len(u)))]
    if output.accuracy is not None and output.chance is not None:
        scores.append(score("probe_accuracy", output.accuracy, output.chance))
        if output.control_accuracy is not None:
            scores.append(score("probe_selectivity", output.accuracy - output.control_accuracy, 0.0))
    ref = _reference(organism)
    planted, other = _effects(organism, d, ref.tokens, ref.plain)
    scores.append(score("steer_planted", planted / ref.full, 0.0))
    scores.append(score("steer_other", abs(other) / ref.full, ref.chance_other, higher=False))
    return scores
