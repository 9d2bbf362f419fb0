"""Splicing dictionaries into a model and editing their latents, against the definitions, on a tiny model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mechscope as ms
import mechscope.features as mf
from mechscope.features import DictionaryConfig, build_dictionary

D = 64  # d_model of the tiny models


@pytest.fixture(scope="module")
def model() -> ms.Model:
    return ms.tiny("llama", seed=0)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, 256, (6, 12), generator=torch.Generator().manual_seed(0))


def _random_sae(kind: str = "topk", site: str = "resid_post.0", seed: int = 0) -> mf.Dictionary:
    d = build_dictionary(DictionaryConfig(kind, d_in=D, d_sae=4 * D, k=8, site=site), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        d.b_enc.add_(0.1 * torch.randn(d.b_enc.shape, generator=gen))
        d.b_dec.add_(0.1 * torch.randn(d.b_dec.shape, generator=gen))
    return d.eval()


def _identity(site: str, target_site: str | None = None) -> mf.Dictionary:
    """ReLU latents x⁺ and x⁻ with decoder rows +e_i and -e_i: decode(encode(x)) is exactly x."""
    transcoder = target_site is not None
    cfg = DictionaryConfig("relu", d_in=D, d_sae=2 * D, d_out=D if transcoder else None,
                           apply_b_dec_to_input=not transcoder, site=site, target_site=target_site)  # fmt: skip
    d = build_dictionary(cfg)
    eye = torch.eye(D)
    with torch.no_grad():
        d.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        d.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        d.b_enc.zero_()
        d.b_dec.zero_()
    return d.eval()


def _orthonormal(site: str, d_sae: int = 16) -> mf.Dictionary:
    """Orthonormal decoder rows, encoder their transpose, and a large positive encoder bias: every latent fires
    and re-encoding ``x + c · W_dec[i]`` moves latent i by exactly c and no other latent."""
    d = build_dictionary(DictionaryConfig("relu", d_in=D, d_sae=d_sae, site=site))
    q, _ = torch.linalg.qr(torch.randn(D, d_sae, generator=torch.Generator().manual_seed(4)))
    with torch.no_grad():
        d.W_dec.copy_(q.T)
        d.W_enc.copy_(q)
        d.b_enc.fill_(50.0)
        d.b_dec.zero_()
    return d.eval()


def _ce(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    return float(F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()))


# --- feature interventions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["resid_post.0", "resid_mid.1", "mlp_out.0", "head.1.z"])
def test_untouched_latents_leave_the_model_bitwise_unchanged(model, tokens, site):
    sae = _random_sae(site=site)  # head.1.z is read flattened (4 heads · 16 = 64 wide), as the store holds it
    plain = model.run(tokens).logits
    with model.intervene(mf.scale(sae, [0, 3, 17], 1.0)):
        edited = model.run(tokens).logits
    assert torch.equal(edited, plain)


def test_generation_with_a_no_op_edit_is_unchanged_and_a_clamp_changes_it(model):
    sae = _random_sae()
    prompts = ["abc", "hello there"]
    plain = model.generate(prompts, max_new_tokens=6)
    with model.intervene(mf.scale(sae, 5, 1.0)):
        same = model.generate(prompts, max_new_tokens=6)
    assert torch.equal(same.tokens, plain.tokens)
    with model.intervene(mf.clamp(sae, 5, 200.0)):
        steered = model.generate(prompts, max_new_tokens=6)
    assert not torch.equal(steered.tokens, plain.tokens)


@pytest.mark.parametrize("edit", ["clamp", "scale", "zero"])
def test_an_edited_latent_reencodes_to_its_new_value_and_the_rest_stay(model, tokens, edit):
    site, latent = "resid_post.0", 3
    sae = _orthonormal(site)
    intervention = {
        "clamp": mf.clamp(sae, latent, 7.5, pos=[2, 5]),
        "scale": mf.scale(sae, latent, 2.0, pos=[2, 5]),
        "zero": mf.zero(sae, latent, pos=[2, 5]),
    }[edit]
    clean = model.run(tokens, cache=[site]).cache[site]
    with model.intervene(intervention):
        out = model.run(tokens, cache=[site])  # cached after the edit: what the next layer reads
    z_clean, z_edit = (sae.encode(act.flatten(0, 1)).unflatten(0, act.shape[:2]) for act in (clean, out.cache[site]))
    want = z_clean.clone()
    want[:, [2, 5], latent] = {"clamp": 7.5, "scale": 2 * z_clean[:, [2, 5], latent], "zero": 0.0}[edit]
    torch.testing.assert_close(z_edit, want, atol=1e-4, rtol=1e-5)
    other = [p for p in range(tokens.shape[1]) if p not in (2, 5)]
    assert torch.equal(out.cache[site][:, other], clean[:, other])  # other positions untouched at the site
    # The error term is kept: the activation moved by exactly (new - old) along the latent's decoder row.
    moved = out.cache[site][:, [2, 5]] - clean[:, [2, 5]]
    step = (want - z_clean)[:, [2, 5], latent, None] * sae.W_dec[latent].detach()
    torch.testing.assert_close(moved, step, atol=1e-4, rtol=1e-5)


def test_interventions_are_printable_values_and_refuse_bad_input(model, tokens):
    sae = _random_sae()
    assert repr(mf.clamp(sae, 5, 3.0)) == "Replace('resid_post.0', fn=clamp(latents=[5], value=3.0, d_sae=256))"
    assert "reconstruction(topk" in repr(mf.splice(sae, pos=slice(1, None)))
    with pytest.raises(IndexError, match="d_sae=256"):
        mf.clamp(sae, 256, 1.0)
    with pytest.raises(ValueError, match="names no site"):
        mf.zero(build_dictionary(DictionaryConfig("topk", d_in=D, d_sae=128, k=4)), 0)
    narrow = build_dictionary(DictionaryConfig("topk", d_in=32, d_sae=128, k=4, site="resid_post.0"))
    wrong = r"reads 32-wide activations but site 'resid_post.0' has shape \[6, 12, 64\]"
    with pytest.raises(ValueError, match=wrong), model.intervene(mf.scale(narrow, 0, 2.0)):
        model.run(tokens)
    transcoder = _identity("resid_post.0", "resid_pre.1")
    with pytest.raises(TypeError, match="need an autoencoder"):
        mf.clamp(transcoder, 0, 1.0)


# --- splicing -----------------------------------------------------------------------------------------------


def test_a_perfect_dictionary_recovers_all_the_loss(model, tokens):
    m = mf.splice_eval(model, _identity("resid_post.0"), None, tokens)
    assert m.ce_spliced == m.ce_clean and m.kl_spliced == 0.0
    assert m.ce_loss_recovered == 1.0
    assert m.ce_zero_ablated > m.ce_clean and m.kl_zero > 0
    assert m.n_tokens == 6 * 11


def test_a_zero_dictionary_recovers_none(model, tokens):
    zero = _random_sae()
    with torch.no_grad():
        zero.W_dec.zero_()
        zero.b_dec.zero_()
    m = mf.splice_eval(model, zero, "resid_post.0", tokens)
    assert m.ce_spliced == m.ce_zero_ablated and m.kl_spliced == m.kl_zero
    assert m.ce_loss_recovered == 0.0


@pytest.mark.parametrize("skip_bos", [True, False])
def test_splice_eval_matches_its_definition(model, tokens, skip_bos):
    sae = _random_sae("batchtopk")
    sae.threshold.fill_(0.05)
    m = mf.splice_eval(model, sae, "resid_post.0", tokens, skip_bos=skip_bos, batch_size=4)
    pos = slice(1, None) if skip_bos else None
    clean = model.run(tokens).logits
    with model.intervene(mf.splice(sae, pos=pos)):
        spliced = model.run(tokens).logits
    with model.intervene(ms.Ablate("resid_post.0", pos=pos)):
        zero = model.run(tokens).logits
    ce_clean, ce_spliced, ce_zero = _ce(clean, tokens), _ce(spliced, tokens), _ce(zero, tokens)
    assert (m.ce_clean, m.ce_spliced, m.ce_zero_ablated) == pytest.approx((ce_clean, ce_spliced, ce_zero), rel=1e-5)
    assert m.ce_loss_recovered == (m.ce_zero_ablated - m.ce_spliced) / (m.ce_zero_ablated - m.ce_clean)
    logp = [F.log_softmax(x[:, :-1], -1) for x in (clean, spliced, zero)]
    kl = [float((logp[0].exp() * (logp[0] - lp)).sum(-1).mean()) for lp in logp[1:]]
    assert (m.kl_spliced, m.kl_zero) == pytest.approx(kl, rel=1e-4)
    assert m.kl_spliced > 0 and m.ce_spliced != m.ce_clean


def test_transcoder_splice_replaces_the_target_with_the_prediction_from_the_input(model, tokens):
    # resid_post.0 and resid_pre.1 are the same tensor: an identity transcoder between them changes nothing.
    m = mf.splice_eval(model, _identity("resid_post.0", "resid_pre.1"), None, tokens)
    assert m.ce_loss_recovered == 1.0 and m.kl_spliced == 0.0

    cfg = DictionaryConfig("topk", d_in=D, d_sae=128, d_out=D, k=8, apply_b_dec_to_input=False,
                           site="resid_mid.0", target_site="mlp_out.0")  # fmt: skip
    tc = build_dictionary(cfg, seed=3).eval()
    m = mf.splice_eval(model, tc, None, tokens)
    mid = model.run(tokens, cache=["resid_mid.0"]).cache["resid_mid.0"]
    prediction = tc.decode(tc.encode(mid.flatten(0, 1))).unflatten(0, mid.shape[:2]).detach()
    with model.intervene(ms.Patch("mlp_out.0", value=prediction, pos=slice(1, None))):
        spliced = model.run(tokens).logits
    assert m.ce_spliced == pytest.approx(_ce(spliced, tokens), rel=1e-5)
    with pytest.raises(ValueError, match="must come before its target"):
        mf.splice_eval(model, tc, "mlp_out.1", tokens)
    with pytest.raises(TypeError, match="takes an autoencoder"):
        mf.splice(tc)
