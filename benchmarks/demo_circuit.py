"""The demo's IOI circuit on SmolLM2-135M: the numbers ``mechscope demo`` reports, as JSON rows the docs cite.

Runs ``demo.run_demo`` with its defaults (``DemoConfig()``: 8 IOI pairs, seed 0; the analysis' EAP-IG steps rule
and faithfulness goal) without the other families' sections, and records what the report states: EAP-IG's steps,
every try of the steps rule with its completeness and cost, the faithfulness curve (CPR/CMD against random
circuits), and the drawn circuit (its size, its faithfulness measured on it, random circuits of its size, whether
it reaches the goal). Times: the IOI part's CPU seconds with one torch thread, and the analysis' own wall times
(one run; wall times swell on a loaded machine, CPU time barely moves).

Run: ``.venv/bin/python benchmarks/demo_circuit.py [--out-dir out/demo-circuit]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse
import dataclasses
import json
import time
from importlib.metadata import version
from pathlib import Path

import torch

from mechscope._machine import machine

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", type=Path, default=Path("out/demo-circuit"), help="where the report is written")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results" / "demo_circuit.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    import mechscope as ms
    from mechscope.demo import DemoConfig, run_demo
    from mechscope.report import faithfulness_sentence

    model = ms.load("smollm2-135m")
    config = DemoConfig()
    start = time.process_time()
    result = run_demo(model, args.out_dir, config=config)
    cpu = time.process_time() - start
    a = result.analysis
    c = a.curve
    rows = [
        {"name": "eap_ig", "metric": "steps used", "value": a.scores.steps, "unit": "steps"},
        {"name": "eap_ig", "metric": "completeness", "value": a.scores.completeness, "unit": ""},
        {"name": "eap_ig", "metric": "forward+backward rows, all tries", "value": a.ig_cost[0], "unit": "rows"},
        {"name": "eap_ig", "metric": "time, all tries", "value": a.ig_cost[1], "unit": "s (wall)"},
    ]
    rows += [{"name": f"eap_ig_try{i}_steps{t.steps}", "metric": "completeness", "value": t.completeness, "unit": ""}
             for i, t in enumerate(a.ig_tries)]  # fmt: skip
    rows += [{"name": f"curve_{100 * s:g}%", "metric": "faithfulness", "value": f, "unit": ""}
             for s, f in zip(c.sizes, c.faithfulness, strict=True)]  # fmt: skip
    rows += [{"name": f"curve_{100 * s:g}%", "metric": "faithfulness, random mean", "value": r, "unit": ""}
             for s, r in zip(c.sizes, c.random_mean, strict=True)]  # fmt: skip
    rows += [
        {"name": "curve", "metric": "CPR", "value": c.cpr, "unit": ""},
        {"name": "curve", "metric": "CMD", "value": c.cmd, "unit": ""},
        {"name": "curve", "metric": "CPR, random", "value": c.random_cpr, "unit": ""},
        {"name": "curve", "metric": "CMD, random", "value": c.random_cmd, "unit": ""},
        {"name": "drawn_circuit", "metric": "edges", "value": a.circuit.n_edges, "unit": "edges"},
        {"name": "drawn_circuit", "metric": "share of the graph", "value": a.circuit.fraction, "unit": ""},
        {"name": "drawn_circuit", "metric": "faithfulness", "value": a.circuit_faithfulness, "unit": ""},
        {"name": "drawn_circuit", "metric": "reaches the goal", "value": int(a.circuit_reached), "unit": "bool"},
        {"name": "drawn_circuit", "metric": "nodes", "value": len(a.circuit.nodes()), "unit": "nodes"},
        {"name": "demo_ioi_part", "metric": "time", "value": cpu, "unit": "CPU s"},
    ]
    rows += [{"name": "drawn_circuit", "metric": f"faithfulness, random circuit {i}", "value": r, "unit": ""}
             for i, r in enumerate(a.circuit_random)]  # fmt: skip
    result_json = {
        "benchmark": "the demo's IOI circuit (SmolLM2-135M, DemoConfig defaults): steps rule and drawn circuit",
        "machine": machine(),
        "rows": rows,
        "ratios": {},
        "sentence": faithfulness_sentence(a),
        "config": dataclasses.asdict(config),
        "seconds": a.seconds,
        "versions": {k: version(k) for k in ("torch", "transformers", "mechscope")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result_json, indent=2))
    os.replace(tmp, args.out)
    print(json.dumps(result_json, indent=2))


if __name__ == "__main__":
    main()
