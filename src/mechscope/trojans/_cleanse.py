"""Trigger reverse engineering: the smallest input change that sends clean images to a class.

Neural Cleanse (Wang et al. 2019, "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
Networks", section IV-B): for a target class, optimise a mask ``m`` in [0, 1]^(h w) and a pattern ``p`` (within the
images' value range, per channel) to minimise ``CE(f((1 - m) x + m p), target) + cost |m|_1`` over clean images, the
cost adapted so that the attack keeps succeeding while the mask shrinks. A backdoored target class needs a far
smaller mask than the others. The ``blend`` variant optimises an additive whole-image pattern ``d`` with cost
``|d|_2`` instead, for triggers that are not patches (blended gratings, frequency patterns).

Both parametrise their bounded tensors through ``tanh`` (as the paper does) and work on any ``[c h w]`` input: the
value range is read per channel from the clean images. The model's parameters are frozen during the search (no
gradients are computed for them) and its train/eval mode and ``requires_grad`` flags are restored afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from ..core import Model
from ._registry import METHODS, BlendConfig, NeuralCleanseConfig, SearchConfig
from ._result import ReversedTrigger, TriggerForm


@METHODS.declare("neural_cleanse", config=NeuralCleanseConfig, result=ReversedTrigger, tags=("patch",))
def neural_cleanse(model: Model | nn.Module, images: Tensor, target: int, config: NeuralCleanseConfig,
                   held_out: Tensor | None = None) -> ReversedTrigger:  # fmt: skip
    """Neural Cleanse: the smallest mask + pattern sending clean images to ``target`` (Wang et al. 2019)."""
    return search(model, images, target, config, "patch", held_out)


@METHODS.declare("blend", config=BlendConfig, result=ReversedTrigger, tags=("blend",))
def blend(model: Model | nn.Module, images: Tensor, target: int, config: BlendConfig,
          held_out: Tensor | None = None) -> ReversedTrigger:  # fmt: skip
    """The smallest (L2) additive whole-image pattern sending clean images to ``target``: blend/frequency triggers."""
    return search(model, images, target, config, "blend", held_out)


def search(model: Model | nn.Module, images: Float[Tensor, "batch c h w"], target: int, config: SearchConfig,
           form: TriggerForm, held_out: Tensor | None = None) -> ReversedTrigger:  # fmt: skip
    """Optimise a trigger of ``form`` for ``target`` on ``images``; attack success measured on ``held_out``.

    Without ``held_out`` the attack success is measured on ``images`` themselves.
    """
    module = model.module if isinstance(model, Model) else model
    lo, hi = value_range(images)
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + target)
    c, h, w = images.shape[1:]
    raw_pattern = (torch.randn(c, h, w, generator=gen) * 0.1).requires_grad_(True)
    raw_mask = (torch.randn(h, w, generator=gen) * 0.1).requires_grad_(True)
    params = [raw_pattern, raw_mask] if form == "patch" else [raw_pattern]
    opt = torch.optim.Adam(params, lr=config.lr, betas=(0.5, 0.9))
    labels = torch.full((config.batch,), target, dtype=torch.long)
    cost, up, down = config.init_cost, 0, 0
    best: tuple[float, Tensor, Tensor | None] | None = None
    start = time.perf_counter()
    with frozen(module):
        for _ in range(config.steps):
            x = images[torch.randint(len(images), (config.batch,), generator=gen)]
            pattern, mask = _materialise(raw_pattern, raw_mask, lo, hi, form)
            logits = module(_stamp(x, pattern, mask, lo, hi))
            size = mask.sum() if mask is not None else pattern.norm()
            loss = F.cross_entropy(logits, labels) + cost * size
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            success = float((logits.detach().argmax(-1) == target).float().mean())
            if success >= config.success and (best is None or float(size) < best[0]):
                best = (float(size), pattern.detach().clone(), None if mask is None else mask.detach().clone())
            up, down = (up + 1, 0) if success >= config.success else (0, down + 1)
            if up >= config.patience:
                cost, up = cost * config.cost_step, 0
            elif down >= config.patience:
                cost, down = cost / config.cost_step**1.5, 0
        optimised = time.perf_counter() - start
        found = best is not None
        if best is None:
            pattern, mask = _materialise(raw_pattern.detach(), raw_mask.detach(), lo, hi, form)
            size = mask.sum() if mask is not None else pattern.norm()
            best = (float(size), pattern, mask)
        start = time.perf_counter()
        rate = attack_success(module, held_out if held_out is not None else images, target, best[1], best[2], form)
        evaluated = time.perf_counter() - start
    return ReversedTrigger(target, form, best[1], best[2], best[0], found, rate, config.steps,
                           optimised, evaluated)  # fmt: skip


def value_range(images: Float[Tensor, "batch c h w"]) -> tuple[Tensor, Tensor]:
    """Per-channel minimum and maximum of ``images``, shaped ``[c 1 1]``."""
    flat = images.transpose(0, 1).flatten(1)
    return flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]


def _materialise(raw_pattern: Tensor, raw_mask: Tensor, lo: Tensor, hi: Tensor,
                 form: TriggerForm) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    if form == "blend":
        return raw_pattern * (hi - lo), None  # the additive pattern, in the images' units
    return lo + (hi - lo) * (torch.tanh(raw_pattern) + 1) / 2, (torch.tanh(raw_mask) + 1) / 2


def _stamp(x: Tensor, pattern: Tensor, mask: Tensor | None, lo: Tensor, hi: Tensor) -> Tensor:
    if mask is None:
        return torch.maximum(torch.minimum(x + pattern, hi), lo)  # stay within the images' range
    return (1 - mask) * x + mask * pattern


@torch.no_grad()
def attack_success(module: nn.Module, images: Tensor, target: int, pattern: Tensor, mask: Tensor | None,
                   form: TriggerForm, batch: int = 256) -> float:  # fmt: skip
    """Share of ``images`` not already predicted as ``target`` that the trigger sends to ``target``."""
    lo, hi = value_range(images)
    hits = total = 0
    with frozen(module):
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            keep = module(x).argmax(-1) != target
            if keep.any():
                hits += int((module(_stamp(x[keep], pattern, mask, lo, hi)).argmax(-1) == target).sum())
                total += int(keep.sum())
    return hits / total if total else 0.0


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode with no parameter gradients, its mode and flags restored afterwards."""
    training = module.training
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        module.train(training)
        for p, flag in flags:
            p.requires_grad_(flag)
