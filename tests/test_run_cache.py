"""Running and caching leave the model's numbers untouched, and the cached sites mean what they say."""

import pytest
import torch

import mechscope as ms

PROMPTS = ["The cat sat on the mat.", "Hello"]


def plain_logits(model: ms.Model, batch, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model.module(input_ids=batch.tokens, attention_mask=batch.attention_mask, **kwargs).logits


def writable_sites(model: ms.Model) -> list[str]:
    return [s.name for s in model.resolve("*") if s.writable]


def test_cached_run_is_bitwise_plain(tiny):
    batch = tiny.encode(PROMPTS[0])
    out = tiny.run(PROMPTS[0], cache=writable_sites(tiny))
    assert len(out.cache) == len(writable_sites(tiny))
    assert torch.equal(out.logits, plain_logits(tiny, batch))


def test_patterns_match_eager_output_attentions(tiny):
    batch = tiny.encode(PROMPTS[0])
    out = tiny.run(PROMPTS[0], cache="head.*.pattern")
    before = tiny.module.config._attn_implementation
    tiny.module.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            ref = tiny.module(input_ids=batch.tokens, output_attentions=True)
    finally:
        tiny.module.set_attn_implementation(before)
    assert torch.equal(out.logits, ref.logits)  # eager vs eager: bitwise
    for layer, attn in enumerate(ref.attentions):
        assert torch.equal(out.cache[f"head.{layer}.pattern"], attn)
    rows = out.cache["head.0.pattern"].sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))


def test_residual_identities(tiny):
    out = tiny.run(PROMPTS, cache=["resid_*", "attn_out.*", "mlp_out.*"])
    c = out.cache
    for layer in range(tiny.cfg.n_layers):
        pre, attn, mlp, post = (c[f"{k}.{layer}"] for k in ("resid_pre", "attn_out", "mlp_out", "resid_post"))
        if tiny.cfg.parallel:
            torch.testing.assert_close(post, pre + attn + mlp)
        else:
            # The model's own additions, so these hold bitwise.
            assert torch.equal(c[f"resid_mid.{layer}"], pre + attn)
            assert torch.equal(post, c[f"resid_mid.{layer}"] + mlp)
        if layer:
            assert torch.equal(pre, c[f"resid_post.{layer - 1}"])


def test_norm_sites_are_the_norms_of_the_residual_each_branch_reads(tiny):
    out = tiny.run(PROMPTS[0], cache=["resid_*", "ln1.*", "ln2.*"])
    for layer in range(tiny.cfg.n_layers):
        for site, reads in (("ln1", "resid_pre"), ("ln2", "resid_pre" if tiny.cfg.parallel else "resid_mid")):
            norm = tiny.module.get_submodule(tiny.resolve(f"{site}.{layer}")[0].module)
            with torch.no_grad():
                assert torch.equal(out.cache[f"{site}.{layer}"], norm(out.cache[f"{reads}.{layer}"])), (site, layer)
    # Writing it changes what attention reads, and nothing upstream.
    with tiny.intervene(ms.Ablate("ln1.1", "zero")):
        edited = tiny.run(PROMPTS[0], cache=["resid_pre.1", "attn_out.1"])
    assert torch.equal(edited.cache["resid_pre.1"], out.cache["resid_pre.1"])
    clean = tiny.run(PROMPTS[0], cache=["attn_out.1"]).cache["attn_out.1"]
    assert not torch.allclose(edited.cache["attn_out.1"], clean)


def test_head_z_through_output_projection_sums_to_attn_out(tiny):
    if tiny.cfg is None or tiny.name.startswith("tiny-gemma2"):
        pytest.skip("Gemma 2 normalises attention output after the projection")
    out = tiny.run(PROMPTS[0], cache=["head.0.z", "attn_out.0"])
    z = out.cache["head.0.z"]  # [batch pos head d_head]
    o_proj = tiny.module.get_submodule(tiny.resolve("head.0.z")[0].module)
    bias = o_proj(torch.zeros_like(z.flatten(-2)))
    per_head = [o_proj(torch.where(torch.arange(z.shape[2])[:, None] == h, z, 0).flatten(-2)) - bias for h in
                range(z.shape[2])]  # fmt: skip
    torch.testing.assert_close(sum(per_head) + bias, out.cache["attn_out.0"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_one_at_a_time(tiny, side):
    prompts = ["a much longer prompt than the other", "short", "mid length"]
    batch = tiny.run(prompts, cache=["resid_post.*", "head.1.z"], padding_side=side)
    for i, p in enumerate(prompts):
        alone = tiny.run(p, cache=["resid_post.*", "head.1.z"])
        real = batch.attention_mask[i].bool()
        torch.testing.assert_close(batch.logits[i, real], alone.logits[0], atol=2e-5, rtol=1e-4)
        for name, act in alone.cache.items():
            torch.testing.assert_close(batch.cache[name][i, real], act[0], atol=2e-5, rtol=1e-4)
    final = batch.final_logits()
    for i, p in enumerate(prompts):
        torch.testing.assert_close(final[i], tiny.run(p).logits[0, -1], atol=2e-5, rtol=1e-4)


def test_stop_early_skips_the_rest_of_the_model(tiny_models):
    model = tiny_models["llama"]
    calls = []
    handle = model.module.get_submodule("model.norm").register_forward_hook(lambda *a: calls.append(1))
    try:
        early = model.run(PROMPTS, cache="resid_post.0", logits=False)
        full = model.run(PROMPTS, cache="resid_post.0")
    finally:
        handle.remove()
    assert early.logits is None and len(calls) == 1  # only the full run reached the final norm
    assert torch.equal(early.cache["resid_post.0"], full.cache["resid_post.0"])


def test_no_autograd_graph_unless_asked(tiny_models):
    out = tiny_models["llama"].run(PROMPTS[0], cache="resid_post.*")
    assert not out.logits.requires_grad
    assert all(not t.requires_grad for t in out.cache.values())


def test_gradients_match_finite_differences(tiny_models):
    model = ms.tiny("llama", seed=1)
    model.module.double()
    target = 65

    def metric(r):
        return r.final_logits()[:, target].sum()

    out = model.run(PROMPTS, grad_of=metric, grad_at=["resid_mid.0", "head.1.z", "mlp.0.post"])
    for site in ["resid_mid.0", "head.1.z", "mlp.0.post"]:
        act = model.run(PROMPTS, cache=site).cache[site]
        direction = torch.randn(act.shape, generator=torch.Generator().manual_seed(0), dtype=act.dtype)
        eps = 1e-3  # norms and softmax compute in float32 inside HF models, even in a float64 model
        vals = []
        for sign in (1, -1):
            with model.intervene(ms.Patch(site, act + sign * eps * direction)):
                vals.append(metric(model.run(PROMPTS)).item())
        fd = (vals[0] - vals[1]) / (2 * eps)
        analytic = (out.grads[site] * direction).sum().item()
        assert analytic == pytest.approx(fd, rel=2e-3, abs=1e-5), site
    assert not any(p.grad is not None for p in model.module.parameters())  # no parameter gradients accumulated


def test_gqa_sites_and_kv_mapping(tiny_models):
    model = tiny_models["llama"]
    out = model.run(PROMPTS[0], cache=["head.0.q", "head.0.k", "head.0.v"])
    assert out.cache["head.0.q"].shape[2] == 4 and out.cache["head.0.k"].shape[2] == 2
    assert [model.cfg.kv_head_of(h) for h in range(4)] == [0, 0, 1, 1]
    assert model.cfg.query_heads_of(1) == [2, 3]
    k_proj = model.module.model.layers[0].self_attn.k_proj
    resid = model.run(PROMPTS[0], cache="resid_pre.0").cache["resid_pre.0"]
    normed = model.module.model.layers[0].input_layernorm(resid)
    assert torch.equal(out.cache["head.0.k"].flatten(-2), k_proj(normed))


def test_site_listing_names_shapes_and_meaning(tiny_models):
    rows = tiny_models["llama"].sites("head.0.*")
    assert [r.name for r in rows] == ["head.0.q", "head.0.k", "head.0.v", "head.0.pattern", "head.0.z"]
    assert rows[1].shape == "[batch pos head=2 d_head=16]" and "GQA" in rows[1].meaning
    assert len(tiny_models["llama"].sites("resid_post.*")) == 2
