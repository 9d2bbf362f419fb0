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

METHODS: Registry[Any, Any] = Registry("trojans", builtins=["mechscope.trojans._cleanse"])
"""Trigger reverse-engineering methods by name (``neural_cleanse``, ``blend``)."""


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

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.patience < 1:
            raise ValueError(f"steps, batch and patience must be >= 1: {self}")
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
