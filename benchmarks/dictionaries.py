"""Dictionary training: harvesting SmolLM2's resid_post.15 and training a TopK SAE on it, against SAELens and sparsify.

One process (``.venv-saelens``), one activation tensor, one configuration: TopK, ``d_in`` 576, ``d_sae`` 9216 (16x),
k 32, batch 4096 rows, float32, Adam, CPU, ``--threads`` torch threads (default 1: the machine is shared, and every
contender and the roofline run on the same count).

Harvest phase (``--contexts`` 32 x 128 tokens of the built-in ``python-docs`` corpus, batches of 32; kept small
because a 2-core CPU runs the whole model at a few hundred tokens/s), interleaved rounds of:

- ``hf_full``: the Hugging Face forward of the whole model (``torch.no_grad``, ``use_cache=False``, logits);
- ``hf_to_layer``: the same forward with the decoder stack cut to layers 0..15 (no lm_head): the plain forward
  "up to that layer", the baseline of the issue's goal;
- ``mechscope_run``: ``model.run(batch, cache="resid_post.15", logits=False)`` per batch;
- ``mechscope_harvest``: ``harvest(model, HarvestConfig(("resid_post.15",), max_tokens=4096), fresh_dir)``
  end to end: corpus loading, the token stream, the forwards, and writing the shard and manifest. The token stream of
  the corpus is cached on disk by ``token_stream`` after the untimed first harvest, so the timed ones read it; the
  cold cost of tokenising the whole corpus (once per corpus and tokenizer) is measured apart and reported as
  ``tokenise_corpus_cold``.

Training phase: each contender trains a fresh SAE with its own loop on the same list of batches (4096 rows each,
drawn with replacement and a fixed seed from the 4064 harvested non-BOS rows; the speed of a step does not depend
on which rows it gets). The data iterator stamps the time whenever the trainer pulls a
batch, so the time between two pulls is one whole step of that library's loop (bookkeeping included), and the
warm-up steps are left out without restarting anything:

- ``mechscope``: ``mechscope.features.train(TrainConfig(DictionaryConfig("topk", ...)), batches, tmp, progress=False)``
  (sparse decode: ``embedding_bag`` over the kept latents, and the encoder's gradient through them only);
- ``saelens``: SAELens's own ``SAETrainer(...).fit()`` on a ``TopKTrainingSAE`` (its defaults: dense decode,
  ``rescale_acts_by_decoder_norm``, grad-norm clipping), fed the batches as its ``data_provider``;
- ``saelens_sparse``: the same with ``use_sparse_activations=True`` (COO latents, ``torch.sparse.mm`` decode); with
  torch 2.13 on CPU its backward raises (``aten::view`` has no SparseCPU kernel), and the run records that;
- ``sparsify``: EleutherAI sparsify's ``SparseCoder`` (fused TopK encoder, ``embedding_bag`` decode on CPU) in a loop
  that does what its ``Trainer`` does per step (unit-norm decoder, forward, ``fvu + auxk``, backward, decoder
  gradient projection, ``torch.optim.Adam`` step; its trainer needs a model and a dataset, and defaults to
  SignSGD, so Adam is chosen here for parity).

FLOP/s: matmul FLOPs per step as each implementation executes them, divided by the step time: a dense
``[batch d_sae] @ [d_sae d_in]`` decode counts in full (``2 B d_sae d``), a gather over the kept latents counts
``2 B k d`` (one multiply-add per kept latent and feature); top-k selection, copies and optimiser updates count
nothing. mechscope: the dense encoder forward, then ``2 B k d`` each for the decode, the gradients of the decoder
weights and of the latent values, and the encoder's weight gradient, plus the ``b_dec`` matrix-vector product
(``2 d_in d_sae``); no AuxK in these steps (no latent is dead yet). Measured against this machine's measured fp32
``torch.mm`` rate (4096^3, same thread count and clock), sampled at the start, before every training run and at
the end: the machine is shared, so the roofline is measured under the same load as the runs, and the median of
its samples is the denominator (the fastest sample gives the ``of best`` fraction).

Clock (``--clock``): ``cpu`` (the default) times this process's CPU time (``time.process_time``), which other
processes hardly change at one thread (they still share caches and memory bandwidth); ``wall`` times wall-clock.

Peak memory: resident-set peak minus the size before, over a separate short run (fresh SAE, optimiser state,
3 steps), sampled every 0.5 ms (``hooks.peak_rss_delta``).

Run: ``bash benchmarks/setup_saelens.sh && .venv-saelens/bin/python benchmarks/dictionaries.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # CPU: sparsify's own eager fallback
os.environ.setdefault("WANDB_MODE", "disabled")

import argparse
import contextlib
import gc
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hooks import _libc, machine, other_load, peak_rss_delta  # noqa: E402  (shared measuring helpers)

from mechscope.data.corpus import load_corpus  # noqa: E402

SITE, LAYER = "resid_post.15", 15
D_IN, D_SAE, K = 576, 9216, 32


# ---------------------------------------------------------------------------------------------- roofline


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def matmul_rate(clock: Callable[[], float], n: int = 4096, repeats: int = 3) -> list[float]:
    """FLOP/s of ``repeats`` fp32 ``[n n] @ [n n]`` products into one buffer (after one warm-up)."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    rates = []
    for _ in range(repeats):
        t = clock()
        torch.mm(a, b, out=c)
        rates.append(2 * n**3 / (clock() - t))
    return rates


# ---------------------------------------------------------------------------------------------- harvest phase


@contextlib.contextmanager
def layers_cut(module: nn.Module, n: int) -> Iterator[None]:
    """Run the HF decoder stack on its first ``n`` layers only (restored on exit)."""
    full = module.model.layers
    module.model.layers = nn.ModuleList(list(full)[:n])
    try:
        yield
    finally:
        module.model.layers = full


def harvester(model: Any, n_tokens: int, batch: int, out: Path) -> Callable[[], Any]:
    """A fresh harvest of ``SITE`` over the first ``n_tokens`` of the built-in corpus into ``out``."""
    from mechscope.store import HarvestConfig, harvest

    cfg = HarvestConfig((SITE,), batch_size=batch, max_tokens=n_tokens)

    def run() -> Any:
        shutil.rmtree(out, ignore_errors=True)  # fresh every time: an existing store would be resumed
        return harvest(model, cfg, out, progress=False)

    return run


def forward_contenders(model: Any, contexts: Tensor, batch: int, tmp: Path) -> dict[str, Callable[[], Any]]:
    module = model.module.eval()
    chunks = contexts.split(batch)

    def hf_full() -> None:
        with torch.no_grad():
            for c in chunks:
                module(input_ids=c, use_cache=False)

    def hf_to_layer() -> None:
        with torch.no_grad(), layers_cut(module, LAYER + 1):
            for c in chunks:
                module.model(input_ids=c, use_cache=False)

    def mechscope_run() -> None:
        for c in chunks:
            model.run(c, cache=SITE, logits=False)

    return {
        "hf_full": hf_full,
        "hf_to_layer": hf_to_layer,
        "mechscope_run": mechscope_run,
        "mechscope_harvest": harvester(model, contexts.numel(), batch, tmp / "harvest_timed"),
    }


def time_forwards(
    contenders: dict[str, Callable[[], Any]], rounds: int, clock: Callable[[], float]
) -> dict[str, list[tuple[float, float]]]:
    """(seconds, other processes' cores) per call, contenders interleaved within each round (after a warm-up)."""
    for run in contenders.values():
        run()
    calls: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            gc.collect()
            t = clock()
            _, load = other_load(run)
            calls[name].append((clock() - t, load))
    return calls


def tokenise_cold(model: Any, repeats: int, clock: Callable[[], float]) -> list[float]:
    """Seconds to tokenise the whole built-in corpus without the token-stream cache (what a first harvest pays)."""
    texts = list(load_corpus().texts)
    times = []
    for _ in range(repeats):
        t = clock()
        model.tokenizer(texts, add_special_tokens=False, verbose=False)
        times.append(clock() - t)
    return times


# ---------------------------------------------------------------------------------------------- training phase


class Stamped:
    """An iterator over ``batches`` that records ``clock()`` each time the trainer pulls one."""

    def __init__(self, batches: list[Tensor], clock: Callable[[], float] = time.perf_counter) -> None:
        self.batches, self.stamps, self.clock = batches, [], clock

    def __iter__(self) -> Iterator[Tensor]:
        for b in self.batches:
            self.stamps.append(self.clock())
            yield b

    def step_times(self, warmup: int) -> list[float]:
        """Seconds of each step after the first ``warmup`` (pull i+1 - pull i is step i)."""
        d = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return d[warmup:]


@dataclass
class Trainer:
    name: str
    label: str
    run: Callable[[Stamped, int], None]
    """Train a fresh SAE for ``n_steps`` steps on the stamped batches."""
    flops: int
    """Matmul FLOPs per step, as executed."""
    notes: list[str] = field(default_factory=list)


def enc_flops(b: int) -> int:
    return 2 * b * D_IN * D_SAE


def mechscope_trainer(batch: int, tmp: Path) -> Trainer:
    from mechscope.features import DictionaryConfig, TrainConfig, train

    def run(data: Stamped, n_steps: int) -> None:
        cfg = TrainConfig(
            DictionaryConfig("topk", d_in=D_IN, d_sae=D_SAE, k=K),
            batch_size=batch,
            n_tokens=n_steps * batch,
            lr=1e-3,
            checkpoint_every=10**9,
        )
        out = tmp / "mechscope_sae"
        shutil.rmtree(out, ignore_errors=True)  # fresh: train() resumes from a checkpoint it finds
        train(cfg, data, out, progress=False)

    # sparse TopK: dense encoder forward; decode, dW_dec, d(values), dW_enc as gathers over B*k latents; b_dec matvec.
    flops = enc_flops(batch) + 8 * batch * K * D_IN + 2 * D_IN * D_SAE
    return Trainer("mechscope", "mechscope.features.train (sparse decode and encoder backward)", run, flops)


def saelens_trainer(batch: int, sparse: bool) -> Trainer:
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    def run(data: Stamped, n_steps: int) -> None:
        torch.manual_seed(0)
        sae = TopKTrainingSAE(
            TopKTrainingSAEConfig(
                d_in=D_IN,
                d_sae=D_SAE,
                k=K,
                dtype="float32",
                device="cpu",
                apply_b_dec_to_input=True,
                normalize_activations="none",
                use_sparse_activations=sparse,
            )
        )
        cfg = SAETrainerConfig(
            # one step more than asked: fit() pulls no batch after its last step, and a step is timed between pulls
            total_training_samples=(n_steps + 1) * batch,
            train_batch_size_samples=batch,
            lr=1e-3,
            lr_end=1e-4,
            device="cpu",
            logger=LoggingConfig(log_to_wandb=False),
        )
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
            SAETrainer(cfg, sae, iter(data)).fit()

    if sparse:  # dense encoder and its two backward products; sparse decode, O(B*k*d_in)
        flops = 3 * enc_flops(batch) + 6 * batch * K * D_IN
        return Trainer("saelens_sparse", "SAELens SAETrainer.fit, use_sparse_activations=True", run, flops)
    return Trainer("saelens", "SAELens SAETrainer.fit (dense decode, its default)", run, 6 * enc_flops(batch))


def sparsify_trainer(batch: int) -> Trainer:
    from sparsify import SparseCoder, SparseCoderConfig

    def run(data: Stamped, n_steps: int) -> None:
        torch.manual_seed(0)
        sae = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K), device="cpu", dtype=torch.float32)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
        since_fired = torch.zeros(D_SAE, dtype=torch.long)
        for i, x in enumerate(data):  # what sparsify.Trainer.fit does per step, minus the model and logging
            if i == n_steps:
                break
            sae.set_decoder_norm_to_unit_norm()
            out = sae(x, dead_mask=since_fired > 10_000_000)
            (out.fvu + 1 / 32 * out.auxk_loss).backward()
            since_fired += len(x)
            since_fired[out.latent_indices.flatten()] = 0
            sae.remove_gradient_parallel_to_decoder_directions()
            opt.step()
            opt.zero_grad()

    # dense encoder forward; its backward and the decode are gathers/scatters over the B*k active latents.
    flops = enc_flops(batch) + 10 * batch * K * D_IN
    return Trainer("sparsify", "sparsify SparseCoder + Adam loop (sparse encoder backward and decode)", run, flops)


def build_trainers(batch: int, tmp: Path) -> tuple[list[Trainer], dict[str, str]]:
    makers: dict[str, Callable[[], Trainer]] = {
        "mechscope": lambda: mechscope_trainer(batch, tmp),
        "saelens": lambda: saelens_trainer(batch, sparse=False),
        "saelens_sparse": lambda: saelens_trainer(batch, sparse=True),
        "sparsify": lambda: sparsify_trainer(batch),
    }
    trainers, skipped = [], {}
    for name, make in makers.items():
        try:
            trainers.append(make())
        except Exception as e:
            skipped[name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
    return trainers, skipped


def time_training(
    trainers: list[Trainer],
    batches: list[Tensor],
    args: argparse.Namespace,
    skipped: dict[str, str],
    roofline: list[float],
) -> dict[str, list[tuple[float, float]]]:
    """(seconds, other processes' cores) per timed step; one fresh run per contender per round, interleaved.

    Before each run the matmul rate is measured again (appended to ``roofline``), so that the roofline sees
    the same machine load as the runs. A contender whose run raises is removed from ``trainers`` and recorded
    in ``skipped``.
    """
    out: dict[str, list[tuple[float, float]]] = {t.name: [] for t in trainers}
    n, clock = args.warmup_steps + args.steps, CLOCKS[args.clock]
    for _ in range(args.rounds):
        for t in list(trainers):
            roofline += matmul_rate(clock, repeats=2)
            data = Stamped(batches[: n + 2], clock)
            gc.collect()
            try:
                _, load = other_load(lambda t=t, data=data: t.run(data, n))
            except Exception as e:
                skipped[t.name] = f"training step failed: {type(e).__name__}: {str(e)[:200]}"
                trainers.remove(t)
                del out[t.name]
                continue
            out[t.name] += [(s, load) for s in data.step_times(args.warmup_steps)[: args.steps]]
    return out


def training_memory(trainers: list[Trainer], batches: list[Tensor], steps: int = 3) -> dict[str, int]:
    libc = _libc()
    if libc is not None:  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD: large blocks go back to the OS when freed
        libc.mallopt(-1, 128 * 1024)
        libc.mallopt(-3, 128 * 1024)
    return {t.name: peak_rss_delta(lambda t=t: t.run(Stamped(batches[: steps + 2]), steps), libc) for t in trainers}


# ---------------------------------------------------------------------------------------------- reporting


def versions() -> dict[str, str]:
    found = {}
    for pkg in ("torch", "transformers", "mechscope", "sae-lens", "transformer-lens", "eai-sparsify"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            found[pkg] = "not installed"
    return found


def med_min(xs: list[float]) -> tuple[float, float]:
    return statistics.median(xs), min(xs)


def summarise(
    fwd: dict, train: dict, mem: dict, trainers: list[Trainer], roof: tuple[float, float], tokens: int, batch: int
):
    rows, ratios = [], {}
    fsec = {k: med_min([s for s, _ in v]) for k, v in fwd.items()}
    for name, (med, best) in fsec.items():
        rows += [
            {
                "name": name,
                "metric": f"forward/harvest throughput {tokens} tokens (median)",
                "value": tokens / med,
                "unit": "tokens/s",
            },
            {
                "name": name,
                "metric": f"forward/harvest throughput {tokens} tokens (best)",
                "value": tokens / best,
                "unit": "tokens/s",
            },
        ]
    for a, b in (
        ("mechscope_harvest", "hf_to_layer"),
        ("mechscope_run", "hf_to_layer"),
        ("mechscope_harvest", "hf_full"),
    ):
        ratios[f"{a}/{b} [tokens/s, median]"] = fsec[b][0] / fsec[a][0]
        ratios[f"{a}/{b} [tokens/s, best]"] = fsec[b][1] / fsec[a][1]
    tsec = {k: med_min([s for s, _ in v]) for k, v in train.items()}
    flops = {t.name: t.flops for t in trainers}
    for name, (med, best) in tsec.items():
        rows += [
            {"name": name, "metric": "training throughput (median step)", "value": batch / med, "unit": "tokens/s"},
            {"name": name, "metric": "training throughput (best step)", "value": batch / best, "unit": "tokens/s"},
            {"name": name, "metric": "matmul FLOPs per step (as executed)", "value": flops[name], "unit": "FLOP"},
            {"name": name, "metric": "achieved FLOP/s (median step)", "value": flops[name] / med, "unit": "FLOP/s"},
            {
                "name": name,
                "metric": "fraction of fp32 matmul roofline (median step)",
                "value": flops[name] / med / roof[0],
                "unit": "fraction",
            },
            {
                "name": name,
                "metric": "fraction of the best fp32 matmul rate (median step)",
                "value": flops[name] / med / roof[1],
                "unit": "fraction",
            },
            {
                "name": name,
                "metric": "peak memory (fresh SAE + Adam + 3 steps, RSS delta)",
                "value": mem[name] / 2**20,
                "unit": "MiB",
            },
        ]
    if "mechscope" in tsec:
        for peer in (p for p in tsec if p != "mechscope"):
            ratios[f"mechscope/{peer} [training tokens/s, median]"] = tsec[peer][0] / tsec["mechscope"][0]
            ratios[f"mechscope/{peer} [training tokens/s, best]"] = tsec[peer][1] / tsec["mechscope"][1]
            ratios[f"mechscope/{peer} [peak memory]"] = mem["mechscope"] / max(mem[peer], 1)
    return rows, ratios


def print_table(result: dict) -> None:
    val = {(r["name"], r["metric"]): r["value"] for r in result["rows"]}
    names = list(dict.fromkeys(r["name"] for r in result["rows"]))
    tok = result["config"]["harvest_tokens"]
    print(f"\n{'forward / harvest':20s} {'tok/s median':>13s} {'tok/s best':>11s}")
    for n in names:
        key = (n, f"forward/harvest throughput {tok} tokens (median)")
        if key in val:
            print(f"{n:20s} {val[key]:13.0f} {val[(n, key[1].replace('median', 'best'))]:11.0f}")
    print(
        f"\n{'training':16s} {'tok/s med':>10s} {'tok/s best':>10s} {'GFLOP/step':>10s} {'GFLOP/s':>8s} "
        f"{'roofline':>8s} {'of best':>8s} {'peak MiB':>8s}"
    )
    for n in names:
        if (n, "training throughput (median step)") not in val:
            continue
        print(
            f"{n:16s} {val[(n, 'training throughput (median step)')]:10.0f} "
            f"{val[(n, 'training throughput (best step)')]:10.0f} "
            f"{val[(n, 'matmul FLOPs per step (as executed)')] / 1e9:10.1f} "
            f"{val[(n, 'achieved FLOP/s (median step)')] / 1e9:8.1f} "
            f"{val[(n, 'fraction of fp32 matmul roofline (median step)')]:8.1%} "
            f"{val[(n, 'fraction of the best fp32 matmul rate (median step)')]:8.1%} "
            f"{val[(n, 'peak memory (fresh SAE + Adam + 3 steps, RSS delta)')]:8.0f}"
        )
    roof = result["roofline_flops"]
    print(f"\nfp32 matmul roofline: {roof['used (median)'] / 1e9:.1f} GFLOP/s median, {roof['best'] / 1e9:.1f} best")
    for key, x in result["ratios"].items():
        print(f"{key:60s} {x:.3f}")
    for phase, cores in result["other_processes_busy_cores"].items():
        noisy = cores > 0.1 and result["config"]["clock"] == "wall"  # CPU time: other processes barely count
        flag = "  <- not a quiet machine: these numbers are noisy" if noisy else ""
        print(f"other processes kept {cores:.2f} cores busy during {phase}{flag}")
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")


# ---------------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, default=32)
    p.add_argument("--ctx-len", type=int, default=128)
    p.add_argument("--harvest-batch", type=int, default=32)
    p.add_argument("--forward-rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="timed steps per run")
    p.add_argument("--rounds", type=int, default=2, help="interleaved training runs per contender")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads for every contender and the roofline")
    p.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="cpu",
        help="cpu: this process's CPU time (with one thread, barely changed by other processes); wall: wall-clock",
    )
    p.add_argument("--out", type=Path, default=HERE / "results" / "dictionaries.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    import mechscope as ms

    clock = CLOCKS[args.clock]
    roofline = matmul_rate(clock)  # FLOP/s samples: here, before every training run, and at the end
    model = ms.load()
    tmp = Path(tempfile.mkdtemp(prefix="mechscope-bench-"))
    try:
        tokens = args.contexts * args.ctx_len
        # the store the SAEs train on, and the very contexts the forward baselines then run on
        store = harvester(model, tokens, args.harvest_batch, tmp / "harvest")()
        contexts = store.tokens()
        assert contexts.shape == (args.contexts, args.ctx_len), contexts.shape
        fwd_c = forward_contenders(model, contexts, args.harvest_batch, tmp)
        fwd = time_forwards(fwd_c, args.forward_rounds, clock)
        cold = tokenise_cold(model, args.forward_rounds + 1, clock)

        acts = torch.cat([s.acts for s in store.shards(SITE)]).float()  # [n_ctx*ctx_len d_in]
        acts = acts.view(args.contexts, args.ctx_len, -1)[:, 1:].reshape(-1, D_IN)  # BOS rows left out
        gen = torch.Generator().manual_seed(args.seed)
        n = args.warmup_steps + args.steps + 2
        batches = [acts[torch.randint(len(acts), (args.batch,), generator=gen)] for _ in range(n)]

        trainers, skipped = build_trainers(args.batch, tmp)
        train, train_load = other_load(lambda: time_training(trainers, batches, args, skipped, roofline))
        mem = training_memory(trainers, batches)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    roofline += matmul_rate(clock)
    roof = statistics.median(roofline)
    rows, ratios = summarise(fwd, train, mem, trainers, (roof, max(roofline)), tokens, args.batch)
    rows.append(
        {
            "name": "tokenise_corpus_cold",
            "metric": "tokenising the whole python-docs corpus, uncached (median)",
            "value": statistics.median(cold),
            "unit": "s",
        }
    )
    result = {
        "benchmark": f"dictionaries: harvest SmolLM2-135M {SITE} and train a TopK SAE (d_in {D_IN}, d_sae {D_SAE}, "
        f"k {K}, batch {args.batch}, fp32 CPU)",
        "machine": machine(),
        "rows": rows,
        "ratios": ratios,
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "harvest_tokens": tokens,
            "site": SITE,
            "d_in": D_IN,
            "d_sae": D_SAE,
            "k": K,
            "training_rows_available": len(acts),
        },
        "versions": versions(),
        "contenders": {t.name: {"label": t.label, "flops_per_step": t.flops, "notes": t.notes} for t in trainers},
        "skipped": skipped,
        "roofline_flops": {"used (median)": roof, "best": max(roofline), "fp32 mm 4096^3 samples (FLOP/s)": roofline},
        "other_processes_busy_cores": {
            "forward/harvest": statistics.mean(x for v in fwd.values() for _, x in v),
            "training": train_load,
        },
        "raw": {
            "forward [seconds, other cores]": fwd,
            "training step [seconds, other cores of its run]": train,
            "peak bytes": mem,
            "tokenise corpus cold [seconds]": cold,
        },
        "notes": [
            "ratios 'a/b [tokens/s]' are a's throughput over b's: above 1 means a is faster",
            "'mechscope/peer [peak memory]' is mechscope's peak over the peer's: below 1 means mechscope is leaner",
            f"times are {'CPU time of this process (process_time)' if args.clock == 'cpu' else 'wall-clock'}",
            "roofline: the median of the timed fp32 4096^3 torch.mm (3 at the start, 2 before every training run, 3 "
            "at the end; same clock and torch threads); 'of best' divides by the fastest of them instead",
            "FLOPs count matmuls as each library executes them; a dense decode of TopK latents counts in full, a "
            "gather over the kept latents 2*B*k*d",
            "timed harvests read the corpus's token stream from the on-disk cache (filled by the untimed first "
            "harvest); tokenise_corpus_cold is what a first harvest of a corpus pays on top, once",
            "a training step is the time between two batch pulls of the library's own loop, warm-up steps left out",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
