"""The logit lens against its definition: the last layer's lens is the model's own output."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import mechscope as ms
from mechscope.core import TINY_CONFIGS
from mechscope.core._unembed import unembed
from mechscope.lenses import logit_lens
from mechscope.report import plot_logit_lens

PROMPTS = ["hello world", "hi"]  # different lengths: right padding is exercised
IOI = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def llama():
    return ms.tiny("llama")


@pytest.fixture(scope="module")
def smol():
    return ms.load("smollm2-135m")


def _check_last_layer_is_output(model, prompts):
    # unembed(resid_post.last) is the model's logits at every position ...
    run = model.run(prompts, cache=f"resid_post.{model.cfg.n_layers - 1}")
    with torch.no_grad():
        lens_logits = unembed(model, run.cache[f"resid_post.{model.cfg.n_layers - 1}"])
    torch.testing.assert_close(lens_logits, run.logits)
    # ... and the lens result's last layer is the model's next-token distribution.
    real = run.final_logits().softmax(-1)
    lens = logit_lens(model, prompts, top_k=10)
    torch.testing.assert_close(lens.positions, run.last_pos())
    rows = torch.arange(len(real))
    torch.testing.assert_close(lens.answer_probs[:, -1], real[rows, lens.answer_ids])
    torch.testing.assert_close(lens.top_probs[:, -1], real.topk(10).values)
    assert (lens.answer_ids == real.argmax(-1)).all()


@pytest.mark.parametrize("family", list(TINY_CONFIGS))
def test_last_layer_lens_is_the_real_output(family):
    # gemma2 soft-caps its logits outside any module; a cap of 0.1 makes forgetting it fail loudly.
    overrides = {"final_logit_softcapping": 0.1} if family in ("gemma2", "gemma3_text") else {}
    _check_last_layer_is_output(ms.tiny(family, **overrides), PROMPTS)


@pytest.mark.real
def test_last_layer_lens_is_the_real_output_smollm2(smol):
    _check_last_layer_is_output(smol, [IOI, "The capital of France is"])
    lens = logit_lens(smol, IOI, " Mary")
    assert lens.layers == tuple(range(30))
    assert lens.answer_probs[0, -1] == pytest.approx(0.92, abs=0.02)
    assert lens.answer_ranks[0, -1] == 0 and lens.top_tokens[0][-1][0] == " Mary"


def test_lens_probabilities_sum_to_one(llama):
    vocab = llama.cfg.d_vocab
    lens = logit_lens(llama, PROMPTS, "o", top_k=vocab)
    assert lens.top_probs.shape == (2, 2, vocab)
    torch.testing.assert_close(lens.top_probs.sum(-1), torch.ones(2, 2))
    # The answer's probability and rank agree with the full sorted distribution.
    answer = llama.to_single_token("o")
    for b in range(2):
        for layer in range(2):
            rank = int(lens.answer_ranks[b, layer])
            assert lens.top_ids[b, layer, rank] == answer
            assert lens.top_probs[b, layer, rank] == lens.answer_probs[b, layer]


def test_negative_pos_counts_back_from_the_last_real_token(llama):
    # A causal model at the second-to-last token sees exactly the prompt without its last byte.
    earlier = logit_lens(llama, PROMPTS, "o", pos=-2)
    shorter = logit_lens(llama, [p[:-1] for p in PROMPTS], "o")
    torch.testing.assert_close(earlier.answer_probs, shorter.answer_probs)
    assert earlier.positions.tolist() == [9, 0]


def test_answer_forms_and_errors(llama):
    by_text = logit_lens(llama, "abc", "d")
    by_id = logit_lens(llama, "abc", llama.to_single_token("d"))
    torch.testing.assert_close(by_text.answer_probs, by_id.answer_probs)
    assert by_text.answer_tokens == ("d",) and by_text.prompts == ("abc",)
    with pytest.raises(ValueError, match="single token is required"):
        logit_lens(llama, "abc", " Mary")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        logit_lens(llama, "abc", 10**6)
    with pytest.raises(ValueError, match="not a real token of prompt 1"):
        logit_lens(llama, PROMPTS, pos=5)
    with pytest.raises(TypeError, match="transformer language model"):
        logit_lens(ms.wrap(nn.Linear(3, 3)), torch.zeros(1, 3))


def test_to_json_round_trips(llama):
    lens = logit_lens(llama, PROMPTS, top_k=3)
    data = json.loads(lens.to_json())
    assert data["method"] == "logit_lens" and data["layers"] == [0, 1]
    assert data["prompts"] == PROMPTS and data["provenance"]["model"] == "tiny-llama-s0"
    assert torch.tensor(data["answer_probs"]).shape == (2, 2)
    assert len(data["top"][1][0]) == 3 and set(data["top"][1][0][0]) == {"token", "id", "prob"}
    assert [a["id"] for a in data["answers"]] == lens.answer_ids.tolist()


@pytest.mark.parametrize("prompts", [["hello world"], PROMPTS * 5])
def test_plot_writes_a_png(llama, tmp_path, prompts):
    path = plot_logit_lens(logit_lens(llama, prompts), tmp_path / "sub" / "lens.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


# --- the registry and `mechscope lens` --------------------------------------------------------------------------


def test_declared_lens_is_the_library_call(llama):
    from mechscope.lenses import METHODS, LogitLensConfig

    spec = METHODS["logit-lens"]
    assert spec.config is LogitLensConfig and spec.result.__name__ == "LogitLensResult"
    # the declaration and the library function share their defaults
    assert [(f.name, f.default) for f in spec.fields()] == [("answer", None), ("pos", -1), ("top_k", 5)]
    by_name = spec(llama, PROMPTS, answer="o", pos=-2, top_k=4)
    direct = logit_lens(llama, PROMPTS, "o", pos=-2, top_k=4)
    torch.testing.assert_close(by_name.answer_probs, direct.answer_probs)
    torch.testing.assert_close(by_name.top_probs, direct.top_probs)
    assert logit_lens(llama, PROMPTS).top_ids.shape[-1] == LogitLensConfig().top_k
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        LogitLensConfig(top_k=0)


def _lens_cli(*args):
    from typer.testing import CliRunner

    from mechscope.cli import app

    return CliRunner().invoke(app, ["lens", *args])


def test_lens_cli_json_matches_the_library_call(llama, tmp_path):
    result = _lens_cli("tiny-llama", "hello world", "--top-k", "4", "--pos", "-2", "--answer", "o", "--json",
                       "--out", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = logit_lens(llama, "hello world", "o", pos=-2, top_k=4)
    assert data["method"] == "logit_lens" and data["prompts"] == ["hello world"] and data["positions"] == [9]
    torch.testing.assert_close(torch.tensor(data["answer_probs"]), expected.answer_probs)
    assert [[t["id"] for t in layer] for layer in data["top"][0]] == expected.top_ids[0].tolist()
    torch.testing.assert_close(torch.tensor([[t["prob"] for t in layer] for layer in data["top"][0]]),
                               expected.top_probs[0])  # fmt: skip
    png = tmp_path / "logit_lens.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_lens_cli_table_shows_each_layers_top_tokens(llama, tmp_path):
    result = _lens_cli("tiny-llama", "abc", "--top-k", "2", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    expected = logit_lens(llama, "abc", top_k=2)
    lines = result.stdout.splitlines()
    for i, layer in enumerate(expected.layers):
        row = next(line for line in lines if line.lstrip("│ ").startswith(f"{layer} "))
        for tok, p in zip(expected.top_tokens[0][i], expected.top_probs[0, i], strict=True):
            assert f"{tok!r} {float(p):.3f}" in row
    assert "saved" in result.stderr and (tmp_path / "logit_lens.png").exists()


def test_lens_cli_errors_name_the_problem(tmp_path):
    wrong = _lens_cli("tiny-llama", "abc", "--method", "patchscope", "--out", str(tmp_path))
    assert wrong.exit_code == 2 and "logit-lens" in wrong.output
    bad = _lens_cli("tiny-llama", "abc", "--answer", " Mary", "--out", str(tmp_path))
    assert bad.exit_code == 1 and "single token is required" in bad.stderr and "Traceback" not in bad.output


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_lens_grid_is_the_lens_at_every_position(family):
    from mechscope.lenses import logit_lens_grid

    model = ms.tiny(family)
    grid = logit_lens_grid(model, "hello world", top_k=4)
    n = len("hello world")  # the tiny models' tokenizer has one token per byte
    assert grid.tokens == tuple("hello world") and grid.top_ids.shape == (2, n, 4)
    # the last layer's row is the model's own next-token distribution at every position ...
    real = model.run("hello world").logits[0].softmax(-1)
    torch.testing.assert_close(grid.top_probs[-1], real.topk(4).values)
    # ... and every column is what the one-position logit lens reads at that position
    for pos in (0, 5, n - 1):
        one = logit_lens(model, "hello world"[: pos + 1], top_k=4)
        torch.testing.assert_close(grid.top_probs[:, pos], one.top_probs[0])
        assert grid.top_tokens[0][pos] == one.top_tokens[0][0]
    assert json.loads(json.dumps(grid.to_dict()))["top"][1][n - 1][0]["prob"] == pytest.approx(float(real[-1].max()))
