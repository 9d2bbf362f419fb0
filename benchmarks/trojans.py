"""Trojan audit speed: ``mechscope.trojans.audit`` against a straightforward Neural Cleanse loop, same work.

The model: a seeded 10-class CNN on 3 x 32 x 32 inputs (conv-BN-ReLU x 3 with pooling, global max pool, linear;
random weights: the cost of a trigger search does not depend on what the model learned). Images: 200 seeded
Gaussian images, 150 to optimise on and 50 held out (the audit's default 0.25 share).

Both sides run the same search per class: ``--steps`` Adam steps on a tanh-parametrised mask and pattern, batches of
32 drawn with replacement, loss ``CE + cost |m|_1`` with the adaptive cost of Wang et al. (2019), the smallest
successful trigger kept, then attack success on the held-out images. The reference is written the way the paper's
code reads (model in eval mode, its parameters left trainable, a plain Python loop), without mechscope.

Rows: total audit seconds and seconds per class (medians over ``--rounds``), and mechscope's split between
optimisation (forward, backward, update) and evaluation (held-out attack success). Torch runs on one thread (the
machine is shared: more threads only contend).

Detection (``detection`` rows, seed 0 of each organism, 160 held-out images, 120 steps per class as in the tests):
for ``trojan_patch`` (``neural_cleanse``) and ``trojan_blend`` (``blend``), the trojaned model's rank and anomaly
index of its target class, and the largest anomaly index of any class of its clean twin (a false alarm above 2).

Run: ``.venv/bin/python benchmarks/trojans.py [--rounds 3 --steps 100]``; writes ``benchmarks/results/trojans.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechscope import trojans
from mechscope._machine import machine

ROOT = Path(__file__).resolve().parent.parent
N_CLASSES, BATCH = 10, 32


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
        nn.Flatten(), nn.Linear(32, N_CLASSES),
    ).eval()  # fmt: skip


def reference_audit(model: nn.Module, fit: Tensor, test: Tensor, steps: int) -> list[float]:
    """The Neural Cleanse loop written out plainly: one search per class, then held-out attack success."""
    cfg = trojans.NeuralCleanseConfig(steps=steps, batch=BATCH)
    model.eval()
    lo = fit.transpose(0, 1).flatten(1).min(1).values[:, None, None]
    hi = fit.transpose(0, 1).flatten(1).max(1).values[:, None, None]
    sizes = []
    for target in range(N_CLASSES):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + target)
        p = (torch.randn(fit.shape[1:], generator=gen) * 0.1).requires_grad_(True)
        m = (torch.randn(fit.shape[2:], generator=gen) * 0.1).requires_grad_(True)
        opt = torch.optim.Adam([p, m], lr=cfg.lr, betas=(0.5, 0.9))
        y = torch.full((BATCH,), target)
        cost, up, down, best = cfg.init_cost, 0, 0, None
        for _ in range(steps):
            x = fit[torch.randint(len(fit), (BATCH,), generator=gen)]
            pattern = lo + (hi - lo) * (torch.tanh(p) + 1) / 2
            mask = (torch.tanh(m) + 1) / 2
            logits = model((1 - mask) * x + mask * pattern)
            loss = F.cross_entropy(logits, y) + cost * mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            acc = (logits.argmax(-1) == target).float().mean().item()
            if acc >= cfg.success and (best is None or mask.sum().item() < best[0]):
                best = (mask.sum().item(), pattern.detach().clone(), mask.detach().clone())
            up, down = (up + 1, 0) if acc >= cfg.success else (0, down + 1)
            if up >= cfg.patience:
                cost, up = cost * cfg.cost_step, 0
            elif down >= cfg.patience:
                cost, down = cost / cfg.cost_step**1.5, 0
        if best is None:
            best = (mask.sum().item(), pattern.detach(), mask.detach())
        with torch.no_grad():
            keep = model(test).argmax(-1) != target
            stamped = (1 - best[2]) * test[keep] + best[2] * best[1]
            _ = (model(stamped).argmax(-1) == target).float().mean().item()
        sizes.append(best[0])
    return sizes


def detection(steps: int = 120) -> list[dict]:
    """Target rank and anomaly on the trojaned organisms, largest anomaly on their clean twins."""
    from mechscope import organisms

    rows = []
    for recipe, method in ((organisms.TrojanPatch(), "neural_cleanse"), (organisms.TrojanBlend(), "blend")):
        org = organisms.obtain(recipe, 0)
        x = org.test.images[:160]
        found = trojans.audit(org.model, x, method=method, steps=steps, progress=False)
        twin = trojans.audit(org.twin, x, method=method, steps=steps, progress=False)
        name = f"{recipe.name} seed 0 {method}"
        rows += [
            {"name": f"{name}: target rank (1 = first)", "metric": "detection",
             "value": found.ranking.index(org.target) + 1, "unit": "rank"},
            {"name": f"{name}: target anomaly index", "metric": "detection", "value": found.anomaly[org.target],
             "unit": "MAD"},
            {"name": f"{name}: target trigger held-out attack success", "metric": "detection",
             "value": found.triggers[org.target].attack_success, "unit": "share"},
            {"name": f"{name}: clean twin's largest anomaly index", "metric": "detection", "value": max(twin.anomaly),
             "unit": "MAD"},
        ]  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "trojans.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = cnn()
    images = torch.randn(200, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours, theirs, opt_s, eval_s = [], [], [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        result = trojans.audit(model, images, steps=args.steps, batch=BATCH, progress=False)
        ours.append(time.perf_counter() - start)
        opt_s.append(result.optimisation_s)
        eval_s.append(result.evaluation_s)
        start = time.perf_counter()
        reference_audit(model, images[:150], images[150:], args.steps)
        theirs.append(time.perf_counter() - start)
    med = statistics.median
    rows = [
        {"name": "mechscope audit total", "metric": "wall", "value": med(ours), "unit": "s"},
        {"name": "mechscope audit per class", "metric": "wall", "value": med(ours) / N_CLASSES, "unit": "s"},
        {"name": "mechscope optimisation", "metric": "wall", "value": med(opt_s), "unit": "s"},
        {"name": "mechscope evaluation", "metric": "wall", "value": med(eval_s), "unit": "s"},
        {"name": "reference Neural Cleanse loop total", "metric": "wall", "value": med(theirs), "unit": "s"},
        {"name": "reference per class", "metric": "wall", "value": med(theirs) / N_CLASSES, "unit": "s"},
    ]
    rows += detection()
    out = {"benchmark": "trojans", "machine": machine(),
           "setup": {"classes": N_CLASSES, "shape": [3, 32, 32], "steps": args.steps, "batch": BATCH,
                     "images": 200, "held_out": 50, "rounds": args.rounds, "threads": 1},
           "rows": rows, "ratios": {"ours/peer": med(ours) / med(theirs)}}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
