"""Tuned lens against logit lens on SmolLM2-135M: held-out KL from the final distribution and perplexity per layer.

Trains a tuned lens (``train_tuned_lens``, resumable: rerunning continues from ``--dir``'s checkpoint) on the
built-in corpus and scores it and the logit lens on held-out contexts of the same corpus (``evaluate_tuned_lens``:
the first ``held_out`` contexts of the seeded order, never trained on). The budget is small for a 2-core CPU
(``--steps`` x ``--batch`` x ``--ctx-len`` tokens; the tuned-lens package trains 250 steps of 2^18 tokens), so the
numbers are those of a briefly trained lens and say so in the JSON.

Training time accumulates over sessions in ``--dir``/``train_seconds.json`` (a rerun on a finished lens only
evaluates). ``--compare-contexts N`` also scores both lenses on the first N held-out contexts alone (``details``):
with N = 8, the 512 tokens an earlier 24-step lens (held-out 8) was scored on, so the two compare on the same text.

Run: ``.venv/bin/python benchmarks/tuned_lens_smollm2.py``; writes ``benchmarks/results/tuned_lens_smollm2.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mechscope as ms
from mechscope._machine import machine
from mechscope.lenses import TrainLensConfig, evaluate_tuned_lens, train_tuned_lens

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--ctx-len", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=16)
    parser.add_argument("--dir", type=Path, default=ROOT / "out" / "tuned_lens_smollm2_64")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tuned_lens_smollm2.json")
    parser.add_argument("--compare-contexts", type=int, default=8)
    args = parser.parse_args()
    model = ms.load()
    config = TrainLensConfig(steps=args.steps, batch=args.batch, ctx_len=args.ctx_len, held_out=args.held_out,
                             checkpoint_every=5)  # fmt: skip
    timing = args.dir / "train_seconds.json"
    before = json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
    finished = (args.dir / "tuned_lens.safetensors").is_file()  # then this session only evaluates
    t0 = time.perf_counter()
    lens = train_tuned_lens(model, args.dir, config)
    train_s = before + (0.0 if finished else time.perf_counter() - t0)
    timing.write_text(json.dumps({"seconds": round(train_s, 1)}) + "\n")
    result = evaluate_tuned_lens(model, lens)
    rows = []
    for i, site in enumerate(result.sites):
        read = f"resid_post.{i - 1}" if i else "embed"
        for lens_name, kl, ppl in (("tuned", result.kl_tuned[i], result.ppl_tuned[i]),
                                   ("logit", result.kl_logit[i], result.ppl_logit[i])):  # fmt: skip
            rows.append({"name": f"{lens_name} lens at {site} ({read}): held-out KL from the final distribution",
                         "metric": "kl", "value": round(kl, 4), "unit": "nats"})  # fmt: skip
            rows.append({"name": f"{lens_name} lens at {site} ({read}): held-out perplexity",
                         "metric": "perplexity", "value": round(ppl, 2), "unit": "ppl"})  # fmt: skip
    rows.append({"name": "model: held-out perplexity", "metric": "perplexity", "value": round(result.ppl_model, 2),
                 "unit": "ppl"})  # fmt: skip
    payload = {
        "benchmark": "tuned_lens_smollm2",
        "machine": machine(),
        "rows": rows,
        "ratios": {},
        "details": {
            "train_config": config.__dict__,
            "train_tokens": config.steps * config.batch * config.ctx_len,
            "train_seconds": round(train_s, 1),
            "held_out_tokens": result.tokens,
            "note": "a briefly trained lens (a CPU budget); the tuned-lens package's default is 250 x 2^18 tokens",
            "evaluation": result.to_dict(),
        },
    }
    if args.compare_contexts:
        first = evaluate_tuned_lens(model, lens, contexts=args.compare_contexts)
        payload["details"][f"evaluation_first_{args.compare_contexts}_contexts"] = first.to_dict()
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({r["name"]: r["value"] for r in rows if r["metric"] == "kl"}, indent=1))


if __name__ == "__main__":
    main()
