"""Distributed dictionary training: two gloo processes train the dictionary that one process trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import mechscope.features as mf
import mechscope.features._train as train_module
from mechscope.cli import app
from mechscope.features import DictionaryConfig, SyntheticConfig, TrainConfig, make_synthetic

WORLD = 2
STEPS = 12
# Two processes sum in a different order than one, so parameters agree to float rounding (1.2e-7 measured after
# 12 steps); a missing synchronisation (b_dec init, fired counts, loss scaling) shows as 1e-3 or more.
ATOL = 1e-5


def _config(kind: str, steps: int) -> TrainConfig:
    transcoder = kind == "transcoder"
    dictionary = DictionaryConfig(
        "topk" if transcoder else kind,
        d_in=16,
        d_sae=64,
        k=4,
        d_out=8 if transcoder else None,
        apply_b_dec_to_input=not transcoder,
    )
    return TrainConfig(
        dictionary,
        lr=3e-3,
        batch_size=64,
        n_tokens=64 * steps,
        dead_after_tokens=64 * 3,  # latents die within the run, so AuxK and the fired counts matter
        checkpoint_every=4,
        log_every=1,
    )


def _data(kind: str) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    x = make_synthetic(SyntheticConfig(n_features=32, d=16, n_samples=512, firing_prob=0.08, seed=1)).x
    if kind != "transcoder":
        return x
    w = torch.randn(16, 8, generator=torch.Generator().manual_seed(2))
    return x, (x @ w).relu()


# batchtopk: global cutoff, synchronised threshold, AuxK; jumprelu: learned thresholds and an L0 term; the
# transcoder: a target other than the input (b_dec init and FVU normaliser from the targets).
KINDS = ("batchtopk", "jumprelu", "transcoder")


def _forbid_writes(*_args, **_kwargs):
    raise AssertionError("only rank 0 writes checkpoints and the dictionary")


def _worker(rank: int, init_file: str, root: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    if rank:
        train_module.save_dictionary = train_module.atomic_write_bytes = _forbid_writes  # type: ignore[assignment]
    for kind in KINDS:
        out = Path(root) / kind
        straight = mf.train(_config(kind, STEPS), _data(kind), out / "ddp", progress=False)
        mf.train(_config(kind, STEPS // 2), _data(kind), out / "resumed", progress=False)  # stop at step 6 ...
        resumed = mf.train(_config(kind, STEPS), _data(kind), out / "resumed", progress=False)  # ... and go on
        save_file({k: v.contiguous() for k, v in straight.dictionary.state_dict().items()}, out / f"rank{rank}.st")
        if rank == 0:
            logs = {"straight": straight.history, "resumed": resumed.history, "tokens": straight.tokens}
            (out / "history.json").write_text(json.dumps(logs))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(str(root / "rendezvous"), str(root)), nprocs=WORLD, start_method="spawn")
    return root


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < ATOL, worst
    return worst


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_match_one(two_process_runs, kind, tmp_path):
    torch.set_num_threads(1)
    out = two_process_runs / kind
    single = mf.train(_config(kind, STEPS), _data(kind), tmp_path / "single", progress=False)
    one = load_file(tmp_path / "single" / "sae.safetensors")

    ranks = [load_file(out / f"rank{r}.st") for r in range(WORLD)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # every rank holds the same dictionary
    _assert_close(load_file(out / "ddp" / "sae.safetensors"), one)
    _assert_close(load_file(out / "resumed" / "sae.safetensors"), one)  # stopped at step 6, resumed by 2 ranks

    logs = json.loads((out / "history.json").read_text())
    assert logs["tokens"] == single.tokens == 64 * STEPS  # the global batch is the single process's batch
    for got, want in zip(logs["straight"], single.history, strict=True):
        step, tokens, *values = got
        assert (step, tokens) == (want.step, want.tokens)
        assert values == pytest.approx(list(want[2:]), rel=1e-3, abs=1e-5)  # global loss, FVU, L0, dead %
    assert [entry[0] for entry in logs["resumed"]] == list(range(STEPS // 2 + 1, STEPS + 1))
    ckpt = load_file(out / "ddp" / "checkpoints" / "step_000000012" / "trainer.safetensors")
    single_ckpt = load_file(tmp_path / "single" / "checkpoints" / "step_000000012" / "trainer.safetensors")
    assert torch.equal(ckpt["since_fired"], single_ckpt["since_fired"])  # fired latents counted over all ranks


def test_batch_must_split_evenly_over_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module.distributed, "rank_world", lambda: (0, 3))
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        mf.train(_config("batchtopk", 2), _data("batchtopk"), tmp_path, progress=False)


@pytest.mark.slow
def test_cli_dict_train_under_torchrun_reports_once_and_matches_one_process(tmp_path):
    store, run, single = tmp_path / "store", tmp_path / "run", tmp_path / "single"
    harvest = ["harvest", str(store), "--site", "resid_post.1", "--model", "tiny-llama", "--max-tokens", "2048"]
    assert CliRunner().invoke(app, harvest).exit_code == 0
    args = ["dict", "train", str(store), "--expansion", "2", "--k", "4", "--batch-size", "128", "--n-tokens", "2560"]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", f"--nproc_per_node={WORLD}", "-m", "mechscope.cli", *args[:3], str(run),
         *args[3:], "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('"steps": 20') == 1  # one report, from rank 0
    assert proc.stderr.count("done") == 1
    assert CliRunner().invoke(app, [*args[:3], str(single), *args[3:]]).exit_code == 0
    _assert_close(load_file(run / "sae.safetensors"), load_file(single / "sae.safetensors"))


def _live(corpus: str):
    from mechscope import tiny
    from mechscope.store import LiveActivations

    live = LiveActivations(tiny("llama", seed=0), "resid_post.1", 64, corpus=corpus, ctx_len=32, buffer_contexts=7)
    forwarded: list[int] = []
    run = live._forward
    live._forward = lambda contexts: (forwarded.append(len(contexts)), run(contexts))[1]  # type: ignore[method-assign]
    cfg = TrainConfig(DictionaryConfig("topk", d_in=64, d_sae=128, k=4), batch_size=64, n_tokens=64 * 20)
    return live, cfg, forwarded


def _live_worker(rank: int, init_file: str, root: str, corpus: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    live, cfg, forwarded = _live(corpus)
    mf.train(cfg, live, Path(root) / "run", progress=False)
    (Path(root) / f"forwarded{rank}.json").write_text(json.dumps(forwarded))
    dist.destroy_process_group()


@pytest.mark.slow
def test_on_the_fly_training_shares_the_forward_passes_and_matches_one_process(tmp_path):
    from pydoc_data.topics import topics

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": topics[k][:1000]}) + "\n" for k in sorted(topics)[:4]))
    mp.start_processes(_live_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path), str(corpus)), nprocs=WORLD,
                       start_method="spawn")  # fmt: skip
    torch.set_num_threads(1)
    live, cfg, forwarded = _live(str(corpus))
    mf.train(cfg, live, tmp_path / "single", progress=False)
    _assert_close(load_file(tmp_path / "run" / "sae.safetensors"), load_file(tmp_path / "single" / "sae.safetensors"))
    # Buffers of 7 contexts: one process runs all 7, each of two runs 4 (contexts 0, 2, 4, 6 / 1, 3, 5 + 1 pad).
    shares = [json.loads((tmp_path / f"forwarded{r}.json").read_text()) for r in range(WORLD)]
    assert set(forwarded) == {7} and set(shares[0]) == set(shares[1]) == {4}
    assert len(shares[0]) == len(shares[1]) == len(forwarded)


# --- cross-layer transcoders (graphs.train_clt) ------------------------------------------------------------------


def _clt_setup(kind: str):
    import mechscope as ms
    from mechscope.graphs import CLTTrainConfig

    model = ms.tiny("gpt2", seed=1, activation_function="relu")
    tokens = torch.randint(0, model.cfg.d_vocab, (16, 12), generator=torch.Generator().manual_seed(3))
    config = CLTTrainConfig(d_sae=24, kind=kind, k=4, l1_coeff=1e-2, steps=6, batch_contexts=4, lr=3e-3)
    return model, tokens, config


def _clt_state(clt) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in clt.state_dict().items()}


def _clt_worker(rank: int, init_file: str, root: str) -> None:
    from mechscope.graphs import train_clt

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    for kind in ("topk", "relu"):
        model, tokens, config = _clt_setup(kind)
        contexts: list[int] = []
        wte = model.module.transformer.wte  # the token embedding: its input is this process's contexts
        wte.register_forward_pre_hook(lambda module, args, seen=contexts: seen.append(int(args[0].shape[0])))
        clt, history = train_clt(model, tokens, config)
        save_file(_clt_state(clt), Path(root) / f"clt_{kind}_rank{rank}.st")
        (Path(root) / f"clt_{kind}_rank{rank}.json").write_text(json.dumps({"history": history, "rows": contexts}))
    dist.destroy_process_group()


def test_cross_layer_transcoder_trains_under_two_processes_as_in_one(tmp_path):
    from mechscope.graphs import train_clt

    mp.start_processes(_clt_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD,
                       start_method="spawn")  # fmt: skip
    torch.set_num_threads(1)
    for kind in ("topk", "relu"):
        model, tokens, config = _clt_setup(kind)
        clt, history = train_clt(model, tokens, config)
        ranks = [load_file(tmp_path / f"clt_{kind}_rank{r}.st") for r in range(WORLD)]
        assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # every rank holds the same CLT
        _assert_close(ranks[0], _clt_state(clt))
        logs = [json.loads((tmp_path / f"clt_{kind}_rank{r}.json").read_text()) for r in range(WORLD)]
        assert logs[0]["history"] == pytest.approx(history, rel=1e-4)  # the global batch's FVU, on every rank
        assert logs[0]["rows"] == logs[1]["rows"] == [config.batch_contexts // WORLD] * config.steps  # its share
        init = _clt_state(type(clt)(clt.cfg, seed=config.seed))
        assert max(float((ranks[0][k] - init[k]).abs().max()) for k in init) > 100 * ATOL  # training moved it
