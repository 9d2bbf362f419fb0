"""Attribution graphs: cost on SmolLM2-135M with 30 transcoders, the worked example, and the planted-graph table.

Three parts, each writing its rows to ``benchmarks/results/graphs.json`` (a part not run keeps its earlier rows):

``cost``      time and peak memory of ``mechscope.graphs.attribute`` on a 16-token prompt with the 30 per-layer
              transcoders of ``benchmarks/train_transcoders.py``, 10 target logits, at several ``max_feature_nodes``;
              as backward passes per target row and as a multiple of one forward+backward of the model on the same
              prompt (batch 1, gradient to the input embeddings). CPU time of this process (one torch thread), so other
              processes on the shared machine change it little; wall time beside it. Peak memory: resident size
              above the size before the call, sampled every 0.5 ms (``hooks.peak_rss_delta``).
``example``   "The capital of France is" -> " Paris": the graph with that target, its replacement and completeness
              scores, the top feature nodes by influence on the logit, and ``verify`` (3 ablations).
``planted``   the bench's graphs family on the planted-graph organism (``mechscope.bench``, seed 0; ``--quick``: its
              quick budget):
              edge AUROC, replacement / completeness scores and error share per method, with chance and baselines.
``induction`` the induction organism (attention only, MLPs zero, so its transcoders never fire): in the graph of a
              repeated sequence, the share of the target logit's token attribution that comes from the position of the
              token being copied; intact, with the planted induction head's OV output zeroed, and with a distractor
              head's zeroed instead (the path runs through the planted head's OV circuit if only the first collapses).
``training``  transcoder training throughput (from ``benchmarks/results/transcoders.json``) against the dictionaries
              benchmark's SAE training.

    PYTHONPATH=src python benchmarks/graphs.py --part cost example training
    PYTHONPATH=src python benchmarks/graphs.py --part planted
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hooks import _libc, peak_rss_delta  # noqa: E402  (shared measuring helpers)
from train_transcoders import root  # noqa: E402

from mechscope._machine import machine  # noqa: E402

RESULTS = HERE / "results" / "graphs.json"
PROMPT = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is"
N_TOKENS = 16
EXAMPLE, TARGET = "The capital of France is", " Paris"
SHAPE = "transcoder training at the dictionaries benchmark's shape (d_in 576, d_sae 9216, k 32, batch 4096), CPU time"
SHAPE_SAE = SHAPE.replace("transcoder", "SAE")


def row(name: str, metric: str, value: float, unit: str) -> dict[str, Any]:
    return {"name": name, "metric": metric, "value": value, "unit": unit}


def timed(fn: Any) -> tuple[Any, float, float]:
    """``fn()``, its CPU seconds and its wall seconds."""
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def fwd_bwd(model: Any, tokens: torch.Tensor) -> None:
    """One forward and backward pass of the model on ``tokens`` (batch 1), the gradient flowing to the embeddings."""
    emb = model.module.get_input_embeddings()(tokens[None]).detach().requires_grad_()
    logits = model.module(inputs_embeds=emb).logits
    logits[0, -1].logsumexp(-1).backward()


def cost(model: Any, transcoders: Any, repeats: int, nodes: list[int]) -> tuple[list[dict], dict]:
    from mechscope.graphs import GraphConfig, attribute

    tokens = with_bos(model, PROMPT)[:N_TOKENS]
    assert len(tokens) == N_TOKENS, f"the prompt has {len(tokens)} tokens; {N_TOKENS} are needed"
    base = [timed(lambda: fwd_bwd(model, tokens))[1:] for _ in range(5)]
    fb_cpu, fb_wall = statistics.median(c for c, _ in base), statistics.median(w for _, w in base)
    rows = [row("fwd_bwd", "one forward+backward, 16 tokens, batch 1 (median of 5, CPU)", fb_cpu, "s"),
            row("fwd_bwd", "one forward+backward, 16 tokens, batch 1 (median of 5, wall)", fb_wall, "s")]  # fmt: skip
    libc, extra = _libc(), {"prompt_tokens": [model.tokenizer.decode([int(t)]) for t in tokens]}
    for n in nodes:
        config = GraphConfig(max_logits=10, logit_prob=1.0, max_feature_nodes=n)
        runs = [timed(lambda c=config: attribute(model, tokens, transcoders, c)) for _ in range(repeats)]
        graph = runs[-1][0]
        peak = peak_rss_delta(lambda c=config: attribute(model, tokens, transcoders, c), libc)
        cpu, wall = statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs)
        s, name = graph.stats, f"graph_{n}_features"
        n_logits = int(graph.mask("logit").sum())
        rows += [
            row(name, f"graph build, {n_logits} logits, max_feature_nodes {n} (median of {repeats}, CPU)", cpu, "s"),
            row(name, f"graph build (median of {repeats}, wall)", wall, "s"),
            row(name, "forward+backward equivalents (CPU time / one fwd+bwd)", cpu / fb_cpu, "x"),
            row(name, "backward passes", s.n_backward, "passes"),
            row(name, "target rows (logits + feature nodes)", s.n_rows, "rows"),
            row(name, "backward passes per target row", s.n_backward / s.n_rows, "passes/row"),
            row(name, "active features on the prompt", s.n_active_features, "features"),
            row(name, "peak memory (RSS delta)", peak / 2**20, "MiB"),
        ]  # fmt: skip
        print(f"max_feature_nodes {n}: {cpu:.1f} s CPU ({cpu / fb_cpu:.0f} fwd+bwd), {s.n_backward} backward passes, "
              f"{peak / 2**20:.0f} MiB", flush=True)  # fmt: skip
    return rows, extra


def with_bos(model: Any, text: str) -> torch.Tensor:
    """``text``'s token ids after the context-start token, as every harvested context starts (the transcoders never
    saw position 0 of a context: ``train_transcoders.pairs`` leaves it out)."""
    from mechscope.data.corpus import bos_id

    return torch.cat([torch.tensor([bos_id(model.tokenizer)]), model.encode(text).tokens[0]])


def example(model: Any, transcoders: Any) -> tuple[list[dict], dict]:
    from mechscope.graphs import GraphConfig, attribute, verify

    tokens = with_bos(model, EXAMPLE)
    config = GraphConfig(max_feature_nodes=256)
    graph, cpu, _ = timed(lambda: attribute(model, tokens, transcoders, config, target=TARGET))
    pruned = graph.prune()
    inf = graph.node_influence()
    feats = [i for i, n in enumerate(graph.nodes) if n.kind == "feature"]
    top = sorted(feats, key=lambda i: -float(inf[i]))[:10]
    check = verify(model, graph, transcoders, n=3)
    probs = torch.softmax(model.run(tokens[None]).logits[0, -1], -1)
    paris = model.to_single_token(TARGET)
    rows = [
        row("example", "replacement score", graph.replacement_score(), "fraction"),
        row("example", "completeness score", graph.completeness_score(), "fraction"),
        row("example", "replacement score (pruned graph)", pruned.replacement_score(), "fraction"),
        row("example", "completeness score (pruned graph)", pruned.completeness_score(), "fraction"),
        row("example", "feature nodes (full / pruned)", len(feats), "nodes"),
        row("example", "feature nodes kept by prune", int(pruned.mask("feature").sum()), "nodes"),
        row("example", "P(' Paris') of the real model", float(probs[paris]), "probability"),
        row("example", "verify: correlation of predicted and real ablation effects (3 features)",
            float("nan") if check.correlation is None else check.correlation, "pearson"),
        row("example", "graph build (CPU)", cpu, "s"),
    ]  # fmt: skip
    extra = {
        "tokens": list(graph.tokens),
        "top_features": [
            {
                "id": graph.nodes[i].id,
                "layer": graph.nodes[i].layer,
                "position": graph.nodes[i].position,
                "token": graph.nodes[i].token,
                "activation": graph.nodes[i].activation,
                "influence": float(inf[i]),
            }
            for i in top
        ],
        "error_influence_by_layer": [
            float(inf[[i for i, n in enumerate(graph.nodes) if n.kind == "error" and n.layer == layer]].sum())
            for layer in range(graph.n_layers)
        ],
        "verify": check.to_dict(),
    }
    return rows, extra


def planted(quick: bool) -> tuple[list[dict], dict]:
    from mechscope import bench

    board = bench.run_bench(quick=quick, seeds=(0,), organisms=["planted_graph"], progress=False)
    rows = [row(f"planted_graph/{s.method}", s.metric, s.value, "score") for s in board.scores]
    chance = {f"{s.metric}": s.chance for s in board.scores}
    rows += [row("planted_graph/chance", metric, value, "score") for metric, value in sorted(chance.items())]
    return rows, {"errors": board.errors, "quick": quick, "seconds": {s.method: s.seconds for s in board.scores}}


def induction(n: int = 32) -> tuple[list[dict], dict]:
    from mechscope import organisms
    from mechscope.features import DictionaryConfig, ReLUDictionary
    from mechscope.graphs import GraphConfig, attribute
    from mechscope.organisms._induction import repeated

    built = organisms.obtain(organisms.Induction(), 0)
    cfg, model, module = built.cfg, built.model, built.model.module
    silent = {}
    for layer in range(2):
        c = DictionaryConfig("relu", d_in=cfg.d_model, d_sae=1, d_out=cfg.d_model, apply_b_dec_to_input=False,
                             site=f"ln2.{layer}", target_site=f"mlp_out.{layer}")  # fmt: skip
        tc = ReLUDictionary(c)
        with torch.no_grad():
            tc.W_enc.zero_(), tc.W_dec.zero_(), tc.b_enc.fill_(-1.0)
        silent[layer] = tc.eval()
    tokens, periods = repeated(n, cfg.seq_len, cfg.periods, torch.Generator().manual_seed(123))
    o_proj = module.model.layers[1].self_attn.o_proj.weight
    distractor = next(h for h in range(cfg.n_heads) if h != built.ind_head)

    def shares(head: int | None) -> tuple[float, float]:
        saved = o_proj.detach().clone()
        if head is not None:
            with torch.no_grad():
                o_proj[:, head * cfg.d_head : (head + 1) * cfg.d_head] = 0
        try:
            got, top = [], []
            for seq, period in zip(tokens, periods.tolist(), strict=True):
                q = cfg.seq_len - 2  # predict seq[q + 1], a copy of seq[q + 1 - period]
                graph = attribute(model, seq[: q + 1], silent, GraphConfig(max_feature_nodes=0),
                                  target=int(seq[q + 1]))  # fmt: skip
                emb = graph.mask("embedding")
                row = graph.adjacency[graph.mask("logit")][0, emb].abs()  # one entry per position
                got.append(float(row[q + 1 - period] / row.sum()))
                top.append(float(int(row.argmax()) == q + 1 - period))
            return sum(got) / len(got), sum(top) / len(top)
        finally:
            with torch.no_grad():
                o_proj.copy_(saved)

    rows = []
    for name, head in (("intact", None), ("induction_head_ov_zeroed", built.ind_head),
                       ("distractor_head_ov_zeroed", distractor)):  # fmt: skip
        share, top = shares(head)
        what = f"induction/{name}"
        rows += [row(what, "share of the target logit's token attribution from the copied token", share, "fraction"),
                 row(what, "prompts whose top token source is the copied token", top, "fraction")]  # fmt: skip
    rows.append(row("induction/chance", "uniform share over the prompt's positions", 1 / (cfg.seq_len - 1), "fraction"))
    return rows, {"planted_heads": [[0, built.prev_head], [1, built.ind_head]], "distractor": [1, distractor]}


def train_cpu_seconds(steps: int, transcoder: bool, tmp: Path) -> float:
    """CPU seconds of ``features.train`` for ``steps`` steps at the dictionaries benchmark's shape and batch."""
    from mechscope.features import train, train_config
    from mechscope.features._kinds import TopKConfig

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4096 * 4, 576, generator=gen)
    data = (x, torch.randn(4096 * 4, 576, generator=gen)) if transcoder else x
    config = train_config(
        "topk", 576, 9216, TopKConfig(k=32), d_out=576 if transcoder else None, batch_size=4096,
        n_tokens=4096 * steps, b_dec_init="zeros", checkpoint_every=10**9, log_every=10**9,
    )  # fmt: skip
    start = time.process_time()
    train(config, data, tmp / f"{transcoder}-{steps}", progress=False)
    return time.process_time() - start


def training() -> tuple[list[dict], dict]:
    import tempfile

    tc = json.loads((HERE / "results" / "transcoders.json").read_text())
    sae = json.loads((HERE / "results" / "dictionaries.json").read_text())
    wall = next(r["value"] for r in tc["rows"] if r["metric"].startswith("transcoder training throughput"))
    ref = next(r["value"] for r in sae["rows"] if r["name"] == "mechscope"
               and r["metric"] == "training throughput (median step)")  # fmt: skip
    rows = [
        row(
            "training",
            "SmolLM2 transcoder training, wall, machine shared (d_sae 4608, k 32, batch 512)",
            wall,
            "tokens/s",
        ),
        row("training", "SAE training, dictionaries benchmark (d_sae 9216, k 32, batch 4096)", ref, "tokens/s"),
    ]
    with tempfile.TemporaryDirectory() as tmp:  # equal work: 8 steps (10 minus 2, so set-up cancels), CPU time
        for transcoder in (True, False):
            cpu = train_cpu_seconds(10, transcoder, Path(tmp)) - train_cpu_seconds(2, transcoder, Path(tmp))
            name = "training_transcoder" if transcoder else "training_sae"
            rows.append(row(name, SHAPE if transcoder else SHAPE_SAE, 8 * 4096 / cpu, "tokens/s"))
    return rows, {"transcoders": tc["benchmark"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", nargs="+", default=["cost", "example", "training"],
                   choices=["cost", "example", "planted", "induction", "training"])  # fmt: skip
    p.add_argument("--tag", default="tc8x-k32-32k", help="transcoders under ~/.cache/mechscope/transcoders/")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nodes", type=int, nargs="+", default=[0, 128, 1024])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="planted: the bench's quick budget (600 steps, 8 prompts)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results file (its other parts are kept)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": [], "ratios": {}, "parts": {}}
    model = transcoders = None
    if {"cost", "example"} & set(args.part):
        import mechscope as ms
        from mechscope.graphs import load_transcoders

        model, transcoders = ms.load("smollm2-135m"), load_transcoders(root(args.tag))
    for part in args.part:
        if part == "cost":
            rows, extra = cost(model, transcoders, args.repeats, args.nodes)
        elif part == "example":
            rows, extra = example(model, transcoders)
        elif part == "planted":
            rows, extra = planted(args.quick)
        elif part == "induction":
            rows, extra = induction()
        else:
            rows, extra = training()
        result["parts"][part] = {"rows": rows, **extra, "machine": machine()}
    result["rows"] = [r for part in result["parts"].values() for r in part["rows"]]
    values = {(r["name"], r["metric"]): r["value"] for r in result["rows"]}
    if ("training_transcoder", SHAPE) in values and ("training_sae", SHAPE_SAE) in values:
        result["ratios"]["transcoder/sae [training tokens/s, same shape, CPU time]"] = (
            values[("training_transcoder", SHAPE)] / values[("training_sae", SHAPE_SAE)]
        )
    result |= {"benchmark": "graphs: attribution graphs on SmolLM2-135M with 30 per-layer transcoders; planted-graph "
               "ground truth", "machine": machine()}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
