"""``mechscope attribute``, image files and overlays, and the report's demo sections."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mechscope import attribution as at
from mechscope import organisms
from mechscope.cli import app
from mechscope.data import images as im

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_png_round_trip_keeps_the_organisms_predictions(tmp_path):
    d = im.shapes(8, seed=2)
    for i in range(8):
        im.write_png(tmp_path / f"shape{i}.png", im.to_rgb(im.to_pixels(d.images[i]), minmax=False))
    x = im.standardise(im.read_images(im.image_files(tmp_path), size=32))
    assert (x - d.images).abs().max() < 0.05  # 8-bit quantisation of a 4-unit range, clipped tails
    org = organisms.vision_organism("shapes-cnn")
    assert torch.equal(org.model.module(x).argmax(-1), org.model.module(d.images).argmax(-1))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        im.image_files(tmp_path / "empty")


def test_cli_organism_images_with_metrics_and_json(tmp_path):
    res = invoke("attribute", "-m", "integrated_gradients", "-m", "grad_cam", "--n", "3", "--metrics",
                 "--target", "label", "--out", str(tmp_path), "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert [m["method"] for m in summary["methods"]] == ["integrated_gradients", "grad_cam"]
    ig = summary["methods"][0]
    assert ig["metrics"]["deletion_auc"] < ig["metrics"]["deletion_chance_auc"]
    assert ig["metrics"]["localisation"]["mass_in_mask"] > ig["metrics"]["localisation"]["chance"]
    assert ig["metrics"]["completeness"]["relative_gap"] < 0.05
    assert len(summary["files"]) == 3 * 2 + 1 and all((tmp_path / p.split("/")[-1]).exists() for p in summary["files"])
    assert (tmp_path / "test000.grad_cam.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_cli_settings_reach_each_method_that_has_them(tmp_path):
    res = invoke("attribute", "-m", "integrated_gradients", "-m", "smoothgrad", "-m", "occlusion", "--steps", "6",
                 "--samples", "3", "--no-abs", "--window", "8", "--stride", "8", "--n", "2", "--out", str(tmp_path),
                 "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    params = {m["method"]: m["params"] for m in json.loads(res.stdout)["methods"]}
    assert params["integrated_gradients"]["steps"] == 6
    assert params["smoothgrad"]["samples"] == 3 and params["smoothgrad"]["abs"] is False
    assert params["occlusion"]["window"] == [1, 8, 8] and params["occlusion"]["stride"] == [1, 8, 8]
    # CAMs get the organism's layer unless --layer names another.
    cam = invoke("attribute", "-m", "layer_cam", "--layer", "relu2", "--n", "1", "--out", str(tmp_path), "--json")
    assert cam.exit_code == 0, cam.output
    assert json.loads(cam.stdout)["methods"][0]["at"] == "relu2"


def test_cli_image_folder_and_errors(tmp_path):
    d = im.shapes(2, seed=4)
    for i in range(2):
        im.write_png(tmp_path / f"s{i}.png", im.to_rgb(im.to_pixels(d.images[i]), minmax=False))
    res = invoke("attribute", str(tmp_path), "-m", "saliency", "--out", str(tmp_path / "o"), "--json")
    assert res.exit_code == 0, res.output
    assert [i["name"] for i in json.loads(res.stdout)["images"]] == ["s0", "s1"]
    bad = invoke("attribute", "-m", "magic", "--n", "1", "--out", str(tmp_path / "o"))
    assert bad.exit_code == 1 and "unknown attribution method 'magic'" in bad.output
    # A setting goes to every chosen method that has it; one that no chosen method has is an error naming its owner.
    foreign = invoke("attribute", "-m", "saliency", "-m", "grad_cam", "--samples", "3", "--n", "1", "--out",
                     str(tmp_path / "o"))  # fmt: skip
    assert foreign.exit_code == 1 and "--samples is a setting of smoothgrad" in foreign.output
    missing = invoke("attribute", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o"))
    assert missing.exit_code == 3 and "nope.png" in missing.output  # not found


def test_cli_prompt_writes_self_contained_token_html(tmp_path):
    res = invoke("attribute", "--prompt", "hello world", "--model", "tiny-llama", "--max-new-tokens", "2",
                 "--steps", "8", "--out", str(tmp_path), "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert len(summary["new_tokens"]) == 2
    page = (tmp_path / "tokens.html").read_text()
    assert page.count('class="row"') == 2 and "http" not in page
    assert (tmp_path / "tokens.png").stat().st_size > 1000


def test_demo_sections_are_self_contained(tiny_models, tmp_path):
    from mechscope.report._attribution import attribution_sections

    sections = attribution_sections(tiny_models["llama"], tmp_path)
    assert [t for t, _ in sections] == ["Input attribution on a small CNN", "Token attribution on SmolLM2"]
    for _, body in sections:
        assert "data:image/png;base64," in body and "src='http" not in body and 'src="http' not in body
    assert "randomisation" in sections[0][1] and "<table" in sections[0][1]
    assert (tmp_path / "attribution_gallery.png").exists() and (tmp_path / "token_attribution.html").exists()


def test_declared_configs_carry_the_library_functions_defaults():
    import inspect

    from mechscope.attribution import METHODS

    checked = 0
    for spec in METHODS:
        fn = getattr(at, spec.name)
        params = inspect.signature(fn).parameters
        for field in spec.fields():
            if field.name in params:
                assert params[field.name].default == field.default, (spec.name, field.name)
                checked += 1
    assert checked >= 15  # steps, rule, baseline, samples, noise, window, epsilon, eps, ...
