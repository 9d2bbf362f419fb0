"""EAP-IG completeness against integration steps on SmolLM2-135M IOI: where the demo's steps rule starts, and its cost.

EAP-IG's edges out of ``input`` sum to the whole clean - corrupt change of the metric when the integral is exact
(``EdgeScores.completeness`` = that sum / (m(clean) - m(corrupt)), ideally 1; Hanna et al. 2024, section 3). The
demo (``circuits.analyse``) starts at ``AnalysisConfig.ig_steps`` and doubles the steps while completeness is
further than 0.1 from 1. This script measures completeness on the doubling ladder (5, 10, 20, 40, ...) on
*held-out* IOI prompt sets (``ioi(seed=1, 2, 3)``, 8 pairs each, as many as the demo's) and picks the start: the
fewest steps on the ladder at which every held-out set is within tolerance. The demo's own set (``seed=0``) is
measured too and reported beside, never used to choose.

Cost: rows through the forward and backward pass (``steps`` copies of each pair, deterministic) and CPU seconds
with one torch thread (one run per cell: each cell is one full EAP-IG run, up to minutes; CPU time barely moves
with other processes on a shared machine). The rule's cost on a set is the sum over its tries.

Run: ``.venv/bin/python benchmarks/eapig_steps.py [--steps 5 10 20 40] [--seeds 1 2 3]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse
import json
import time
from importlib.metadata import version
from pathlib import Path

import torch

from mechscope._machine import machine

HERE = Path(__file__).resolve().parent


def rule(cells: dict[int, tuple[float, float]], start: int, tolerance: float) -> dict[str, float | int | bool]:
    """The steps rule replayed on measured cells ``steps -> (completeness, CPU s)``: start at ``start``, double
    while completeness is off. ``reached`` False: the measured ladder ended first (more steps were not measured)."""
    k, spent, seconds, completeness = start, 0, 0.0, float("nan")
    while k in cells:
        completeness, cpu = cells[k]
        spent, seconds = spent + k, seconds + cpu
        if abs(completeness - 1) <= tolerance:
            return {"final_steps": k, "completeness": completeness, "steps_spent": spent, "cpu_s": seconds,
                    "reached": True}  # fmt: skip
        k *= 2
    return {"final_steps": k // 2, "completeness": completeness, "steps_spent": spent, "cpu_s": seconds,
            "reached": False}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 40], help="the doubling ladder measured")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="held-out IOI prompt sets")
    p.add_argument("--demo-seed", type=int, default=0, help="the demo's prompt set (reported, not used to choose)")
    p.add_argument("--n", type=int, default=8, help="IOI pairs per set (the demo's default)")
    p.add_argument("--tolerance", type=float, default=0.1, help="completeness within this of 1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results" / "eapig_steps.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    import mechscope as ms
    from mechscope.circuits import eap_ig
    from mechscope.data.tasks import ioi

    model = ms.load("smollm2-135m")
    cells: dict[int, dict[int, tuple[float, float]]] = {}
    rows = []
    for seed in [*args.seeds, args.demo_seed]:
        task = ioi(model.tokenizer, n=args.n, seed=seed)
        cells[seed] = {}
        for steps in args.steps:
            start = time.process_time()
            scores = eap_ig(model, task, steps=steps, progress=False)
            cpu = time.process_time() - start
            cells[seed][steps] = (scores.completeness, cpu)
            role = "demo" if seed == args.demo_seed else "held-out"
            name = f"ioi_seed{seed}_steps{steps}"
            rows += [{"name": name, "metric": f"completeness ({role} set)", "value": scores.completeness, "unit": ""},
                     {"name": name, "metric": "CPU time, one run", "value": cpu, "unit": "CPU s"},
                     {"name": name, "metric": "forward+backward rows", "value": steps * args.n,
                      "unit": "rows"}]  # fmt: skip
            print(f"seed {seed} ({role}), {steps} steps: completeness {scores.completeness:.3f}, {cpu:.1f} CPU s "
                  f"(clean {scores.clean_metric:.3f}, corrupt {scores.corrupt_metric:.3f})", flush=True)  # fmt: skip

    def ok(seed: int, steps: int) -> bool:
        return abs(cells[seed][steps][0] - 1) <= args.tolerance

    chosen = next((k for k in args.steps if all(ok(s, k) for s in args.seeds)), args.steps[-1])
    replay = {}
    for seed in [*args.seeds, args.demo_seed]:
        r = replay[seed] = rule(cells[seed], chosen, args.tolerance)
        name = f"rule_from{chosen}_ioi_seed{seed}"
        rows += [{"name": name, "metric": "final steps", "value": r["final_steps"], "unit": "steps"},
                 {"name": name, "metric": "completeness", "value": r["completeness"], "unit": ""},
                 {"name": name, "metric": "forward+backward rows, all tries", "value": r["steps_spent"] * args.n,
                  "unit": "rows"},
                 {"name": name, "metric": "CPU time, all tries", "value": r["cpu_s"], "unit": "CPU s"}]  # fmt: skip
    base = args.steps[0]
    held = args.seeds
    ratios = {f"cpu steps{chosen}/steps{base} [held-out mean]":
              sum(cells[s][chosen][1] for s in held) / sum(cells[s][base][1] for s in held)}  # fmt: skip
    result = {
        "benchmark": "EAP-IG completeness vs integration steps (SmolLM2-135M IOI): the demo's steps rule",
        "machine": machine(),
        "rows": rows,
        "ratios": ratios,
        "chosen_start": chosen,
        "rule": f"start at {chosen} steps, double while |completeness - 1| > {args.tolerance:g}",
        "settings": {
            "steps": args.steps,
            "held_out_seeds": args.seeds,
            "demo_seed": args.demo_seed,
            "n": args.n,
            "tolerance": args.tolerance,
            "threads": args.threads,
            "clock": "cpu",
            "repeats": 1,
        },
        "replay": {str(k): v for k, v in replay.items()},
        "versions": {k: version(k) for k in ("torch", "transformers", "mechscope")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, args.out)
    print(json.dumps({"chosen_start": chosen, "replay": replay, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
