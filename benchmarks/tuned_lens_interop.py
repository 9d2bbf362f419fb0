"""Interop check: a mechscope tuned lens, exported in the tuned-lens package's layout, read by that package.

Exports the lens trained by ``benchmarks/tuned_lens_smollm2.py`` (``--dir``) with ``export_tuned_lens``, loads it in
the package's own venv (``benchmarks/setup_tunedlens.sh``) with ``TunedLens.from_unembed_and_pretrained`` (which
reads ``params.pt`` with ``torch.load``), and compares the package's logits ``lens(h, idx=i)`` with mechscope's
(``tuned_logits``) on the residual streams of one held-out context; then reads the package's ``params.pt`` back with
``load_tuned_lens`` (``weights_only=True``). Writes ``benchmarks/results/tuned_lens_interop.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import mechscope as ms
from mechscope._machine import machine
from mechscope.lenses import export_tuned_lens, load_tuned_lens
from mechscope.lenses._tuned import tuned_logits
from mechscope.lenses._tuned_train import TrainLensConfig, _contexts, _targets

ROOT = Path(__file__).resolve().parent.parent
PEER_PY = ROOT / ".venv-tunedlens" / "bin" / "python"
MODEL_DIR = Path.home() / ".cache" / "mechscope" / "models" / "smollm2-135m"

PEER = r"""
import json, sys
import torch as th
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM
from tuned_lens.nn import TunedLens, Unembed

lens_dir, model_dir, acts_path, out_path = sys.argv[1:5]
cfg = json.load(open(f"{model_dir}/config.json"))
cfg.pop("quantization_config", None)
model = LlamaForCausalLM(LlamaConfig(**cfg))
model.load_state_dict(load_file(f"{model_dir}/model.safetensors"), strict=False)
model.tie_weights()
model.eval().requires_grad_(False)
lens = TunedLens.from_unembed_and_pretrained(Unembed(model), lens_dir)
resid = load_file(acts_path)["resid"]
with th.no_grad():
    logits = th.stack([lens(resid[i], idx=i) for i in range(len(resid))])
save_file({"logits": logits.contiguous()}, out_path)
lens.save(f"{lens_dir}/resaved")
print(json.dumps({"translators": len(lens)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "out" / "tuned_lens_smollm2")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tuned_lens_interop.json")
    args = parser.parse_args()
    model = ms.load()
    lens = load_tuned_lens(args.dir)
    config = TrainLensConfig(**{k: lens.provenance[k] for k in ("ctx_len", "seed", "held_out")})
    resid, _, _ = _targets(model, _contexts(model, config)[:1])  # one held-out context
    with torch.no_grad():
        ours = tuned_logits(model, lens, resid)
    with tempfile.TemporaryDirectory() as tmp:
        export_tuned_lens(lens, Path(tmp) / "lens")
        save_file({"resid": resid.contiguous()}, Path(tmp) / "acts.safetensors")
        done = subprocess.run([str(PEER_PY), "-c", PEER, str(Path(tmp) / "lens"), str(MODEL_DIR),
                               str(Path(tmp) / "acts.safetensors"), str(Path(tmp) / "peer.safetensors")],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"tuned-lens failed:\n{done.stderr[-3000:]}")
        theirs = load_file(Path(tmp) / "peer.safetensors")["logits"]
        back = load_tuned_lens(Path(tmp) / "lens" / "resaved")  # the package's own save, read with weights_only
    diff = float((ours - theirs).abs().max())
    scale = float(ours.abs().max())
    same_top = float((ours.argmax(-1) == theirs.argmax(-1)).float().mean())
    rows = [
        {"name": "tuned-lens package reading a mechscope lens: max |logit difference| (SmolLM2, 30 translators)",
         "metric": "max_abs_diff", "value": diff, "unit": "logits"},
        {"name": "tuned-lens package reading a mechscope lens: same top-1 token", "metric": "fraction",
         "value": same_top, "unit": "fraction"},
    ]  # fmt: skip
    payload = {"benchmark": "tuned_lens_interop", "machine": machine(), "rows": rows, "ratios": {},
               "details": {"max_abs_logit": scale, "tokens": int(resid.shape[1]),
                           "package_resave_equal": bool(torch.equal(back.weight, lens.weight)
                                                        and torch.equal(back.bias, lens.bias)),
                           "peer": "tuned-lens 0.2.0 (--no-deps), torch 2.13.0 CPU, transformers 5.25.0"}}  # fmt: skip
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["rows"], indent=1), payload["details"])


if __name__ == "__main__":
    main()
