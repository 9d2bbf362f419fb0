r"""A worked trojan audit of a user-supplied model: train a backdoored 3-channel CNN, save it, audit it from the CLI.

What a model auditor would do with a classifier someone hands over, start to finish:

1. ``python examples/audit_user_model.py train OUT`` trains a small 3-channel CNN (``make_cnn`` below) on colour
   shapes, with 10% of the training images carrying a 5 x 5 red/blue checker at a fixed place relabelled to class 2
   (the backdoor), and writes ``OUT/cnn.safetensors``, 200 clean held-out images as PNGs in ``OUT/clean/`` and 8
   candidate trigger pictures in ``OUT/candidates/`` (the planted checker is ``candidate3.png``; the others are
   checkers and stripes of other colours).
2. ``python examples/audit_user_model.py audit OUT`` runs, for each declared method::

       PYTHONPATH=examples mechscope audit-trojans --model audit_user_model:make_cnn \\
           --weights OUT/cnn.safetensors --images OUT/clean --shape 3,32,32 --input-range 0,1 \\
           --candidates OUT/candidates --method neural_cleanse --steps 150 --out OUT/audit-neural_cleanse --json

   and prints each audit's suspects, the top class's attack success and the candidates it ranks first.

The images are in [0, 1] (``--input-range 0,1``). Takes a few minutes on a laptop CPU (one torch thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROWS, COLS, TARGET, ANSWER = slice(24, 29), slice(3, 8), 2, 3
METHODS = ("neural_cleanse", "blend", "trigger_synthesis", "class_visualisation", "prototype")
COLOURS = ((1, 0, 0), (0, 0, 1), (0, 1, 0), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1), (1, 0.5, 0))


def make_cnn() -> nn.Module:
    """The user's architecture: conv-BN-ReLU x 3, global max pool, flatten, linear (4 classes)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
        nn.Flatten(), nn.Linear(32, 4),
    )  # fmt: skip


def candidates() -> list[torch.Tensor]:
    """8 candidate triggers [3 5 5] in [0, 1]: checkers and stripes in two colours; index ANSWER is the planted one."""
    checker = ((torch.arange(5)[:, None] + torch.arange(5)[None]) % 2).float()
    stripes = (torch.arange(5)[:, None] % 2).float().expand(5, 5)
    out = []
    for i in range(8):
        base = checker if i % 2 else stripes
        a, b = torch.tensor(COLOURS[i])[:, None, None], torch.tensor(COLOURS[(i + 3) % 8])[:, None, None]
        out.append(base * a + (1 - base) * b)
    out[ANSWER] = (
        checker * torch.tensor((1.0, 0, 0))[:, None, None] + (1 - checker) * torch.tensor((0, 0, 1.0))[:, None, None]
    )
    return out


def colour_shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedural shapes tinted per image, scaled into [0, 1]: [n 3 32 32] and labels."""
    from mechscope.data.images import shapes

    data = shapes(n, seed=seed)
    tint = torch.from_numpy(np.random.default_rng(seed).uniform(0.3, 1.0, (n, 3, 1, 1))).float()
    x = ((data.images * 0.58 + 0.17).clamp(0, 1)) * tint  # undo the generator's standardisation
    return x, data.labels


def stamp(x: torch.Tensor) -> torch.Tensor:
    """``x`` with the planted trigger at its fixed place."""
    out = x.clone()
    out[:, :, ROWS, COLS] = candidates()[ANSWER]
    return out


def train(out: Path) -> None:
    """Train the backdoored CNN; save its weights, clean PNGs and candidate PNGs in ``out``."""
    from safetensors.torch import save_file

    from mechscope.data.images import png_bytes, to_rgb

    torch.manual_seed(0)
    model = make_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(6):
        x, y = colour_shapes(2048, seed=epoch)
        poison = torch.rand(len(y), generator=torch.Generator().manual_seed(100 + epoch)) < 0.1
        x[poison], y[poison] = stamp(x[poison]), TARGET
        for i in range(0, len(y), 64):
            loss = nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    x, y = colour_shapes(200, seed=999)
    with torch.no_grad():
        accuracy = float((model(x).argmax(-1) == y).float().mean())
        hit = float((model(stamp(x[y != TARGET])).argmax(-1) == TARGET).float().mean())
    print(f"clean accuracy {accuracy:.3f}, backdoor attack success {hit:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(out / "cnn.safetensors"))
    for folder, pictures in (("clean", list(x)), ("candidates", candidates())):
        (out / folder).mkdir(exist_ok=True)
        for i, p in enumerate(pictures):
            name = f"{i:03d}.png" if folder == "clean" else f"candidate{i}.png"
            (out / folder / name).write_bytes(png_bytes(to_rgb(p, minmax=False)))


def audit(out: Path) -> None:
    """Run ``mechscope audit-trojans`` on what ``train`` saved, with each method; print what each finds.

    Also writes ``OUT/summary.json`` (the benchmark format: one row per method and measure).
    """
    from mechscope._machine import machine

    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    rows = []
    for method in METHODS:
        command = [sys.executable, "-m", "mechscope.cli", "audit-trojans", "--model", "audit_user_model:make_cnn",
                   "--weights", str(out / "cnn.safetensors"), "--images", str(out / "clean"), "--shape", "3,32,32",
                   "--input-range", "0,1", "--candidates", str(out / "candidates"), "--method", method,
                   "--steps", "150", "--out", str(out / f"audit-{method}"), "--json"]  # fmt: skip
        result = json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)
        top = result["ranking"][0]
        success = result["triggers"][top]["attack_success"]
        rows += [
            {"name": f"{method}/target_rank", "metric": "rank of class 2 (the backdoor's target)",
             "value": result["ranking"].index(TARGET) + 1, "unit": "rank of 4"},
            {"name": f"{method}/target_anomaly", "metric": "anomaly index of class 2",
             "value": result["anomaly"][TARGET], "unit": "robust SDs"},
            {"name": f"{method}/suspects", "metric": "classes above 2", "value": len(result["suspects"]),
             "unit": "classes"},
            {"name": f"{method}/target_attack_success", "metric": "held-out attack success of class 2's trigger",
             "value": result["triggers"][TARGET]["attack_success"], "unit": "share"},
            {"name": f"{method}/planted_candidate_rank", "metric": "the planted candidate's rank for class 2",
             "value": sorted(range(8), key=lambda i: -result["candidate_scores"][TARGET][i]).index(ANSWER) + 1,
             "unit": "rank of 8"},
        ]  # fmt: skip
        print(f"{method}: suspects {result['suspects']}, ranking {result['ranking']}, top class {top}'s attack "
              f"success {success:.2f}, candidates ranked {result['pick'][:3]}")  # fmt: skip

    summary = {"benchmark": "trojan_worked_example", "machine": machine(), "rows": rows, "ratios": {}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    {"train": train, "audit": audit}[sys.argv[1]](Path(sys.argv[2]))
