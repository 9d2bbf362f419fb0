"""The tuned lens (Belrose et al. 2023): definitions, training, resuming, files, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

import mechscope as ms
from mechscope._errors import MismatchError
from mechscope.lenses import (
    TrainLensConfig,
    TunedLens,
    evaluate_tuned_lens,
    export_tuned_lens,
    load_tuned_lens,
    logit_lens,
    logit_lens_grid,
    save_tuned_lens,
    train_tuned_lens,
    tuned_lens,
    tuned_lens_grid,
)
from mechscope.lenses._tuned_train import _KLDiv, kl_per_token

PROMPTS = ["hello world, this is", "a lens"]
SMALL = TrainLensConfig(steps=6, batch=4, ctx_len=24, held_out=8, checkpoint_every=2, lr=2.0)


@pytest.fixture(scope="module")
def model() -> ms.Model:
    return ms.tiny("llama")


def _random_lens(model: ms.Model, seed: int = 0) -> TunedLens:
    lens = TunedLens.for_model(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lens.weight.copy_(torch.randn(lens.weight.shape, generator=g) * 0.2)
        lens.bias.copy_(torch.randn(lens.bias.shape, generator=g) * 0.2)
    return lens


def test_identity_lens_is_the_logit_lens_and_the_last_layer_is_the_output(model: ms.Model) -> None:
    identity = tuned_lens(model, TunedLens.for_model(model), PROMPTS)
    plain = logit_lens(model, PROMPTS)
    torch.testing.assert_close(identity.answer_probs, plain.answer_probs)
    assert torch.equal(identity.top_ids, plain.top_ids)
    # a non-identity lens changes the inner layers but the last layer stays the model's own next-token distribution
    trained = tuned_lens(model, _random_lens(model), PROMPTS, answer=None, top_k=3)
    run = model.run(PROMPTS)
    expected = run.final_logits().float().softmax(-1).topk(3)
    torch.testing.assert_close(trained.top_probs[:, -1], expected.values)
    assert not torch.allclose(trained.top_probs[:, 0], plain.top_probs[:, 0, :3])
    assert trained.to_dict()["method"] == "tuned_lens"
    assert trained.provenance["tuned_lens"]["weights_sha256"] == model.provenance["weights_sha256"]


def test_translator_l_plus_1_reads_resid_post_l(model: ms.Model) -> None:
    lens = _random_lens(model)
    grid = tuned_lens_grid(model, lens, PROMPTS[0], top_k=2)
    run = model.run(PROMPTS[0], cache="resid_post.0")
    h = run.cache["resid_post.0"][0]
    by_hand = h + h @ lens.weight[1].T + lens.bias[1]
    probs = ms.core._unembed.unembed(model, by_hand).softmax(-1).topk(2)
    torch.testing.assert_close(grid.top_probs[0], probs.values)
    identity = tuned_lens_grid(model, TunedLens.for_model(model), PROMPTS[0])
    assert torch.equal(identity.top_ids, logit_lens_grid(model, PROMPTS[0]).top_ids)


def test_fused_kl_matches_its_definition_and_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 11, generator=g, requires_grad=True)
    target = torch.randn(5, 11, generator=g).log_softmax(-1)
    ref = kl_per_token(logits, target)
    (ref * torch.arange(1.0, 6.0)).sum().backward()
    assert logits.grad is not None
    ref_grad = logits.grad.clone()
    logits.grad = None
    neg_h = (target.exp() * target).sum(-1)
    fused = _KLDiv.apply(logits, target.exp(), neg_h)
    (fused * torch.arange(1.0, 6.0)).sum().backward()
    torch.testing.assert_close(fused, ref)
    torch.testing.assert_close(logits.grad, ref_grad)


def test_training_lowers_held_out_kl(model: ms.Model, tmp_path) -> None:
    before = evaluate_tuned_lens(model, TunedLens.for_model(model), SMALL)
    lens = train_tuned_lens(model, tmp_path, SMALL, progress=False)
    after = evaluate_tuned_lens(model, lens)  # held-out contexts and settings read from the lens's provenance
    assert after.kl_logit == pytest.approx(before.kl_logit)  # same held-out tokens
    assert before.kl_tuned == pytest.approx(before.kl_logit)  # untrained = logit lens
    assert all(t < 0.9 * b for t, b in zip(after.kl_tuned, before.kl_tuned, strict=True))
    assert after.provenance["lens"]["steps"] == SMALL.steps
    assert after.provenance["lens"]["weights_sha256"] == model.provenance["weights_sha256"]
    assert len(after.sites) == model.cfg.n_layers and after.tokens == SMALL.held_out * SMALL.ctx_len


def test_bfloat16_autocast_trains_too(model: ms.Model, tmp_path) -> None:
    config = TrainLensConfig(**{**SMALL.__dict__, "precision": "bfloat16"})
    before = evaluate_tuned_lens(model, TunedLens.for_model(model), config)
    lens = train_tuned_lens(model, tmp_path, config, progress=False)
    assert lens.weight.dtype == torch.float32
    full = train_tuned_lens(model, tmp_path / "fp32", SMALL, progress=False)
    assert not torch.equal(lens.weight, full.weight)  # autocast really ran in bfloat16 ...
    torch.testing.assert_close(lens.weight, full.weight, atol=0.02, rtol=0.1)  # ... and trained the same lens
    assert sum(evaluate_tuned_lens(model, lens).kl_tuned) < 0.9 * sum(before.kl_tuned)
    with pytest.raises(ValueError, match="precision"):
        TrainLensConfig(precision="float16")


def test_resume_gives_the_uninterrupted_result(model: ms.Model, tmp_path) -> None:
    whole = train_tuned_lens(model, tmp_path / "whole", SMALL, progress=False)
    part = train_tuned_lens(model, tmp_path / "split", SMALL, stop_after=3, progress=False)
    assert not (tmp_path / "split" / "tuned_lens.safetensors").exists()  # unfinished: only the checkpoint
    assert not torch.equal(part.weight, whole.weight)
    resumed = train_tuned_lens(model, tmp_path / "split", SMALL, progress=False)
    assert torch.equal(resumed.weight, whole.weight) and torch.equal(resumed.bias, whole.bias)
    with pytest.raises(MismatchError, match="another training run"):
        train_tuned_lens(model, tmp_path / "split", TrainLensConfig(**{**SMALL.__dict__, "seed": 1}), progress=False)


def test_files_round_trip_in_both_layouts(model: ms.Model, tmp_path) -> None:
    lens = _random_lens(model)
    lens.provenance["corpus"] = "python-docs"
    ours = load_tuned_lens(save_tuned_lens(lens, tmp_path / "ours"))
    assert torch.equal(ours.weight, lens.weight) and ours.provenance == lens.provenance
    export_tuned_lens(lens, tmp_path / "peer")
    cfg = json.loads((tmp_path / "peer" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == model.cfg.n_layers and cfg["d_model"] == model.cfg.d_model
    state = torch.load(tmp_path / "peer" / "params.pt", weights_only=True)
    assert sorted(state) == sorted(f"{i}.{p}" for i in range(model.cfg.n_layers) for p in ("weight", "bias"))
    (tmp_path / "peer" / "provenance.json").unlink()  # as the tuned-lens package writes it
    theirs = load_tuned_lens(tmp_path / "peer")
    assert torch.equal(theirs.weight, lens.weight) and torch.equal(theirs.bias, lens.bias)


def test_bad_input_errors(model: ms.Model, tmp_path) -> None:
    lens = TunedLens.for_model(model)
    with pytest.raises(MismatchError, match="trained on"):
        tuned_lens(ms.tiny("llama", seed=1), lens, PROMPTS)
    wider = ms.tiny("llama", hidden_size=32)
    with pytest.raises(MismatchError, match=r"width 64.*width 32"):
        tuned_lens(wider, TunedLens(model.cfg.n_layers, 64), PROMPTS)
    with pytest.raises(ValueError, match="translates"):
        lens.translate(torch.zeros(model.cfg.n_layers, 3, 10))
    with pytest.raises(FileNotFoundError, match="holds no tuned lens"):
        load_tuned_lens(tmp_path)
    bad = tmp_path / "bad"
    export_tuned_lens(lens, bad)
    torch.save({"0.weight": torch.zeros(3, 4)}, bad / "params.pt")
    with pytest.raises(ValueError, match=r"0\.bias"):
        load_tuned_lens(bad)
    torch.save({"0.weight": object()}, bad / "params.pt")  # a pickled object: refused by weights_only
    with pytest.raises(ValueError, match="weights_only"):
        load_tuned_lens(bad)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        TrainLensConfig(steps=0)


def test_cli_trains_evaluates_and_reads_the_tuned_lens(model: ms.Model, tmp_path) -> None:
    from typer.testing import CliRunner

    from mechscope.cli import app

    out = tmp_path / "lens"
    args = ["train-lens", "tiny-llama", "--out", str(out), "--steps", "3", "--batch", "2", "--ctx-len", "16",
            "--held-out", "4", "--export", str(tmp_path / "peer"), "--json"]  # fmt: skip
    trained = CliRunner().invoke(app, args)
    assert trained.exit_code == 0, trained.output
    result = json.loads(trained.stdout)
    assert result["method"] == "tuned_lens_evaluation" and len(result["kl_tuned"]) == model.cfg.n_layers
    assert (out / "evaluation.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "peer" / "params.pt").is_file()
    lens = load_tuned_lens(out)
    assert lens.provenance["steps"] == 3 and lens.provenance["corpus"] == "python-docs"
    read = CliRunner().invoke(app, ["lens", "tiny-llama", "abc", "--tuned", str(out), "--out", str(tmp_path), "--json"])
    assert read.exit_code == 0, read.output
    data = json.loads(read.stdout)
    expected = tuned_lens(model, lens, "abc")
    assert data["method"] == "tuned_lens"
    torch.testing.assert_close(torch.tensor(data["answer_probs"]), expected.answer_probs)
    wrong = CliRunner().invoke(app, ["lens", "tiny-gpt2", "abc", "--tuned", str(out), "--out", str(tmp_path)])
    assert wrong.exit_code == 4 and "trained on" in wrong.output and "Traceback" not in wrong.output


def test_lens_grids_and_evaluation_render(model: ms.Model, tmp_path) -> None:
    from mechscope.report import lens_grids, plot_lens_evaluation

    grids = {
        "logit lens": logit_lens_grid(model, "abc"),
        "tuned lens": tuned_lens_grid(model, _random_lens(model), "abc"),
    }
    png = lens_grids(grids, tmp_path / "grids.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    evaluation = evaluate_tuned_lens(model, _random_lens(model), SMALL, contexts=2)
    assert evaluation.tokens == 2 * SMALL.ctx_len
    assert plot_lens_evaluation(evaluation, tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"
