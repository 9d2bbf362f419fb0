"""Tuned-lens training speed: mechscope against the tuned-lens package, on the same SmolLM2-135M activations.

Equal work: both train the 30 translators of SmolLM2-135M (``resid_pre.0 .. resid_pre.29``, the package's
``hidden_states[:-1]``) from the identity for ``--steps`` steps on the same batches of ``--tokens`` tokens (residual
streams and final log-probs computed once, by mechscope, and read by both from one safetensors file), float32,
SGD with Nesterov momentum 0.9 at lr 0.1, weight decay 1e-3, gradient norm clipped at 1, the loss the package's
``train_loop.py`` uses (``sum(p * (log p - log_softmax(lens(h, i))))`` per layer, mean over tokens, one backward
per layer). The package runs in its own venv (``benchmarks/setup_tunedlens.sh``; tuned-lens 0.2.0 installed with
``--no-deps``: its training script's dependencies — accelerate, datasets, wandb, ... — are not needed for the
``TunedLens`` module). The model forward pass that makes the activations is outside both timings.

Runs alternate (mechscope, peer, mechscope, ...); each side's wall time is the median over ``--rounds``. The two
trained lenses are compared (max relative weight difference) to show the work was the same.

Run: ``bash benchmarks/setup_tunedlens.sh && .venv/bin/python benchmarks/tuned_lens.py``; adds the rows
``tuned-lens training: ...`` to ``benchmarks/results/lenses.json`` (its other rows are kept).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import mechscope as ms
from mechscope._machine import machine
from mechscope.lenses import TrainLensConfig, TunedLens
from mechscope.lenses._tuned_train import _contexts, _targets, lens_step, optimizer

ROOT = Path(__file__).resolve().parent.parent
PEER_PY = ROOT / ".venv-tunedlens" / "bin" / "python"

PEER = r"""
import json, sys, time
import torch as th
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM
from tuned_lens.nn import TunedLens

acts_path, model_dir, out_path, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
th.set_num_threads(int(sys.argv[5]))
cfg = json.load(open(f"{model_dir}/config.json"))
cfg.pop("quantization_config", None)
model = LlamaForCausalLM(LlamaConfig(**cfg))
state = load_file(f"{model_dir}/model.safetensors")
missing, unexpected = model.load_state_dict(state, strict=False)
assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
model.tie_weights()
model.eval().requires_grad_(False)
acts = load_file(acts_path)
lens = TunedLens.from_model(model)
params = [p for p in lens.parameters() if p.requires_grad]
opt = th.optim.SGD(params, lr=1.0 * (1 - 0.9), momentum=0.9, nesterov=True, weight_decay=1e-3)
sched = th.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
t0 = time.perf_counter()
for step in range(steps):
    hidden, labels = acts[f"resid.{step}"], acts[f"logp.{step}"]  # [layer tokens d_model], [tokens d_vocab]
    for i, h in enumerate(hidden):  # the package's train_loop body, float32 (no autocast)
        logits = lens(h, idx=i)
        loss = th.sum(labels.exp() * (labels - logits.log_softmax(-1)), dim=-1).mean()
        loss.backward()
    th.nn.utils.clip_grad_norm_(lens.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=False)
    sched.step()
wall = time.perf_counter() - t0
save_file({k: v.contiguous() for k, v in lens.layer_translators.state_dict().items()}, out_path)
print(json.dumps({"wall": wall}))
"""


def ours(model: ms.Model, acts: dict[str, torch.Tensor], steps: int) -> tuple[float, TunedLens]:
    config = TrainLensConfig(steps=steps)
    lens = TunedLens.for_model(model)
    opt = optimizer(lens, config)
    t0 = time.perf_counter()
    for step in range(steps):  # sum p log p is part of the work: the package computes it inside its loss
        resid, logp = acts[f"resid.{step}"], acts[f"logp.{step}"]
        lens_step(model, lens, opt, (resid, logp, torch.linalg.vecdot(logp.exp(), logp)), step, config)
    return time.perf_counter() - t0, lens


def peer(acts_path: Path, steps: int, out: Path) -> float:
    cmd = [str(PEER_PY), "-c", PEER, str(acts_path), str(MODEL_DIR), str(out), str(steps), str(torch.get_num_threads())]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"tuned-lens run failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["wall"])


MODEL_DIR = Path.home() / ".cache" / "mechscope" / "models" / "smollm2-135m"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--ctx-len", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lenses.json")
    args = parser.parse_args()
    if not PEER_PY.is_file():
        sys.exit("run benchmarks/setup_tunedlens.sh first (it builds .venv-tunedlens)")
    model = ms.load()
    contexts = _contexts(model, TrainLensConfig(batch=args.batch, ctx_len=args.ctx_len))[32:]
    acts: dict[str, torch.Tensor] = {}
    for step in range(args.steps):
        resid, logp, _ = _targets(model, contexts[step * args.batch : (step + 1) * args.batch])
        acts[f"resid.{step}"], acts[f"logp.{step}"] = resid.contiguous(), logp.contiguous()
    tokens = args.steps * args.batch * args.ctx_len
    with tempfile.TemporaryDirectory() as tmp:
        acts_path = Path(tmp) / "acts.safetensors"
        save_file(acts, acts_path)
        ours_walls, peer_walls = [], []
        for _ in range(args.rounds):
            wall, lens = ours(model, acts, args.steps)
            ours_walls.append(wall)
            peer_walls.append(peer(acts_path, args.steps, Path(tmp) / "peer.safetensors"))
            print(f"mechscope {ours_walls[-1]:.2f} s, tuned-lens {peer_walls[-1]:.2f} s", flush=True)
        theirs = load_file(Path(tmp) / "peer.safetensors")
    diff = max(
        float(
            (lens.weight[i].detach() - theirs[f"{i}.weight"]).abs().max()
            / theirs[f"{i}.weight"].abs().max().clamp(min=1e-12)
        )
        for i in range(lens.n_layers)
    )
    ours_tps, peer_tps = tokens / statistics.median(ours_walls), tokens / statistics.median(peer_walls)
    per_step = args.batch * args.ctx_len
    label = f"tuned-lens training (SmolLM2-135M, 30 translators, float32, {per_step} tokens/step)"
    rows = [
        {"name": f"{label}: mechscope", "metric": "throughput", "value": round(ours_tps, 2), "unit": "tokens/s"},
        {"name": f"{label}: tuned-lens 0.2.0", "metric": "throughput", "value": round(peer_tps, 2), "unit": "tokens/s"},
    ]
    data = json.loads(args.out.read_text()) if args.out.is_file() else {"benchmark": "lenses", "rows": [], "ratios": {}}
    data["rows"] = [r for r in data["rows"] if not r["name"].startswith(label)] + rows
    data.setdefault("ratios", {})[f"tuned-lens training tokens/s, {per_step} tokens/step: mechscope/tuned-lens"] = (
        round(ours_tps / peer_tps, 3)
    )
    data.setdefault("details", {})[f"tuned_lens_training_{per_step}"] = {
        "machine": machine(),
        "work": f"{args.steps} steps x {per_step} tokens of SmolLM2-135M activations (built-in "
        "corpus), 30 translators, float32, SGD Nesterov, clip 1",
        "mechscope_wall_s": ours_walls,
        "tuned_lens_wall_s": peer_walls,
        "max_relative_weight_difference": diff,
        "peer_install": "tuned-lens 0.2.0 --no-deps on torch 2.13.0 (CPU) and transformers 5.25.0",
    }
    args.out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(rows, indent=1), f"ratio {ours_tps / peer_tps:.2f}, weights differ by {diff:.2e} (relative)")


if __name__ == "__main__":
    main()
