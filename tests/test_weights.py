"""Weights read directly: OV/QK circuits against the attention computation, their SVD against the definition,
composition scores against their formula, head-type scores against the induction organism's planted heads."""

from __future__ import annotations

import json
import math

import pytest
import torch

import mechscope as ms
from mechscope.core import residual
from mechscope.lenses import (
    METHODS,
    WeightsConfig,
    composition_score,
    composition_scores,
    detection_patterns,
    head_spectra,
    head_type_scores,
    head_weights,
    neuron_vocab,
    norm_matrix,
    ov_tokens,
)


def _randomised(family: str, seed: int = 0) -> ms.Model:
    """A tiny model whose norm gains and biases are random (so folding them in is checked, not the identity)."""
    model = ms.tiny(family, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.module.named_parameters():
            if p.ndim == 1:
                base = 1.0 if ("norm" in name or "ln" in name) and "bias" not in name else 0.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=gen))
    return model


def _scaled_input(model: ms.Model, layer: int, resid: torch.Tensor) -> torch.Tensor:
    """The residual stream divided by the attention norm's scale: what folded W_Q/W_K/W_V act on."""
    norm = model.module.get_submodule(model.resolve(f"ln1.{layer}")[0].module)
    if isinstance(norm, torch.nn.LayerNorm):
        return resid / (resid.var(-1, keepdim=True, unbiased=False) + norm.eps).sqrt()
    eps = getattr(norm, "eps", None) or norm.variance_epsilon
    return resid / (resid.pow(2).mean(-1, keepdim=True) + eps).sqrt()


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
@pytest.mark.parametrize("fold", [True, False])
def test_ov_circuit_is_the_heads_output(family: str, fold: bool) -> None:
    """A head's output (z @ W_O) is its pattern times (input @ W_OV) plus a constant bias term, for every query head
    (GQA: llama and gemma2 tiny share each value head between two query heads)."""
    model, layer = _randomised(family), 1
    tokens = torch.randint(0, 256, (2, 11), generator=torch.Generator().manual_seed(0))
    cache = model.run(tokens, cache=[f"resid_pre.{layer}", f"ln1.{layer}", f"head.{layer}.pattern",
                                     f"head.{layer}.z", f"head.{layer}.v"]).cache  # fmt: skip
    x = _scaled_input(model, layer, cache[f"resid_pre.{layer}"]) if fold else cache[f"ln1.{layer}"]
    w, w_o = head_weights(model, layer, fold_norm=fold), residual(model).w_o(layer)
    ov = w.ov()
    cfg = model.cfg
    assert cfg is not None and (family == "gpt2" or cfg.n_kv_heads < cfg.n_heads)
    for h in range(cfg.n_heads):
        bias = cache[f"head.{layer}.v"][:, :, cfg.kv_head_of(h)] - x @ w.w_v[h]  # [batch pos d_head]
        torch.testing.assert_close(bias, bias[:1, :1].expand_as(bias), atol=2e-5, rtol=0)  # v is affine in x
        if family != "gpt2":
            assert bias.abs().max() < 1e-5  # no value bias: W_OV is the whole map
        pattern = cache[f"head.{layer}.pattern"][:, h]
        written = cache[f"head.{layer}.z"][:, :, h] @ w_o[h]
        torch.testing.assert_close(written, pattern @ (x @ ov[h]) + bias[:1, :1] @ w_o[h], atol=2e-5, rtol=1e-4)


def test_qk_circuit_is_q_dot_k_before_rotary_with_gqa() -> None:
    """On a rotary model (llama, GQA) W_QK gives the position-free part: q . k of the pre-rotary q/k sites."""
    model, layer = _randomised("llama"), 0
    cache = model.run("Rotary is applied after the projections.", cache=[f"resid_pre.{layer}", f"head.{layer}.q",
                                                                        f"head.{layer}.k"]).cache  # fmt: skip
    x = _scaled_input(model, layer, cache[f"resid_pre.{layer}"])[0]
    w = head_weights(model, layer)
    cfg = model.cfg
    assert cfg is not None
    for h in range(cfg.n_heads):
        q, k = cache[f"head.{layer}.q"][0, :, h], cache[f"head.{layer}.k"][0, :, cfg.kv_head_of(h)]
        torch.testing.assert_close(x @ w.qk()[h] @ x.T, q @ k.T, atol=1e-4, rtol=1e-4)


def test_qk_circuit_gives_the_attention_pattern_without_rotary() -> None:
    """GPT-2 (learned positions, no rotary): softmax(x W_QK x^T / sqrt(d_head)) is the attention pattern."""
    model, layer = _randomised("gpt2"), 1
    block = model.module.transformer.h[layer]
    with torch.no_grad():  # the terms W_QK leaves out: query/key biases and the norm's bias
        block.attn.c_attn.bias.zero_()
        block.ln_1.bias.zero_()
    cache = model.run("No rotary here.", cache=[f"resid_pre.{layer}", f"head.{layer}.pattern"]).cache
    x = _scaled_input(model, layer, cache[f"resid_pre.{layer}"])[0]
    w = head_weights(model, layer)
    causal = torch.ones(len(x), len(x), dtype=torch.bool).tril()
    for h in range(4):
        scores = (x @ w.qk()[h] @ x.T / math.sqrt(w.w_q.shape[-1])).masked_fill(~causal, float("-inf"))
        torch.testing.assert_close(scores.softmax(-1), cache[f"head.{layer}.pattern"][0, h], atol=1e-5, rtol=1e-4)


def test_norm_matrix_reads_each_norm_kind() -> None:
    d = 8
    g = torch.linspace(0.5, 2.0, d)
    ln = torch.nn.LayerNorm(d)
    with torch.no_grad():
        ln.weight.copy_(g)
        ln.bias.fill_(0.7)
    torch.testing.assert_close(norm_matrix(ln, d), (torch.eye(d) - 1 / d) @ torch.diag(g))
    gemma2 = _randomised("gemma2").module.model.layers[0].input_layernorm  # scales by 1 + w
    torch.testing.assert_close(norm_matrix(gemma2, 64), torch.diag(1 + gemma2.weight.detach()))
    assert norm_matrix(torch.nn.Identity(), d) is None


def test_head_spectra_match_the_full_svd_and_the_vocabulary() -> None:
    model = _randomised("llama")
    threads = torch.get_num_threads()
    spectra = head_spectra(model, WeightsConfig(directions=2, top_k=4))
    assert torch.get_num_threads() == threads  # the single-threaded LAPACK block restores the setting
    w_u = residual(model).unembed()[1] * model.module.model.norm.weight.detach()[:, None]
    w_e = model.module.model.embed_tokens.weight.detach()
    assert len(spectra.heads) == 8
    for layer in range(2):
        w = head_weights(model, layer)
        for h in range(4):
            i = spectra.row(layer, h)
            torch.testing.assert_close(spectra.ov_singular[i], torch.linalg.svdvals(w.ov()[h])[:16], atol=1e-4,
                                       rtol=1e-4)  # fmt: skip
            torch.testing.assert_close(spectra.qk_singular[i], torch.linalg.svdvals(w.qk()[h])[:16], atol=1e-4,
                                       rtol=1e-4)  # fmt: skip
            u, _, vh = torch.linalg.svd(w.ov()[h])  # the direct SVD of the d_model-square circuits
            qu, _, qvh = torch.linalg.svd(w.qk()[h])
            for d in range(2):  # both kept directions, all four sides
                out = vh[d] @ w_u  # a written direction through the (norm-folded) unembedding
                sign = 1 if out[out.abs().argmax()] > 0 else -1
                assert spectra.ov_out_ids[i, d].tolist() == (sign * out).topk(4).indices.tolist()
                assert spectra.ov_in_ids[i, d].tolist() == (sign * (w_e @ u[:, d])).topk(4).indices.tolist()
                key = w_e @ qvh[d]  # the key side through the embedding signs the QK pair
                sign = 1 if key[key.abs().argmax()] > 0 else -1
                assert spectra.qk_key_ids[i, d].tolist() == (sign * key).topk(4).indices.tolist()
                assert spectra.qk_query_ids[i, d].tolist() == (sign * (w_e @ qu[:, d])).topk(4).indices.tolist()
    json = spectra.to_dict()
    assert len(json["heads"]) == 8 and len(json["heads"][0]["ov_out"][0]) == 4


def test_ov_tokens_of_a_hand_built_copying_head() -> None:
    """A head whose OV circuit maps four tokens' embeddings to their own unembeddings copies: each ranks first."""
    model = ms.tiny("gpt2")
    tokens = [40, 41, 42, 43]
    w_e = model.module.transformer.wte.weight.detach()
    attn = model.module.transformer.h[1].attn  # Conv1D weights are [in out]; head 0's value columns are 128-143
    with torch.no_grad():
        basis = torch.linalg.qr(w_e[tokens].T).Q  # [d_model 4]
        attn.c_attn.weight[:, 128:144] = 0
        attn.c_attn.weight[:, 128:132] = basis @ torch.linalg.inv(w_e[tokens] @ basis)  # token i -> e_i
        attn.c_proj.weight[:16] = 0
        attn.c_proj.weight[:4] = model.module.lm_head.weight.detach()[tokens]  # e_i -> token i's unembedding
    result = ov_tokens(model, 1, 0, tokens, top_k=3, fold_norm=False)
    assert result.top_ids[:, 0].tolist() == tokens and result.self_rank.tolist() == [0, 0, 0, 0]
    other = ov_tokens(model, 1, 1, tokens, top_k=3, fold_norm=False)  # an untouched random head does not copy
    assert other.self_rank.float().mean() > 5
    # through block 0: the input is each token's resid_post.0 on its own, then the same OV circuit and unembedding
    after = ov_tokens(model, 1, 1, tokens, top_k=3, fold_norm=False, after_block0=True)
    x = torch.stack([model.run(torch.tensor([[t]]), cache="resid_post.0").cache["resid_post.0"][0, 0] for t in tokens])
    w = head_weights(model, 1, fold_norm=False)
    logits = (x / x.pow(2).mean(-1, keepdim=True).sqrt()) @ w.ov()[1] @ model.module.lm_head.weight.detach().T
    assert after.top_ids.tolist() == logits.topk(3).indices.tolist()
    torch.testing.assert_close(after.top_logits, logits.topk(3).values, atol=1e-5, rtol=1e-4)


def test_neuron_vocab_is_the_down_projection_through_the_unembedding() -> None:
    model = _randomised("llama")
    result = neuron_vocab(model, 1, [3, 7], top_k=5)
    w_out = model.module.model.layers[1].mlp.down_proj.weight.detach().T[[3, 7]]  # [2 d_model]
    logits = (w_out * model.module.model.norm.weight.detach()) @ model.module.lm_head.weight.detach().T
    assert result.top_ids.tolist() == logits.topk(5).indices.tolist()
    assert result.bottom_ids.tolist() == logits.topk(5, largest=False).indices.tolist()
    unfolded = neuron_vocab(model, 1, [3], top_k=5, fold_norm=False)
    assert unfolded.top_ids[0].tolist() == (w_out[0] @ model.module.lm_head.weight.detach().T).topk(5).indices.tolist()


def test_composition_scores_equal_the_formula() -> None:
    """Every pair against the full-matrix definition (GQA model, norms folded)."""
    model = _randomised("llama")
    scores = composition_scores(model)
    w0, w1 = head_weights(model, 0), head_weights(model, 1)
    for a in range(4):
        for b in range(4):
            expected = {"q": composition_score(w0.ov()[a], w1.qk()[b]),
                        "k": composition_score(w0.ov()[a], w1.qk()[b].T),
                        "v": composition_score(w0.ov()[a], w1.ov()[b])}  # fmt: skip
            for mode, value in expected.items():
                torch.testing.assert_close(scores[mode][0, a, 1, b], value, atol=1e-5, rtol=1e-4)
    assert float(scores.q[1].abs().max()) == 0 and float(scores.q[:, :, 0].abs().max()) == 0  # no later reader
    assert 0.05 < scores.baseline < 0.2


def test_composition_scores_on_hand_built_heads() -> None:
    """Head 0.0 reads coordinates 0-15 and writes 16-31; head 1.0 queries with 16-31 and keys with 32-47; its value
    reads 16-31. Then Q = ||E1 E3^T|| / (||E1 E2^T|| ||E2 E3^T||) = 4 / 16, K = 0 and V = 4 / 16."""
    model = ms.tiny("llama")
    eye = torch.eye(64)
    e1, e2, e3 = eye[:, :16], eye[:, 16:32], eye[:, 32:48]
    a0, a1 = model.module.model.layers[0].self_attn, model.module.model.layers[1].self_attn
    with torch.no_grad():  # nn.Linear weight is [out in]; head 0 of the query and of the first kv head
        a0.v_proj.weight[:16] = e1.T
        a0.o_proj.weight[:, :16] = e2
        a1.q_proj.weight[:16] = e2.T
        a1.k_proj.weight[:16] = e3.T
        a1.v_proj.weight[:16] = e2.T
    scores = composition_scores(model)
    assert scores.q[0, 0, 1, 0] == pytest.approx(0.25, abs=1e-5)
    assert scores.k[0, 0, 1, 0] == pytest.approx(0.0, abs=1e-6)
    assert scores.v[0, 0, 1, 0] == pytest.approx(0.25, abs=1e-5)  # ||e1 W_O|| / (4 ||e2 W_O||), W_O random


def test_detection_patterns_follow_transformer_lens() -> None:
    tokens = torch.tensor([[5, 6, 7, 5, 6, 7]])
    p = detection_patterns(tokens)
    assert p["previous_token"][0].nonzero().tolist() == [[i, i - 1] for i in range(1, 6)]
    assert p["duplicate_token"][0].nonzero().tolist() == [[3, 0], [4, 1], [5, 2]]
    assert p["induction"][0].nonzero().tolist() == [[3, 1], [4, 2], [5, 3]]  # the token after the earlier occurrence


def test_head_type_scores_are_the_fraction_of_attention_on_the_pattern() -> None:
    model = ms.tiny("gpt2")
    half = torch.stack([torch.randperm(256, generator=torch.Generator().manual_seed(i))[:12] for i in range(4)])
    scores = head_type_scores(model, tokens=torch.cat([half, half], 1))  # distinct tokens: one earlier occurrence
    patterns = model.run(scores.tokens, cache="head.1.pattern").cache["head.1.pattern"]  # [batch head q k]
    prev = patterns.diagonal(-1, -2, -1).sum(-1) / patterns.sum((-1, -2))  # [batch head]
    torch.testing.assert_close(scores.previous_token[1], prev.mean(0))
    n = scores.tokens.shape[1] // 2
    torch.testing.assert_close(
        scores.induction[1],
        (patterns.diagonal(-(n - 1), -2, -1)[..., 1:].sum(-1) / patterns.sum((-1, -2))).mean(0),
        atol=1e-6,
        rtol=1e-5,
    )


def test_copy_suppression_is_the_attention_on_tokens_the_head_pushes_down() -> None:
    """By hand from the head's pattern, its z, W_O and the folded W_U; and negating a last-layer head's W_O (which
    changes nothing it attends to) turns each score s into 1 - s (McDougall et al. 2023)."""
    from mechscope.lenses import HeadTypesConfig, head_weights, unembedding

    model = ms.tiny("llama")
    config = HeadTypesConfig(rep_len=6, n_seqs=3)
    scores = head_type_scores(model, config)
    cache = model.run(scores.tokens, cache=["head.1.pattern", "head.1.z"]).cache
    pat, z, w_o = cache["head.1.pattern"], cache["head.1.z"], head_weights(model, 1).w_o
    w_u = unembedding(model)
    logits = torch.einsum("bqhd,hdm,mv->bhqv", z, w_o, w_u)
    logits = logits - logits.mean(-1, keepdim=True)
    keys = scores.tokens[:, None, None, :].expand(-1, pat.shape[1], pat.shape[2], -1)
    down = (logits.gather(-1, keys) < 0).float()  # [batch head q k]: the key's token is pushed down at q
    torch.testing.assert_close(scores.copy_suppression[1], ((pat * down).sum((-1, -2)) / pat.sum((-1, -2))).mean(0))
    assert 0.3 < float(scores.copy_suppression.mean()) < 0.7  # random heads: about chance (0.5)
    with torch.no_grad():
        model.module.model.layers[1].self_attn.o_proj.weight[:, :16] *= -1  # head 1.0 writes the opposite
    flipped = head_type_scores(model, config)
    torch.testing.assert_close(flipped.copy_suppression[1, 0], 1 - scores.copy_suppression[1, 0])
    torch.testing.assert_close(flipped.copy_suppression[1, 1:], scores.copy_suppression[1, 1:])
    assert "copy_suppression" in flipped.to_dict()


def test_induction_organism_planted_heads_stand_out() -> None:
    """The planted previous-token -> induction pair has the top K-composition score, and each planted head has the
    top score of its type (the organism is read through its Hugging Face Llama weights; rotary: pre-rotary QK)."""
    from mechscope import organisms

    built = organisms.obtain(organisms.Induction(), 0)
    prev, ind = built.prev_head, built.ind_head
    comp = composition_scores(built.model)
    assert comp.top("k", 1)[0][:2] == ((0, prev), (1, ind))
    assert comp.k[0, prev, 1, ind] > comp.baseline
    types = head_type_scores(built.model)
    assert types.top("previous_token", 1)[0][0] == (0, prev)
    assert types.top("induction", 1)[0][0] == (1, ind)


def test_weight_methods_are_declared() -> None:
    assert {"weights", "composition", "head-types", "similarity", "probe"} <= set(METHODS.names())
    assert METHODS.names()[0] == "logit-lens"
    model = ms.tiny("gpt2")
    assert METHODS["weights"](model, layer=0, head=1, directions=1).heads == ((0, 1),)


def test_cli_weights_similarity_and_probe(tmp_path) -> None:
    """The commands print what the library returns (--json), and each offers only its own methods' options."""
    from typer.testing import CliRunner

    from mechscope.cli import app
    from mechscope.lenses import ProbeConfig, probe

    runner = CliRunner()
    out = runner.invoke(app, ["weights", "tiny-gpt2", "--layer", "0", "--head", "1", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == head_spectra(ms.tiny("gpt2"), WeightsConfig(layer=0, head=1)).to_dict()
    out = runner.invoke(app, ["weights", "tiny-llama", "--method", "composition", "--json"])
    assert json.loads(out.stdout)["k"] == composition_scores(ms.tiny("llama")).k.tolist()
    assert runner.invoke(app, ["weights", "tiny-gpt2", "--sites", "embed"]).exit_code != 0  # not a weights option
    table = runner.invoke(app, ["weights", "tiny-gpt2", "--method", "head-types"])
    assert table.exit_code == 0 and "induction" in table.stdout

    out = runner.invoke(app, ["similarity", "tiny-gpt2", "--sites", "embed,resid_post.*", "--contexts", "2",
                              "--ctx-len", "16", "--out", str(tmp_path), "--json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert got["rows"] == ["embed", "resid_post.0", "resid_post.1"] and got["n"] == 32
    assert (tmp_path / "cka.png").is_file()

    words = [f"{a}{b}" for a in "abcdefgh" for b in "xyz"]
    data = tmp_path / "probe.jsonl"
    data.write_text("".join(json.dumps({"text": w, "label": int(w.endswith("x"))}) + "\n" for w in words))
    out = runner.invoke(app, ["probe", str(data), "--model", "tiny-llama", "--site", "embed", "--folds", "3", "--json"])
    assert out.exit_code == 0, out.output
    expected = probe(ms.tiny("llama"), words, [int(w.endswith("x")) for w in words], ProbeConfig(site="embed", folds=3))
    assert json.loads(out.stdout)["accuracy"] == expected.accuracy == 1.0
    assert "--directions" not in runner.invoke(app, ["lens", "--help"]).stdout  # lens shows only lens options
