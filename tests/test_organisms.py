"""The organisms' one training loop against the three loops it replaced: the same seed gives the same bytes."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from mechscope import organisms
from mechscope.organisms import _blocks, _trojan, _vision
from mechscope.organisms._train import Schedule, torch_threads, train_classifier


def _one_cycle_reference(module, batches, cfg):
    """The trojan and signal-block loops as they were: OneCycleLR, each epoch's images in the order drawn."""
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * (cfg.per_epoch // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=max(steps, 1), pct_start=0.25)
    for epoch in range(cfg.epochs):
        x, y = batches(epoch)
        for i in range(0, len(y) - cfg.batch + 1, cfg.batch):
            loss = F.cross_entropy(module(x[i : i + cfg.batch]), y[i : i + cfg.batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def _warmup_cosine_reference(module, spec, seed):
    """The vision organisms' loop as it was: warm-up then cosine, each epoch's images shuffled."""
    opt = torch.optim.AdamW(module.parameters(), lr=spec.lr, weight_decay=1e-4)
    steps = spec.epochs * (spec.per_epoch // spec.batch)
    warmup = spec.per_epoch // spec.batch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    for epoch in range(spec.epochs):
        data = _vision._data(spec, spec.per_epoch, seed=seed * 1000 + epoch)
        order = torch.randperm(len(data))
        for i in range(0, len(data) - spec.batch + 1, spec.batch):
            idx = order[i : i + spec.batch]
            loss = F.cross_entropy(module(data.images[idx]), data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def _reference(build, loop, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build().train()
        loop(module)
    return module.eval()


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_trojan_training_is_the_former_loop_bitwise():
    cfg = organisms.TrojanConfig(epochs=2, per_epoch=192)
    found, answer, target = _trojan.planted("patch", 1)
    for poisoned in (True, False):

        def batches(epoch, poisoned=poisoned):
            x, y, y_poisoned = _trojan._epoch(cfg, 1, epoch, found, answer, target)
            return x, y_poisoned if poisoned else y

        # train_cnn pins its thread count; the old loop ran on the caller's
        with torch_threads(_trojan.TRAINING_THREADS):
            old = _reference(lambda: organisms.SmallCNN(width=cfg.width),
                             lambda m, b=batches: _one_cycle_reference(m, b, cfg), seed=1)  # fmt: skip
        assert _same(old, _trojan.train_cnn(cfg, 1, found, answer, target, poisoned=poisoned))


def test_signal_block_training_is_the_former_loop_bitwise():
    cfg = organisms.BlocksConfig(epochs=2, per_epoch=192)

    def batches(epoch):
        data = _blocks.block_images(cfg.per_epoch, 2, seed=2 * 1000 + epoch)
        return data.images, data.labels

    old = _reference(lambda: organisms.SmallCNN(width=cfg.width), lambda m: _one_cycle_reference(m, batches, cfg), 2)
    assert _same(old, _blocks.train_blocks(cfg, 2, 2))


@pytest.mark.parametrize("name", ["shapes-cnn", "shapes-vit"])
def test_vision_organism_training_is_the_former_loop_bitwise(name):
    spec = dataclasses.replace(_vision.SPECS[name], epochs=2, per_epoch=192, min_accuracy=0.0)
    old = _reference(lambda: _vision._build(spec), lambda m: _warmup_cosine_reference(m, spec, 3), seed=3)
    new = _vision.Vision(name, spec).build(3).module
    assert _same(old, new)
    assert not _same(old, _vision.Vision(name, spec).build(4).module)  # the seed matters


def test_the_loop_leaves_the_callers_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    data = (torch.randn(64, 1, 8, 8), torch.randint(0, 2, (64,)))
    torch.manual_seed(0)
    train_classifier(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)), lambda e: data,
                     Schedule(2, 64, 8, 1e-2, shuffle=True), seed=5)  # fmt: skip
    assert torch.equal(torch.rand(3), expected)
