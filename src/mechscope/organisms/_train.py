"""The one training loop of the organisms' image classifiers: seeded, with fresh images every epoch.

The vision organisms of the attribution gallery (a CNN and a ViT), the trojaned CNNs and their clean twins, and the
signal-block CNNs and their twins all train here: cross-entropy, AdamW (weight decay 1e-4), a fresh set of images
each epoch (``data(epoch)``, drawn by the caller from its own seeds), and one of two learning-rate schedules. The
initialisation, the shuffling and every step draw from torch's RNG seeded with ``seed`` inside a forked RNG, so one
seed gives the same weights on one machine and the caller's RNG is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Data = Callable[[int], tuple[Tensor, Tensor]]
"""``epoch -> (images [n c h w], labels [n])``: the images of one epoch."""


@dataclass(frozen=True)
class Schedule:
    """How long and how fast a classifier trains."""

    epochs: int
    per_epoch: int
    """Images per epoch (what ``data(epoch)`` returns)."""
    batch: int
    lr: float
    """Peak learning rate."""
    kind: Literal["one_cycle", "warmup_cosine"] = "one_cycle"
    """``one_cycle``: PyTorch's ``OneCycleLR``, a quarter of the steps warming up. ``warmup_cosine``: one epoch of
    linear warm-up, then cosine decay to zero."""
    shuffle: bool = False
    """Visit each epoch's images in a fresh random order (``torch.randperm``) rather than as drawn."""

    @property
    def steps(self) -> int:
        """Optimiser steps in all (a last partial batch of an epoch is dropped)."""
        return self.epochs * (self.per_epoch // self.batch)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch on ``n`` threads inside, the caller's setting restored after.

    CPU convolutions sum in another order on another thread count, so a seeded training run's weights depend on
    it; the trojan organisms train inside this so that a build does not depend on the caller's setting.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_classifier(build: Callable[[], nn.Module], data: Data, schedule: Schedule, seed: int) -> nn.Module:
    """A module made by ``build()`` and trained from ``seed`` on ``data``; returned in eval mode, frozen."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build().train()
        opt = torch.optim.AdamW(module.parameters(), lr=schedule.lr, weight_decay=1e-4)
        sched = lr_schedule(opt, schedule)
        for epoch in range(schedule.epochs):
            x, y = data(epoch)
            order = torch.randperm(len(y)) if schedule.shuffle else None
            for i in range(0, len(y) - schedule.batch + 1, schedule.batch):
                rows = slice(i, i + schedule.batch) if order is None else order[i : i + schedule.batch]
                step(module, opt, x[rows], y[rows])
                sched.step()
    return module.eval().requires_grad_(False)


def lr_schedule(opt: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate scheduler of ``schedule`` (stepped once per optimiser step)."""
    if schedule.kind == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, schedule.lr, total_steps=max(schedule.steps, 1),
                                                   pct_start=0.25)  # fmt: skip
    warmup = schedule.per_epoch // schedule.batch

    def factor(i: int) -> float:
        return min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * i / schedule.steps))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def step(module: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
    """One optimiser step of cross-entropy; returns the loss."""
    loss = F.cross_entropy(module(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())
