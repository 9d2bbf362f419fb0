"""Per-layer transcoders for SmolLM2-135M: MLP input (``ln2.L``) -> MLP output (``mlp_out.L``), all 30 layers.

Seeded and resumable, trained with mechscope's own pipeline: ``store.harvest`` writes the two sites of a group of
layers over the built-in ``python-docs`` corpus, ``features.train`` trains one TopK transcoder per layer on them
(held-out rows kept aside), and the group's store is deleted once its layers are done, so at most one group of
activations is on disk. Everything lives OUTSIDE the repository, under
``~/.cache/mechscope/transcoders/smollm2-135m-<tag>/``:

    layer_{L}/              one saved dictionary per layer (``features.load_dictionary``), what
                            ``mechscope graph --transcoders DIR`` reads; ``checkpoints/`` inside while it trains
    store_g{G}/             the harvest of group G (deleted when the group is trained)
    metrics.json            per-layer held-out FVU, L0, dead share, training tokens/s

Killing it at any point and starting it again continues where it stopped (harvest shards and training checkpoints
are both resumable; a finished layer is skipped). What this CPU allows (2 shared cores, one torch thread): a few
tens of thousands of tokens per layer and a few epochs over them; ``benchmarks/results/transcoders.json`` holds
what was measured, and docs/graphs.md says what a GPU run would change.

    nice -n 15 python benchmarks/train_transcoders.py            # the default run (23 min here, machine shared)
    python benchmarks/train_transcoders.py --tokens 4096 --epochs 1 --layers 0 1 --tag smoke   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from mechscope._cache import atomic_write_bytes, cache_dir
from mechscope._machine import machine

N_LAYERS = 30
RESULTS = Path(__file__).parent / "results" / "transcoders.json"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=32_768, help="tokens harvested per layer (held-out rows included)")
    p.add_argument("--epochs", type=int, default=2, help="passes over the training rows")
    p.add_argument("--d-sae", type=int, default=4608, help="latents per transcoder (8x d_model)")
    p.add_argument("--k", type=int, default=32, help="TopK active latents per token")
    p.add_argument("--batch", type=int, default=512, help="rows per optimiser step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--group", type=int, default=30, help="layers harvested together (one store on disk at a time)")
    p.add_argument("--held-out", type=int, default=2048, help="rows kept aside for the FVU")
    p.add_argument("--layers", type=int, nargs="*", default=list(range(N_LAYERS)))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="tc8x-k32-32k", help="folder name suffix under ~/.cache/mechscope/transcoders")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the measured rows go ('' to skip)")
    return p.parse_args(argv)


def root(tag: str) -> Path:
    """Where the transcoders of run ``tag`` live."""
    return cache_dir("transcoders", f"smollm2-135m-{tag}")


def pairs(store, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (MLP input, MLP output) rows of ``layer`` in a store, BOS positions left out (their norms are outliers)."""
    xs, ys = [], []
    for a, b in zip(store.shards(f"ln2.{layer}"), store.shards(f"mlp_out.{layer}"), strict=True):
        keep = torch.arange(len(a.acts)) % store.provenance.ctx_len != 0
        xs.append(a.acts[keep].float())
        ys.append(b.acts[keep].float())
    return torch.cat(xs), torch.cat(ys)


def train_layer(args, store, layer: int, out: Path, provenance: dict) -> dict:
    from mechscope.features import load_dictionary, train, train_config
    from mechscope.features._kinds import TopKConfig

    x, y = pairs(store, layer)
    x_tr, y_tr, x_ho, y_ho = x[: -args.held_out], y[: -args.held_out], x[-args.held_out :], y[-args.held_out :]
    n_tokens = args.epochs * (len(x_tr) // args.batch) * args.batch
    config = train_config(
        "topk", x.shape[1], args.d_sae, TopKConfig(k=args.k), d_out=y.shape[1], site=f"ln2.{layer}",
        target_site=f"mlp_out.{layer}", lr=args.lr, batch_size=args.batch, n_tokens=n_tokens, seed=args.seed,
        b_dec_init="mean", log_every=50,
    )  # fmt: skip
    start = time.perf_counter()
    result = train(config, (x_tr, y_tr), out / f"layer_{layer}", progress=False, provenance=provenance)
    seconds = time.perf_counter() - start
    tc = load_dictionary(out / f"layer_{layer}")
    with torch.no_grad():
        pred, latents = tc.decode(tc.encode(x_ho)), tc.encode(x_ho)
        fvu = ((pred - y_ho) ** 2).sum() / ((y_ho - y_ho.mean(0)) ** 2).sum()
    fired = (latents > 0).any(0).float().mean()
    shutil.rmtree(out / f"layer_{layer}" / "checkpoints", ignore_errors=True)
    return {
        "layer": layer,
        "train_rows": len(x_tr),
        "tokens_trained": result.tokens,
        "held_out_fvu": float(fvu),
        "held_out_l0": float((latents > 0).float().sum(1).mean()),
        "alive_share_held_out": float(fired),
        "train_seconds": seconds,
        "tokens_per_s": result.tokens / seconds if result.history or seconds > 0 else None,
    }


def harvest_group(model, layers: list[int], args, folder: Path):
    from mechscope.store import HarvestConfig, harvest

    sites = tuple(s for L in layers for s in (f"ln2.{L}", f"mlp_out.{L}"))
    config = HarvestConfig(sites, ctx_len=128, batch_size=16, max_tokens=args.tokens, seed=args.seed)
    start = time.perf_counter()
    store = harvest(model, config, folder, progress=False)
    return store, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    import mechscope as ms

    out = root(args.tag)
    out.mkdir(parents=True, exist_ok=True)
    metrics_file = out / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {"layers": {}, "harvest": {}}
    metrics["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    model = ms.load("smollm2-135m")
    layers = sorted(args.layers)
    for g in range(0, len(layers), args.group):
        group = [L for L in layers[g : g + args.group] if str(L) not in metrics["layers"]]
        if not group:
            continue
        folder = out / f"store_g{group[0]}"
        store, seconds = harvest_group(model, group, args, folder)
        metrics["harvest"][str(group[0])] = {"layers": group, "tokens": store.manifest.n_tokens, "seconds": seconds}
        provenance = {**model.provenance, "corpus": store.provenance.corpus, "ctx_len": store.provenance.ctx_len,
                      "tokens": store.manifest.n_tokens}  # fmt: skip
        for layer in group:
            row = train_layer(args, store, layer, out, provenance)
            metrics["layers"][str(layer)] = row
            atomic_write_bytes(metrics_file, json.dumps(metrics, indent=2).encode())
            print(json.dumps(row), flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    atomic_write_bytes(metrics_file, json.dumps(metrics, indent=2).encode())
    if str(args.results) and len(metrics["layers"]) == N_LAYERS:
        write_results(metrics, args.results)
    return metrics


def write_results(metrics: dict, path: Path) -> None:
    """The measured rows (``benchmarks/results/transcoders.json``), in the benchmarks' shared layout."""
    layers = [metrics["layers"][str(L)] for L in range(N_LAYERS)]
    cfg = metrics["config"]
    rows = [{"name": f"layer_{r['layer']}", "metric": "held-out FVU (MLP output)", "value": r["held_out_fvu"],
             "unit": "fraction"} for r in layers]  # fmt: skip
    fvus = [r["held_out_fvu"] for r in layers]

    def row(name: str, metric: str, value: float, unit: str) -> dict:
        return {"name": name, "metric": metric, "value": value, "unit": unit}

    rows += [
        row("all_layers", "median held-out FVU", statistics.median(fvus), "fraction"),
        row("all_layers", "worst held-out FVU", max(fvus), "fraction"),
        row("all_layers", "median alive latent share (held-out)",
            statistics.median(r["alive_share_held_out"] for r in layers), "fraction"),
        row("all_layers", "training rows per layer", layers[0]["train_rows"], "tokens"),
        row("all_layers", "tokens trained per layer", layers[0]["tokens_trained"], "tokens"),
        row("training", "transcoder training throughput (median over layers)",
            statistics.median(r["tokens_per_s"] for r in layers), "tokens/s"),
        row("training", "total training time, 30 layers", sum(r["train_seconds"] for r in layers), "s"),
        row("harvest", "total harvest time, 30 layers", sum(h["seconds"] for h in metrics["harvest"].values()), "s"),
    ]  # fmt: skip
    ratios = {}
    sae = Path(__file__).parent / "results" / "dictionaries.json"
    if sae.is_file():
        ref = next(r for r in json.loads(sae.read_text())["rows"]
                   if r["name"] == "mechscope" and r["metric"] == "training throughput (median step)")  # fmt: skip
        ours = rows[-3]["value"]
        ratios["transcoder/sae [training tokens/s]"] = ours / ref["value"]
        # the SAE benchmark's dictionary has 9216 latents; per latent the encoder work is the same per token
        ratios["transcoder/sae [training tokens/s x d_sae]"] = ours * cfg["d_sae"] / (ref["value"] * 9216)
    result = {
        "benchmark": f"transcoders: SmolLM2-135M ln2.L -> mlp_out.L, TopK d_sae {cfg['d_sae']} k {cfg['k']}, "
        f"{cfg['tokens']} tokens harvested per layer ({cfg['held_out']} held out), {cfg['epochs']} epochs, batch "
        f"{cfg['batch']}, python-docs corpus, seed {cfg['seed']}",
        "machine": machine(),
        "rows": rows,
        "ratios": ratios,
        "per_layer": layers,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
