"""Steering vectors: the CAA definition, and a sweep on a planted direction that moves the planted behaviour only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mechscope as ms
from mechscope.data.tasks import Task
from mechscope.lenses import METHODS, SteerConfig, steer_sweep, steering_vector
from mechscope.lenses._steering import oriented


def test_steering_vector_is_the_mean_last_token_difference() -> None:
    """Prompts of different lengths (right padding): the vector reads each prompt's own last token."""
    model = ms.tiny("llama")
    positive, negative = ["The cat sat", "A dog"], ["The cat ran far", "A bird"]
    vec = steering_vector(model, positive, negative, "resid_mid.1")
    by_hand = []
    for plus, minus in zip(positive, negative, strict=True):
        a = model.run(plus, cache="resid_mid.1").cache["resid_mid.1"][0, -1]  # one prompt: no padding
        b = model.run(minus, cache="resid_mid.1").cache["resid_mid.1"][0, -1]
        by_hand.append(a - b)
    torch.testing.assert_close(vec.vector, torch.stack(by_hand).mean(0))
    assert vec.n_pairs == 2 and vec.site == "resid_mid.1"
    with model.intervene(vec.add(2.0)):  # the same Add intervention at every position
        steered = model.run("The cat sat", cache="resid_mid.1").cache["resid_mid.1"]
    plain = model.run("The cat sat", cache="resid_mid.1").cache["resid_mid.1"]
    torch.testing.assert_close(steered, plain + 2.0 * vec.vector)
    with pytest.raises(ValueError, match="as many positive"):
        steering_vector(model, positive, negative[:1], "resid_mid.1")


def _planted() -> tuple[ms.Model, dict[str, int], torch.Tensor, torch.Tensor]:
    """A tiny llama whose blocks write nothing (the residual stream is the embedding), with one planted direction d:
    token p's embedding is token n's plus ``|n| d``; token a's unembedding is 4d and b's is 0, so a - b reads d
    (c - d reads a direction e orthogonal to d). d is orthogonal to n's embedding: the plain model never says a."""
    model = ms.tiny("llama", seed=0)
    tok = {c: model.tokenizer(c)["input_ids"][0] for c in "pnabcd"}
    gen = torch.Generator().manual_seed(0)
    m = model.module
    e_n = m.model.embed_tokens.weight.detach()[tok["n"]]
    d = torch.linalg.qr(torch.stack([e_n, torch.randn(len(e_n), generator=gen)], 1)).Q[:, 1]  # unit, d . e_n = 0
    e = torch.randn(len(e_n), generator=gen)
    e = (e - (e @ d) * d) / (e - (e @ d) * d).norm()  # unit, orthogonal to d (not to e_n: c - d is not 0)
    with torch.no_grad():
        for layer in m.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        m.model.norm.weight.fill_(1.0)
        m.model.embed_tokens.weight[tok["p"]] = e_n + e_n.norm() * d
        m.lm_head.weight[tok["a"]], m.lm_head.weight[tok["b"]] = 4 * d, 0.0
        m.lm_head.weight[tok["c"]] = m.lm_head.weight[tok["d"]] + 4 * e
    return model, tok, d, e_n


def _task(tok: dict[str, int], answer: str, wrong: str) -> Task:
    stems = ["xy", "hello", "q r", "zz", "abc", "mm", "the", "ok"]
    n = len(stems)
    return Task(f"{answer}-vs-{wrong}", [s + "p" for s in stems], [s + "n" for s in stems],
                torch.full((n,), tok[answer]), torch.full((n,), tok[wrong]))  # fmt: skip


def test_steering_on_a_planted_direction_moves_the_planted_behaviour_only() -> None:
    """Every prompt's last token is n (corrupt) or p (clean), so the last residual is n's embedding ``x`` plus
    ``s |x| d`` when steered at scale ``s``; through the final RMS norm (gain 1, d_model 64) the planted logit
    difference is ``4 d . x_hat = 32 s / sqrt(1 + s^2)`` and the other one is only rescaled by ``1 / sqrt(1 + s^2)``."""
    model, tok, d, e_n = _planted()
    scales = (0.0, 1.0, 2.0)
    config = SteerConfig(layers=(0, 1), scales=scales, damage_texts=2, damage_len=16)
    planted = steer_sweep(model, config, task=_task(tok, "a", "b"))
    other = steer_sweep(model, config, task=_task(tok, "c", "d"))
    vec = steering_vector(model, ["xyp"], ["xyn"], "resid_pre.1")
    torch.testing.assert_close(vec.vector, e_n.norm() * d)  # the blocks write nothing: the planted difference
    assert planted.sites == ("resid_pre.0", "resid_pre.1")
    # scale 0 is the plain model, bitwise: no change, no damage
    assert (planted.change[:, 0] == 0).all() and (planted.damage[:, 0] == 0).all()
    assert abs(planted.corrupt) < 1e-4  # d is orthogonal to n's embedding
    s = torch.tensor(scales)
    expected = (32 * s / (1 + s**2).sqrt()).expand(2, -1)
    torch.testing.assert_close(planted.behaviour, expected, rtol=1e-2, atol=1e-3)
    assert abs(planted.behaviour[0, 1] - planted.clean) < 1e-3 * planted.clean  # scale 1 turns n into p
    # the other behaviour is not moved along its own direction: only rescaled by the norm
    torch.testing.assert_close(other.behaviour, other.corrupt / (1 + s**2).sqrt().expand(2, -1), rtol=1e-2, atol=1e-3)
    assert abs(other.corrupt) > 1.0  # so the rescaling is visible
    assert (planted.damage[:, 2] > planted.damage[:, 1]).all() and (planted.damage[:, 1] > 0).all()
    assert planted.best(max_damage=float("inf"))[1] == 2.0  # type: ignore[index]
    # steering in generation through the same intervention: greedy decoding after "...n" now says a
    steer = steering_vector(model, ["xyp", "okp"], ["xyn", "okn"], "resid_pre.0").add(2.0)
    with model.intervene(steer):
        steered = model.generate("hellon", max_new_tokens=1).new_tokens[0, 0]
    plain = model.generate("hellon", max_new_tokens=1).new_tokens[0, 0]
    assert int(steered) == tok["a"] and int(plain) != tok["a"]
    assert json.loads(planted.to_json())["rows"][1]["site"] == "resid_pre.1"


def test_steer_is_declared_and_checks_its_settings() -> None:
    assert METHODS["steer"].config is SteerConfig
    with pytest.raises(ValueError, match="n >= 4"):
        SteerConfig(n=2)
    with pytest.raises(ValueError, match="unknown task"):
        steer_sweep(ms.tiny("llama"), SteerConfig(task="nope"))


def test_steer_cli_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mechscope.cli import app

    args = ["steer", "tiny-llama", "--task", "induction", "--n", "4", "--layers", "1", "--scales", "0,3",
            "--damage-texts", "1", "--damage-len", "8", "--out", str(tmp_path), "--json"]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert [r["site"] for r in got["rows"]] == ["resid_pre.1"] and got["scales"] == [0.0, 3.0]
    assert got["rows"][0]["change"][0] == 0.0 and got["rows"][0]["damage"][0] == 0.0
    assert (tmp_path / "induction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the change-vs-damage plot
    bad = CliRunner().invoke(app, ["steer", "tiny-llama", "--scales", "big", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "--scales" in bad.output


def test_pairs_that_come_both_ways_round_are_oriented_one_way() -> None:
    """Gendered pronouns: half the clean prompts want " she", half " he"; flipped, every pair wants " she"."""
    she, he, other = 5, 7, 9
    task = Task("g", ["Mary a", "John b", "Ann c"], ["John a", "Mary b", "Bob c"], torch.tensor([she, he, other]),
                torch.tensor([he, she, he]))  # fmt: skip
    got = oriented(task)
    assert got.clean == ["Mary a", "Mary b", "Ann c"] and got.corrupt == ["John a", "John b", "Bob c"]
    assert got.answers.tolist() == [she, she, other] and got.wrongs.tolist() == [he, he, he]
    assert oriented(got) is got  # already one way round: unchanged
