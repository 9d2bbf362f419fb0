"""The chat-model scorers with the built-in SmolLM2-135M-Instruct on this CPU: detection, fuzzing, llm-simulation.

Kept apart from ``benchmarks/autointerp.py`` (minutes on the shared 2-core CPU). For each planted latent
(``--latents``, default all six) and scorer it scores the true description and one shuffled description (another
planted latent's, the next in ``PLANTED`` order), and records the value, the chance level, how many items the
model's replies left unparsed, and the seconds per explanation. The judges (``detection``, ``fuzzing``) read each
verdict from SmolLM2's probabilities of " 1" and " 0" after a forced "Answer:" (``JudgeConfig.probabilities``, one
example per request); beside the balanced accuracy (threshold P(1) > P(0)) they record the AUROC of P(1) over
positive against negative items (threshold-free; chance 0.5) and how much probability the two answers hold.
``llm-simulation`` parses text (about a minute per request), so it runs with small configs (one activating and one
non-activating context) and only when asked (``--scorers``). Scorers not run keep their rows and checks from the
existing JSON. One round: greedy decoding and logits are deterministic; the point is the scores and the time.

Run: ``.venv/bin/python benchmarks/autointerp_llm.py [--latents 0,3] [--scorers detection,fuzzing]``; writes
``benchmarks/results/autointerp_llm.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import mechscope as ms
from mechscope._machine import machine
from mechscope.autointerp import PLANTED, SCORERS, ContextConfig, LocalChat, NegativePool, Tools, gather, planted_db

ROOT = Path(__file__).resolve().parent.parent


class Recording:
    """The chat model, keeping its replies (the JSON shows the first of each explanation: how a reply fails)."""

    def __init__(self, chat: LocalChat) -> None:
        self.chat, self.name, self.concurrency, self.replies = chat, chat.name, 1, []

    def count_tokens(self, text: str) -> int:
        return self.chat.count_tokens(text)

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, seed: int) -> str:
        reply = self.chat.complete(messages, max_tokens=max_tokens, seed=seed)
        self.replies.append(reply)
        return reply

    def answer_probs(self, messages, answers, *, prefix: str, seed: int) -> list[float]:
        probs = self.chat.answer_probs(messages, answers, prefix=prefix, seed=seed)
        self.replies.append(dict(zip(answers, [round(p, 4) for p in probs], strict=True)))
        return probs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latents", default="0,1,2,3,4,5")
    parser.add_argument("--scorers", default="detection,fuzzing")
    parser.add_argument("--judge-examples", type=int, default=10, help="detection/fuzzing n_examples")
    parser.add_argument("--simulation-examples", type=int, default=1, help="llm-simulation n_examples (default 5)")
    parser.add_argument("--simulation-tokens", type=int, default=80, help="llm-simulation max_new_tokens")
    args = parser.parse_args()
    latents = [int(x) for x in args.latents.split(",")]
    model = ms.load("smollm2-135m")
    chat = Recording(LocalChat(model))
    tools = Tools(chat)
    rows, checks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        db, store, oracle = planted_db(model.tokenizer, Path(tmp), n_contexts=128, ctx_len=64)
        pool = NegativePool.build(store, oracle, db, n_windows=256)
        for name in args.scorers.split(","):
            spec = SCORERS[name]
            if name == "llm-simulation":
                config = spec.make_config(n_examples=args.simulation_examples, max_new_tokens=args.simulation_tokens)
            else:
                config = spec.make_config(n_examples=args.judge_examples)
            seconds = []
            for latent in latents:
                c = gather(db, latent, ContextConfig(), pool)
                true_text = PLANTED[latent].description
                other = PLANTED[(latent + 1) % len(PLANTED)].description
                got, replies = {}, {}
                for kind, text in (("true", true_text), ("shuffled", other)):
                    t = time.perf_counter()
                    chat.replies.clear()
                    s = spec.fn(c, text, tools, config)
                    replies[kind] = str(chat.replies[0])[:300] if chat.replies else None
                    seconds.append(time.perf_counter() - t)
                    got[kind] = s
                    print(name, PLANTED[latent].name, kind, round(s.value, 3), s.detail, round(seconds[-1], 1))
                checks.append({"feature": PLANTED[latent].name, "scorer": name, "true": got["true"].value,
                               "shuffled": got["shuffled"].value, "chance": got["true"].chance, "n": got["true"].n,
                               "unparsed_true": got["true"].detail.get("unparsed"),
                               "unparsed_shuffled": got["shuffled"].detail.get("unparsed"),
                               "config": config.__dict__, "first_reply": replies,
                               "mode": got["true"].detail.get("mode"),
                               **{f"{k}_{kind}": got[kind].detail.get(k) for k in ("auroc", "answer_mass", "hits",
                                  "totals", "p1") for kind in ("true", "shuffled")}})  # fmt: skip
            rows.append({"name": f"score {name} (SmolLM2-135M, CPU, greedy)", "metric": "seconds per explanation",
                         "value": round(sum(seconds) / len(seconds), 2), "unit": "s",
                         "explanations": len(seconds), "latents": [PLANTED[i].name for i in latents]})  # fmt: skip
            mine = [x for x in checks if x["scorer"] == name]
            rows.append({"name": f"{name} (SmolLM2-135M): true beats shuffled", "metric": "features",
                         "value": sum(x["true"] > x["shuffled"] for x in mine), "unit": f"of {len(mine)}"})  # fmt: skip
            rows.append({"name": f"{name} (SmolLM2-135M): items unparsed", "metric": "share of items",
                         "value": round(sum(x["unparsed_true"] + x["unparsed_shuffled"] for x in mine)
                                        / sum(2 * x["n"] for x in mine), 3), "unit": "share"})  # fmt: skip
            for kind in ("true", "shuffled"):
                rows.append({"name": f"{name} (SmolLM2-135M): mean score, {kind} explanations", "metric": name,
                             "value": round(sum(x[kind] for x in mine) / len(mine), 4),
                             "unit": f"chance {mine[0]['chance']}", "latents": len(mine),
                             "mode": mine[0]["mode"]})  # fmt: skip
                if name in ("detection", "fuzzing") and all(x.get(f"auroc_{kind}") is not None for x in mine):
                    rows.append({"name": f"{name} (SmolLM2-135M): mean AUROC of P(1), {kind} explanations",
                                 "metric": "auroc", "value": round(sum(x[f"auroc_{kind}"] for x in mine) / len(mine),
                                 4), "unit": "chance 0.5", "latents": len(mine)})  # fmt: skip
            if name in ("detection", "fuzzing") and all(x.get("answer_mass_true") is not None for x in mine):
                rows.append({"name": f"{name} (SmolLM2-135M): probability on the answers 1 and 0", "metric": "mass",
                             "value": round(sum(x["answer_mass_true"] for x in mine) / len(mine), 4),
                             "unit": "probability"})  # fmt: skip
    if judged := [p for x in checks for kind in ("true", "shuffled") for p in x.get(f"p1_{kind}") or ()]:
        rows.append({"name": "detection and fuzzing (SmolLM2-135M): items with P(1) > P(0)", "metric": "items",
                     "value": sum(p > 0.5 for p in judged), "unit": f"of {len(judged)}"})  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "autointerp_llm.json"
    ran = args.scorers.split(",")
    kept_rows, kept_checks = [], []
    if out.is_file():  # the scorers not run now keep their earlier rows (their own name is in each row's name)
        old = json.loads(out.read_text())
        kept_rows = [r for r in old["rows"] if not any(f" {n} " in f" {r['name']} " for n in ran)]
        kept_checks = [c for c in old.get("checks", []) if c["scorer"] not in ran]
    result = {
        "benchmark": "autointerp_llm",
        "machine": machine(),
        "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],
        "rows": kept_rows + rows,
        "ratios": {},
        "checks": kept_checks + checks,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
