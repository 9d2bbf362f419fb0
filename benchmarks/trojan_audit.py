"""What the trojan audit finds: every declared trojan method on every trojaned organism and its clean twin, 3 seeds.

The bench's own run (``mechscope.bench.run_bench``, full budgets: ``bench._vision_methods.AUDIT[False]``) restricted
to the trojan organisms (``trojan_patch``, ``trojan_blend``, ``trojan_natural``: grey, one randomly placed trigger;
``trojan_rgb``: colour, a fixed-place patch; ``trojan_two``: colour, a fixed-place patch and a blended grating to two
targets), the audit methods (``trojans.METHODS``: ``neural_cleanse``, ``blend``, ``class_visualisation``,
``prototype``, ``trigger_synthesis``) and the ``random`` and ``oracle`` baselines, on seeds 0-2.

Rows (``name`` = ``organism/method/metric``, ``value`` = the mean over seeds; ``per_seed`` beside it):
``target_identification`` (share of planted targets ranked on top; chance k/n), ``twin_false_alarm`` (any clean-twin
class above an anomaly index of 2; lower is better), ``trigger_reconstruction`` (mask mass in the true region; not for
blends), ``trigger_pick`` (the 8-way multiple choice, from the target class's trigger picture; chance 1/8, with the
same pick made on the twin as ``clean_twin``) and ``trojan_detection``. Each row carries its chance level.

One torch thread (the bench's default is 2; on a shared machine two threads contend); the sums then round a
little differently from a default bench run, so the leaderboard's numbers for the same seeds can differ slightly.

Run: ``.venv/bin/python benchmarks/trojan_audit.py [--seeds 0,1,2] [--organisms ...] [--methods ...] [--steps N]
[--out FILE]``; writes ``benchmarks/results/trojan_audit.json`` after every organism (a partial run keeps what
finished; rows of organisms not run this time are kept from the file). ``--steps`` replaces the bench's full per-class
budget (``AUDIT[False]["steps"]``, 60) for this run and ``--restarts`` the searches per class (``neural_cleanse``,
``blend``; 1); ``benchmarks/results/trojan_audit_restarts.json`` is ``--organisms trojan_rgb,trojan_two --methods
neural_cleanse,random,oracle --steps 150 --restarts 3 --out benchmarks/results/trojan_audit_restarts.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mechscope._machine import machine
from mechscope.bench import run_bench
from mechscope.bench._vision_methods import AUDIT

ROOT = Path(__file__).resolve().parent.parent
ORGANISMS = ("trojan_rgb", "trojan_two", "trojan_patch", "trojan_blend", "trojan_natural")
METHODS = ("neural_cleanse", "blend", "class_visualisation", "prototype", "trigger_synthesis", "random", "oracle")
METRICS = ("target_identification", "twin_false_alarm", "trigger_reconstruction", "trigger_pick", "trojan_detection")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--organisms", default=",".join(ORGANISMS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=None, help="per-class steps (default: the bench's full budget)")
    parser.add_argument("--restarts", type=int, default=None, help="searches per class (neural_cleanse, blend)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/trojan_audit.json"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    organisms = args.organisms.split(",")
    if args.steps is not None:
        AUDIT[False] = AUDIT[False] | {"steps": args.steps}
    if args.restarts is not None:
        AUDIT[False] = AUDIT[False] | {"restarts": args.restarts}
    torch.set_num_threads(1)  # as the runs below pin it, so that machine() records it
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {"rows": [], "errors": []}
    rows: list[dict] = [r for r in old["rows"] if r["name"].split("/")[0] not in organisms]
    errors: list[str] = [e for e in old.get("errors", []) if not any(o in e for o in organisms)]
    for organism in organisms:
        start = time.perf_counter()
        board = run_bench(quick=False, seeds=seeds, organisms=[organism], methods=args.methods.split(","),
                          progress=False, threads=1)  # fmt: skip
        errors += [str(e) for e in board.errors]
        groups: dict[tuple[str, str], list] = {}
        for s in board.scores:
            if s.metric in METRICS:
                groups.setdefault((s.method, s.metric), []).append(s)
        for (method, metric), scores in sorted(groups.items()):
            scores.sort(key=lambda s: s.seed)
            rows.append({
                "name": f"{organism}/{method}/{metric}", "metric": metric,
                "value": statistics.fmean(s.value for s in scores), "unit": "share",
                "chance": statistics.fmean(s.chance for s in scores), "higher_is_better": scores[0].higher_is_better,
                "per_seed": {str(s.seed): s.value for s in scores},
                "baselines": {k: statistics.fmean(s.baselines[k] for s in scores if k in s.baselines)
                              for k in scores[0].baselines},
                "seconds": statistics.fmean(s.seconds for s in scores),
            })  # fmt: skip
        print(f"{organism}: {time.perf_counter() - start:.0f} s", flush=True)
        rows.sort(key=lambda r: (ORGANISMS.index(r["name"].split("/")[0]), r["name"]))
        body = {"benchmark": "trojan_audit", "machine": machine(), "seeds": seeds, "steps": AUDIT[False]["steps"],
                "restarts": AUDIT[False].get("restarts", 1), "rows": rows, "ratios": {}, "errors": errors}  # fmt: skip
        out.write_text(json.dumps(body, indent=1) + "\n")


if __name__ == "__main__":
    main()
