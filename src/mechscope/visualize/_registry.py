"""The declared visualisation methods: feature visualisation and class prototypes, each with its frozen config.

``mechscope visualize`` builds its options from these configs (help from the field docstrings, defaults from the
dataclasses), and the report and the app read the same declarations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ..core import Model
from ..core._registry import Registry
from ._objectives import Objective
from ._optimize import Visualization, VisualizeConfig, visualize
from ._param import InputRange
from ._prototype import ClassPaths, PrototypeConfig, PrototypeResult, prototype

METHODS: Registry[Any, Any] = Registry("visualize")
"""Visualisation methods by name."""


@METHODS.declare("feature", config=VisualizeConfig, result=Visualization)
def feature(model: Model, unit: str | Objective | Sequence[str], shape: tuple[int, int, int], input_range: InputRange,
            config: VisualizeConfig) -> Visualization:  # fmt: skip
    """Activation maximisation of a unit (Olah et al. 2017), optionally several diverse images."""
    return visualize(model, unit, shape, input_range=input_range, config=config)


@METHODS.declare("prototype", config=PrototypeConfig, result=PrototypeResult)
def class_prototype(model: Model, cls: int, paths: ClassPaths, held_out: tuple[Tensor, Tensor],
                    shape: tuple[int, int, int], input_range: InputRange, logit_site: str,
                    config: PrototypeConfig) -> PrototypeResult:  # fmt: skip
    """Prototype Generation (Tagade & Rumbelow 2023): a class logit maximised along a natural activation path."""
    return prototype(model, cls, paths, held_out=held_out, shape=shape, input_range=input_range, config=config,
                     path_weight=config.path_weight, logit_site=logit_site)  # fmt: skip
