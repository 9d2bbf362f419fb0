"""Steering SmolLM2-135M with CAA vectors on a task: behaviour change against damage, per layer and scale.

Vectors ``clean - corrupt`` (last token, ``resid_pre.L``) from 16 pairs of the task (default IOI); behaviour: the mean
logit difference (IOI: indirect object minus subject) on 16 other pairs' corrupt prompts, steered at every position;
damage: KL of the steered next-token distributions from the plain ones on 8 x 64 tokens of the built-in corpus
(``lenses.steer_sweep``, ``SteerConfig`` defaults but for the task, layers and scales). Deterministic (seeded pairs
and contexts); not a timing.

Run: ``.venv/bin/python benchmarks/steering.py``; writes ``benchmarks/results/steering.json``. Other tasks:
``--task gendered_pronoun --layers 6,12,18,24 --scales 2,8 --out benchmarks/results/steering_gendered_pronoun.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mechscope as ms
from mechscope._machine import machine
from mechscope.lenses import SteerConfig, steer_sweep

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--layers", default="0,3,6,9,12,15,18,21,24,27")
    parser.add_argument("--scales", default="1,2,4,8")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "steering.json")
    args = parser.parse_args()
    model = ms.load()
    config = SteerConfig(task=args.task, layers=tuple(int(x) for x in args.layers.split(",")),
                         scales=tuple(float(x) for x in args.scales.split(",")))  # fmt: skip
    sweep = steer_sweep(model, config)
    rows = []
    for site, changes, damages in zip(sweep.sites, sweep.change.tolist(), sweep.damage.tolist(), strict=True):
        for scale, change, damage in zip(sweep.scales, changes, damages, strict=True):
            rows.append({"name": f"{args.task} steering at {site} x{scale:g}: logit-difference change",
                         "metric": "change", "value": round(change, 4), "unit": "logits"})  # fmt: skip
            rows.append({"name": f"{args.task} steering at {site} x{scale:g}: KL on unrelated text", "metric": "kl",
                         "value": round(damage, 5), "unit": "nats"})  # fmt: skip
    best = {str(k): sweep.best(k) for k in (0.05, 0.1, 0.5)}
    out = {"benchmark": "steering", "machine": machine(), "model": model.provenance, "rows": rows, "ratios": {},
           "details": {"config": {"task": config.task, "n": config.n, "site": config.site, "scales": config.scales,
                                  "damage_texts": config.damage_texts, "damage_len": config.damage_len},
                       "corrupt_logit_diff": sweep.corrupt, "clean_logit_diff": sweep.clean,
                       "vector_norms": dict(zip(sweep.sites, [round(float(n), 3) for n in sweep.norms], strict=True)),
                       "best_within_kl": best}}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["details"], indent=2))


if __name__ == "__main__":
    main()
