"""Interventions do exactly what they say, compose, clean up, and explain bad input."""

import pytest
import torch
from torch import nn

import mechscope as ms

PROMPTS = ["The cat sat on the mat.", "A dog ran in the park!!"]


def n_hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_patching_each_site_with_itself_changes_nothing(tiny):
    names = [s.name for s in tiny.resolve("*") if s.writable]
    clean = tiny.run(PROMPTS, cache=names)
    for name in names:
        with tiny.intervene(ms.Patch(name, clean.cache[name])):
            assert torch.equal(tiny.run(PROMPTS).logits, clean.logits), name


def test_patch_selected_heads_only(tiny_models):
    model = tiny_models["llama"]
    z = model.run(PROMPTS, cache="head.1.z").cache["head.1.z"]
    value = torch.randn_like(z)
    with model.intervene(ms.Patch("head.1.z", value, heads=[3], pos=[2, 5])):
        patched = model.run(PROMPTS, cache="head.1.z").cache["head.1.z"]
    changed = (patched != z).any(dim=(0, 3))  # [pos head]
    expected = torch.zeros_like(changed)
    expected[[2, 5], 3] = True
    assert torch.equal(changed, expected)
    assert torch.equal(patched[:, [2, 5], 3], value[:, [2, 5], 3])


@pytest.mark.parametrize(
    ("pos", "heads", "units"),
    [(None, [2], None), (None, [3, 0], None), ([1, 3], None, None), (slice(1, 4), [2, 0], None),
     ([4, 0], [1], [5, 0]), (-1, slice(0, 4, 2), [3, 3]), (None, None, [0, 1, 2])],
)  # fmt: skip
def test_regions_are_outer_products_of_each_axis_selection(pos, heads, units):
    """Reading and writing a region (basic indices or broadcast index tensors) touches exactly np.ix_'s entries."""
    from mechscope.core._interventions import region_index, region_shape

    act = torch.randn(3, 5, 4, 6)  # [batch pos head d_head]
    sel = {"pos": pos, "heads": heads, "units": units}
    idx = region_index(act, ("batch", "pos", "head", "d_head"), sel, "head.0.z")
    assert idx is not None

    def keep(value: object, size: int) -> list[int]:
        if value is None:
            return list(range(size))
        if isinstance(value, slice):
            return list(range(size))[value]
        return [v % size for v in ([value] if isinstance(value, int) else value)]

    picks = [keep(None, 3), keep(pos, 5), keep(heads, 4), keep(units, 6)]
    reference = act[picks[0]][:, picks[1]][:, :, picks[2]][:, :, :, picks[3]]
    assert torch.equal(act[idx], reference)
    assert region_shape(act.shape, idx) == reference.shape
    out = act.clone()
    out[idx] = -reference
    written = torch.zeros(act.shape, dtype=torch.bool)
    written[torch.meshgrid(*(torch.tensor(p) for p in picks), indexing="ij")] = True
    assert torch.equal(out[written], -act[written]) and torch.equal(out[~written], act[~written])


def test_patch_changes_downstream_and_composes(tiny_models):
    model = tiny_models["gpt2"]
    base = model.run(PROMPTS, cache=["resid_post.1"])
    vec = torch.randn(model.cfg.d_model)
    with model.intervene(ms.Add("resid_post.0", vec, scale=3.0)):
        steered = model.run(PROMPTS, cache=["resid_post.0", "resid_post.1"])
        with model.intervene(ms.Ablate("mlp_out.1")):  # nested: applies inside the outer block
            both = model.run(PROMPTS, cache=["mlp_out.1"])
    assert not torch.allclose(steered.cache["resid_post.1"], base.cache["resid_post.1"])
    assert torch.count_nonzero(both.cache["mlp_out.1"]) == 0
    plain = model.run(PROMPTS, cache=["resid_post.0"])
    torch.testing.assert_close(steered.cache["resid_post.0"], plain.cache["resid_post.0"] + 3.0 * vec)
    assert torch.equal(model.run(PROMPTS).logits, base.logits)  # everything removed afterwards


def test_resid_mid_patch_reaches_both_residual_and_mlp(tiny_models):
    model = tiny_models["llama"]
    mid = model.run(PROMPTS, cache="resid_mid.0").cache["resid_mid.0"]
    target = mid + 0.5 * torch.randn_like(mid)
    with model.intervene(ms.Patch("resid_mid.0", target)):
        out = model.run(PROMPTS, cache=["resid_mid.0", "mlp_out.0", "resid_post.0"])
    torch.testing.assert_close(out.cache["resid_mid.0"], target, atol=1e-6, rtol=1e-6)
    # The MLP saw the patched stream, and the residual carried it past the MLP.
    mlp = model.module.model.layers[0]
    expected_mlp = mlp.mlp(mlp.post_attention_layernorm(out.cache["resid_mid.0"]))
    torch.testing.assert_close(out.cache["mlp_out.0"], expected_mlp)
    torch.testing.assert_close(out.cache["resid_post.0"], out.cache["resid_mid.0"] + out.cache["mlp_out.0"])


def test_ablations_follow_their_definitions(tiny_models):
    model = tiny_models["llama"]
    ref = [p.upper() for p in PROMPTS]  # as many tokens as PROMPTS
    ref_act = model.run(ref, cache="mlp_out.0").cache["mlp_out.0"]
    assert model.encode(ref).tokens.shape == model.encode(PROMPTS).tokens.shape
    with model.intervene(ms.Ablate("mlp_out.0", "zero", units=[0, 1])):
        z = model.run(PROMPTS, cache="mlp_out.0").cache["mlp_out.0"]
    assert torch.count_nonzero(z[..., :2]) == 0 and torch.count_nonzero(z[..., 2:]) > 0
    with model.intervene(ms.Ablate("mlp_out.0", "mean", reference=ref)):
        m = model.run(PROMPTS, cache="mlp_out.0").cache["mlp_out.0"]
    torch.testing.assert_close(m, ref_act.mean(0, keepdim=True).expand_as(m))
    with model.intervene(ms.Ablate("mlp_out.0", "mean", reference=ref_act, over="batch_pos")):
        m2 = model.run(PROMPTS, cache="mlp_out.0").cache["mlp_out.0"]
    torch.testing.assert_close(m2, ref_act.mean((0, 1)).expand_as(m2))
    with model.intervene(ms.Ablate("mlp_out.0", "resample", reference=ref, seed=3)):
        r = model.run(PROMPTS, cache="mlp_out.0").cache["mlp_out.0"]
    for row in r:
        assert any(torch.equal(row, ref_row) for ref_row in ref_act)


def test_mean_ablation_excludes_padding(tiny_models):
    model = tiny_models["llama"]
    ref = ["a b c d", "a"]
    out = model.run(ref, cache="mlp_out.0")
    mask = out.attention_mask.bool()
    expected = out.cache["mlp_out.0"][mask].mean(0)
    with model.intervene(ms.Ablate("mlp_out.0", "mean", reference=ref, over="batch_pos")):
        got = model.run("xyz", cache="mlp_out.0").cache["mlp_out.0"]
    torch.testing.assert_close(got[0, 0], expected)


def test_replace_and_repr(tiny_models):
    model = tiny_models["gpt2"]
    iv = ms.Replace("mlp.0.post", lambda x: -x, units=slice(0, 4))
    with model.intervene(iv):
        got = model.run(PROMPTS, cache="mlp.0.post").cache["mlp.0.post"]
    plain = model.run(PROMPTS, cache="mlp.0.post").cache["mlp.0.post"]
    assert torch.equal(got[..., :4], -plain[..., :4]) and torch.equal(got[..., 4:], plain[..., 4:])
    assert repr(ms.Patch("head.9.z", torch.zeros(8, 15, 9, 64), heads=[3])) == (
        "Patch('head.9.z', heads=[3], value=Tensor[8, 15, 9, 64])"
    )
    assert "over" not in repr(ms.Ablate("mlp_out.4"))


def test_hooks_removed_after_exception(tiny_models):
    model = tiny_models["llama"]
    before = n_hooks(model.module)
    with (
        pytest.raises(RuntimeError, match="boom"),
        model.intervene(ms.Ablate("mlp_out.0"), ms.Patch("resid_mid.1", torch.zeros(64))),
    ):
        assert n_hooks(model.module) > before
        raise RuntimeError("boom")
    assert n_hooks(model.module) == before
    with (
        pytest.raises(ValueError, match=r"head\.0\.z"),
        model.intervene(ms.Patch("head.0.z", torch.zeros(3, 3))),
    ):
        model.run(PROMPTS)  # the error is raised inside the forward pass
    assert n_hooks(model.module) == before


def test_bad_input_errors_name_the_problem(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(KeyError, match=r"resid_post\.1"):
        model.run("x", cache="resid_psot.1")
    with (
        pytest.raises(ValueError, match=r"head\.0\.z.*\[7, 7\].*batch=1 pos=1 head=4 d_head=16"),
        model.intervene(ms.Patch("head.0.z", torch.zeros(7, 7))),
    ):
        model.run("x")
    with (
        pytest.raises(ValueError, match="read-only"),
        model.intervene(ms.Patch("head.0.pattern", torch.zeros(1))),
    ):
        pass
    with pytest.raises(ValueError, match="single token"):
        model.to_single_token(" Mary")  # bytes: five tokens
    with pytest.raises(IndexError, match="heads"), model.intervene(ms.Ablate("head.0.z", heads=[9])):
        model.run("x")
    with pytest.raises(KeyError, match="no resid_mid"):
        ms.tiny("gpt_neox").run("x", cache="resid_mid.0")


def test_wrapped_cnn_module_paths_are_sites():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )
    model = ms.wrap(net, sites={"features": "1"})
    x = torch.randn(2, 3, 6, 6)
    assert [s.name for s in model.sites()][:2] == ["0", "1"]
    out = model.run(x, cache=["features", "0"])
    assert torch.equal(out.logits, net(x)) and torch.equal(out.cache["features"], net[1](net[0](x)))
    with model.intervene(ms.Ablate("features", units=[0, 1, 2])):
        abl = model.run(x, cache="features")
    assert torch.count_nonzero(abl.cache["features"][:, :3]) == 0
    assert torch.equal(abl.cache["features"][:, 3:], out.cache["features"][:, 3:])
    with model.intervene(ms.Ablate("features", "mean", reference=torch.randn(5, 3, 6, 6))):
        assert not torch.equal(model.run(x).logits, out.logits)


# --- composition: references come from the model as it is outside the block -------------------------------------

KINDS = ["patch", "zero", "mean", "resample", "add", "replace"]


def _intervention(kind: str, site: str, model: ms.Model, ref: list[str], shape: torch.Size) -> ms.Intervention:
    """One intervention of each kind at ``site`` (values seeded from the kind and site)."""
    gen = torch.Generator().manual_seed(len(kind) * 100 + len(site))
    if kind == "patch":
        return ms.Patch(site, torch.randn(shape, generator=gen))
    if kind == "zero":
        return ms.Ablate(site, "zero", pos=[1, 2])
    if kind in ("mean", "resample"):
        return ms.Ablate(site, kind, reference=ref, seed=2)
    if kind == "add":
        return ms.Add(site, torch.randn(shape[-1], generator=gen), scale=3.0)
    return ms.Replace(site, lambda x: x.flip(-1) * 2)


def _as_fixed(iv: ms.Intervention, model: ms.Model, ref: list[str]) -> ms.Intervention:
    """The same intervention with every reference resolved on the plain model (a Patch or Replace)."""
    if isinstance(iv, ms.Ablate) and iv.how == "zero":
        return ms.Patch(iv.site, 0.0, pos=iv.pos)  # a scalar broadcasts to the region
    if isinstance(iv, ms.Ablate):
        acts = model.run(ref, cache=iv.site).cache[iv.site]
        if iv.how == "mean":
            return ms.Patch(iv.site, acts.mean(0))
        pick = torch.randint(acts.shape[0], (len(PROMPTS),), generator=torch.Generator().manual_seed(iv.seed))
        return ms.Patch(iv.site, acts[pick])
    if isinstance(iv, ms.Add):
        return ms.Replace(iv.site, lambda x, v=iv.vector * iv.scale: x + v)
    return iv


@pytest.mark.parametrize("first", KINDS)
@pytest.mark.parametrize("second", KINDS)
def test_every_pair_of_interventions_composes_with_references_from_the_plain_model(tiny_models, first, second):
    """``intervene(A, B)``: A applies, then B on what A left; B's reference (mean, resample) is run before A is
    applied, so it is B's value on the plain model. Checked against the same pair with references resolved by hand,
    on two sites (B downstream of A) and on one site (B sees A's result)."""
    model = tiny_models["llama"]
    ref = [p.upper() for p in PROMPTS]  # as many tokens as PROMPTS
    shape = model.run(PROMPTS, cache="resid_mid.0").cache["resid_mid.0"].shape
    for site_a, site_b in (("resid_mid.0", "mlp_out.1"), ("mlp_out.1", "mlp_out.1")):
        a = _intervention(first, site_a, model, ref, shape)
        b = _intervention(second, site_b, model, ref, shape)
        with model.intervene(a, b):
            got = model.run(PROMPTS, cache=site_b)
        with model.intervene(_as_fixed(a, model, ref), _as_fixed(b, model, ref)):
            want = model.run(PROMPTS, cache=site_b)
        torch.testing.assert_close(got.logits, want.logits, atol=0, rtol=0)
        torch.testing.assert_close(got.cache[site_b], want.cache[site_b], atol=0, rtol=0)


def test_sequential_references_see_the_interventions_before_them(tiny_models):
    model = tiny_models["llama"]
    ref = [p.upper() for p in PROMPTS]
    steer = ms.Add("resid_mid.0", torch.ones(64), scale=5.0)
    mean = ms.Ablate("mlp_out.1", "mean", reference=ref)
    with model.intervene(steer, mean, sequential=True):
        got = model.run(PROMPTS, cache="mlp_out.1").cache["mlp_out.1"]
    with model.intervene(steer):
        steered = model.run(ref, cache="mlp_out.1").cache["mlp_out.1"].mean(0)
    torch.testing.assert_close(got, steered.expand_as(got))
    with model.intervene(steer, mean):  # the default: the plain model's mean
        plain = model.run(PROMPTS, cache="mlp_out.1").cache["mlp_out.1"]
    assert not torch.allclose(plain, got)


def test_patching_a_full_tensor_beside_a_reference_of_another_length(tiny_models):
    model = tiny_models["llama"]
    clean = model.run(PROMPTS, cache="attn_out.0").cache["attn_out.0"]
    with model.intervene(ms.Patch("attn_out.0", clean), ms.Ablate("mlp_out.1", "mean", reference=["ab", "cd"],
                                                                  over="batch_pos")):  # fmt: skip
        out = model.run(PROMPTS, cache="mlp_out.1").cache["mlp_out.1"]
    want = model.run(["ab", "cd"], cache="mlp_out.1").cache["mlp_out.1"].mean((0, 1))
    torch.testing.assert_close(out, want.expand_as(out))


def test_numbers_broadcast_as_patch_and_add_values(tiny_models):
    model = tiny_models["gpt2"]
    plain = model.run(PROMPTS, cache="mlp_out.0").cache["mlp_out.0"]
    with model.intervene(ms.Patch("mlp_out.0", 0.5, units=[3]), ms.Add("mlp_out.0", 1.0, pos=[0])):
        got = model.run(PROMPTS, cache="mlp_out.0").cache["mlp_out.0"]
    want = plain.clone()
    want[..., 3] = 0.5
    want[:, 0] += 1.0
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert repr(ms.Patch("mlp_out.0", 0.0)) == "Patch('mlp_out.0', value=0.0)"
