"""Every Hugging Face family beyond the five of the shared fixtures opens and keeps the same guarantees.

Each family is a random 2-layer config (``ms.tiny``), saved with ``save_pretrained`` and opened again with
``ms.load`` as a user's checkpoint would be. The checks are those the original families get (``test_run_cache``,
``test_generate``, ``test_interventions``, ``test_eap``, ``test_patching``): hooked runs bitwise equal to the plain
model, the residual stream's identities, norm sites, padding, generation, patching a site with itself, DLA adding up
to the logit difference, and EAP equal to the derivative of edge patching, or a refusal that says why. Families
that cannot be named (or only in some configurations) are refused with the reason, and that is tested too.
"""

from __future__ import annotations

import pytest
import torch
from test_eap import check_eap_is_the_derivative, toy_task
from test_generate import hf_generate

import mechscope as ms
from mechscope.circuits import direct_logit_attribution, eap

NEW = ["mistral", "qwen2", "qwen3", "olmo", "olmo2", "phi", "phi3", "gptj", "gpt_bigcode", "opt", "falcon", "bloom",
       "gemma3_text", "granite", "stablelm", "mixtral", "qwen2_moe"]  # fmt: skip
POST_NORM = {"olmo2", "gemma3_text"}
"""A norm after each branch: attention's output is not its heads' sum, so edge-level graphs are refused."""
MOE = {"mixtral", "qwen2_moe"}
PROMPTS = ["The cat sat on the mat.", "Hello"]
SMALL = {"hidden_size": 64, "num_attention_heads": 4, "vocab_size": 300}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, ms.Model]:
    """Each family saved by ``save_pretrained`` and opened with ``ms.load``."""
    models = {}
    for family in NEW:
        path = tmp_path_factory.mktemp(family)
        made = ms.tiny(family, seed=0)
        made.module.save_pretrained(path)
        made.tokenizer.save_pretrained(path)
        models[family] = ms.load(str(path))
    return models


@pytest.fixture(params=NEW)
def model(request, saved) -> ms.Model:
    return saved[request.param]


def plain_logits(model: ms.Model, prompts) -> torch.Tensor:
    batch = model.encode(prompts)
    with torch.no_grad():
        return model.module(input_ids=batch.tokens, attention_mask=batch.attention_mask).logits


def test_loaded_checkpoint_is_the_saved_model(model):
    family = model.module.config.model_type
    made = ms.tiny(family, seed=0)
    assert torch.equal(model.run(PROMPTS[0]).logits, made.run(PROMPTS[0]).logits)
    assert [s.name for s in model.resolve("*")] == [s.name for s in made.resolve("*")]


def test_caching_every_site_is_bitwise_plain(model):
    names = [s.name for s in model.resolve("*") if s.writable]
    out = model.run(PROMPTS[0], cache=names)
    assert set(out.cache) == set(names)
    assert torch.equal(out.logits, plain_logits(model, PROMPTS[0]))
    for site in model.resolve("*"):  # every site has the shape its listing promises
        if site.writable:
            got = out.cache[site.name].shape
            assert all(s is None or s == g for s, g in zip(site.sizes, got, strict=True)), (site.name, got)


def test_residual_identities(model):
    c = model.run(PROMPTS, cache=["resid_*", "attn_out.*", "mlp_out.*"]).cache
    for layer in range(model.cfg.n_layers):
        pre, attn, mlp, post = (c[f"{k}.{layer}"] for k in ("resid_pre", "attn_out", "mlp_out", "resid_post"))
        if model.cfg.parallel:
            torch.testing.assert_close(post, pre + attn + mlp)
        else:  # the model's own additions: bitwise
            assert torch.equal(c[f"resid_mid.{layer}"], pre + attn)
            assert torch.equal(post, c[f"resid_mid.{layer}"] + mlp)
        if layer:
            assert torch.equal(pre, c[f"resid_post.{layer - 1}"])


def test_norm_sites_are_the_norms_of_what_each_branch_reads(model):
    names = {s.name for s in model.resolve("*")}
    norms = [n for n in ("ln1", "ln2") if f"{n}.0" in names]
    out = model.run(PROMPTS[0], cache=["resid_*"] + [f"{n}.*" for n in norms])
    assert norms == ([] if model.module.config.model_type == "olmo2" else ["ln1"] if model.cfg.parallel
                     else ["ln1", "ln2"])  # fmt: skip
    for layer in range(model.cfg.n_layers):
        for site in norms:
            reads = "resid_mid" if site == "ln2" else "resid_pre"
            norm = model.module.get_submodule(model.resolve(f"{site}.{layer}")[0].module)
            with torch.no_grad():
                assert torch.equal(out.cache[f"{site}.{layer}"], norm(out.cache[f"{reads}.{layer}"]))


def test_patching_each_site_with_itself_changes_nothing(model):
    names = [s.name for s in model.resolve("*") if s.writable]
    clean = model.run(PROMPTS, cache=names)
    for name in names:
        with model.intervene(ms.Patch(name, clean.cache[name])):
            assert torch.equal(model.run(PROMPTS).logits, clean.logits), name


def test_patching_attn_and_mlp_out_moves_the_residual_by_the_change(model):
    clean = model.run(PROMPTS, cache=["attn_out.0", "mlp_out.0", "resid_post.0"]).cache
    delta = torch.randn_like(clean["attn_out.0"])
    with model.intervene(ms.Patch("attn_out.0", clean["attn_out.0"] + delta), ms.Add("mlp_out.0", delta)):
        edited = model.run(PROMPTS, cache=["resid_post.0"]).cache
    if model.cfg.parallel:  # attention and MLP read the same input: only the two additions change resid_post
        torch.testing.assert_close(edited["resid_post.0"], clean["resid_post.0"] + 2 * delta)
    else:  # the MLP now reads a different stream, so only "moved" is checked
        assert not torch.allclose(edited["resid_post.0"], clean["resid_post.0"])


def test_gradient_at_a_branch_output_is_the_gradient_at_the_stream_it_is_added_to(model):
    """``resid_post.L = ... + mlp_out.L``, so both get the same gradient (OPT's flattened MLP, Falcon's in-place
    addition and BLOOM's residual inside the MLP included)."""

    def metric(r):
        return r.final_logits()[:, 65].sum()

    alone = model.run(PROMPTS, grad_of=metric, grad_at="mlp_out.0").grads["mlp_out.0"]  # the first tracked site
    sites = ["resid_post.0", "mlp_out.0"] + (["mlp.0.post"] if model.cfg.d_mlp else [])
    out = model.run(PROMPTS, grad_of=metric, grad_at=sites)
    torch.testing.assert_close(alone, out.grads["resid_post.0"])
    torch.testing.assert_close(out.grads["mlp_out.0"], out.grads["resid_post.0"])
    assert alone.abs().sum() > 0
    if model.cfg.d_mlp:
        assert out.grads["mlp.0.post"].shape[:2] == alone.shape[:2]


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_one_at_a_time(model, side):
    prompts = ["a much longer prompt than the other", "short"]
    batch = model.run(prompts, cache=["resid_post.*", "head.1.z"], padding_side=side)
    for i, p in enumerate(prompts):
        alone = model.run(p, cache=["resid_post.*", "head.1.z"])
        real = batch.attention_mask[i].bool()
        torch.testing.assert_close(batch.logits[i, real], alone.logits[0], atol=2e-5, rtol=1e-4)
        for name, act in alone.cache.items():
            torch.testing.assert_close(batch.cache[name][i, real], act[0], atol=2e-5, rtol=1e-4)


def test_generation_without_intervention_equals_hf(model):
    prompts = ["Once upon a time", "The quick brown fox jumps"]
    ours = model.generate(prompts, max_new_tokens=4, cache=["resid_post.0"])
    assert torch.equal(ours.tokens, hf_generate(model, prompts, max_new_tokens=4, do_sample=False))
    prompt_len = model.encode(prompts, padding_side="left").tokens.shape[1]
    assert ours.cache["resid_post.0"].shape[1] == prompt_len + ours.new_tokens.shape[1] - 1


def test_patterns_match_eager_output_attentions(model):
    out = model.run(PROMPTS[0], cache="head.*.pattern")
    batch = model.encode(PROMPTS[0])
    before = model.module.config._attn_implementation
    model.module.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            ref = model.module(input_ids=batch.tokens, output_attentions=True)
    finally:
        model.module.set_attn_implementation(before)
    for layer, attn in enumerate(ref.attentions):
        assert torch.equal(out.cache[f"head.{layer}.pattern"].flatten(0, 1), attn.flatten(0, 1))


def test_dla_components_sum_to_the_logit_difference(model):
    dla = direct_logit_attribution(model, toy_task(model), neurons=model.cfg.d_mlp > 0)
    assert dla.total == pytest.approx(dla.logit_diff, abs=1e-5)
    assert dla.heads.shape == (model.cfg.n_layers, model.cfg.n_heads)


@pytest.mark.parametrize("family", [f for f in NEW if f not in POST_NORM])
def test_eap_is_the_derivative_of_edge_patching(family):
    # OPT's ReLU has kinks that a finite difference straddles at some edges (3 of 110 here); GELU is smooth
    model = ms.tiny(family, seed=1, **({"activation_function": "gelu"} if family == "opt" else {}))
    if family in MOE:
        model.module.set_experts_implementation("eager")  # the checks run in float64; grouped_mm has no such kernel
    check_eap_is_the_derivative(model, "denoising")


@pytest.mark.parametrize("family", sorted(POST_NORM))
def test_eap_refuses_a_norm_after_attention(saved, family):
    with pytest.raises(ValueError, match="not the sum of its heads' outputs"):
        eap(saved[family], toy_task(saved[family]), progress=False)


# --- mixtures of experts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(MOE))
def test_router_site_is_the_router_logits_of_what_the_mlp_reads(saved, family):
    model = saved[family]
    out = model.run(PROMPTS, cache=["mlp.*.router", "resid_mid.*"])
    n_experts = model.module.get_submodule("model.layers.0.mlp.gate").weight.shape[0]
    for layer in range(model.cfg.n_layers):
        block = model.module.get_submodule(f"model.layers.{layer}")
        with torch.no_grad():
            normed = block.post_attention_layernorm(out.cache[f"resid_mid.{layer}"])
            want = normed.flatten(0, 1) @ block.mlp.gate.weight.T  # [batch*pos expert]
        router = out.cache[f"mlp.{layer}.router"]
        assert router.shape == (normed.shape[0] * normed.shape[1], n_experts)
        torch.testing.assert_close(router, want)
    assert not model.resolve("mlp.0.router")[0].writable and model.cfg.d_mlp == 0
    with pytest.raises(KeyError, match="no per-expert sites"):
        model.resolve("mlp.0.expert.1")
    with pytest.raises(KeyError, match=r"mlp\.0\.router"):
        model.resolve("mlp.0.post")


# --- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "overrides", "reason"),
    [
        ("granite", {"residual_multiplier": 0.22}, "scales its branches"),
        ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2}, "groups each key/value head's queries"),
        ("opt", {"do_layer_norm_before": False}, "OPT-350M: norms after each branch"),
    ],
)  # fmt: skip
def test_unsupported_configurations_are_refused_with_the_reason(family, overrides, reason):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(family, **{**ms.core.TINY_CONFIGS.get(family, SMALL), **overrides})
    module = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ValueError, match=reason):
        ms.core.from_hf(module, name=family)


def test_other_variants_open_too():
    """Config switches that change the table: StableLM's parallel residual, Falcon's sequential per-head layout,
    StarCoder without multi-query attention."""
    for family, overrides, parallel in [
        ("stablelm", {"use_parallel_residual": True}, True),
        ("falcon", {"parallel_attn": False, "multi_query": False, "alibi": True}, False),
        ("gpt_bigcode", {"multi_query": False}, False),
        ("olmo", {"clip_qkv": 0.3}, False),  # 6% of q/k/v clamped; smooth enough for the check
    ]:
        model = ms.tiny(family, seed=1, **overrides)
        assert model.cfg.parallel is parallel
        names = [s.name for s in model.resolve("*") if s.writable]
        out = model.run(PROMPTS, cache=names)
        assert torch.equal(out.logits, plain_logits(model, PROMPTS)), family
        check_eap_is_the_derivative(model, "denoising")
    assert ms.tiny("falcon").cfg.n_kv_heads == ms.tiny("gpt_bigcode").cfg.n_kv_heads == 1  # multi-query


def test_olmo_clip_qkv_sites_are_the_projections_before_the_in_place_clamp():
    model = ms.tiny("olmo", clip_qkv=0.3)
    out = model.run(PROMPTS, cache=["ln1.0", "head.0.q"])
    q_proj = model.module.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        want = q_proj(out.cache["ln1.0"]).unflatten(-1, (model.cfg.n_heads, model.cfg.d_head))
    assert torch.equal(out.cache["head.0.q"], want) and want.abs().max() > 0.3  # the clamp bites, after the site
    grads = model.run(PROMPTS, grad_of=lambda r: r.final_logits()[:, 65].sum(), grad_at="head.0.q").grads
    assert grads["head.0.q"].shape == want.shape and grads["head.0.q"].abs().sum() > 0
