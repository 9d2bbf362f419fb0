"""The declared trigger reverse-engineering methods: one registry, a frozen config per method.

Each method is ``fn(model, images, target, config) -> ReversedTrigger``: the smallest trigger, in its own sense of
size, that sends ``images`` to class ``target``. :func:`mechscope.trojans.audit` runs one of them for every class
and compares the sizes across classes. The methods are declared in :mod:`mechscope.trojans._cleanse`, imported the
first time the registry is asked for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core._registry import Registry

METHODS: Registry[Any, Any] = Registry(
    "trojans", builtins=["mechscope.trojans._cleanse", "mechscope.trojans._synthesis"]
)
"""Trigger methods by name: reverse engineering (``neural_cleanse``, ``blend``) and feature synthesis
(``class_visualisation``, ``prototype``, ``trigger_synthesis``)."""


@dataclass(frozen=True)
class SearchConfig:
    """Settings shared by the trigger searches: the optimisation budget and the adaptive size cost."""

    steps: int = 300
    """Optimiser steps per class."""
    batch: int = 32
    """Clean images per step (drawn with replacement from the optimisation images)."""
    lr: float = 0.1
    """Adam learning rate on the unconstrained (tanh) parameters."""
    init_cost: float = 1e-3
    """Starting weight of the trigger's size in the loss (Wang et al. 2019, section IV-B: ``init_cost``)."""
    success: float = 0.99
    """Attack success on the step's batch above which the cost rises (and a trigger counts as found)."""
    patience: int = 5
    """Consecutive steps above (below) ``success`` before the cost is multiplied (divided) by ``cost_step``."""
    cost_step: float = 1.5
    """Factor by which the cost rises or falls (Wang et al. use 1.5 up, 1.5 ** 1.5 down)."""
    seed: int = 0
    """Seeds the initial trigger and the batches."""
    restarts: int = 1
    """Searches per class from different random starts (each ``steps`` long); the smallest successful trigger is
    kept. On the colour organisms one start's smallest trigger depends on where it began (trojan_rgb seed 1: the
    target ranked first from one start, third from another), so an audit that must not miss takes several."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.patience < 1 or self.restarts < 1:
            raise ValueError(f"steps, batch, patience and restarts must be >= 1: {self}")
        if not (0 < self.success <= 1) or self.cost_step <= 1 or self.init_cost < 0 or self.lr <= 0:
            raise ValueError(f"need 0 < success <= 1, cost_step > 1, init_cost >= 0 and lr > 0: {self}")


@dataclass(frozen=True)
class NeuralCleanseConfig(SearchConfig):
    """Settings of ``neural_cleanse``: a mask and a pattern, ``x' = (1 - m) x + m p``; size = the mask's L1 norm."""


@dataclass(frozen=True)
class BlendConfig(SearchConfig):
    """Settings of ``blend``: one blend weight for the whole image, ``x' = (1 - a) x + a p``; size = ``a``."""

    init_cost: float = 1.0
    """Starting weight of the blend weight ``a`` in the loss (``a`` is at most 1, a patch mask's L1 norm ~ pixels)."""


@dataclass(frozen=True)
class ClassVisualisationConfig:
    """Settings of ``class_visualisation``: a robust Fourier-parametrised image maximising the class logit.

    Its size (for the anomaly index) is the class's cross-entropy on the clean images with the visualisation
    blended in at weight ``alpha``: a class whose own picture is an unusually strong trigger stands out.
    """

    steps: int = 200
    """Adam steps of the visualisation."""
    lr: float = 0.05
    """Adam learning rate on the Fourier coefficients."""
    jitter: float = 2.0
    """Largest random shift per step, in pixels (transformation robustness, Olah et al. 2017)."""
    zoom: float = 0.1
    """Random zoom per step in ``[1 - zoom, 1 + zoom]``."""
    rotate: float = 5.0
    """Largest random rotation per step, in degrees."""
    decay_power: float = 1.0
    """Fourier spectrum scaling ``1 / f ** decay_power``."""
    alpha: float = 0.3
    """Blend weight at which the visualisation is put into clean images to measure it as a trigger."""
    seed: int = 0
    """Seeds the initial image and the transforms."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.jitter < 0 or not 0 <= self.zoom < 1 or self.rotate < 0:
            raise ValueError(f"need steps >= 1, lr > 0, jitter >= 0, 0 <= zoom < 1 and rotate >= 0: {self}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")


@dataclass(frozen=True)
class PrototypeConfig(ClassVisualisationConfig):
    """Settings of ``prototype``: the class visualisation plus a pull towards the class's real activation path."""

    path_weight: float = 10.0
    """Weight of the activation-path regulariser (Tagade & Rumbelow 2023; 0 gives ``class_visualisation``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.path_weight < 0:
            raise ValueError(f"path_weight must be >= 0, got {self.path_weight}")


@dataclass(frozen=True)
class TriggerSynthesisConfig:
    """Settings of ``trigger_synthesis``: one small patch that sends many images to the class, wherever it is put.

    Its size (for the anomaly index) is the class's mean cross-entropy on the clean images with the patch pasted at
    random places: a class that a small, transferable patch reaches unusually easily stands out.
    """

    steps: int = 300
    """Adam steps."""
    batch: int = 32
    """Clean images per step (drawn with replacement), each with the patch at its own random place."""
    lr: float = 0.1
    """Adam learning rate on the unconstrained (tanh) patch."""
    patch: float = 0.2
    """Side of the square patch as a share of the image's shorter side."""
    seed: int = 0
    """Seeds the initial patch, the batches and the placements."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.lr <= 0 or not 0 < self.patch <= 1:
            raise ValueError(f"need steps >= 1, batch >= 1, lr > 0 and 0 < patch <= 1: {self}")
