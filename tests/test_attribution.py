import dataclasses
import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from torch import nn

import mechscope as ms
from mechscope import attribution as at
from mechscope import organisms
from mechscope.data.images import SHAPES, shapes, signal_blocks
from mechscope.organisms import _vision as _organisms

# --- fixtures ----------------------------------------------------------------------------------------------------


class GapCNN(nn.Module):
    """Conv-ReLU-conv-ReLU, global average pool, linear: Grad-CAM of it is CAM (Zhou et al. 2016)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(1, 6, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.ReLU()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        a = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.head(a.mean((2, 3)))


@pytest.fixture(scope="module")
def cnn() -> ms.Model:
    torch.manual_seed(0)
    return ms.wrap(_organisms.SmallCNN(), sites={"features": "relu4"})


@pytest.fixture(scope="module")
def gap_cnn() -> ms.Model:
    torch.manual_seed(1)
    return ms.wrap(GapCNN())


@pytest.fixture(scope="module")
def vit() -> ms.Model:
    torch.manual_seed(2)
    return ms.wrap(_organisms.SmallViT())


@pytest.fixture(scope="module")
def data():
    d = shapes(6, seed=3)
    return d.images, d.labels


@pytest.fixture(scope="module")
def blocks() -> organisms.VisionOrganism:
    return organisms.vision_organism("blocks-cnn")


# --- data --------------------------------------------------------------------------------------------------------


def test_shapes_are_seeded_balanced_and_masked():
    a, b = shapes(16, seed=5), shapes(16, seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, shapes(16, seed=6).images)
    assert a.images.shape == (16, 1, 32, 32) and a.classes == SHAPES
    assert torch.bincount(a.labels, minlength=4).tolist() == [4, 4, 4, 4]
    assert (a.masks.flatten(1).sum(1) > 10).all()  # every image has a drawn shape
    inside = a.images[:, 0][a.masks].mean()
    assert inside > a.images[:, 0][~a.masks].mean() + 1  # the shape is brighter than its background


def test_signal_blocks_mark_exactly_one_quadrant():
    d = signal_blocks(12, seed=0)
    quadrants = d.masks.unflatten(1, (2, 16)).unflatten(3, (2, 16)).all(2).all(-1)  # [n 2 2] whole blocks
    assert (quadrants.flatten(1).sum(1) == 1).all()
    assert (d.masks.flatten(1).sum(1) == 16 * 16).all()


# --- parity with Captum ------------------------------------------------------------------------------------------


def test_saliency_input_x_gradient_match_captum(cnn, data):
    x, y = data
    assert torch.allclose(at.saliency(cnn, x, y).map, Saliency(cnn.module).attribute(x, target=y), atol=1e-6)
    ixg = InputXGradient(cnn.module).attribute(x.clone().requires_grad_(), target=y)
    assert torch.allclose(at.input_x_gradient(cnn, x, y).map, ixg, atol=1e-6)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_matches_captum(cnn, data, rule):
    x, y = data
    ours = at.integrated_gradients(cnn, x, y, rule=rule, steps=50, batch_size=64)
    ref, delta = IntegratedGradients(cnn.module).attribute(x, target=y, n_steps=50, method=rule,
                                                           return_convergence_delta=True)  # fmt: skip
    assert torch.allclose(ours.map, ref, atol=1e-5, rtol=1e-4)
    assert torch.allclose(ours.completeness_gap, delta, atol=1e-4)


def test_occlusion_and_smoothgrad_match_captum(cnn, data):
    x, y = data
    ours = at.occlusion(cnn, x, y, window=(1, 6, 6), stride=(1, 3, 3))
    ref = Occlusion(cnn.module).attribute(x, target=y, sliding_window_shapes=(1, 6, 6), strides=(1, 3, 3))
    assert torch.allclose(ours.map, ref, atol=1e-5)
    sg = at.smoothgrad(cnn, x, y, samples=6, noise=0.1, seed=4)
    torch.manual_seed(4)
    ref = NoiseTunnel(Saliency(cnn.module)).attribute(x, target=y, nt_type="smoothgrad", nt_samples=6,
                                                      stdevs=sg.params["stdev"], abs=True)  # fmt: skip
    assert torch.allclose(sg.map, ref, atol=1e-6)


class BiasFreeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.relu, self.pool = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2)
        self.head = nn.Linear(4 * 4 * 4, 3, bias=False)

    def forward(self, x):
        return self.head(self.pool(self.relu(self.conv(x))).flatten(1))


def test_lrp_epsilon_is_input_x_gradient_without_biases_and_cleans_up(cnn, data):
    torch.manual_seed(5)
    model = ms.wrap(BiasFreeNet())
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    rel = at.lrp(model, x, y)
    # Ancona et al. 2018: on a bias-free ReLU net, epsilon-LRP (epsilon -> 0) is input x gradient; relevance is
    # conserved, summing to the logit
    assert torch.allclose(rel.map, at.input_x_gradient(model, x, y).map, atol=1e-6)
    assert torch.allclose(rel.map.flatten(1).sum(1), model.module(x).gather(1, y[:, None])[:, 0], atol=1e-5)
    big = at.lrp(cnn, *data)  # batch norm, max pools and the global adaptive max pool all have rules
    assert big.map.shape == data[0].shape and big.method == "lrp"
    assert not any(hasattr(m, "rule") or hasattr(m, "activations") for m in cnn.module.modules())
    with pytest.raises(ValueError, match=r"no rule for 'blocks\.0\.norm1'"):
        at.lrp(ms.wrap(_organisms.SmallViT()), data[0], data[1])


class FlattenInForward(nn.Module):
    """A CNN with biases whose reshapes are tensor methods in ``forward`` (Captum's LRP sees no module for them)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.pool, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Linear(64, 32)
        self.conv2, self.head = nn.Conv2d(2, 3, 3), nn.Linear(12, 3)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        h = self.relu2(self.fc(self.pool(self.relu1(self.conv1(x))).flatten(1)))
        return self.head(self.relu3(self.conv2(h.unflatten(1, (2, 4, 4)))).flatten(1))


def as_modules(net: FlattenInForward) -> nn.Sequential:
    """The same network (same weights) with nn.Flatten / nn.Unflatten / nn.Identity modules for the reshapes."""
    return nn.Sequential(net.conv1, net.relu1, net.pool, nn.Flatten(), net.fc, net.relu2, nn.Unflatten(1, (2, 4, 4)),
                         nn.Identity(), net.conv2, net.relu3, nn.Flatten(), net.head)  # fmt: skip


def test_lrp_passes_relevance_through_reshaping_modules():
    torch.manual_seed(6)
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    plain = FlattenInForward()
    seq = ms.wrap(as_modules(plain))
    assert torch.equal(seq.module(x), plain(x))
    rel = at.lrp(seq, x, y)
    # The identity rule: exactly the map of the same network with its reshapes written as tensor methods.
    torch.testing.assert_close(rel.map, at.lrp(ms.wrap(plain), x, y).map, atol=0, rtol=0)
    assert not any(hasattr(m, "rule") or hasattr(m, "activations") for m in seq.module.modules())
    # Conservation (Bach et al. 2015, eq. 2) on the bias-free version: the input relevance sums to the logit.
    with torch.no_grad():
        for m in (plain.conv1, plain.fc, plain.conv2, plain.head):
            m.bias.zero_()
    rel = at.lrp(seq, x, y).map.flatten(1).sum(1)
    torch.testing.assert_close(rel, seq.module(x).gather(1, y[:, None])[:, 0], atol=1e-5, rtol=1e-5)


def test_lrp_names_the_module_it_has_no_rule_for():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Sequential(nn.Linear(72, 8), nn.GELU()))
    with pytest.raises(ValueError, match=r"no rule for '2\.1' \(GELU\).*integrated_gradients"):
        at.lrp(ms.wrap(net), torch.randn(2, 1, 8, 8), 0)


# --- Integrated Gradients -----------------------------------------------------------------------------------------


def test_ig_is_exact_on_linear_and_quadratic_models():
    lin = ms.wrap(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))
    x = torch.randn(4, 3, 2, 2)
    w = lin.module[1].weight
    ig = at.integrated_gradients(lin, x, 1, steps=9)
    assert torch.allclose(ig.map, (w[1].reshape(3, 2, 2) * x), atol=1e-6)
    assert ig.completeness_gap.abs().max() < 1e-5

    class Square(nn.Module):
        def forward(self, z):
            return (z**2).flatten(1).sum(1, keepdim=True)

    sq = ms.wrap(Square())
    # The integrand 2 a x^2 is linear in a: the trapezoid rule integrates it exactly, so IG_i = x_i^2.
    assert torch.allclose(at.integrated_gradients(sq, x, 0, steps=5).map, x**2, atol=1e-5)


def test_adaptive_ig_converges_to_the_fine_integral(cnn, data):
    x, y = data[0][:4], data[1][:4]
    ref = IntegratedGradients(cnn.module).attribute(x, target=y, n_steps=500, method="riemann_trapezoid",
                                                    internal_batch_size=2000)  # fmt: skip
    err = {}
    for steps in (10, 40):
        ig = at.integrated_gradients(cnn, x, y, steps=steps)
        assert ig.params["points_per_example"] == steps
        err[steps] = float(((ig.map - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).mean())
    assert err[40] < err[10] and err[40] < 0.05
    gl = IntegratedGradients(cnn.module).attribute(x, target=y, n_steps=40)
    assert err[40] < float(((gl - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).mean())


def test_adaptive_ig_resolves_a_spike_at_the_baseline():
    class Saturating(nn.Module):  # 1 - exp(-sum(z) / 1e-4): all of the change within alpha < 1e-3 of the baseline
        def forward(self, z):
            return 1 - torch.exp(-z.flatten(1).sum(1, keepdim=True) / 1e-4)

    model, x = ms.wrap(Saturating()), torch.full((2, 4), 0.25)
    ig = at.integrated_gradients(model, x, 0, steps=32)
    assert ig.params["points_per_example"] == 32
    assert ig.completeness_gap.abs().max() < 0.05  # plain bisection from 9 uniform points leaves a gap of 8.8
    assert torch.allclose(ig.map, torch.full_like(x, 0.25), atol=0.02)  # symmetric inputs share the change


def test_ig_completeness_on_trained_organism_beats_captum_default(blocks):
    x, y = blocks.test.images[:32], blocks.test.labels[:32]
    ours = at.integrated_gradients(blocks.model, x, y)  # adaptive, 48 steps
    _, delta = IntegratedGradients(blocks.model.module).attribute(x, target=y, return_convergence_delta=True)
    assert at.completeness(ours)["relative_gap"] < 0.02
    assert ours.completeness_gap.abs().mean() <= delta.abs().mean() * 1.1


# --- targets -------------------------------------------------------------------------------------------------------


def test_targets_unit_logit_diff_and_callable(cnn, data):
    x, _ = data
    ig = at.integrated_gradients(cnn, x, at.Unit("features", units=[2, 5]), steps=30)
    with torch.no_grad():
        acts = cnn.run(x, cache=["features"]).cache["features"]
        base = cnn.run(torch.zeros_like(x), cache=["features"]).cache["features"]
    expected = acts[:, [2, 5]].mean((1, 2, 3)) - base[:, [2, 5]].mean((1, 2, 3))
    assert torch.allclose(ig.output_change, expected, atol=1e-5)
    diff = at.saliency(cnn, x, at.LogitDiff(0, 1), abs=False).map
    by_hand = at.saliency(cnn, x, lambda r: r.logits[:, 0] - r.logits[:, 1], abs=False).map
    assert torch.allclose(diff, by_hand)
    assert "LogitDiff(0, 1)" in at.saliency(cnn, x, at.LogitDiff(0, 1)).target


def test_head_norm_and_sae_latent_targets_on_a_language_model(tiny_models):
    model = tiny_models["llama"]
    ig = at.integrated_gradients(model, "hello world", at.Norm("head.0.z", head=1), steps=16)
    with torch.no_grad():
        z = model.run("hello world", cache=["head.0.z"]).cache["head.0.z"]
    # from the zero embedding every head output is 0 (no biases), so the change is the head's output norm
    assert torch.allclose(ig.output_change, z[:, -1, 1].norm(dim=-1), atol=1e-5)
    assert ig.map.shape == (1, z.shape[1], model.cfg.d_model) and ig.map.abs().sum() > 0
    latent = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))  # an encoder row
    target = at.Unit("resid_post.1", direction=latent, pos=-1)
    at_site = at.saliency(model, "hello world", target, at="resid_post.1", abs=False).map
    expected = torch.zeros_like(at_site)
    expected[:, -1] = latent  # d (act[-1] . latent) / d act
    assert torch.allclose(at_site, expected)
    assert at.saliency(model, "hello world", target).map.abs().sum() > 0  # and through the model to the embedding


def test_site_attribution_and_errors(cnn, data, tiny_models):
    x, y = data
    ig = at.integrated_gradients(cnn, x, y, at="features", rule="gausslegendre", steps=64)
    assert ig.map.shape == (6, 32, 8, 8) and ig.at == "features"
    assert at.completeness(ig)["relative_gap"] < 0.05
    with pytest.raises(ValueError, match="at='embed'"):
        at.saliency(tiny_models["llama"], "hello", 0, at="input")
    with pytest.raises(TypeError, match="target must be"):
        at.saliency(cnn, x, "cat")


@pytest.mark.parametrize("site", ["resid_mid.0", "resid_post.0", "embed"])
def test_site_saliency_is_the_runs_gradient(tiny_models, site):
    model = tiny_models["llama"]  # resid_mid is written back through the residual: its gradient must survive

    def metric(r):
        return r.logits[:, -1, 5]

    sal = at.saliency(model, "hello world", metric, at=site, abs=False).map
    ref = model.run("hello world", grad_at=[site], grad_of=lambda r: metric(r).sum()).grads[site]
    assert sal.abs().sum() > 0 and torch.allclose(sal, ref, atol=1e-6)


def test_attribution_to_dict_is_json(cnn, data):
    x, y = data
    ig = at.integrated_gradients(cnn, x, y, steps=12).with_metrics(note="ok")
    d = json.loads(json.dumps(ig.to_dict()))
    assert d["method"] == "integrated_gradients" and d["metrics"] == {"note": "ok"} and len(d["map"]) == 6
    assert d["model"]["weights_sha256"] and "map" not in ig.to_dict(maps=False)


# --- CAMs ----------------------------------------------------------------------------------------------------------


def _acts_and_grads(model: ms.Model, site: str, x, y):
    """Activations at ``site`` and d logit[y] / d activations, with plain hooks and autograd."""
    store = {}
    handle = model.module.get_submodule(site).register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    out = model.module(x)
    handle.remove()
    (g,) = torch.autograd.grad(out.gather(1, y[:, None]).sum(), store["a"])
    return store["a"].detach(), g


def _up(cam):
    return F.interpolate(cam[:, None], size=(32, 32), mode="bilinear", align_corners=False)


def test_grad_cam_is_cam_on_a_gap_linear_net(gap_cnn, data):
    x, y = data
    a, _ = _acts_and_grads(gap_cnn, "relu2", x, y)
    w = gap_cnn.module.head.weight[y]  # [b c]: d logit / d A_cij = w_c / (h w)
    cam = (w[:, :, None, None] * a).sum(1).clamp_min(0) / (a.shape[2] * a.shape[3])
    ours = at.grad_cam(gap_cnn, x, y, at="relu2")
    assert torch.allclose(ours.map, _up(cam), atol=1e-6)
    assert ours.params == {"grid": [16, 16], "leading_tokens": 0}


def test_cam_family_follows_definitions(cnn, data):
    x, y = data
    a, g = _acts_and_grads(cnn, "relu4", x, y)
    grad_cam = (g.mean((2, 3), keepdim=True) * a).sum(1).clamp_min(0)
    assert torch.allclose(at.grad_cam(cnn, x, y, at="features").map, _up(grad_cam), atol=1e-6)
    layer = (g.clamp_min(0) * a).sum(1).clamp_min(0)
    assert torch.allclose(at.layer_cam(cnn, x, y, at="features").map, _up(layer), atol=1e-6)
    s = a.sum((2, 3), keepdim=True)
    alpha = torch.where(g > 0, g**2 / (2 * g**2 + s * g**3), torch.zeros_like(g))
    pp = ((alpha * g.clamp_min(0)).sum((2, 3), keepdim=True) * a).sum(1).clamp_min(0)
    assert torch.allclose(at.grad_cam_pp(cnn, x, y, at="features", eps=0).map, _up(pp), atol=1e-5)


def test_score_cam_and_eigen_cam_follow_definitions(cnn, data):
    x, y = data
    a, _ = _acts_and_grads(cnn, "relu4", x, y)
    b, c = a.shape[:2]
    weights = torch.zeros(b, c)
    with torch.no_grad():
        for k in range(c):
            m = F.interpolate(a[:, k : k + 1], size=(32, 32), mode="bilinear", align_corners=True)
            lo, hi = m.amin((2, 3), keepdim=True), m.amax((2, 3), keepdim=True)
            weights[:, k] = cnn.module(x * (m - lo) / (hi - lo + 1e-8)).gather(1, y[:, None])[:, 0]
    score = (weights.softmax(-1)[:, :, None, None] * a).sum(1).clamp_min(0)
    assert torch.allclose(at.score_cam(cnn, x, y, at="features").map, _up(score), atol=1e-5)
    eig = at.eigen_cam(cnn, x, at="features")
    for i in range(b):  # per image: |projection on the first principal component|, up to the chosen sign
        flat = a[i].reshape(c, -1).T
        centred = flat - flat.mean(0)
        v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        proj = centred @ v
        proj = proj if (proj * flat.mean(1)).sum() >= 0 else -proj
        assert torch.allclose(eig.map[i], _up(proj.reshape(1, 8, 8).clamp_min(0))[0], atol=1e-4)


def test_vit_token_grid_is_detected():
    d = 5
    for tokens, side, lead in [(64, 8, 0), (65, 8, 1), (66, 8, 2), (50, 7, 1), (197, 14, 1)]:
        grid, prefix = at.token_grid(torch.randn(2, tokens, d))
        assert grid.shape == (2, d, side, side) and prefix == lead
    t = torch.arange(2 * 65 * d, dtype=torch.float).reshape(2, 65, d)
    grid, _ = at.token_grid(t)
    assert torch.equal(grid[1, :, 2, 3], t[1, 1 + 2 * 8 + 3])  # row-major patches after the CLS token
    with pytest.raises(ValueError, match="square patch grid"):
        at.token_grid(torch.randn(2, 70, d))


def test_grad_cam_on_vit_reshapes_tokens(vit, data):
    x, y = data
    acts, g = _acts_and_grads(vit, "blocks.1.norm1", x, y)  # [b 65 d]
    a = acts[:, 1:].reshape(6, 8, 8, -1).permute(0, 3, 1, 2)
    gg = g[:, 1:].reshape(6, 8, 8, -1).permute(0, 3, 1, 2)
    expected = (gg.mean((2, 3), keepdim=True) * a).sum(1).clamp_min(0)
    ours = at.grad_cam(vit, x, y, at="blocks.1.norm1")
    assert ours.params == {"grid": [8, 8], "leading_tokens": 1}
    assert torch.allclose(ours.map, _up(expected), atol=1e-6)
    assert at.eigen_cam(vit, x, at="blocks.1.norm1").map.shape == (6, 1, 32, 32)


GOLDENS = Path(__file__).parent / "goldens" / "gradcam.safetensors"  # benchmarks/make_gradcam_goldens.py


def _affine_residual(ours, gold):
    """Max residual of the best per-image fit ``gold ~ a * ours + b`` (and the slopes ``a``).

    pytorch-grad-cam min-max scales the grid-sized map and then resizes it bilinearly; mechscope resizes and keeps
    the scale. Both steps are affine per image, so the peer's map is an affine function of ours, exactly.
    """
    ones = torch.ones_like(ours.flatten(1))
    design = torch.stack([ours.flatten(1), ones], -1).double()  # [b pixels 2]
    sol = torch.linalg.lstsq(design, gold.flatten(1, -1).double()[..., None]).solution  # [b 2 1]
    fit = (design @ sol)[..., 0]
    return (fit - gold.flatten(1).double()).abs().amax(1), sol[:, 0, 0]


@pytest.mark.parametrize("arch", ["cnn", "vit"])
def test_cams_match_pytorch_grad_cam_goldens(arch):
    from safetensors import safe_open

    with safe_open(str(GOLDENS), "pt") as f:  # committed; a missing file fails the test
        meta = json.loads(f.metadata()["meta"])
        gold = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
    module, sha = _organisms.numpy_seeded(arch, meta["seed"])
    assert sha == meta[arch]["weights_sha256"], "numpy_seeded no longer rebuilds the goldens' weights: regenerate"
    model = ms.wrap(module)
    x, y, site = gold["images"], gold["labels"].long(), meta[arch]["layer"]
    methods = {"GradCAM": at.grad_cam, "GradCAMPlusPlus": at.grad_cam_pp, "ScoreCAM": at.score_cam,
               "LayerCAM": at.layer_cam}  # fmt: skip
    for key, method in methods.items():
        peer = gold[f"{arch}/{key}"]
        assert (peer.flatten(1).amax(1) > 0.99).sum() >= 4, f"{key}: goldens too degenerate to compare"
        ours = method(model, x, y, at=site).map[:, 0]
        residual, slope = _affine_residual(ours, peer)
        live = peer.flatten(1).amax(1) > 0  # an all-zero map (ReLU of a negative map) fits any slope
        assert (residual < 2e-3).all(), (key, residual)
        assert (slope[live] > 0).all(), (key, slope)
    # Eigen-CAM: a principal component's sign is arbitrary: mechscope orients it towards the activation mass,
    # pytorch-grad-cam keeps whatever its LAPACK returns (it differs between numpy builds). Where the orientations
    # agree the maps must match; every peer map must be one half (ReLU of one sign) of the same projection.
    ours = at.eigen_cam(model, x, at=site).map[:, 0]
    residual, slope = _affine_residual(ours, gold[f"{arch}/EigenCAM"])
    assert ((residual < 2e-3) & (slope > 0)).sum() >= 1, residual  # cnn: 3 of 6 images agree, vit: 1
    grid, _ = at.token_grid(model.run(x, cache=[site]).cache[site])
    flat = grid.flatten(2).transpose(1, 2)  # [b hw c]
    centred = flat - flat.mean(1, keepdim=True)
    proj = torch.einsum("bpc,bc->bp", centred, torch.linalg.svd(centred, full_matrices=False).Vh[:, 0])
    halves = [_affine_residual(_up((s * proj).unflatten(1, grid.shape[2:]).clamp_min(0))[:, 0],
                               gold[f"{arch}/EigenCAM"])[0] for s in (1, -1)]  # fmt: skip
    assert (torch.minimum(*halves) < 2e-3).all(), halves


# --- quality metrics on the signal-block organism -----------------------------------------------------------------


@pytest.mark.slow
def test_signal_block_organism_localises(blocks):
    assert blocks.accuracy >= 0.9 and blocks.spec.data == "signal_blocks"
    x, y, mask = blocks.test.images[:32], blocks.test.labels[:32], blocks.test.masks[:32]
    random = at.localisation(torch.rand(32, 32, 32, generator=torch.Generator().manual_seed(0)), mask)
    assert abs(random["mass_in_mask"] - 0.25) < 0.02
    maps = [at.saliency(blocks.model, x, y), at.integrated_gradients(blocks.model, x, y),
            at.grad_cam(blocks.model, x, y, at=blocks.cam_site)]  # fmt: skip
    for a in maps:
        loc = at.localisation(a, mask)
        assert loc["mass_in_mask"] > random["mass_in_mask"] + 0.25, (a.method, loc)
        assert loc["top_k_precision"] > random["top_k_precision"] + 0.25, (a.method, loc)


def test_deletion_insertion_beat_chance(blocks):
    x, y = blocks.test.images[:16], blocks.test.labels[:16]
    curves = at.deletion_insertion(blocks.model, x, y, at.integrated_gradients(blocks.model, x, y), steps=8)
    auc = curves.auc()
    assert curves.score == "probability" and curves.deletion.shape == (16, 9)
    assert auc["deletion"] < auc["deletion_chance"] - 0.1
    assert auc["insertion"] > auc["insertion_chance"] + 0.1
    assert torch.allclose(curves.deletion[:, 0], curves.deletion_chance[:, 0])  # same unperturbed start


def test_randomisation_separates_gradients_from_edge_detector(blocks):
    x, y = blocks.test.images[:8], blocks.test.labels[:8]
    sal = at.randomisation_check(blocks.model, x, y, at.saliency)
    edge = at.randomisation_check(blocks.model, x, y, at.edge_detector)
    assert sal.stages[0] == "head" and len(sal.stages) == 5
    assert sal.final()["spearman_abs"] < 0.3 and sal.final()["ssim"] < 0.3
    assert edge.final()["spearman_abs"] > 0.999 and edge.final()["ssim"] > 0.999
    cam = at.randomisation_check(blocks.model, x, y, functools.partial(at.grad_cam, at="features"))
    assert cam.final()["spearman_abs"] < 0.5
    # the check works on a copy: the organism's weights are untouched
    assert torch.allclose(at.saliency(blocks.model, x, y).map, at.saliency(blocks.model, x, y).map)
    assert blocks.model.provenance["weights_sha256"] == blocks.sha256


def test_spearman_handles_ties():
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0]])
    assert torch.allclose(at.spearman(a, a), torch.tensor([1.0], dtype=torch.float64))
    assert torch.allclose(at.spearman(a, -a), torch.tensor([-1.0], dtype=torch.float64))


# --- organisms -----------------------------------------------------------------------------------------------------


def test_organism_cache_round_trip_and_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    spec = dataclasses.replace(_organisms.SPECS["shapes-cnn"], epochs=1, per_epoch=128, min_accuracy=0.0)
    monkeypatch.setitem(_organisms.SPECS, "test-cnn", spec)
    first = organisms.vision_organism("test-cnn", seed=1)
    assert first.seconds > 0 and len(first.test) == 256
    again = organisms.vision_organism("test-cnn", seed=1)
    assert again.seconds == 0 and again.sha256 == first.sha256
    weights = next(tmp_path.rglob("organism.safetensors"))
    x = first.test.images[:4]
    assert torch.equal(first.model.module(x), again.model.module(x))
    assert first.model.provenance["weights_sha256"] == first.sha256 == organisms.read_card(weights.parent)["sha256"]
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # corrupt: the checksum no longer matches
    with pytest.raises(organisms.OrganismChecksumError, match="does not match its card"):
        organisms.vision_organism("test-cnn", seed=1)
    rebuilt = organisms.vision_organism("test-cnn", seed=1, rebuild=True)
    assert rebuilt.seconds > 0 and rebuilt.sha256 == first.sha256  # retrained identically from the seed


# --- token attribution ----------------------------------------------------------------------------------------------


def test_token_attribution_is_causal_and_renders(tiny_models, tmp_path):
    model = tiny_models["llama"]
    tok = at.token_attribution(model, "hello world", continuation=" ab", steps=12)
    n = tok.n_prompt
    assert tok.new_tokens == [" ", "a", "b"] and tok.scores.shape == (3, n + 3)
    for i in range(3):
        assert (tok.scores[i, n + i :] == 0).all()  # a token cannot be driven by itself or later ones
        assert tok.scores[i, : n + i].abs().sum() > 0
    from mechscope.report._attribution import token_heatmap, token_html

    html = token_html(tok)
    assert html.count('class="row"') == 3 and "hello"[0] in html
    token_heatmap(tok, tmp_path / "tokens.png")
    assert (tmp_path / "tokens.png").stat().st_size > 1000
    json.dumps(tok.to_dict())


def test_token_input_x_gradient_matches_autograd(tiny_models):
    model = tiny_models["llama"]
    tok = at.token_attribution(model, "abc", continuation="d", method="input_x_gradient")
    ids = torch.tensor([model.tokenizer("abcd")["input_ids"]])
    emb = model.module.get_input_embeddings()(ids).detach().requires_grad_()
    logit = model.module(inputs_embeds=emb).logits[0, -2, ids[0, -1]]
    (g,) = torch.autograd.grad(logit, emb)
    assert torch.allclose(tok.scores[0], (g * emb).sum(-1)[0], atol=1e-5)


def test_token_attribution_greedy_generation(tiny_models):
    tok = at.token_attribution(tiny_models["llama"], "hi", max_new_tokens=2, steps=8)
    assert len(tok.new_tokens) == 2 and tok.completeness_gap.shape == (2,)
    assert tok.params["baseline"] == "zero" and tok.params["keep_first"]
    assert (tok.scores[:, 0] == 0).all()  # the first position keeps its embedding: no path, no attribution
    assert len(tok.top(1, k=2)) == 2


@pytest.mark.real
def test_token_attribution_on_smollm2(smol):
    tok = at.token_attribution(smol, "The capital of France is", continuation=" Paris", method="input_x_gradient")
    assert tok.new_tokens == [" Paris"]
    assert tok.top(0, k=1)[0][0] in (" France", " capital")
