"""Dictionaries against their definitions, training against interruption, files against SAELens, sparsify."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mechscope.features as mf
from mechscope.features import (
    DictionaryConfig,
    NonFiniteLossError,
    SyntheticConfig,
    TrainConfig,
    build_dictionary,
    make_synthetic,
)
from mechscope.features import _sparse as sparse_ops

SRC = Path(mf.__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; also keeps float reductions in one order
    yield
    torch.set_num_threads(threads)


def _perturbed(cfg: DictionaryConfig, seed: int = 0) -> mf.Dictionary:
    """A dictionary with every parameter moved off its initial value (biases, thresholds non-zero)."""
    d = build_dictionary(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        if cfg.kind == "batchtopk":
            d.threshold.fill_(0.05)
    return d


# --- architectures against their definitions -------------------------------------------------------------


def test_topk_keeps_exactly_k_largest_per_row():
    d = build_dictionary(DictionaryConfig("topk", d_in=8, d_sae=32, k=5))
    with torch.no_grad():
        d.b_enc.fill_(10.0)  # all pre-activations positive, so ReLU removes none of the top k
    x = torch.randn(16, 8)
    pre = d.pre_activations(x)
    latents = d.encode(x)
    assert ((latents != 0).sum(1) == 5).all()
    kept = pre.topk(5, dim=1).indices
    assert torch.equal(latents.gather(1, kept), pre.gather(1, kept))


def test_batchtopk_keeps_k_times_batch_in_training_then_uses_threshold():
    d = build_dictionary(DictionaryConfig("batchtopk", d_in=8, d_sae=32, k=3))
    with torch.no_grad():
        d.b_enc.fill_(10.0)
    x = torch.randn(16, 8) * torch.linspace(0.1, 3.0, 16)[:, None]  # rows of different norms
    out = d(x)
    latents = out.latents.to_dense()
    assert int((latents != 0).sum()) == 3 * 16
    assert len(set((latents != 0).sum(1).tolist())) > 1  # per row it varies: only the batch total is k
    d.observe(out)
    smallest_kept = latents[latents > 0].min()
    assert d.threshold == smallest_kept
    d.eval()
    pre = d.pre_activations(x)
    assert torch.equal(d.encode(x), pre.relu() * (pre > smallest_kept))
    d.train()
    doubled = out.sparse._replace(values=out.sparse.values * 0 + 2 * smallest_kept)
    d.observe(out._replace(sparse=doubled))  # moving average toward 2 * min
    assert torch.isclose(d.threshold, smallest_kept * (1 + d.cfg.batchtopk_threshold_lr))


@pytest.mark.parametrize(("rows", "n", "k"), [(64, 9216, 32), (33, 2048, 8), (5, 100, 7)])
def test_blocked_topk_picks_each_rows_k_largest(rows, n, k):
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(n))
    got = sparse_ops.topk_indices(x, k)
    assert got.shape == (rows, k)
    assert torch.equal(got.sort(-1).values, x.topk(k, dim=-1).indices.sort(-1).values)


def test_pre_out_is_for_the_sparse_kinds_only():
    d = build_dictionary(DictionaryConfig("relu", d_in=8, d_sae=32))
    with pytest.raises(ValueError, match="trains densely"):
        d(torch.randn(4, 8), pre_out=torch.empty(4, 32))


def _dense_reference(d: mf.Dictionary, x, target, dead, k_aux):
    """FVU and AuxK written with dense products, as the definitions read (Gao et al. 2024, §2.3-2.4)."""
    pre = d.pre_activations(x)
    latents = d.activate(pre)
    residual = target - (latents @ d.W_dec + d.b_dec)
    total = (target - target.mean(0)).pow(2).sum()
    masked = torch.where(dead, pre, -torch.inf)
    top = masked.topk(min(k_aux, int(dead.sum())), dim=-1)
    aux = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    auxk = min(int(dead.sum()) / k_aux, 1.0) * (aux @ d.W_dec - residual.detach()).pow(2).sum() / total
    return residual.pow(2).sum() / total, auxk, latents


@pytest.mark.parametrize("kind", ["topk", "batchtopk"])
@pytest.mark.parametrize("transcoder", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("d_sae", [48, 512])  # 512: TopK selects through blocks; pre-activations into pre_out
def test_sparse_forward_equals_dense_products_with_gradients(kind, transcoder, training, d_sae):
    cfg = DictionaryConfig(
        kind, d_in=12, d_sae=d_sae, k=4, d_out=10 if transcoder else None, apply_b_dec_to_input=not transcoder
    )
    d = _perturbed(cfg).double().train(training)
    assert d.sparse_forward
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(20, 12, generator=gen, dtype=torch.float64).requires_grad_()
    target = torch.randn(20, 10, generator=gen, dtype=torch.float64) if transcoder else None
    dead = torch.rand(d_sae, generator=gen) < 0.5
    pre_out = torch.full((20, d_sae), torch.nan, dtype=torch.float64) if d_sae > 48 else None
    out = d(x, target, dead_mask=dead, k_aux=6, pre_out=pre_out)
    assert pre_out is None or out.pre_acts is pre_out
    (out.fvu + 0.5 * out.auxk).backward()
    sparse_grads = [p.grad.clone() for p in (x, *d.parameters())]
    d.zero_grad()
    x.grad = None
    fvu, auxk, latents = _dense_reference(d, x, x if target is None else target, dead, 6)
    (fvu + 0.5 * auxk).backward()
    assert torch.allclose(out.fvu, fvu, rtol=1e-12) and torch.allclose(out.auxk, auxk, rtol=1e-12)
    assert out.auxk > 0
    assert torch.allclose(out.latents.to_dense(), latents.detach(), rtol=1e-12, atol=1e-14)
    assert out.latents.is_sparse and not latents.is_sparse
    for got, want, name in zip(
        sparse_grads, (x.grad, *(p.grad for p in d.parameters())), ["x", *dict(d.named_parameters())], strict=True
    ):
        assert want.abs().max() > 0, name
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), name


def test_jumprelu_zeros_below_threshold_and_uses_the_papers_pseudo_derivatives():
    cfg = DictionaryConfig("jumprelu", d_in=8, d_sae=16, jumprelu_bandwidth=0.5)
    d = build_dictionary(cfg)
    with torch.no_grad():
        d.log_threshold.copy_(torch.linspace(-2.0, 0.5, 16))
    x = torch.randn(64, 8)
    pre = d.pre_activations(x).detach()
    theta = d.threshold.detach()
    latents = d.encode(x)
    assert torch.equal(latents, pre * (pre > theta))
    assert (latents[pre <= theta] == 0).all()

    # d/dθ of sum(latents) is Σ_b -(θ/ε) K((z-θ)/ε); d/dθ of L0 is Σ_b -(1/ε) K((z-θ)/ε) / batch (eq. in §3).
    eps = cfg.jumprelu_bandwidth
    window = (((pre - theta) / eps).abs() < 0.5).float()
    latents.sum().backward()
    expect = (-(theta / eps) * window).sum(0) * theta  # chain rule through θ = exp(log θ)
    assert torch.allclose(d.log_threshold.grad, expect, atol=1e-5)
    d.zero_grad()
    d.sparsity_penalty(d.pre_activations(x), d.encode(x)).backward()
    expect = (-(1 / eps) * window).sum(0) / 64 * theta
    assert torch.allclose(d.log_threshold.grad, expect, atol=1e-5)
    assert d(x).sparsity == (pre > theta).sum(1).float().mean()


def test_relu_l1_is_weighted_by_decoder_norms():
    d = build_dictionary(DictionaryConfig("relu", d_in=8, d_sae=16))
    x = torch.randn(32, 8)
    with torch.no_grad():
        d.W_dec[3] *= 5.0
    latents = d.encode(x)
    expect = (latents * d.W_dec.norm(dim=1)).sum(1).mean()
    assert torch.allclose(d(x).sparsity, expect)
    assert torch.equal(latents, d.pre_activations(x).relu())


def test_decoder_constraint_keeps_unit_rows_and_tangent_gradients():
    d = build_dictionary(DictionaryConfig("topk", d_in=8, d_sae=16, k=3))
    d(torch.randn(32, 8)).fvu.backward()
    d.project_decoder_grad_()
    assert (d.W_dec.grad * d.W_dec).sum(1).abs().max() < 1e-6
    with torch.no_grad():
        d.W_dec.mul_(torch.rand(16, 1) + 0.5)
    d.normalize_decoder_()
    assert torch.allclose(d.W_dec.norm(dim=1), torch.ones(16))


def test_auxk_trains_only_dead_latents_on_the_residual():
    d = build_dictionary(DictionaryConfig("topk", d_in=8, d_sae=32, k=2))
    x = torch.randn(64, 8)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[16:] = True
    out = d(x, dead_mask=dead, k_aux=4)
    assert out.auxk > 0 and d(x).auxk == 0
    out.auxk.backward()
    assert d.W_dec.grad[:16].abs().max() == 0  # live latents: untouched by AuxK
    assert d.W_dec.grad[16:].abs().max() > 0


def test_geometric_median_is_the_weiszfeld_fixed_point_and_resists_outliers():
    points = torch.cat([torch.randn(50, 3) * 0.1, torch.full((5, 3), 100.0)])
    median = mf.geometric_median(points)
    units = (points - median) / (points - median).norm(dim=1, keepdim=True)
    assert units.sum(0).norm() < 1e-2  # zero (sub)gradient of the summed distances
    assert median.norm() < 1.0 < points.mean(0).norm()
    d = build_dictionary(DictionaryConfig("relu", d_in=3, d_sae=8))
    d.init_b_dec_(points, "mean")
    assert torch.allclose(d.b_dec, points.mean(0))


def test_transcoder_predicts_its_target_not_its_input():
    cfg = DictionaryConfig("topk", d_in=16, d_sae=64, d_out=12, k=4, apply_b_dec_to_input=False)
    d = build_dictionary(cfg)
    x, y = torch.randn(8, 16), torch.randn(8, 12)
    with pytest.raises(ValueError, match="target"):
        d(x)
    out = d(x, y)
    assert out.reconstruction.shape == (8, 12)
    assert torch.isclose(out.fvu, mf.fvu(y, out.reconstruction) * torch.ones(()))
    with pytest.raises(ValueError, match="apply_b_dec_to_input"):
        DictionaryConfig("topk", d_in=16, d_sae=64, d_out=12, k=4)


def test_config_validation():
    with pytest.raises(ValueError, match="k must be"):
        DictionaryConfig("topk", d_in=8, d_sae=4, k=5)
    with pytest.raises(ValueError, match="kind"):
        DictionaryConfig("gated", d_in=8, d_sae=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cycle"):
        SyntheticConfig(n_features=4, d=4, n_samples=10, hierarchy=((0, 1), (1, 2), (2, 0)))


# --- synthetic data ----------------------------------------------------------------------------------------


def test_synthetic_data_follows_its_recipe():
    cfg = SyntheticConfig(
        n_features=40,
        d=16,
        n_samples=20000,
        firing_prob=0.2,
        groups=((0, 1, 2),),
        group_correlation=0.8,
        hierarchy=((3, 4), (4, 5)),
    )
    data = make_synthetic(cfg)
    assert torch.allclose(data.features.norm(dim=1), torch.ones(40))  # 40 > 16: superposition
    assert torch.allclose(data.x, data.coefficients @ data.features)
    assert torch.equal(data.x, make_synthetic(cfg).x)
    m = data.mask.float()
    assert abs(m[:, 0].mean() - 0.2) < 0.02 and abs(m[:, 10].mean() - 0.2) < 0.02
    corr = torch.corrcoef(m.T)
    assert corr[0, 1] > 0.5 and abs(corr[10, 11]) < 0.05
    assert not (data.mask[:, 4] & ~data.mask[:, 3]).any() and not (data.mask[:, 5] & ~data.mask[:, 4]).any()
    assert abs(m[data.mask[:, 3], 4].mean() - 0.2) < 0.03  # child probability is conditional on the parent
    ortho = make_synthetic(SyntheticConfig(n_features=8, d=8, n_samples=4, orthogonal=True)).features
    assert torch.allclose(ortho @ ortho.T, torch.eye(8), atol=1e-5)


# --- metrics on hand-made cases ---------------------------------------------------------------------------


def test_reconstruction_metrics_on_hand_cases():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    assert mf.fvu(x, x) == 0 and mf.fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    assert mf.mse(x, torch.zeros_like(x)) == pytest.approx(14 / 4)
    latents = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])
    assert mf.l0(latents) == 1.5
    assert torch.equal(mf.firing_rates(latents), torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.parametrize("kind", ["topk", "relu"])
def test_evaluate_in_chunks_equals_the_definitions_on_all_rows(kind):
    d = _perturbed(DictionaryConfig(kind, d_in=8, d_sae=128, k=3)).eval()
    x = torch.randn(30, 8, generator=torch.Generator().manual_seed(4))
    latents = d.encode(x)
    recon = d.decode(latents)
    rates = mf.firing_rates(latents)
    got = mf.evaluate(d, x, chunk_rows=7)  # 8 chunks, the last one short
    assert got.mse == pytest.approx(mf.mse(x, recon), rel=1e-6)
    assert got.fvu == pytest.approx(mf.fvu(x, recon), rel=1e-6)
    assert got.l0 == pytest.approx(mf.l0(latents), rel=1e-7)
    assert got.dead_fraction == float((rates == 0).float().mean())
    assert got.dense_fraction == float((rates > 0.1).float().mean())
    assert got.dense_fraction > 0 and (kind == "relu" or 0 < got.dead_fraction < 1)


def test_width_mismatch_is_an_error_naming_both(tmp_path):
    cfg = DictionaryConfig("topk", d_in=8, d_sae=16, k=2, site="resid_post.3")
    with pytest.raises(ValueError, match=r"d_in=8 \(site 'resid_post.3'\) but the input rows are 12 wide"):
        mf.evaluate(build_dictionary(cfg), torch.randn(5, 12))
    with pytest.raises(ValueError, match=r"d_in=8 .* 12 wide"):
        mf.train(TrainConfig(cfg, batch_size=4, n_tokens=8), torch.randn(8, 12), tmp_path / "run", progress=False)
    tc = DictionaryConfig("topk", d_in=8, d_sae=16, k=2, d_out=6, apply_b_dec_to_input=False)
    with pytest.raises(ValueError, match=r"predicts 6 but the target rows are 7 wide"):
        mf.evaluate(build_dictionary(tc), torch.randn(5, 8), torch.randn(5, 7))


def test_mmcs_is_one_for_the_true_dictionary_and_f1_counts_firings():
    features = make_synthetic(SyntheticConfig(n_features=12, d=6, n_samples=1)).features
    shuffled = torch.cat([features[torch.randperm(12)] * 3.0, torch.randn(5, 6)])  # any order, norm, extras
    assert mf.mmcs(features, shuffled) == pytest.approx(1.0, abs=1e-6)
    assert mf.mmcs(features, torch.randn(12, 6)) < 0.9
    mask = torch.tensor([[1, 1], [1, 0], [0, 0], [0, 1]], dtype=torch.bool)
    latents = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    f1 = mf.firing_f1(latents, mask, matches=torch.tensor([0, 2]))
    # feature 0: fires rows {0,1}, latent 0 rows {0,2}: tp 1, F1 = 2/4; feature 1 vs latent 2: perfect.
    assert torch.allclose(f1, torch.tensor([0.5, 1.0]))


def test_absorption_detects_a_planted_absorbing_latent():
    parent, child, other = torch.eye(3)
    features = torch.stack([parent, child, other])
    mask = torch.zeros(10, 3, dtype=torch.bool)
    mask[:, 0] = True  # parent fires everywhere
    mask[:4, 1] = True  # child fires in rows 0-3
    decoder = torch.stack([parent, (child + 0.5 * parent) / math.hypot(1, 0.5), other])
    latents = torch.zeros(10, 3)
    latents[4:, 0] = 1.0  # the parent latent is silent exactly where the child fires ...
    latents[:4, 1] = 1.0  # ... and the child latent, which carries the parent direction, fires instead
    scores = mf.absorption(latents, decoder, features, mask, ((0, 1),))
    assert scores.rate == pytest.approx(0.4) and scores.per_parent == {0: pytest.approx(0.4)}
    latents[:4, 0] = 1.0  # parent latent fires too: no absorption
    assert mf.absorption(latents, decoder, features, mask, ((0, 1),)).rate == 0
    latents[:4, 0] = 0.0
    clean = torch.stack([parent, child, other])  # child latent without the parent direction: a plain miss
    assert mf.absorption(latents, clean, features, mask, ((0, 1),)).rate == 0


# --- training ---------------------------------------------------------------------------------------------


def test_topk_recovers_planted_features(tmp_path):
    data = make_synthetic(SyntheticConfig(n_features=64, d=32, n_samples=20000, firing_prob=0.04, seed=0))
    cfg = TrainConfig(
        DictionaryConfig("topk", d_in=32, d_sae=128, k=4),
        lr=3e-3,
        batch_size=256,
        n_tokens=256 * 400,
        dead_after_tokens=256 * 50,
        checkpoint_every=10_000,
    )
    start = time.perf_counter()
    result = mf.train(cfg, data.x, tmp_path, progress=False)
    elapsed = time.perf_counter() - start
    scores = mf.recovery(result.dictionary, data)
    assert scores.mmcs >= 0.95, scores.mmcs
    assert mf.evaluate(result.dictionary, data.x).fvu < 0.2
    assert result.steps == 400 and result.history[-1].step == 400
    assert torch.equal(mf.load_dictionary(tmp_path).W_dec, result.dictionary.W_dec)
    print(f"TopK MMCS {scores.mmcs:.4f}, F1 {scores.mean_f1:.3f} in {elapsed:.2f}s")


def test_relu_sae_absorbs_a_parent_only_when_features_form_a_hierarchy(tmp_path):
    # The toy setting of Chanin et al. 2024: orthogonal features, as many latents as features, L1 penalty.
    # When feature 1 fires only with feature 0, one latent learns their sum and the feature-0 latent goes
    # silent whenever feature 1 fires: absorption ≈ P(child | parent) = 0.4. Independent features: none.
    rates = []
    for hierarchy in (((0, 1),), ()):
        recipe = SyntheticConfig(
            n_features=4,
            d=16,
            n_samples=8192,
            firing_prob=(0.25, 0.4, 0.15, 0.15),
            hierarchy=hierarchy,
            orthogonal=True,
            magnitude=(1.0, 1.0),
            seed=1,
        )
        data = make_synthetic(recipe)
        cfg = TrainConfig(
            DictionaryConfig("relu", d_in=16, d_sae=4),
            lr=1e-2,
            batch_size=256,
            n_tokens=256 * 1000,
            l1_coeff=0.05,
            b_dec_init="zeros",
            checkpoint_every=10_000,
            seed=1,
        )
        result = mf.train(cfg, data.x, tmp_path / str(len(hierarchy)), progress=False)
        rates.append(mf.recovery(result.dictionary, data._replace(hierarchy=((0, 1),))).absorption.rate)
    assert rates[0] == pytest.approx(0.4, abs=0.05) and rates[1] == 0, rates


def _tiny_config(**overrides) -> TrainConfig:
    fields = dict(
        dictionary=DictionaryConfig("batchtopk", d_in=8, d_sae=32, k=3),
        lr=1e-2,
        batch_size=32,
        n_tokens=32 * 20,
        dead_after_tokens=32 * 3,  # latents die quickly, so AuxK is exercised
        checkpoint_every=5,
        log_every=1,
    )
    return TrainConfig(**(fields | overrides))


def _tiny_data() -> torch.Tensor:
    return make_synthetic(SyntheticConfig(n_features=16, d=8, n_samples=200, firing_prob=0.1, seed=3)).x


def _assert_same_run(a: Path, b: Path) -> None:
    for name in ("sae.safetensors",):
        ta, tb = load_file(a / name), load_file(b / name)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    ca, cb = a / "checkpoints" / "step_000000020", b / "checkpoints" / "step_000000020"
    ta, tb = load_file(ca / "trainer.safetensors"), load_file(cb / "trainer.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)  # Adam moments too


_KILLED_RUN = """
import os, signal, sys, torch
torch.set_num_threads(1)
sys.path[:0] = [{src!r}, {tests!r}]
import mechscope.features._train as t
from test_dictionaries import _tiny_config, _tiny_data
real_step, calls = t.step, [0]
def dying_step(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 13:  # mid-way between the checkpoints at steps 10 and 15
        os.kill(os.getpid(), signal.SIGKILL)
    return real_step(*args, **kwargs)
t.step = dying_step
t.train(_tiny_config(), _tiny_data(), {out!r}, progress=False)
"""


def test_run_killed_midway_and_resumed_equals_uninterrupted(tmp_path):
    killed = tmp_path / "killed"
    script = _KILLED_RUN.format(src=str(SRC), tests=str(Path(__file__).parent), out=str(killed))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert (killed / "checkpoints" / "latest").read_text() == "step_000000010"
    assert not (killed / "sae.safetensors").exists()

    resumed = mf.train(_tiny_config(), _tiny_data(), killed, progress=False)
    assert resumed.history[0].step == 11  # picked up after the last checkpoint, not from scratch
    straight = mf.train(_tiny_config(), _tiny_data(), tmp_path / "straight", progress=False)
    assert resumed.steps == straight.steps == 20
    _assert_same_run(killed, tmp_path / "straight")


class _Killed(Exception):
    pass


class _Batches:
    """An iterable of batches that can be told to die at a given batch (a job killed mid-run)."""

    def __init__(self, x: torch.Tensor, size: int, die_at: int | None = None, nan_at: int | None = None):
        self.x, self.size, self.die_at, self.nan_at = x, size, die_at, nan_at

    def __iter__(self):
        for i in range(len(self.x) // self.size):
            if i == self.die_at:
                raise _Killed
            batch = self.x[i * self.size : (i + 1) * self.size].clone()
            if i == self.nan_at:
                batch[0, 0] = float("nan")
            yield batch


def test_iterable_data_resume_skips_consumed_batches(tmp_path):
    x = _tiny_data().repeat(4, 1)
    cfg = _tiny_config(dictionary=DictionaryConfig("jumprelu", d_in=8, d_sae=32, jumprelu_bandwidth=0.05))
    with pytest.raises(_Killed):
        mf.train(cfg, _Batches(x, 32, die_at=17), tmp_path / "a", progress=False)
    mf.train(cfg, _Batches(x, 32), tmp_path / "a", progress=False)
    mf.train(cfg, _Batches(x, 32), tmp_path / "b", progress=False)
    _assert_same_run(tmp_path / "a", tmp_path / "b")
    with pytest.raises(ValueError, match="different"):
        mf.train(_tiny_config(lr=0.5), _tiny_data(), tmp_path / "a", progress=False)


def test_nan_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    x = _tiny_data().repeat(4, 1)
    with pytest.raises(NonFiniteLossError, match=r"nan at step 13.*step_000000010"):
        mf.train(_tiny_config(), _Batches(x, 32, nan_at=12), tmp_path / "bad", progress=False)
    mf.train(_tiny_config(n_tokens=32 * 10), _Batches(x, 32), tmp_path / "good", progress=False)
    bad, good = tmp_path / "bad" / "checkpoints", tmp_path / "good" / "checkpoints"
    assert (bad / "latest").read_text() == "step_000000010"
    assert json.loads((bad / "step_000000010" / "trainer.json").read_text())["step"] == 10
    for name in ("sae.safetensors", "trainer.safetensors"):
        tb, tg = load_file(bad / "step_000000010" / name), load_file(good / "step_000000010" / name)
        assert all(torch.equal(tb[k], tg[k]) for k in tg)
    assert not (tmp_path / "bad" / "sae.safetensors").exists()
    assert not list(bad.glob(".step_*"))  # no half-written checkpoint left behind


def test_transcoder_training_learns_a_map_between_sites(tmp_path):
    data = make_synthetic(SyntheticConfig(n_features=32, d=16, n_samples=4096, firing_prob=0.06, seed=1))
    y = data.x @ torch.randn(16, 12, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(
        DictionaryConfig("topk", d_in=16, d_sae=64, d_out=12, k=4, apply_b_dec_to_input=False),
        lr=3e-3,
        batch_size=256,
        n_tokens=256 * 300,
        checkpoint_every=10_000,
    )
    result = mf.train(cfg, (data.x, y), tmp_path, progress=False)
    assert mf.evaluate(result.dictionary, data.x, y).fvu < 0.25


# --- files ------------------------------------------------------------------------------------------------

KIND_CONFIGS = {
    "relu": DictionaryConfig("relu", d_in=8, d_sae=24, site="resid_post.3"),
    "topk": DictionaryConfig("topk", d_in=8, d_sae=24, k=4),
    "batchtopk": DictionaryConfig("batchtopk", d_in=8, d_sae=24, k=4),
    "jumprelu": DictionaryConfig("jumprelu", d_in=8, d_sae=24),
    "jumprelu_transcoder": DictionaryConfig(
        "jumprelu", d_in=8, d_sae=24, d_out=6, apply_b_dec_to_input=False, target_site="mlp_out.3"
    ),
}


def _saelens_reference(path: Path, x: torch.Tensor) -> torch.Tensor:
    """SAELens's inference forward, written from its documented layout, reading the files directly."""
    cfg = json.loads((path / "cfg.json").read_text())
    w = load_file(path / "sae_weights.safetensors")
    sae_in = x - w["b_dec"] * cfg["apply_b_dec_to_input"] if "transcoder" not in cfg["architecture"] else x
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    acts = pre.relu()
    if cfg["architecture"] == "topk":
        top = acts.topk(cfg["k"], dim=-1)
        acts = torch.zeros_like(acts).scatter(-1, top.indices, top.values)
    if "jumprelu" in cfg["architecture"]:
        acts = acts * (pre > w["threshold"])
    return acts @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize("name", sorted(KIND_CONFIGS))
def test_saelens_layout_round_trip(tmp_path, name):
    cfg = KIND_CONFIGS[name]
    d = _perturbed(cfg).eval()
    path = mf.export_saelens(d, tmp_path / "saelens")
    written = json.loads((path / "cfg.json").read_text())
    weights = load_file(path / "sae_weights.safetensors")
    assert weights["W_enc"].shape == (8, 24) and weights["W_dec"].shape == (24, cfg.width_out)
    assert written["d_in"] == 8 and written["d_sae"] == 24
    assert written["metadata"]["sae_lens_version"].startswith("6.")
    loaded = mf.load_dictionary(path)
    x = torch.randn(32, 8)
    with torch.no_grad():
        expect = d.decode(d.encode(x))
        assert torch.allclose(loaded.decode(loaded.encode(x)), expect, atol=1e-6)
        assert torch.allclose(_saelens_reference(path, x), expect, atol=1e-5)
    assert loaded.cfg.site == cfg.site and loaded.cfg.target_site == cfg.target_site


@pytest.mark.parametrize("name", sorted(KIND_CONFIGS))
def test_mechscope_layout_round_trip_is_exact(tmp_path, name):
    d = _perturbed(KIND_CONFIGS[name])
    loaded = mf.load_dictionary(mf.save_dictionary(d, tmp_path))
    assert loaded.cfg == d.cfg
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in d.state_dict().items())


def test_loads_pre_v6_saelens_topk_and_rejects_what_it_cannot_represent(tmp_path):
    d = _perturbed(KIND_CONFIGS["topk"])
    tensors = {n: getattr(d, n).detach().contiguous() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    save_file(tensors, tmp_path / "sae_weights.safetensors")
    old = {
        "architecture": "standard",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 4},
        "d_in": 8,
    }
    (tmp_path / "cfg.json").write_text(json.dumps(old | {"d_sae": 24, "hook_name": "blocks.3.hook_resid_post"}))
    loaded = mf.load_dictionary(tmp_path)
    assert loaded.cfg.kind == "topk" and loaded.cfg.k == 4 and loaded.cfg.site == "resid_post.3"  # hook -> site
    (tmp_path / "cfg.json").write_text(json.dumps(old | {"normalize_activations": "expected_average_only_in"}))
    with pytest.raises(ValueError, match="normalize_activations"):
        mf.load_dictionary(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "gated", "d_in": 8, "d_sae": 24}))
    with pytest.raises(ValueError, match=r"lacks \['b_gate', 'b_mag', 'r_mag'\]: not a SAELens gated SAE"):
        mf.load_dictionary(tmp_path)


def test_loads_saelens_gated_sae_exactly(tmp_path):
    gen = torch.Generator().manual_seed(3)
    w = {"W_enc": torch.randn(8, 24, generator=gen), "b_gate": torch.randn(24, generator=gen),
         "b_mag": torch.randn(24, generator=gen), "r_mag": 0.5 * torch.randn(24, generator=gen),
         "W_dec": torch.randn(24, 8, generator=gen), "b_dec": torch.randn(8, generator=gen)}  # fmt: skip
    save_file(w, tmp_path / "sae_weights.safetensors")
    cfg = {"architecture": "gated", "d_in": 8, "d_sae": 24, "apply_b_dec_to_input": True,
           "metadata": {"hook_name": "blocks.2.hook_mlp_out"}}  # fmt: skip
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    loaded = mf.load_dictionary(tmp_path)
    x = 2 * torch.randn(256, 8, generator=gen)
    centred = x - w["b_dec"]  # SAELens's gated encoder, written out
    gate = (centred @ w["W_enc"] + w["b_gate"]) > 0
    magnitude = (centred @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"]).relu()
    expect = gate * magnitude
    with torch.no_grad():
        got = loaded.encode(x)
    assert loaded.cfg.kind == "jumprelu" and loaded.cfg.site == "mlp_out.2"
    assert 0 < (expect > 0).float().mean() < 1 and torch.allclose(got, expect, atol=1e-5)


def test_sparsify_export_round_trip(tmp_path):
    d = _perturbed(KIND_CONFIGS["topk"]).eval()
    path = mf.export_sparsify(d, tmp_path / "sparsify")
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["activation"] == "topk" and cfg["k"] == d.cfg.k and cfg["d_in"] == 8
    assert set(load_file(path / "sae.safetensors")) == {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}
    loaded = mf.load_dictionary(path)
    x = torch.randn(32, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.decode(loaded.encode(x)), d.decode(d.encode(x)), atol=1e-6)
    with pytest.raises(ValueError, match="TopK"):
        mf.export_sparsify(_perturbed(KIND_CONFIGS["relu"]), tmp_path / "no")


def test_loads_sparsify_layout(tmp_path):
    gen = torch.Generator().manual_seed(0)
    enc, b_enc = torch.randn(24, 8, generator=gen), torch.randn(24, generator=gen)
    w_dec, b_dec = torch.randn(24, 8, generator=gen), torch.randn(8, generator=gen)
    save_file(
        {"encoder.weight": enc, "encoder.bias": b_enc, "W_dec": w_dec, "b_dec": b_dec},
        tmp_path / "sae.safetensors",
    )
    cfg = {"activation": "topk", "expansion_factor": 3, "normalize_decoder": True, "num_latents": 0, "k": 5}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg | {"multi_topk": False, "skip_connection": False, "d_in": 8}))
    loaded = mf.load_dictionary(tmp_path)
    x = torch.randn(16, 8)
    pre = torch.nn.functional.linear(x - b_dec, enc, b_enc).relu()  # sparsify: relu, then top-k per row
    top = pre.topk(5, dim=-1)
    expect = torch.zeros_like(pre).scatter(-1, top.indices, top.values) @ w_dec + b_dec
    with torch.no_grad():
        assert torch.allclose(loaded.decode(loaded.encode(x)), expect, atol=1e-5)
    assert loaded.cfg.kind == "topk" and loaded.cfg.d_sae == 24


def test_missing_dictionary_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sae_weights\.safetensors"):
        mf.load_dictionary(tmp_path)


def test_public_names_are_exported():
    assert set(mf.__all__) <= set(dir(mf))
