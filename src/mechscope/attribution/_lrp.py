"""Layer-wise relevance propagation with the epsilon rule, through Captum's LRP, where the model's layers allow it.

LRP (Bach et al. 2015, "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance
Propagation", eq. 56-58 for the epsilon rule) passes the target's value backwards layer by layer, each layer
splitting its output relevance among its inputs in proportion to their contributions ``z_ij = x_i w_ij``, with a
small ``epsilon`` in the denominator. Element-wise activations (ReLU, Tanh, Dropout) pass relevance through. For a
ReLU network without biases it equals input x gradient (Ancona et al. 2018, section 3.2), which the tests check.

Captum's LRP knows convolutions, linear layers, batch norm and average/max pools; mechscope adds the epsilon rule on
adaptive max pools (a max pool of the whole map) and the identity rule on reshaping modules (``nn.Flatten``,
``nn.Unflatten``, ``nn.Identity``: each output entry is one input entry, so relevance moves with it, reshaped by
autograd). Layers without a defined rule (layer norm, attention, GELU) raise, naming the module: LRP is not defined
for them without a model-specific rule.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from captum.attr import LRP
from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
from captum.attr._utils.lrp_rules import EpsilonRule, PropagationRule
from torch import nn

from ..core._model import Model
from ._gradients import _result
from ._registry import LRPConfig
from ._result import Attribution
from ._space import space
from ._targets import Logit, _per_example

_EPSILON_LAYERS = (*SUPPORTED_LAYERS_WITH_RULES, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
"""Leaf modules that take the epsilon rule: Captum's (all epsilon by default) plus adaptive max pools."""

_RESHAPES = (nn.Flatten, nn.Unflatten, nn.Identity)
"""Leaf modules that only move entries: the identity rule."""


class _ReshapeRule(PropagationRule):
    """Identity rule for a module that only moves entries (its relevance sum is kept).

    It installs no hooks, so the relevance flowing backwards as Captum's modified gradient is reshaped by autograd
    like the tensor itself. (Captum's own ``IdentityRule`` hands the output's relevance to the input unchanged,
    which needs equal shapes.)
    """

    def forward_hook(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        return None

    def forward_hook_weights(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        return None

    def forward_pre_hook_activations(self, module: nn.Module, inputs: Any) -> None:
        return None

    def _manipulate_weights(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        return None


def lrp(model: Model, inputs: Any, target: Any, *, epsilon: float = LRPConfig.epsilon) -> Attribution:
    """Epsilon-rule LRP of a class logit on the model's input, for models built from conv/linear/norm/pool layers."""
    start, sp = time.perf_counter(), space(model, inputs, target, "input")
    if not isinstance(sp.target, Logit):
        raise ValueError(f"LRP explains a class logit (an int or a list of ints); got target {sp.target!r}")
    ruled = []
    try:
        for name, m in model.module.named_modules():
            if list(m.children()) or type(m) in SUPPORTED_NON_LINEAR_LAYERS:
                continue
            has_rule = isinstance(m, (*_EPSILON_LAYERS, *_RESHAPES))  # (not narrowing m: Captum's types are Any)
            if not has_rule:
                raise ValueError(
                    f"LRP has no rule for {name!r} ({type(m).__name__}): mechscope's LRP covers conv, linear, batch "
                    "norm, pools, ReLU/Tanh/Dropout and reshapes (nn.Flatten, nn.Unflatten, nn.Identity, or tensor "
                    "methods in forward). Use integrated_gradients or input_x_gradient for this model"
                )
            # Captum reads the rule from this attribute
            m.rule = _ReshapeRule() if isinstance(m, _RESHAPES) else EpsilonRule(epsilon)
            ruled.append(m)
        idx = _per_example(sp.target.index, sp.n, sp.x.device)
        with torch.enable_grad():
            attr = LRP(model.module).attribute(sp.leaf(), target=idx)
    finally:
        for m in ruled:  # Captum deletes ``rule`` itself when it finishes; not when it fails
            for leftover in ("rule", "activations"):
                if hasattr(m, leftover):
                    delattr(m, leftover)
    return _result(sp, attr, "lrp", {"rule": "epsilon", "epsilon": epsilon}, start)
