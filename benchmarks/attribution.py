"""Input attribution: mechscope against Captum (same process) and pytorch-grad-cam (its own venv), in CPU time.

Workloads (the issue's): on the built-in small CNN (``shapes-cnn``, 32 held-out 32 x 32 images, target = true class)

- ``ig50``: Integrated Gradients, 50 steps, Captum's default rule (Gauss-Legendre), zero baseline:
  ``captum.attr.IntegratedGradients(module).attribute(x, target=y, n_steps=50)`` (its default: all 1600 rows in one
  pass) against ``mechscope.attribution.integrated_gradients(model, x, y, rule="gausslegendre", steps=50)`` (which
  runs 128-row passes: 4 copies of the batch, about 128k attributed elements); Captum with
  ``internal_batch_size=128`` too, to show how much of the difference is the pass size;
- ``ig_adaptive`` / ``ig_gl``: mechscope's adaptive IG (and plain Gauss-Legendre) with the fewest steps (from a
  ladder) whose mean |completeness gap| is at most Captum's 50-step gap **on held-out images** (the next 32 of the
  test set), timed on the first 32 against Captum's 50 steps in the same 128-row passes (goal: at most half
  Captum's time). The map's error against a 1000-step trapezoid integral is reported for both, because a small gap
  alone does not prove a good map, and whether the held-out choice still meets Captum's gap on the timed images;
- ``saliency``: ``captum.attr.Saliency`` against ``mechscope.attribution.saliency`` (absolute gradients);
- ``grad_cam`` at the last ReLU (``features``): pytorch-grad-cam's ``GradCAM`` (in ``.venv-gradcam``, a worker
  process driven over a pipe, same cached weights and inputs) as a user runs it (parameters requiring grad) and with
  frozen parameters (``compute_input_gradient``), Captum's ``LayerGradCam`` + ``LayerAttribution.interpolate``,
  and ``mechscope.attribution.grad_cam``; maps are checked equal (after pytorch-grad-cam's min-max scaling);

and on SmolLM2-135M (four disjoint 64-token windows of the built-in corpus, target = the top next-token logit at the
end of each; step counts are chosen on the first two and timed on the other two):

- ``token_ig50``: IG over the token embeddings, 50 Gauss-Legendre steps, baseline = zero embeddings with the first
  position kept: Captum's ``IntegratedGradients`` on ``f(e) = model(inputs_embeds=e).logits[:, -1, t]`` (default
  one pass) against ``integrated_gradients(model, ids, target, at="embed", rule="gausslegendre", steps=50)``;
- ``token_ig_adaptive`` / ``token_ig_gl``: the fewest ladder steps (adaptive; Captum's Gauss-Legendre) that reach
  Captum's 50-step gap *and* a per-token map as close to a reference integral as Captum's (relative L2) on every
  held-out prompt; the timed prompts report whether that choice still meets the bar there. The gap
  alone is a weak bar here: Captum's 50-step gap is 2.5x the logit change, and 8 Gauss-Legendre steps reach it by
  luck with a map further off than Captum's. The reference is ``REF_NODES`` Gauss-Legendre nodes in
  ``log(alpha)`` (``token_reference``); its distance to the half-size reference is reported beside it.

Captum is asked for its convergence delta (``return_convergence_delta=True``: two more forward passes) because
mechscope always reports the completeness gap: both return the same thing.

Clock: this process's CPU time (``time.process_time``) with one torch thread (the worker's own CPU time for
pytorch-grad-cam): the machine is shared, and CPU time barely moves with other processes' load. Contenders run
alternately, round after round; the figure is the median over rounds. Writes ``benchmarks/results/attribution.json``.

Run: ``bash benchmarks/setup_gradcam.sh && .venv/bin/python benchmarks/attribution.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
GRADCAM_PY = HERE.parent / ".venv-gradcam" / "bin" / "python"
LADDER = (8, 12, 16, 20, 24, 32, 40, 48)
REF_NODES = 128
"""Nodes of the token IG reference integral (and half as many, to show how far it has converged)."""


def cpu_time(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


def organism_batch(n: int = 32):
    from mechscope.organisms import vision_organism

    org = vision_organism("shapes-cnn")
    return org, org.test.images[:n], org.test.labels[:n]


# ---------------------------------------------------------------------------------------------- grad-cam worker


def gradcam_worker() -> None:
    """Runs in .venv-gradcam: times pytorch-grad-cam's GradCAM on request ("run user" / "run frozen" / "maps")."""
    torch.set_num_threads(1)
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    org, x, y = organism_batch()
    module = org.model.module
    targets = [ClassifierOutputTarget(int(c)) for c in y]
    print(json.dumps({"ready": org.sha256, "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        frozen = cmd[-1] == "frozen"
        module.requires_grad_(not frozen)  # as a user's model comes (trainable), or frozen
        with GradCAM(model=module, target_layers=[module.relu4]) as cam:
            cam.compute_input_gradient = frozen  # with frozen weights the graph must start at the input
            seconds, maps = cpu_time(lambda cam=cam: cam(input_tensor=x.clone(), targets=targets))
        reply: dict[str, Any] = {"seconds": seconds}
        if cmd[0] == "maps":
            reply["maps"] = maps.tolist()
        print(json.dumps(reply), flush=True)


class Worker:
    def __init__(self) -> None:
        cmd = [str(GRADCAM_PY), __file__, "--gradcam-worker"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.hello = json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]

    def ask(self, cmd: str) -> dict[str, Any]:
        self.proc.stdin.write(cmd + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=60)


# ---------------------------------------------------------------------------------------------- measuring


def alternate(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """CPU seconds per contender, one call each per round, in a fixed order (after one untimed warm-up each)."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            times[name].append(fn())
    return times


def timed(fn: Callable[[], Any]) -> Callable[[], float]:
    return lambda: cpu_time(fn)[0]


def rel_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over examples of ``|a - ref| / |ref|`` (Frobenius norms per example)."""
    return float(((a - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).mean())


def fewest_steps(run: Callable[[int], Any], target_gap: float) -> tuple[int, Any]:
    """The first ladder step count whose mean |completeness gap| is at most ``target_gap`` (else the largest)."""
    for steps in LADDER:
        a = run(steps)
        if float(a.completeness_gap.abs().mean()) <= target_gap:
            return steps, a
    return LADDER[-1], a


# ---------------------------------------------------------------------------------------------- workloads


def cnn_workloads(rounds: int, rows: list[dict[str, Any]], ratios: dict[str, float], extra: dict[str, Any]) -> None:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    from mechscope import attribution as at

    org, x, y = organism_batch()
    model, module = org.model, org.model.module
    ig = IntegratedGradients(module)
    # Step counts are chosen on held-out images (the next 32 of the test set), then timed on the first 32.
    hx, hy = org.test.images[32:64], org.test.labels[32:64]
    held_gap = float(ig.attribute(hx, target=hy, n_steps=50, return_convergence_delta=True)[1].abs().mean())
    steps, _ = fewest_steps(lambda s: at.integrated_gradients(model, hx, hy, steps=s), held_gap)
    gl_steps, _ = fewest_steps(lambda s: at.integrated_gradients(model, hx, hy, steps=s, rule="gausslegendre"),
                               held_gap)  # fmt: skip
    ref = ig.attribute(x, target=y, n_steps=1000, method="riemann_trapezoid", internal_batch_size=2000)
    captum_map, captum_delta = ig.attribute(x, target=y, n_steps=50, return_convergence_delta=True)
    captum_gap = float(captum_delta.abs().mean())
    adaptive = at.integrated_gradients(model, x, y, steps=steps)
    gl = at.integrated_gradients(model, x, y, steps=gl_steps, rule="gausslegendre")
    ours50 = at.integrated_gradients(model, x, y, rule="gausslegendre", steps=50)
    extra["cnn_ig"] = {
        "captum_50_mean_abs_gap": captum_gap, "captum_50_map_rel_error": rel_error(captum_map, ref),
        "mechscope_gl50_mean_abs_gap": float(ours50.completeness_gap.abs().mean()),
        "mechscope_gl50_max_abs_diff_vs_captum": float((ours50.map - captum_map).abs().max()),
        "steps_chosen_on": "held-out images 32-63 of the test set (timed: images 0-31)",
        "held_out_captum_50_mean_abs_gap": held_gap,
        "adaptive_steps": steps, "adaptive_mean_abs_gap": float(adaptive.completeness_gap.abs().mean()),
        "adaptive_map_rel_error": rel_error(adaptive.map, ref),
        "adaptive_meets_captum_gap_on_timed_images": float(adaptive.completeness_gap.abs().mean()) <= captum_gap,
        "gausslegendre_steps": gl_steps, "gausslegendre_mean_abs_gap": float(gl.completeness_gap.abs().mean()),
        "gausslegendre_map_rel_error": rel_error(gl.map, ref),
        "mean_abs_output_change": float(ours50.output_change.abs().mean()),
    }  # fmt: skip
    times = alternate({
        "captum_ig50": timed(lambda: ig.attribute(x, target=y, n_steps=50, return_convergence_delta=True)),
        "captum_ig50_batch128": timed(
            lambda: ig.attribute(x, target=y, n_steps=50, internal_batch_size=128, return_convergence_delta=True)
        ),
        "mechscope_ig50": timed(lambda: at.integrated_gradients(model, x, y, rule="gausslegendre", steps=50)),
        f"mechscope_ig_adaptive{steps}": timed(lambda: at.integrated_gradients(model, x, y, steps=steps)),
        f"mechscope_ig_gl{gl_steps}": timed(
            lambda: at.integrated_gradients(model, x, y, steps=gl_steps, rule="gausslegendre")
        ),
        "captum_saliency": timed(lambda: Saliency(module).attribute(x, target=y, abs=True)),
        "mechscope_saliency": timed(lambda: at.saliency(model, x, y)),
        "captum_layer_grad_cam": timed(lambda: LayerAttribution.interpolate(
            LayerGradCam(module, module.relu4).attribute(x, target=y, relu_attributions=True), (32, 32), "bilinear")),
        "mechscope_grad_cam": timed(lambda: at.grad_cam(model, x, y, at="features")),
    }, rounds)  # fmt: skip
    worker = Worker() if GRADCAM_PY.exists() else None
    if worker is not None:
        assert worker.hello["ready"] == org.sha256, "the grad-cam venv loaded other weights of shapes-cnn"
        peer = torch.tensor(worker.ask("maps user")["maps"])
        ours = at.grad_cam(model, x, y, at="features").map[:, 0]
        lo, hi = ours.flatten(1).amin(1), ours.flatten(1).amax(1)
        # pytorch-grad-cam scales per image before resizing; resizing first moves the extremes slightly
        extra["grad_cam_max_abs_diff_scaled"] = float(((ours - lo[:, None, None]) / (hi - lo)[:, None, None]
                                                       - peer).abs().max())  # fmt: skip
        for mode in ("user", "frozen"):
            worker.ask(f"run {mode}")  # warm-up
        pgc: dict[str, list[float]] = {"pytorch_grad_cam": [], "pytorch_grad_cam_frozen": []}
        for _ in range(rounds):
            pgc["pytorch_grad_cam"].append(worker.ask("run user")["seconds"])
            pgc["pytorch_grad_cam_frozen"].append(worker.ask("run frozen")["seconds"])
            ours_once = timed(lambda: at.grad_cam(model, x, y, at="features"))
            times.setdefault("mechscope_grad_cam_vs_pgc", []).append(ours_once())
        worker.close()
        times.update(pgc)
        extra["gradcam_env"] = {"torch": worker.hello["torch"]}
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, v in times.items():
        rows.append({"name": name, "metric": "cnn batch 32, CPU time (median)", "value": med[name], "unit": "s",
                     "runs": v})  # fmt: skip
    ratios["mechscope/captum ig50 (both in 128-row passes: equal work)"] = (
        med["mechscope_ig50"] / med["captum_ig50_batch128"]
    )
    ratios["mechscope/captum ig50 (against Captum's default single 1,600-row pass: favourable default)"] = (
        med["mechscope_ig50"] / med["captum_ig50"]
    )
    ratios[f"mechscope adaptive{steps}/captum ig50 (both in 128-row passes; steps chosen on held-out images)"] = (
        med[f"mechscope_ig_adaptive{steps}"] / med["captum_ig50_batch128"]
    )
    ratios[
        f"mechscope gausslegendre{gl_steps}/captum ig50 (both in 128-row passes; steps chosen on held-out images)"
    ] = med[f"mechscope_ig_gl{gl_steps}"] / med["captum_ig50_batch128"]
    ratios["mechscope/captum saliency"] = med["mechscope_saliency"] / med["captum_saliency"]
    ratios["mechscope/captum LayerGradCam"] = med["mechscope_grad_cam"] / med["captum_layer_grad_cam"]
    if "pytorch_grad_cam" in med:
        ours = med["mechscope_grad_cam_vs_pgc"]
        ratios["mechscope/pytorch-grad-cam grad_cam"] = ours / med["pytorch_grad_cam"]
        ratios["mechscope/pytorch-grad-cam grad_cam (frozen weights)"] = ours / med["pytorch_grad_cam_frozen"]


N_PROMPTS = 4
"""64-token prompts of the corpus for token IG: the first half choose the step counts, the second half are timed."""


def token_prompts(model: Any, n: int) -> list[torch.Tensor]:
    """``n`` disjoint 64-token windows of the built-in corpus (python-docs), each ``[1 64]``."""
    from mechscope.data.corpus import load_corpus

    texts = load_corpus("python-docs").texts
    ids = torch.tensor(model.tokenizer(" ".join(texts[:200]))["input_ids"])
    if len(ids) < 64 * n:
        raise SystemExit(f"the corpus gave {len(ids)} tokens, fewer than {n} prompts of 64")
    stride = len(ids) // n
    return [ids[i * stride : i * stride + 64][None] for i in range(n)]


class TokenCase:
    """One prompt: its embeddings, the zero baseline (first position kept), the target logit, Captum's 50 steps."""

    def __init__(self, model: Any, ids: torch.Tensor) -> None:
        from captum.attr import IntegratedGradients

        self.model, self.ids, hf = model, ids, model.module
        with torch.no_grad():
            self.emb = hf.get_input_embeddings()(ids)
            self.tok = tok = int(hf(input_ids=ids).logits[0, -1].argmax())
        self.base = torch.zeros_like(self.emb)
        self.base[:, 0] = self.emb[:, 0]  # the first position (attention sink) kept, as token_attribution does

        def f(e: torch.Tensor) -> torch.Tensor:
            return hf(inputs_embeds=e, use_cache=False).logits[:, -1, tok]

        self.f, self.cig = f, IntegratedGradients(f)
        self.captum_map, delta = self.cig.attribute(self.emb, self.base, n_steps=50, return_convergence_delta=True)
        self.captum_gap = float(delta.abs().mean())
        self.ref = token_reference(f, self.emb, self.base, REF_NODES)
        self.captum_error = rel_error(per_pos_t(self.captum_map), per_pos_t(self.ref))

    def ours(self, steps: int, rule: str = "adaptive"):
        from mechscope import attribution as at

        tok = self.tok
        return at.integrated_gradients(self.model, self.ids, lambda r: r.logits[:, -1, tok], at="embed",
                                       baseline=self.base, steps=steps, rule=rule)  # type: ignore[arg-type]  # fmt: skip

    def error(self, a: Any) -> float:
        return rel_error(per_pos_t(a.map), per_pos_t(self.ref))

    def as_good(self, a: Any) -> bool:
        """Captum's 50-step gap, and a per-token map as close to the reference integral as Captum's."""
        return float(a.completeness_gap.abs()) <= self.captum_gap and self.error(a) <= self.captum_error


def token_workloads(rounds: int, rows: list[dict[str, Any]], ratios: dict[str, float], extra: dict[str, Any]) -> None:
    import mechscope as ms

    model = ms.load()
    prompts = token_prompts(model, N_PROMPTS)
    held = [TokenCase(model, ids) for ids in prompts[: N_PROMPTS // 2]]
    # Step counts: the fewest ladder steps meeting Captum's bar on every held-out prompt.
    ladder = {rule: {s: [c.ours(s, rule) for c in held] for s in LADDER} for rule in ("adaptive", "gausslegendre")}
    fewest = {
        rule: next((s for s, runs in by_steps.items() if all(c.as_good(a) for c, a in zip(held, runs, strict=True))),
                   None)
        for rule, by_steps in ladder.items()
    }  # fmt: skip
    timed_cases = [TokenCase(model, ids) for ids in prompts[N_PROMPTS // 2 :]]
    steps, gl_steps = fewest["adaptive"] or LADDER[-1], fewest["gausslegendre"] or LADDER[-1]
    checks = []
    for c in timed_cases:
        a, g, o50 = c.ours(steps), c.ours(gl_steps, "gausslegendre"), c.ours(50, "gausslegendre")
        checks.append({
            "captum_50_abs_gap": c.captum_gap, "captum_50_token_rel_error": c.captum_error,
            "output_change": float(o50.output_change.abs().mean()),
            "mechscope_gl50_abs_gap": float(o50.completeness_gap.abs()),
            "mechscope_gl50_max_abs_diff_vs_captum": float((o50.map - c.captum_map).abs().max()),
            f"adaptive{steps}_abs_gap": float(a.completeness_gap.abs()), f"adaptive{steps}_token_rel_error": c.error(a),
            f"adaptive{steps}_meets_captum": c.as_good(a),
            f"gausslegendre{gl_steps}_abs_gap": float(g.completeness_gap.abs()),
            f"gausslegendre{gl_steps}_token_rel_error": c.error(g),
            f"gausslegendre{gl_steps}_meets_captum": c.as_good(g),
        })  # fmt: skip
    extra["token_ig"] = {
        "prompts": f"{N_PROMPTS} disjoint 64-token windows of python-docs; steps chosen on the first "
        f"{len(held)}, timed on the other {len(timed_cases)}",
        "bar": "Captum's 50-step |gap| and a per-token map as close to the reference as Captum's, on every held-out "
        "prompt",
        "adaptive_steps": steps, "adaptive_met_on_held_out": fewest["adaptive"] is not None,
        "gausslegendre_steps": gl_steps, "gausslegendre_met_on_held_out": fewest["gausslegendre"] is not None,
        "held_out": [{
            "captum_50_abs_gap": c.captum_gap, "captum_50_token_rel_error": c.captum_error,
            "abs_gap_by_steps": {rule: {s: float(runs[i].completeness_gap.abs()) for s, runs in by.items()}
                                 for rule, by in ladder.items()},
            "token_rel_error_by_steps": {rule: {s: c.error(runs[i]) for s, runs in by.items()}
                                         for rule, by in ladder.items()},
        } for i, c in enumerate(held)],
        "timed": checks,
        "reference": f"{REF_NODES} Gauss-Legendre nodes in log(alpha) on [1e-7, 1] (+ a midpoint for [0, 1e-7])",
    }  # fmt: skip

    def over_prompts(make: Callable[[TokenCase], Callable[[], Any]]) -> Callable[[], float]:
        fns = [make(c) for c in timed_cases]
        return lambda: sum(cpu_time(fn)[0] for fn in fns)

    times = alternate({
        "captum_token_ig50": over_prompts(
            lambda c: lambda: c.cig.attribute(c.emb, c.base, n_steps=50, return_convergence_delta=True)),
        "mechscope_token_ig50": over_prompts(lambda c: lambda: c.ours(50, "gausslegendre")),
        f"mechscope_token_ig_adaptive{steps}": over_prompts(lambda c: lambda: c.ours(steps)),
        f"mechscope_token_ig_gl{gl_steps}": over_prompts(lambda c: lambda: c.ours(gl_steps, "gausslegendre")),
    }, rounds)  # fmt: skip
    med = {k: statistics.median(v) for k, v in times.items()}
    metric = f"SmolLM2, {len(timed_cases)} prompts of 64 tokens, CPU time (median)"
    for name, v in times.items():
        rows.append({"name": name, "metric": metric, "value": med[name], "unit": "s", "runs": v})
    ratios["mechscope/captum token ig50 (equal settings)"] = med["mechscope_token_ig50"] / med["captum_token_ig50"]
    ratios[f"mechscope adaptive{steps}/captum token ig50 (steps chosen on held-out prompts)"] = (
        med[f"mechscope_token_ig_adaptive{steps}"] / med["captum_token_ig50"]
    )
    ratios[f"mechscope gausslegendre{gl_steps}/captum token ig50 (steps chosen on held-out prompts)"] = (
        med[f"mechscope_token_ig_gl{gl_steps}"] / med["captum_token_ig50"]
    )


def per_pos_t(m: torch.Tensor) -> torch.Tensor:
    """Per-token scores, what users read: ``[1 pos d_model] -> [1 pos]``."""
    return m.sum(-1)


def token_reference(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, base: torch.Tensor, nodes: int):
    """IG map with ``nodes`` Gauss-Legendre nodes in ``log(alpha)`` on [1e-7, 1] (plus a midpoint for [0, 1e-7]).

    From a zero embedding, the path's integrand spans scales from 1e-5 to 1 of ``alpha`` (an RMSNorm's epsilon
    regime near the baseline, its scale-invariant regime beyond): uniform-in-``alpha`` rules cannot resolve it.
    """
    import numpy as np

    lo = 1e-7
    u, w = np.polynomial.legendre.leggauss(nodes - 1)
    alpha = np.exp(np.log(lo) * (1 - u) / 2)  # u in [-1, 1] -> alpha in [lo, 1]
    weight = w / 2 * -np.log(lo) * alpha
    alpha, weight = torch.tensor([lo / 2, *alpha]), torch.tensor([lo, *weight])
    total = torch.zeros_like(x)
    for a, wt in zip(alpha.split(16), weight.split(16), strict=True):
        z = (base + a[:, None, None].to(x.dtype) * (x - base)).requires_grad_(True)
        (g,) = torch.autograd.grad(f(z).sum(), z)
        total += (wt[:, None, None].to(x.dtype) * g).sum(0, keepdim=True)
    return total * (x - base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gradcam-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds on the CNN")
    parser.add_argument("--token-rounds", type=int, default=3, help="timed rounds on SmolLM2")
    parser.add_argument("--skip-tokens", action="store_true")
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "attribution.json"))
    args = parser.parse_args()
    if args.gradcam_worker:
        gradcam_worker()
        return
    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    from hooks import machine

    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    extra: dict[str, Any] = {}
    if not args.skip_cnn:
        cnn_workloads(args.rounds, rows, ratios, extra)
    if not args.skip_tokens:
        token_workloads(args.token_rounds, rows, ratios, extra)
    from importlib.metadata import version

    result = {
        "benchmark": "attribution: IG (50 steps), saliency, Grad-CAM on the small CNN (batch 32) and token IG on "
        "SmolLM2 (64 tokens); mechscope vs Captum and pytorch-grad-cam; CPU time, 1 thread",
        "machine": machine(),
        "clock": "process CPU time (time.process_time), torch threads 1",
        "versions": {p: version(p) for p in ("torch", "captum", "mechscope")},
        "rows": rows,
        "ratios": ratios,
        "details": extra,
    }
    out = Path(args.out)
    if (args.skip_cnn or args.skip_tokens) and out.exists():  # keep the skipped part's results from the last run
        keep_tokens = args.skip_tokens
        old = json.loads(out.read_text())
        result["rows"] = [r for r in old["rows"] if r["metric"].startswith("SmolLM2") == keep_tokens] + rows
        result["ratios"] = {**{k: v for k, v in old["ratios"].items() if ("token" in k) == keep_tokens}, **ratios}
        result["details"] = {**{k: v for k, v in old["details"].items() if (k == "token_ig") == keep_tokens}, **extra}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(json.dumps({"ratios": ratios, "details": extra}, indent=2))


if __name__ == "__main__":
    main()
