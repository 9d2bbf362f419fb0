"""Activation patching, attribution patching and direct logit attribution, checked against their definitions.

Tiny random-weight models; each clean/corrupt pair differs in exactly one (byte) token.
"""

from __future__ import annotations

import json

import pytest
import torch

import mechscope as ms
from mechscope.circuits import (
    DLAResult,
    PatchingResult,
    activation_patching,
    attribution_patching,
    direct_logit_attribution,
    pearson,
    spearman,
    verify,
)
from mechscope.circuits._contrast import Contrast
from mechscope.data.tasks import Task, final_logits, logit_diff, tokenize_task
from mechscope.report import heatmap

CLEAN = ["Alice gave the key to B", "The cat sat on a mat.", "one two three four"]
CORRUPT = ["Alice gave the key to T", "The cat sat on a hat.", "one two three fous"]


def toy_task(model: ms.Model, clean: list[str] = CLEAN, corrupt: list[str] = CORRUPT) -> Task:
    tok = model.tokenizer

    def one(ch: str) -> int:
        return tok(ch)["input_ids"][0]

    answers = torch.tensor([one(c) for c in "!?."[: len(clean)]])
    wrongs = torch.tensor([one(c) for c in "xyz"[: len(clean)]])
    return Task("toy", clean, corrupt, answers, wrongs)


@pytest.fixture(scope="module")
def llama() -> ms.Model:
    return ms.tiny("llama", seed=0)  # grouped-query attention: 4 query heads share 2 key/value heads


def test_toy_pairs_differ_in_one_token(llama):
    toks = tokenize_task(toy_task(llama), llama.tokenizer)
    assert ((toks.clean != toks.corrupt).sum(1) == 1).all()


# --- activation patching ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["resid_pre", "attn_out", "head.z", "head.k"])
def test_identical_inputs_have_no_effect(llama, kind):
    same = toy_task(llama, CLEAN, CLEAN)
    result = activation_patching(llama, same, kind, progress=False)
    assert result.clean_metric == result.corrupt_metric
    torch.testing.assert_close(result.scores, torch.full_like(result.scores, result.clean_metric), atol=1e-5, rtol=0)
    estimate = attribution_patching(llama, same, kind, progress=False)[kind]
    assert (estimate.scores == estimate.clean_metric).all()  # source - base is exactly zero
    with pytest.raises(ValueError, match="undefined"):
        _ = result.effect


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_patching_a_whole_residual_layer_restores_the_clean_run(family):
    model = ms.tiny(family, seed=1)
    task = toy_task(model)
    for site in ("resid_pre", "resid_post"):
        denoise = activation_patching(model, task, site, by_pos=False, progress=False)
        noise = activation_patching(model, task, site, by_pos=False, direction="noising", progress=False)
        assert denoise.axes == ("layer",)
        torch.testing.assert_close(denoise.effect, torch.ones(model.cfg.n_layers), atol=1e-4, rtol=0)
        torch.testing.assert_close(noise.effect, torch.zeros(model.cfg.n_layers), atol=1e-4, rtol=0)


def test_batched_sweep_equals_one_intervention_per_node(llama):
    """Each stacked copy of the sweep is the run with that node alone patched through ``model.intervene``."""
    task = toy_task(llama)
    toks = tokenize_task(task, llama.tokenizer)
    clean = llama.run(toks.clean, cache=["head.*", "resid_pre.*"], attention_mask=toks.attention_mask).cache

    def alone(iv: ms.Intervention) -> float:
        with llama.intervene(iv):
            logits = llama.run(toks.corrupt, attention_mask=toks.attention_mask).logits
        return float(logit_diff(final_logits(logits, toks.attention_mask), task).mean())

    resid = activation_patching(llama, task, "resid_pre", batch_size=7, progress=False)
    kv = activation_patching(llama, task, "head.v", progress=False)
    by_pos = activation_patching(llama, task, "head.q", by_pos=True, batch_size=1000, progress=False)
    checks = [
        (resid.scores[1, 22], ms.Patch("resid_pre.1", clean["resid_pre.1"], pos=22)),
        (kv.scores[1, 1], ms.Patch("head.1.v", clean["head.1.v"], heads=[1])),  # key/value head 1
        (by_pos.scores[0, 3, 17], ms.Patch("head.0.q", clean["head.0.q"], heads=[3], pos=17)),
    ]
    for swept, iv in checks:
        assert float(swept) == pytest.approx(alone(iv), abs=1e-5)
    assert kv.axes == ("layer", "kv_head") and kv.scores.shape == (2, 2)
    assert by_pos.axes == ("layer", "head", "pos") and by_pos.scores.shape == (2, 4, 23)


def test_sweep_result_does_not_depend_on_batch_size(llama):
    task = toy_task(llama)
    small = activation_patching(llama, task, "mlp_out", batch_size=1, progress=False)
    large = activation_patching(llama, task, "mlp_out", batch_size=500, progress=False)
    torch.testing.assert_close(small.scores, large.scores, atol=1e-5, rtol=0)


# --- attribution patching --------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_attribution_is_the_directional_derivative(direction):
    """AtP's estimate is ``grad . (source - base)``: check it against a central finite difference.

    GPT-2 in float64 (Llama's RMSNorm computes in float32 even then, which swamps a finite difference).
    """
    model = ms.tiny("gpt2", seed=0)
    model.module.double()
    task = toy_task(model)
    contrast = Contrast.of(model, task, logit_diff)
    base, source = contrast.base_and_source(direction)
    mask = contrast.attention_mask
    site = "head.1.z"
    src = model.run(source, cache=[site], attention_mask=mask).cache[site]
    act = model.run(base, cache=[site], attention_mask=mask).cache[site]
    eps = 1e-4

    def metric_at(t: float) -> float:
        shifted = act.clone()
        shifted[:, :, 2] += t * (src - act)[:, :, 2]  # head 2, all positions
        with model.intervene(ms.Patch(site, shifted)):
            last = final_logits(model.run(base, attention_mask=mask).logits, mask)  # float64, unlike logit_diff
        rows = torch.arange(len(task))
        return float((last[rows, task.answers] - last[rows, task.wrongs]).mean())

    finite = (metric_at(eps) - metric_at(-eps)) / (2 * eps)
    estimate = attribution_patching(model, task, "head.z", direction=direction, progress=False)["head.z"]
    base_metric = estimate.corrupt_metric if direction == "denoising" else estimate.clean_metric
    assert float(estimate.scores[1, 2]) - base_metric == pytest.approx(finite, rel=1e-6)


def test_attribution_does_not_depend_on_batch_size(llama):
    task = toy_task(llama)
    one = attribution_patching(llama, task, ["resid_mid", "head.k"], batch_size=1, progress=False)
    all_ = attribution_patching(llama, task, ["resid_mid", "head.k"], batch_size=64, progress=False)
    for kind in ("resid_mid", "head.k"):
        torch.testing.assert_close(one[kind].scores, all_[kind].scores, atol=1e-5, rtol=1e-5)


# Pearson correlation of attribution patching with real activation patching, tiny models, seed 0 (measured:
# heads and q/k/v >= 0.999, attn_out >= 0.997, mlp_out >= 0.96). Random-weight models are close to linear
# along these small one-token patches, so this is a floor for a correct implementation, not evidence that AtP
# works on trained models. resid_pre is not asserted: a whole-residual swap at the changed token is a large,
# nonlinear step (measured 0.07-0.997 across families and seeds), which is where AtP is known to fail.
ATTRIBUTION_FLOOR = {"attn_out": 0.9, "mlp_out": 0.9, "head.z": 0.95, "head.q": 0.95, "head.k": 0.95, "head.v": 0.95}


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma"])
def test_attribution_agrees_with_real_patching(family):
    model = ms.tiny(family, seed=0)
    task = toy_task(model)
    estimates = attribution_patching(model, task, list(ATTRIBUTION_FLOOR), progress=False)
    for kind, floor in ATTRIBUTION_FLOOR.items():
        real = activation_patching(model, task, kind, progress=False)
        assert estimates[kind].scores.shape == real.scores.shape and estimates[kind].axes == real.axes
        assert estimates[kind].clean_metric == pytest.approx(real.clean_metric, abs=1e-5)
        r = pearson(estimates[kind].effect.flatten(), real.effect.flatten())
        assert r > floor, f"{family} {kind}: Pearson {r:.3f} <= {floor}"


def test_verify_samples_real_interventions(llama):
    task = toy_task(llama)
    result = attribution_patching(llama, task, ["attn_out", "head.z"], verify=12, seed=3, progress=False)
    check = result.check
    assert check is not None and check.n == 12 and check.seed == 3
    assert check.pearson > 0.9 and check.spearman > 0.8 and check.mean_abs_error < 0.05
    grids = {kind: activation_patching(llama, task, kind, progress=False) for kind in ("attn_out", "head.z")}
    for row in check.nodes:  # every "actual" is the real patching effect of that node
        real = grids[row.node.kind]
        assert row.actual == pytest.approx(float(real.effect.flatten()[real.nodes().index(row.node)]), abs=1e-4)
    again = verify(result, llama, task, sample=12, seed=3, progress=False)
    assert [c.node for c in again.nodes] == [c.node for c in check.nodes]
    with pytest.raises(ValueError, match="metric"):
        verify(result, llama, task, metric=lambda logits, t: logits[:, 0], progress=False)
    json.dumps(result.to_dict())


def test_rank_correlations():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    assert spearman(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0.0, 0.0, 5.0])) == pytest.approx(1.0)


# --- direct logit attribution ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma"])
def test_dla_components_sum_to_the_logit_difference(family):
    model = ms.tiny(family, seed=2)
    if family == "gpt2":  # give the final LayerNorm and the output projections a bias, so both are exercised
        with torch.no_grad():
            model.module.transformer.ln_f.bias.normal_(0, 0.5)
            for block in model.module.transformer.h:
                block.attn.c_proj.bias.normal_(0, 0.5)
    dla = direct_logit_attribution(model, toy_task(model), neurons=True)
    assert dla.total == pytest.approx(dla.logit_diff, abs=1e-5)
    assert dla.heads.shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert dla.neurons is not None and dla.neurons.shape == (model.cfg.n_layers, model.cfg.d_mlp)
    if family in ("llama", "gemma"):  # no biases anywhere: heads and neurons add up exactly
        assert dla.bias == 0.0
        torch.testing.assert_close(dla.attn_rest, torch.zeros_like(dla.attn_rest), atol=1e-6, rtol=0)
        torch.testing.assert_close(dla.neurons.sum(-1), dla.mlps, atol=1e-6, rtol=0)
    if family == "gpt2":
        assert abs(dla.bias) > 1e-3 and dla.attn_rest.abs().min() > 1e-4


def test_dla_freezes_the_clean_norm_scale(llama):
    """A component's DLA is its logit difference through the norm with the clean final residual's scale."""
    task = toy_task(llama)
    dla = direct_logit_attribution(llama, task)
    toks = tokenize_task(task, llama.tokenizer)
    run = llama.run(toks.clean, cache=["resid_post.1", "mlp_out.0"], attention_mask=toks.attention_mask)
    last = run.last_pos()
    rows = torch.arange(len(task))
    x, v = run.cache["resid_post.1"][rows, last], run.cache["mlp_out.0"][rows, last]
    norm = llama.module.model.norm
    scale = (x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).sqrt()
    w_u = llama.module.lm_head.weight
    direction = w_u[task.answers] - w_u[task.wrongs]
    expected = ((norm.weight * v / scale) * direction).sum(-1).mean()
    assert float(dla.mlps[0]) == pytest.approx(float(expected), abs=1e-6)
    torch.testing.assert_close(dla.norm_scale, scale[:, 0])


# --- results -----------------------------------------------------------------------------------------------------


def test_results_serialise_and_plot(llama, tmp_path):
    task = toy_task(llama)
    grid = activation_patching(llama, task, "head.z", by_pos=True, progress=False)
    assert isinstance(grid, PatchingResult) and grid.labels[2][0] == "0:A"
    payload = json.loads(json.dumps(grid.to_dict()))
    assert payload["axes"] == ["layer", "head", "pos"] and payload["direction"] == "denoising"
    assert len(grid.top(3)) == 3
    dla = direct_logit_attribution(llama, task)
    assert isinstance(dla, DLAResult)
    json.dumps(dla.to_dict())
    for i, result in enumerate(
        [grid, dla, activation_patching(llama, task, "resid_pre", by_pos=False, progress=False)]
    ):
        heatmap(result, tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").stat().st_size > 1000


def test_bad_arguments_explain_themselves(llama):
    task = toy_task(llama)
    with pytest.raises(ValueError, match="unknown node kind"):
        activation_patching(llama, task, "head.pattern", progress=False)
    with pytest.raises(ValueError, match="direction"):
        activation_patching(llama, task, "attn_out", direction="sideways", progress=False)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="parallel"):
        activation_patching(ms.tiny("gpt_neox"), toy_task(ms.tiny("gpt_neox")), "resid_mid", progress=False)
