"""Auto-interpretation on this CPU: latents explained and scored per minute, split into phases; prompt tokens per
latent; the embedding scorer's throughput; and the planted-feature ground truth.

Everything runs on the planted feature database (``autointerp.planted_db``: the built-in corpus, 128 contexts of
64 tokens, the six planted latents), so the meaning of every latent is known and the ground-truth table comes
from the same run. Phases, per job (``JobSummary.seconds``): ``gather`` (a latent's contexts from the feature
database, negatives from the pool), ``work`` (explaining or scoring), ``total``; the negative pool (256 store
windows encoded once by the dictionary) is timed on its own. Each timed job runs on a fresh copy of the database
(nothing to resume), ``--rounds`` times; figures are medians. The embedding scorer starts each round with an empty
embedding memo (the model stays loaded), so windows are embedded again every round (``cold``); a second row starts
with the negative pool's windows embedded (what a long job over a whole dictionary sees after its first latents:
only each latent's own activating windows and explanations are new). What bounds the embedding scorer on a CPU
is all-MiniLM-L6-v2's arithmetic: the ``MiniLM forward`` row measures its tokens per second here, and the bound
row divides that by the wordpieces a latent needs embedded (its activating windows and its two explanations).

The FIND-style latents (``autointerp.FIND``) get the same ground-truth check as the planted ones (``find_*``
rows and ``ground_truth_find``).

The LLM explainer (SmolLM2-135M-Instruct, greedy, on the CPU) runs only with ``--llm-latents N`` (default 0: the
quick mode does not spend minutes on the 135M model); prompt tokens per latent are counted with its tokenizer in
every mode, from the prompts the explainer would send (delphi reports ~780 prompt tokens per latent).

Run: ``.venv/bin/python benchmarks/autointerp.py [--rounds 5] [--llm-latents 2]``; writes
``benchmarks/results/autointerp.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mechscope as ms
from mechscope._machine import machine
from mechscope.autointerp import (
    FIND,
    PLANTED,
    SCORERS,
    ContextConfig,
    ContextStates,
    EmbeddingConfig,
    LLMConfig,
    LocalChat,
    NegativePool,
    Planted,
    Records,
    Tools,
    explain,
    gather,
    ground_truth,
    planted_db,
    score,
    store_context_tokens,
)
from mechscope.autointerp._explainers import explain_prompt
from mechscope.autointerp._planted import planted_store
from mechscope.autointerp._truth import GroundTruth, recovery_of

ROOT = Path(__file__).resolve().parent.parent
DELPHI_PROMPT_TOKENS = 780  # prompt tokens per latent that delphi reports for its explainer (as issue 16 quotes it)


def _copy(src: Path, tmp: Path, k: int) -> Path:
    dst = tmp / f"round{k}.db"
    shutil.copy(src, dst)
    return dst


def _row(name: str, metric: str, value: float, unit: str, **extra) -> dict:
    return {"name": name, "metric": metric, "value": round(value, 4), "unit": unit, **extra}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--llm-latents", type=int, default=0)
    parser.add_argument("--pooled-only", action="store_true", help="measure only the pooled-mode rows, merged in")
    args = parser.parse_args()
    if args.pooled_only:
        pooled_only(args.rounds)
        return
    model = ms.load("smollm2-135m")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        t = time.perf_counter()
        db, store, oracle = planted_db(model.tokenizer, tmp / "planted", n_contexts=128, ctx_len=64)
        rows.append(
            _row(
                "planted store + feature database",
                "seconds",
                time.perf_counter() - t,
                "s",
                work="128 contexts x 64 tokens, 6 planted latents",
            )
        )
        pools = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            pool = NegativePool.build(store, oracle, db, n_windows=256)
            pools.append(time.perf_counter() - t)
        rows.append(_row("negative pool (256 windows, encoded once)", "seconds", statistics.median(pools), "s"))

        n = len(PLANTED)
        for explainer in ("top-tokens", "ngrams"):
            runs = [explain(_copy(db.path, tmp, k), explainer, progress=False).seconds for k in range(args.rounds)]
            total = statistics.median(r["total"] for r in runs)
            gather_s = statistics.median(r["gather"] for r in runs)
            rows.append(
                _row(
                    f"explain {explainer}",
                    "latents per minute",
                    60 * n / total,
                    "latents/min",
                    gather_share=round(gather_s / total, 3),
                    seconds_per_latent=round(total / n, 5),
                )
            )

        tools = Tools()
        tools.embedder(["warm up"])
        base = _copy(db.path, tmp, 99)
        explain(base, "top-tokens", progress=False)
        pool_texts = [pool._window(w).text for w in range(len(pool))]
        for scorer, warm, batch in (("embedding", False, 1), ("embedding", False, 64), ("embedding", True, 64),
                                    ("simulation", False, 64)):  # fmt: skip
            runs = []
            for k in range(args.rounds):
                tools.embedder.clear()
                if warm:
                    tools.embedder(pool_texts)
                path = _copy(base, tmp, k)
                runs.append(
                    score(
                        path,
                        scorer,
                        explainer="top-tokens",
                        embedder=tools.embedder,
                        pool=pool,
                        progress=False,
                        batch_latents=batch,
                    ).seconds
                )
            total = statistics.median(r["total"] for r in runs)
            gather_s = statistics.median(r["gather"] for r in runs)
            rows.append(
                _row(
                    f"score {scorer} (true + shuffled explanation)"
                    + (", one latent per embedding batch" if batch == 1 else "")
                    + (", negatives embedded once per database" if warm else ""),
                    "latents per second",
                    n / total,
                    "latents/s",
                    gather_share=round(gather_s / total, 3),
                    work="20 activating + 10 non-activating contexts of 16 tokens per latent, scored twice",
                    batch_latents=batch,
                )
            )
        rows += _minilm_rows(tools, db, pool, args.rounds)

        chat = LocalChat(model)
        tokens = []
        for latent in range(n):
            c = gather(db, latent, ContextConfig())
            messages, _ = explain_prompt(c.activating, LLMConfig(), chat.count_tokens)
            tokens.append(chat.count_tokens("\n\n".join(m["content"] for m in messages)))
        prompt_tokens = statistics.mean(tokens)
        rows.append(
            _row(
                "llm explainer prompt",
                "prompt tokens per latent",
                prompt_tokens,
                "tokens",
                work="20 activating contexts of 16 tokens, activations listed (LLMConfig defaults)",
            )
        )
        if args.llm_latents:
            path = _copy(db.path, tmp, 50)
            s = explain(path, "llm", latents=range(args.llm_latents), llm=chat, progress=False)
            rows.append(
                _row(
                    "explain llm (SmolLM2-135M, CPU, greedy)",
                    "seconds per latent",
                    s.seconds["total"] / args.llm_latents,
                    "s/latent",
                    gather_share=round(s.seconds["gather"] / s.seconds["total"], 4),
                    latents=args.llm_latents,
                    failed=len(s.failed),
                )
            )
            with Records(path) as r:
                llm_texts = {e.latent: e.text for e in r.explanations(explainer="llm")}
        else:
            llm_texts = {}

        gt_path = _copy(db.path, tmp, 77)
        t = time.perf_counter()
        gt = ground_truth(gt_path, pool, tools=tools, explainers=("top-tokens", "ngrams"))
        gt_seconds = time.perf_counter() - t
        llm_recovery = recovery_of(llm_texts, "llm", tools, sorted(llm_texts))
        gt = GroundTruth(gt.checks, gt.recovery + tuple(llm_recovery))
        for scorer in ("embedding", "simulation"):
            checks = [c for c in gt.checks if c.scorer == scorer]
            rows.append(
                _row(
                    f"ground truth {scorer}: true beats shuffled",
                    "features",
                    sum(c.true > c.shuffled for c in checks),
                    f"of {len(checks)}",
                )
            )
            rows.append(
                _row(
                    f"ground truth {scorer}: mean true - shuffled",
                    "score margin",
                    statistics.mean(c.true - c.shuffled for c in checks),
                    "score",
                )
            )
        for explainer in ("top-tokens", "ngrams", "llm"):
            rec = [r for r in gt.recovery if r.explainer == explainer]
            if not rec:
                continue
            rows.append(
                _row(
                    f"ground truth recovery@1 {explainer}",
                    "features recovered",
                    sum(r.recovered for r in rec),
                    f"of {len(rec)} (chance {len(rec) / n:.2g})",
                )
            )

        find_dir = tmp / "find"
        fdb, fstore, foracle = planted_db(model.tokenizer, find_dir, n_contexts=128, ctx_len=64, planted=FIND)
        fpool = NegativePool.build(fstore, foracle, fdb, n_windows=256)
        find_gt = ground_truth(_copy(fdb.path, tmp, 78), fpool, tools=tools, explainers=("top-tokens", "ngrams"))
        rows += _truth_rows(find_gt, "find ", len(FIND))
        pooled_rows, pooled_detail = _pooled_rows(tools, model.tokenizer, tmp, args.rounds)
        rows += pooled_rows

    result = {
        "benchmark": "autointerp",
        "machine": machine(),
        "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],
        "rounds": args.rounds,
        "rows": rows,
        "ratios": {"prompt tokens per latent, ours/delphi": round(prompt_tokens / DELPHI_PROMPT_TOKENS, 3)},
        "ground_truth": {**gt.to_dict(), "seconds": round(gt_seconds, 2), "llm_texts": llm_texts},
        "ground_truth_markdown": gt.to_markdown(),
        "ground_truth_find": find_gt.to_dict(),
        "ground_truth_find_markdown": find_gt.to_markdown(),
        "pooled": pooled_detail,
    }
    out = ROOT / "benchmarks" / "results" / "autointerp.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))
    print(gt.to_markdown())
    print(find_gt.to_markdown())


POOLED_LATENTS = 1024  # token-identity latents of the many-latent database
EXACT_LATENTS = 96  # of them scored in the exact mode too (it runs ~2 latents/s here)


def _token_latents(tokenizer, tmp: Path, n: int) -> tuple[Planted, ...]:
    """``n`` latents that fire on one token each (the store's ``n`` most frequent tokens, BOS excepted)."""
    ids = planted_store(tokenizer, tmp / "count", n_contexts=128, ctx_len=64).tokens()[:, 1:].flatten()
    top = torch.bincount(ids).argsort(descending=True)[:n].tolist()
    texts = tokenizer.batch_decode([[i] for i in top])
    return tuple(
        Planted(f"token-{i}", f"the token {t.strip() or repr(t)!r}",
                lambda lex, ids, prev, pos, i=i: (ids == i).float() * lex.spread[ids])
        for i, t in zip(top, texts, strict=True)
    )  # fmt: skip


def _pooled_truth(tools: Tools, tokenizer, tmp: Path, planted: tuple[Planted, ...], label: str) -> list[dict]:
    """True vs shuffled descriptions on a planted feature set under the exact and the pooled embedding scorer."""
    db, store, oracle = planted_db(tokenizer, tmp / label, n_contexts=128, ctx_len=64, planted=planted)
    pool = NegativePool.build(store, oracle, db, n_windows=256)
    tools = Tools(embedder=tools.embedder, contexts=store_context_tokens(store, db.path))
    rows = []
    for mode in (False, True):
        cfg = EmbeddingConfig(pooled_contexts=mode)
        margins = []
        for latent, p in enumerate(planted):
            c = gather(db, latent, ContextConfig(), pool)
            true = SCORERS["embedding"].fn(c, p.description, tools, cfg).value
            others = [SCORERS["embedding"].fn(c, q.description, tools, cfg).value for q in planted if q is not p]
            margins.append(true - statistics.mean(others))
        name = f"pooled check: ground truth {label}embedding {'pooled' if mode else 'exact'}"
        rows.append(_row(f"{name}: true beats shuffled", "features", sum(m > 0 for m in margins),
                         f"of {len(planted)}"))  # fmt: skip
        rows.append(_row(f"{name}: mean true - shuffled", "score margin", statistics.mean(margins), "score"))
    return rows


def _pooled_rows(tools: Tools, tokenizer, tmp: Path, rounds: int) -> tuple[list[dict], dict]:
    """The pooled embedding scorer (``EmbeddingConfig(pooled_contexts=True)``) over a database of many latents."""
    from scipy.stats import spearmanr

    latents = _token_latents(tokenizer, tmp, POOLED_LATENTS)
    t = time.perf_counter()
    db, store, oracle = planted_db(tokenizer, tmp / "many", n_contexts=128, ctx_len=64, planted=latents)
    pool = NegativePool.build(store, oracle, db, n_windows=256)
    build_s = time.perf_counter() - t
    base = tmp / "many-explained.db"
    shutil.copy(db.path, base)
    explain(base, "top-tokens", progress=False)
    tokens_of = store_context_tokens(store, db.path)
    n_ctx = store.manifest.n_contexts
    pooled = EmbeddingConfig(pooled_contexts=True)
    work = (f"token latents over {n_ctx} store contexts of 64 tokens (latents:contexts "
            f"{len(latents) / n_ctx:.0f}:1), 20 activating + 10 non-activating windows of 16 tokens per latent, "
            "scored twice (true + shuffled explanation)")  # fmt: skip
    with Records(base) as r:
        explanations = list(r.texts("top-tokens", r.latest_run("top-tokens") or "").values())
    cold, warm, warm64, prepare, alone, done = [], [], [], [], [], set()
    for k in range(rounds):
        tools.embedder.clear()
        states = ContextStates(tools.embedder, tokens_of)
        t = time.perf_counter()
        states.prepare(range(n_ctx))
        prepare.append(time.perf_counter() - t)
        states.clear()
        path = _copy(base, tmp, 200 + k)
        s = score(path, "embedding", explainer="top-tokens", config=pooled, embedder=tools.embedder, pool=pool,
                  context_tokens=states, progress=False)  # fmt: skip
        assert (
            not s.failed and states.contexts_embedded <= 2 * n_ctx
        )  # the prepare() above, then the run, (s.failed, states.contexts_embedded)
        cold.append(s.seconds)
        done.add(s.done)
        tools.embedder.clear()  # contexts held, explanations new: what each further latent costs
        path = _copy(base, tmp, 300 + k)
        s = score(path, "embedding", explainer="top-tokens", config=pooled, embedder=tools.embedder, pool=pool,
                  context_tokens=states, progress=False)  # fmt: skip
        warm.append(s.seconds)
        done.add(s.done)
        tools.embedder.clear()  # the same in chunks of 64 latents (the default before: 256)
        path = _copy(base, tmp, 500 + k)
        warm64.append(score(path, "embedding", explainer="top-tokens", config=pooled, embedder=tools.embedder,
                            pool=pool, context_tokens=states, progress=False, batch_latents=64).seconds)  # fmt: skip
        tools.embedder.clear()  # the warm job's floor: its explanations through MiniLM, nothing else
        t = time.perf_counter()
        tools.embedder(explanations)
        alone.append(time.perf_counter() - t)
    assert len(done) == 1, done
    n = done.pop()  # the latents top-tokens explained (it may find no text for a few)
    total = statistics.median(r["total"] for r in cold)
    rows = [
        _row("many-latent token database (store + feature database + negative pool)", "seconds", build_s, "s",
             work=f"{len(latents)} latents, {n_ctx} contexts x 64 tokens"),
        _row("embed every store context once (pooled mode's one-off cost)", "seconds", statistics.median(prepare),
             "s", contexts=n_ctx, seconds_per_context=round(statistics.median(prepare) / n_ctx, 5)),
        _row("score embedding pooled (true + shuffled explanation), contexts embedded in the run", "latents per second",
             n / total, "latents/s", gather_share=round(statistics.median(r["gather"] for r in cold) / total, 3),
             latents=n, work=work),
        _row("score embedding pooled (true + shuffled explanation), contexts already embedded", "latents per second",
             n / statistics.median(r["total"] for r in warm), "latents/s",
             gather_share=round(statistics.median(r["gather"] / r["total"] for r in warm), 3), latents=n, work=work,
             commit_share=round(statistics.median(r["commit"] / r["total"] for r in warm), 4)),
        _row("score embedding pooled (true + shuffled explanation), contexts already embedded, chunks of 64 latents",
             "latents per second", n / statistics.median(r["total"] for r in warm64), "latents/s", latents=n,
             work=work, batch_latents=64),
        _row("embed the explanations alone (the pooled warm job's MiniLM floor)", "latents per second",
             len(explanations) / statistics.median(alone), "latents/s", explanations=len(explanations),
             seconds=round(statistics.median(alone), 3)),
    ]  # fmt: skip
    # agreement with the exact mode on the first EXACT_LATENTS latents (one run: scores are deterministic)
    tools.embedder.clear()
    exact_path, pooled_path = _copy(base, tmp, 400), _copy(base, tmp, 401)
    subset = range(EXACT_LATENTS)
    t = time.perf_counter()
    score(exact_path, "embedding", explainer="top-tokens", embedder=tools.embedder, pool=pool, latents=subset,
          progress=False)  # fmt: skip
    exact_s = time.perf_counter() - t
    score(pooled_path, "embedding", explainer="top-tokens", config=pooled, embedder=tools.embedder, pool=pool,
          latents=subset, context_tokens=tokens_of, progress=False)  # fmt: skip
    with Records(exact_path) as a, Records(pooled_path) as b:
        ea = {r.latent: r for r in a.scores(scorer="embedding")}
        pb = {r.latent: r for r in b.scores(scorer="embedding")}
    keys = sorted(ea)
    rho = spearmanr([ea[i].value for i in keys], [pb[i].value for i in keys]).statistic
    rho_all = spearmanr([v for i in keys for v in (ea[i].value, ea[i].shuffled)],
                        [v for i in keys for v in (pb[i].value, pb[i].shuffled)]).statistic  # fmt: skip
    rows += [
        _row("score embedding exact, same database (for comparison)", "latents per second",
             len(keys) / exact_s, "latents/s", latents=len(keys), runs=1),
        _row("pooled vs exact embedding scores: Spearman (true explanations)", "spearman", float(rho), "rho",
             latents=len(keys)),
        _row("pooled vs exact embedding scores: Spearman (true and shuffled)", "spearman", float(rho_all), "rho",
             scores=2 * len(keys)),
    ]  # fmt: skip
    for mode, rec in (("exact", ea), ("pooled", pb)):
        rows.append(_row(f"token latents embedding {mode}: true beats shuffled", "latents",
                         sum(rec[i].value > rec[i].shuffled for i in keys), f"of {len(keys)}"))  # fmt: skip
        rows.append(_row(f"token latents embedding {mode}: mean true - shuffled", "score margin",
                         statistics.mean(rec[i].value - rec[i].shuffled for i in keys), "score"))  # fmt: skip
    rows += _pooled_truth(tools, tokenizer, tmp, PLANTED, "")
    rows += _pooled_truth(tools, tokenizer, tmp, FIND, "find ")
    detail = {"latents": len(latents), "scored_latents": n, "contexts": n_ctx, "exact_latents": len(keys),
              "rounds": rounds, "cold_seconds": cold, "warm_seconds": warm, "warm_seconds_chunks_of_64": warm64,
              "prepare_seconds": prepare,
              "explanations_alone_seconds": alone}  # fmt: skip
    return rows, detail


def pooled_only(rounds: int) -> None:
    """Measure only the pooled rows and merge them into the existing ``autointerp.json`` (other rows kept)."""
    model = ms.load("smollm2-135m")
    tools = Tools()
    tools.embedder(["warm up"])
    with tempfile.TemporaryDirectory() as tmp_dir:
        rows, detail = _pooled_rows(tools, model.tokenizer, Path(tmp_dir), rounds)
    out = ROOT / "benchmarks" / "results" / "autointerp.json"
    result = json.loads(out.read_text())
    names = {r["name"] for r in rows}
    result["rows"] = [r for r in result["rows"] if r["name"] not in names] + rows
    result["pooled"] = {**detail, "machine": machine(),
                        "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


def _truth_rows(gt: GroundTruth, prefix: str, n: int) -> list[dict]:
    rows = []
    for scorer in ("embedding", "simulation"):
        checks = [c for c in gt.checks if c.scorer == scorer]
        rows.append(_row(f"ground truth {prefix}{scorer}: true beats shuffled", "features",
                         sum(c.true > c.shuffled for c in checks), f"of {len(checks)}"))  # fmt: skip
        rows.append(_row(f"ground truth {prefix}{scorer}: mean true - shuffled", "score margin",
                         statistics.mean(c.true - c.shuffled for c in checks), "score"))  # fmt: skip
    for explainer in ("top-tokens", "ngrams"):
        rec = [r for r in gt.recovery if r.explainer == explainer]
        rows.append(_row(f"ground truth {prefix}recovery@1 {explainer}", "features recovered",
                         sum(r.recovered for r in rec), f"of {len(rec)} (chance {len(rec) / n:.2g})"))  # fmt: skip
    return rows


def _minilm_rows(tools: Tools, db, pool, rounds: int) -> list[dict]:
    """all-MiniLM-L6-v2's forward rate here (wordpieces/s), and the latents/s it allows the embedding scorer."""
    e = tools.embedder
    texts = [pool._window(w).text for w in range(len(pool))]  # 256 windows of 16 tokens, like a latent's contexts
    wordpieces = sum(len(ids) for ids in e.tokenizer(texts)["input_ids"])
    times = []
    for _ in range(rounds):
        e.clear()
        t = time.perf_counter()
        e(texts)
        times.append(time.perf_counter() - t)
    rate = wordpieces / statistics.median(times)
    per_latent = []
    for latent in range(len(PLANTED)):
        c = gather(db, latent, ContextConfig(), pool)
        own = [w.text for w in c.activating[:20]] + ["an explanation of about eight words, twice"] * 2
        per_latent.append(sum(len(ids) for ids in e.tokenizer(own)["input_ids"]))
    need = statistics.mean(per_latent)
    return [
        _row("MiniLM forward (256 windows of 16 tokens)", "wordpieces per second", rate, "wordpieces/s",
             gflop_per_s=round(2 * 10.6e6 * rate / 1e9, 1), note="2 x 10.6M non-embedding parameters per wordpiece"),
        _row("embedding scorer bound (MiniLM rate / wordpieces a latent needs)", "latents per second", rate / need,
             "latents/s", wordpieces_per_latent=round(need, 1)),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
