"""Feature visualisation, exemplars and prototypes, checked against their definitions on the shapes CNN."""

import io
import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from mechscope import report
from mechscope import visualize as vz
from mechscope.cli import app
from mechscope.data.images import shapes
from mechscope.features import DictionaryConfig, build_dictionary
from mechscope.organisms import vision_organism

QUICK = vz.VisualizeConfig(steps=64, progress=False)


@pytest.fixture(scope="module")
def org():
    return vision_organism("shapes-cnn")


@pytest.fixture(scope="module")
def rng(org):
    return vz.InputRange.of(org.test.images)


def _plain_values(model, site, fn, images):
    """Brute force, one image at a time, through a plain forward hook (not mechscope's capture)."""
    out = []

    def hook(_m, _i, o):
        out.append(fn(o))

    path = model.resolve(site)[0].module  # aliases (features = relu4) name a module path
    handle = model.module.get_submodule(path).register_forward_hook(hook)
    try:
        with torch.no_grad():
            for x in images:
                model.module(x[None])
    finally:
        handle.remove()
    return torch.cat(out)


@pytest.mark.parametrize("unit", ["relu3:5", "features:6"])
def test_visualization_drives_unit_far_above_dataset(org, rng, unit):
    vis = vz.visualize(org.model, unit, (1, 32, 32), input_range=rng, config=QUICK)
    site, c = unit.split(":")
    data = _plain_values(org.model, site, lambda o: o[:, int(c)].mean((1, 2)), org.test.images)
    value = float(vis.values[0])
    assert value > data.mean() + 5 * data.std()
    assert value > data.max()
    assert vis.images.min() >= 0 and vis.images.max() <= 1
    assert vis.history[-1] > vis.history[0]
    # The reported value is the unit on the returned (untransformed) input, recomputed independently.
    again = _plain_values(org.model, site, lambda o: o[:, int(c)].mean((1, 2)), vis.inputs)
    torch.testing.assert_close(again, vis.values, rtol=1e-4, atol=1e-5)


def test_visualization_is_seeded(org, rng):
    cfg = vz.VisualizeConfig(steps=8, progress=False, seed=3)
    a = vz.visualize(org.model, "relu3:5", (1, 32, 32), input_range=rng, config=cfg)
    b = vz.visualize(org.model, "relu3:5", (1, 32, 32), input_range=rng, config=cfg)
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=0)


def test_fourier_param_is_valid_image_with_gradient():
    colour = vz.colour_matrix(None, 3)
    p = vz.FourierImage(2, (3, 16, 20), colour=colour, generator=torch.Generator().manual_seed(0))
    p.spectrum.data *= 300  # far from grey, to exercise the sigmoid's range
    img = p()
    assert img.shape == (2, 3, 16, 20)
    assert img.min() > 0 and img.max() < 1 and img.std() > 0.1
    img[:, 0, 3, 4].sum().backward()  # one pixel's gradient reaches (nearly) every frequency
    g = p.spectrum.grad
    assert torch.isfinite(g).all()
    assert (g.abs() > 0).float().mean() > 0.9
    # The 1/f scaling gives a natural-image-like spectrum (slope near -2 in power), white pixels are flat (~0).
    with torch.no_grad():
        four = vz.FourierImage(16, (1, 32, 32), colour=torch.eye(1), generator=torch.Generator().manual_seed(1))
        pix = vz.PixelImage(16, (1, 32, 32), colour=torch.eye(1), generator=torch.Generator().manual_seed(1))
        assert vz.spectrum_slope(four()) < -1.5
        assert abs(vz.spectrum_slope(pix())) < 0.3


def test_colour_matrix_is_square_root_of_covariance():
    gen = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.5, 0.3, 0.4]])
    pixels = torch.randn(20000, 3, generator=gen) @ mix.T
    images = pixels.T.reshape(3, 100, 200).permute(1, 0, 2)[:, :, :, None].reshape(100, 3, 200, 1)
    m = vz.colour_matrix(images, 3)
    cov = torch.cov(images.movedim(1, -1).reshape(-1, 3).T)
    ratio = (m @ m.T) / cov  # m m^T is the covariance up to one scale factor
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.mean())), rtol=1e-3, atol=1e-3)
    assert m.norm(dim=0).max() == pytest.approx(1.0)


def test_transforms_are_seeded_and_identity_is_exact():
    x = torch.rand(3, 1, 16, 16)
    t = vz.Transforms()
    a = t(x, torch.Generator().manual_seed(0))
    b = t(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.allclose(a, x)
    assert torch.equal(vz.Transforms(0.0, (1.0, 1.0), 0.0)(x, torch.Generator()), x)
    # A pure 2-pixel jitter keeps the content: the transformed image is a shift of the original.
    shifted = vz.Transforms(jitter=2.0, scale=(1.0, 1.0), rotate=0.0)(x, torch.Generator().manual_seed(0))
    assert F.cosine_similarity(shifted.flatten(1), x.flatten(1)).min() > 0.6


def _offdiag(s):
    return float((s.sum() - s.diagonal().sum()) / (len(s) * (len(s) - 1)))


def test_diversity_gives_distinct_images(org, rng):
    # Over every channel of relu3 (one trained model's units differ; a property of the method holds for most): the
    # Gram penalty makes the facets distinct at the unit's site and one layer up (a measure it never sees), and
    # every facet still drives its unit far above the data.
    data = _plain_values(org.model, "relu3", lambda o: o.mean((2, 3)), org.test.images)  # [images channel]
    good, converged = [], []
    for ch in range(data.shape[1]):
        unit = f"relu3:{ch}"
        same = vz.visualize(org.model, unit, (1, 32, 32), input_range=rng,
                            config=vz.VisualizeConfig(steps=64, n=3, progress=False))  # fmt: skip
        diverse = vz.visualize(org.model, unit, (1, 32, 32), input_range=rng,
                               config=vz.VisualizeConfig(steps=64, n=3, diversity=1.0, progress=False))  # fmt: skip
        pooled = [F.normalize(_plain_values(org.model, "relu4", lambda o: o.mean((2, 3)), v.inputs), dim=1)
                  for v in (same, diverse)]  # fmt: skip
        up = [_offdiag(p @ p.T) for p in pooled]
        drives = bool((diverse.values > data[:, ch].mean() + 3 * data[:, ch].std()).all())
        good.append(diverse.similarity < same.similarity - 0.2 and up[1] < up[0] - 0.2 and drives)
        converged.append(same.similarity)
    # Without the term the facets of most units converge to one image (a few units have several optima that
    # different starts reach even without the term: 1 of 32 on an AVX-512 build).
    assert sum(s > 0.9 for s in converged) >= 0.75 * data.shape[1], converged
    assert sum(good) >= data.shape[1] // 2, good


def test_prototype_path_beats_activation_max(org, rng):
    fit = shapes(256, seed=123)  # statistics fitted on images other than the held-out ones scored
    paths = vz.class_paths(org.model, fit.images, fit.labels, vz.path_sites(org.model))
    assert paths.sites == ("relu1", "relu2", "relu3", "relu4")
    held = (org.test.images, org.test.labels)
    r = vz.prototype(org.model, 0, paths, held_out=held, shape=(1, 32, 32), input_range=rng, config=QUICK,
                     logit_site="head")  # fmt: skip
    s = r.summary()
    assert s["prototype"] > s["activation_max"] + 0.05
    assert s["prototype_distance"] < 0.5 * s["activation_max_distance"]  # magnitudes too, which cosines ignore
    assert s["prototype_prob"] > 0.9
    # Scored on sites the regulariser never saw: the path is still more natural than activation maximisation's.
    reg = vz.class_paths(org.model, fit.images, fit.labels, ["relu1", "relu3"])
    score = vz.class_paths(org.model, fit.images, fit.labels, ["relu2", "relu4"])
    r2 = vz.prototype(org.model, 1, reg, held_out=held, shape=(1, 32, 32), input_range=rng, config=QUICK,
                      logit_site="head", score=score)  # fmt: skip
    assert r2.summary()["prototype"] > r2.summary()["activation_max"] + 0.03
    json.dumps(r2.to_dict())


def test_path_similarity_is_the_definition(org):
    fit = shapes(64, seed=5)
    paths = vz.class_paths(org.model, fit.images, fit.labels, ["relu2"])
    acts = _plain_values(org.model, "relu2", lambda o: o.mean((2, 3)), fit.images)  # [n channel]
    mean = acts[fit.labels == 2].mean(0)
    torch.testing.assert_close(paths.mean["relu2"][2], mean, rtol=1e-4, atol=1e-6)
    sim = vz.path_similarity(org.model, fit.images[:4], 2, paths)[:, 0]
    torch.testing.assert_close(sim, F.cosine_similarity(acts[:4], mean[None]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_exemplars_are_the_top_activating_images(org, reduce):
    images = org.test.images[:96]
    top = vz.exemplars(org.model, "relu3:7", images, k=6, reduce=reduce, batch_size=40)
    pick = (lambda o: o[:, 7].amax((1, 2))) if reduce == "max" else (lambda o: o[:, 7].mean((1, 2)))
    brute = _plain_values(org.model, "relu3", pick, images)
    order = brute.argsort(descending=True)[:6]
    assert top.indices.tolist() == order.tolist()
    torch.testing.assert_close(top.values, brute[order], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(top.all_values, brute, rtol=1e-4, atol=1e-5)


def test_receptive_field_box_is_exactly_what_influences_the_position(org):
    images = org.test.images[:32]
    top = vz.exemplars(org.model, "relu3:7", images, k=3)
    for img, (y, x), (y0, x0, y1, x1) in zip(top.images, top.positions, top.boxes, strict=True):
        assert y1 - y0 <= 10 and x1 - x0 <= 10  # three 3x3 convs and one 2x2 pool: a 10-pixel field
        inside, outside = img.clone(), img.clone()
        outside[:, :, :] += 3.0
        outside[:, y0:y1, x0:x1] = img[:, y0:y1, x0:x1]  # everything outside the box changed
        inside[:, y0:y1, x0:x1] += 3.0

        def at(o, y=y, x=x):
            return o[:, :, y, x]

        base, out_v, in_v = (_plain_values(org.model, "relu3", at, t[None]) for t in (img, outside, inside))
        torch.testing.assert_close(out_v, base)
        assert not torch.allclose(in_v, base)


def test_direction_latent_and_sums(org, rng):
    x = org.test.images[:8]
    acts = {"relu3": _plain_values(org.model, "relu3", lambda o: o, x)}
    one_hot = torch.zeros(32)
    one_hot[5] = 2.0
    torch.testing.assert_close(vz.Direction("relu3", one_hot)(acts), vz.Channel("relu3", 5)(acts))
    combo = vz.Channel("relu3", 5) - 0.5 * vz.Channel("relu3", 7)
    torch.testing.assert_close(combo(acts), acts["relu3"][:, 5].mean((1, 2)) - 0.5 * acts["relu3"][:, 7].mean((1, 2)))
    sae = build_dictionary(DictionaryConfig("relu", d_in=32, d_sae=64), seed=0).eval().requires_grad_(False)
    latent = vz.Latent("relu3", sae, 3)
    flat = acts["relu3"].movedim(1, -1).reshape(-1, 32)
    torch.testing.assert_close(latent(acts), sae.pre_activations(flat)[:, 3].reshape(8, -1).mean(-1))
    vis = vz.visualize(org.model, latent, (1, 32, 32), input_range=rng, config=QUICK)
    assert vis.values[0] > latent(acts).max()


def test_bad_units_name_the_site_and_shape(org, rng):
    with pytest.raises(ValueError, match=r"'relu3' has shape \[batch 32 16 16\].*0\.\.31"):
        vz.visualize(org.model, "relu3:40", (1, 32, 32), input_range=rng, config=QUICK)
    with pytest.raises(ValueError, match=r"position needs 2 coordinate"):
        vz.exemplars(org.model, "relu3:4@40,3", org.test.images[:4])
    with pytest.raises(KeyError, match="Closest: relu4"):
        vz.visualize(org.model, "relu9:1", (1, 32, 32), input_range=rng, config=QUICK)
    with pytest.raises(ValueError, match="SITE:CHANNEL"):
        vz.parse_unit("relu3-5")
    sae = build_dictionary(DictionaryConfig("relu", d_in=16, d_sae=8))
    with pytest.raises(ValueError, match=r"reads 16 channels but site 'relu3' has shape \[batch 32 16 16\]"):
        vz.exemplars(org.model, vz.Latent("relu3", sae, 0), org.test.images[:4])


def test_png_round_trip_and_folder(tmp_path, rng):
    from PIL import Image

    img = torch.rand(3, 5, 7)
    report.save_png(tmp_path / "a.png", img)
    back = torch.from_numpy(__import__("numpy").asarray(Image.open(tmp_path / "a.png"))).permute(2, 0, 1)
    assert torch.equal(back, (img * 255).round().to(torch.uint8))
    grey = report.grid([torch.rand(1, 4, 4), torch.rand(1, 4, 4)], scale=2)
    assert grey.shape == (1, 10, 19)
    assert report.data_uri(grey).startswith("data:image/png;base64,")
    report.save_png(tmp_path / "b.png", torch.zeros(1, 8, 8))
    x, names = vz.read_folder(tmp_path, (1, 8, 8), rng)
    assert names == ["a.png", "b.png"] and x.shape == (2, 1, 8, 8)
    assert torch.allclose(x[1], torch.full((1, 8, 8), rng.lo))
    with pytest.raises(FileNotFoundError, match="no images"):
        vz.read_folder(tmp_path / "nothing", (1, 8, 8), rng) if (tmp_path / "nothing").mkdir() is None else None


def test_cli_visualize_writes_pngs_and_json(tmp_path, org):
    runner = CliRunner()
    args = ["visualize", "relu3:5", "--steps", "4", "--n", "2", "--exemplars", "3", "--prototype", "2", "--out",
            str(tmp_path), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert payload["visualization"]["unit"] == "relu3:5"
    assert len(payload["visualization"]["exemplars"]["indices"]) == 3
    assert payload["prototypes"][0]["class_name"] == "triangle"
    for name in ("relu3_5.png", "relu3_5_exemplars.png", "relu3_5_patches.png", "prototype_2.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
    # Settings come from the declared configs: both methods take --steps/--n, only prototypes --path-weight.
    assert payload["visualization"]["config"]["steps"] == 4 and payload["visualization"]["config"]["n"] == 2
    assert payload["prototypes"][0]["path_weight"] == 10.0 == vz.PrototypeConfig().path_weight
    assert payload["prototypes"][0]["config"]["n"] == 2
    help_text = runner.invoke(app, ["visualize", "--help"], env={"COLUMNS": "250"}).output
    assert "--path-weight" in help_text and "activation-path regulariser" in help_text
    foreign = runner.invoke(app, ["visualize", "relu3:5", "--path-weight", "3", "--out", str(tmp_path)])
    assert foreign.exit_code == 1 and "--path-weight is a setting of prototype, not of feature" in foreign.output
    bad = runner.invoke(app, ["visualize", "relu3:99", "--steps", "2", "--out", str(tmp_path)])
    assert bad.exit_code == 1
    assert "relu3" in bad.output and "[batch 32 16 16]" in bad.output
    # Any module from a factory (random weights here), exemplars from a folder of PNGs.
    folder = tmp_path / "imgs"
    for i in range(3):
        report.save_png(folder / f"{i}.png", torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(i)))
    args = ["visualize", "conv2:3", "--model", "mechscope.organisms:SmallCNN", "--shape", "1,32,32", "--images",
            str(folder), "--steps", "2", "--exemplars", "2", "--out", str(tmp_path / "m"), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout[result.stdout.index("{") :])["visualization"]["exemplars"]["indices"]) == 2
    no_shape = runner.invoke(app, ["visualize", "conv2:3", "--model", "mechscope.organisms:SmallCNN"])
    assert no_shape.exit_code == 1 and "--shape" in no_shape.output


def test_demo_sections_embed_images(tmp_path):
    from mechscope.report._visualize import visualize_sections

    sections = visualize_sections(tmp_path, steps=8)
    assert sections[0][0].startswith("Feature visualisation") and sections[1][0].startswith("Prototype")
    for _, html in sections:
        assert "data:image/png;base64," in html and "<script" not in html
    summary = json.loads((tmp_path / "visualize.json").read_text())
    assert len(summary["prototypes"]["results"]) == 4
    assert io.BytesIO((tmp_path / "prototypes.png").read_bytes()).read(4) == b"\x89PNG"
