"""Circuit discovery cost on SmolLM2-135M IOI: EAP over every edge vs per-head activation patching vs node ACDC.

Contenders, on the same IOI prompt pairs (ABBA/BABA templates, ABC corruption):

- ``fwd_bwd``: the reference unit, one forward and backward pass of the batch (``model.run(corrupt, grad_at=
  ["resid_pre.0"], grad_of=mean logit difference)``: gradients reach the input, no parameter gradients);
- ``eap``: edge attribution patching of all 70,651 edges (``circuits.eap``);
- ``eap_ig``: the same with integrated gradients, 5 steps (``circuits.eap_ig``);
- ``activation_patching``: really patching each of the 270 heads' outputs (``activation_patching(kind="head.z")``),
  one forward pass per head and prompt;
- ``acdc``: node-level ACDC (``circuits.acdc``, KL, tau 0.01) over 270 heads + 30 MLPs, one forward per node.

Real patching and ACDC cost one forward per node and prompt, so they run on ``--patch-n`` pairs (default 8; the
issue's 32 would take ~10 CPU minutes each at one thread) and their throughput is counted in node-prompts per
second, which is comparable across prompt counts (their cost is linear in prompts). Goal (issue 3): EAP over the
full graph costs at most 3x one forward+backward of the batch.

Timing: ``--threads 1 --clock cpu`` (default) counts this process's CPU time with one torch thread, which other
processes on a shared machine barely change; ``--clock wall`` counts wall time. Each contender runs ``--repeats``
times (after one warm-up call for the cheap ones); the median is reported.

Run: ``.venv/bin/python benchmarks/circuits.py [--n 32] [--patch-n 8]``. No peer library in this suite (the
sweeps suite below runs TransformerLens).

``--suite sweeps`` (issue 13, "fewer passes") writes ``results/circuit_sweeps.json`` instead: the sweeps that
patch for real, each done three ways on the same IOI pairs and checked to give the same numbers:

- ``before``: mechscope at ``--before`` (a git revision, extracted with ``git archive``): every pass runs from the
  embedding and unembeds every position;
- ``after``: mechscope as it is now (``--after worktree``, or a revision): passes start at their lowest patched
  block from a cached prefix and unembed only each prompt's last real token;
- ``floor``: a plain-PyTorch loop over the model's own modules doing the same (``benchmarks/_floor.py``);
- ``tl``: TransformerLens 4 (``TransformerBridge``) doing per-head and residual patching with its best loop,
  batched by layer (``benchmarks/_tl.py``), run by ``.venv-bench/bin/python`` (``benchmarks/setup_peers.sh``).

Sweeps: per-head patching (``head.z``, 270 heads, denoising), residual patching (``resid_pre``, layer x position),
node ACDC (KL, tau 0.01, 300 nodes) and a faithfulness curve (10 sizes + 3 random circuits each, edges ranked by
EAP; no floor: evaluating edge circuits by hand is the edge engine itself). Each contender runs in its own
process (one torch thread; CPU time of the whole sweep call, its unpatched runs included, model loading not),
the contenders interleaved per repeat (``--who`` picks them); medians over ``--repeats``. The
unit for "forward-pass equivalents per patch" is one plain forward of the same prompts (full logits), timed in
the same process. The suite stops when a contender's numbers differ from mechscope's by more than 1e-4.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from mechscope._machine import machine

HERE = Path(__file__).resolve().parent


def _busy() -> tuple[float, float, float]:
    """Wall seconds, busy CPU seconds of the machine, CPU seconds of this process."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    own = os.times()
    return time.monotonic(), (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def timed(fn: Callable[[], Any], clock: str, repeats: int, warmup: int) -> tuple[list[float], float, Any]:
    """Times of ``repeats`` calls (after ``warmup``), the other processes' mean busy cores, the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    w0, b0, o0 = _busy()
    for _ in range(repeats):
        start = time.process_time() if clock == "cpu" else time.perf_counter()
        out = fn()
        times.append((time.process_time() if clock == "cpu" else time.perf_counter()) - start)
    w1, b1, o1 = _busy()
    return times, max(0.0, ((b1 - b0) - (o1 - o0)) / max(w1 - w0, 1e-9)), out


def main() -> None:
    if "--worker" in sys.argv:
        from _sweeps import worker

        worker()
        return
    if "--suite" in sys.argv:
        from _sweeps import suite

        suite()
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=32, help="IOI pairs for fwd_bwd, EAP and EAP-IG")
    p.add_argument("--patch-n", type=int, default=8, help="IOI pairs for activation patching and ACDC")
    p.add_argument("--steps", type=int, default=5, help="EAP-IG steps")
    p.add_argument("--repeats", type=int, default=3, help="timed calls of the cheap contenders")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--skip", nargs="*", default=[], help="contenders to leave out")
    p.add_argument("--out", type=Path, default=HERE / "results" / "circuits.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    import mechscope as ms
    from mechscope.circuits import acdc, activation_patching, eap, eap_ig
    from mechscope.circuits._contrast import Contrast
    from mechscope.data._metrics import logit_diff
    from mechscope.data.tasks import ioi

    model = ms.load("smollm2-135m")
    task = ioi(model.tokenizer, n=args.n, seed=0)
    few = ioi(model.tokenizer, n=args.patch_n, seed=0)
    contrast = Contrast.of(model, task, logit_diff)

    def fwd_bwd() -> None:
        def metric(out: Any) -> torch.Tensor:
            return contrast.score(out.logits).mean()

        model.run(contrast.corrupt, attention_mask=contrast.attention_mask, grad_at=["resid_pre.0"], grad_of=metric)

    unit = "CPU s" if args.clock == "cpu" else "s"
    plan: list[tuple[str, Callable[[], Any], int, int, int]] = [  # name, fn, repeats, warmup, prompts
        ("fwd_bwd", fwd_bwd, args.repeats, 1, args.n),
        ("eap", lambda: eap(model, task, batch_size=args.n, progress=False), args.repeats, 1, args.n),
        ("eap_ig", lambda: eap_ig(model, task, steps=args.steps, progress=False), args.repeats, 0, args.n),
        ("activation_patching", lambda: activation_patching(model, few, "head.z", progress=False), 1, 0, args.patch_n),
        ("acdc", lambda: acdc(model, few, tau=0.01, progress=False), 1, 0, args.patch_n),
    ]
    rows, raw, busy, extra = [], {}, {}, {}
    median: dict[str, float] = {}
    for name, fn, repeats, warmup, n in plan:
        if name in args.skip:
            continue
        print(f"{name} ({n} pairs, {repeats} timed calls)...", flush=True)
        times, other, out = timed(fn, args.clock, repeats, warmup)
        median[name] = statistics.median(times)
        raw[name], busy[name] = times, round(other, 3)
        rows.append({"name": name, "metric": f"time, {n} IOI pairs", "value": median[name], "unit": unit})
        if name in ("eap", "eap_ig"):
            n_edges = out.graph.n_edges
            rows.append({"name": name, "metric": "edges scored per second", "value": n_edges / median[name],
                         "unit": f"edges/{unit}"})  # fmt: skip
            extra[name] = {"n_edges": n_edges, "completeness": out.completeness}
        if name == "activation_patching":
            n_nodes = out.scores.numel()
            rows.append({"name": name, "metric": "heads x prompts per second", "value": n_nodes * n / median[name],
                         "unit": f"node-prompts/{unit}"})  # fmt: skip
            extra[name] = {"n_nodes": n_nodes}
        if name == "acdc":
            n_nodes = len(out.steps)
            rows.append({"name": name, "metric": "nodes x prompts per second", "value": n_nodes * n / median[name],
                         "unit": f"node-prompts/{unit}"})  # fmt: skip
            extra[name] = {"n_nodes": n_nodes, "kept": len(out.kept)}
        print(f"  {median[name]:.2f} {unit} (other processes: {other:.2f} cores)", flush=True)

    ratios = {}
    for name in ("eap", "eap_ig"):
        if name in median and "fwd_bwd" in median:
            ratios[f"{name}/fwd_bwd"] = median[name] / median["fwd_bwd"]
    per_prompt = {k: median[k] / (args.patch_n if k in ("activation_patching", "acdc") else args.n) for k in median}
    for ours in ("eap", "eap_ig"):
        for peer in ("activation_patching", "acdc"):
            if ours in per_prompt and peer in per_prompt:
                ratios[f"{ours}/{peer} [time per prompt pair]"] = per_prompt[ours] / per_prompt[peer]
    result = {
        "benchmark": "circuits: EAP over every edge vs per-head activation patching vs node ACDC (SmolLM2-135M IOI)",
        "machine": machine(),
        "rows": rows,
        "ratios": ratios,
        "goal": {"eap/fwd_bwd <= 3": ratios.get("eap/fwd_bwd", float("nan")) <= 3},
        "settings": {
            "n": args.n,
            "patch_n": args.patch_n,
            "steps": args.steps,
            "threads": args.threads,
            "clock": args.clock,
            "repeats": args.repeats,
        },
        "details": extra,
        "raw": raw,
        "other_processes_busy_cores": busy,
        "versions": {k: version(k) for k in ("torch", "transformers", "mechscope")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, args.out)
    print(json.dumps({"rows": rows, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
