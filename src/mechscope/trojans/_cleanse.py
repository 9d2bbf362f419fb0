"""Trigger reverse engineering: the smallest input change that sends clean images to a class.

Neural Cleanse (Wang et al. 2019, "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
Networks", section IV-B): for a target class, optimise a mask ``m`` in [0, 1]^(h w) and a pattern ``p`` (within the
images' value range, per channel) to minimise ``CE(f((1 - m) x + m p), target) + cost |m|_1`` over clean images, the
cost adapted so that the attack keeps succeeding while the mask shrinks. A backdoored target class needs a far
smaller mask than the others. The ``blend`` variant is the same search with one mask value for the whole image:
``(1 - a) x + a p``, the blended-injection form of Chen et al. (2017), for triggers that are not patches (blended
gratings, frequency patterns); its size is the blend weight ``a``. (A low-norm additive pattern ``x + d`` with cost
``|d|_2`` was tried first: on ``trojan_blend`` it ranked the target last, since small adversarial perturbations to
every class are cheaper than the trigger; see docs/trojans.md.)

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
    """The smallest whole-image blend ``(1 - a) x + a p`` sending clean images to ``target`` (non-patch triggers)."""
    return search(model, images, target, config, "blend", held_out)


def search(model: Model | nn.Module, images: Float[Tensor, "batch c h w"], target: int, config: SearchConfig,
           form: TriggerForm, held_out: Tensor | None = None) -> ReversedTrigger:  # fmt: skip
    """Optimise a trigger of ``form`` for ``target`` on ``images``; attack success measured on ``held_out``.

    Without ``held_out`` the attack success is measured on ``images`` themselves.
    """
    module = model.module if isinstance(model, Model) else model
    lo, hi = value_range(images)
    start = time.perf_counter()
    best: Found | None = None
    fallback: Found | None = None
    with frozen(module):
        for restart in range(config.restarts):  # restart 0 draws as a single search always did
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + target + 104_729 * restart)
            found, last = _optimise(module, images, target, config, form, lo, hi, gen)
            if found is not None and (best is None or found[0] < best[0]):
                best = found
            fallback = fallback or last
        optimised = time.perf_counter() - start
        ok = best is not None
        best = best or fallback
        assert best is not None
        start = time.perf_counter()
        rate = attack_success(module, held_out if held_out is not None else images, target, best[1], best[2])
        evaluated = time.perf_counter() - start
    return ReversedTrigger(target, form, best[1], best[2], best[0], ok, rate, config.steps * config.restarts,
                           optimised, evaluated)  # fmt: skip


Found = tuple[float, Tensor, Tensor]
"""A trigger as a search keeps it: its size, pattern and mask."""


def _optimise(module: nn.Module, images: Tensor, target: int, config: SearchConfig, form: TriggerForm, lo: Tensor,
              hi: Tensor, gen: torch.Generator) -> tuple[Found | None, Found]:  # fmt: skip
    """One search from the start ``gen`` draws: the smallest successful trigger (None if none) and the last one."""
    c, h, w = images.shape[1:]
    raw_pattern = (torch.randn(c, h, w, generator=gen) * 0.1).requires_grad_(True)
    mask_shape = (h, w) if form == "patch" else (1, 1)  # a blend: one weight for every pixel
    raw_mask = (torch.randn(mask_shape, generator=gen) * 0.1).requires_grad_(True)
    opt = torch.optim.Adam([raw_pattern, raw_mask], lr=config.lr, betas=(0.5, 0.9))
    labels = torch.full((config.batch,), target, dtype=torch.long)
    cost, up, down = config.init_cost, 0, 0
    best: Found | None = None
    for _ in range(config.steps):
        x = images[torch.randint(len(images), (config.batch,), generator=gen)]
        pattern, mask = _materialise(raw_pattern, raw_mask, lo, hi)
        logits = module(stamp(x, pattern, mask))
        size = mask.sum()
        loss = F.cross_entropy(logits, labels) + cost * size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        success = float((logits.detach().argmax(-1) == target).float().mean())
        if success >= config.success and (best is None or float(size.detach()) < best[0]):
            best = (float(size.detach()), pattern.detach().clone(), mask.detach().clone())
        up, down = (up + 1, 0) if success >= config.success else (0, down + 1)
        if up >= config.patience:
            cost, up = cost * config.cost_step, 0
        elif down >= config.patience:
            cost, down = cost / config.cost_step**1.5, 0
    pattern, mask = _materialise(raw_pattern.detach(), raw_mask.detach(), lo, hi)
    return best, (float(mask.sum()), pattern, mask)


def value_range(images: Float[Tensor, "batch c h w"]) -> tuple[Tensor, Tensor]:
    """Per-channel minimum and maximum of ``images``, shaped ``[c 1 1]``."""
    flat = images.transpose(0, 1).flatten(1)
    return flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]


def _materialise(raw_pattern: Tensor, raw_mask: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Pattern within ``[lo, hi]`` per channel and mask in [0, 1], through tanh (Wang et al. 2019, section IV-B)."""
    return lo + (hi - lo) * (torch.tanh(raw_pattern) + 1) / 2, (torch.tanh(raw_mask) + 1) / 2


def stamp(x: Float[Tensor, "batch c h w"], pattern: Tensor, mask: Tensor) -> Float[Tensor, "batch c h w"]:
    """``(1 - mask) x + mask pattern`` (the mask ``[h w]``, or ``[1 1]`` for a blend, broadcast over channels)."""
    return (1 - mask) * x + mask * pattern


@torch.no_grad()
def attack_success(module: nn.Module, images: Tensor, target: int, pattern: Tensor, mask: Tensor,
                   batch: int = 256) -> float:  # fmt: skip
    """Share of ``images`` not already predicted as ``target`` that the trigger sends to ``target``."""
    hits = total = 0
    with frozen(module):
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            keep = module(x).argmax(-1) != target
            if keep.any():
                hits += int((module(stamp(x[keep], pattern, mask)).argmax(-1) == target).sum())
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
