"""Plug-ins: an attribution method and a dictionary kind, each added with one declaration and no other edit.

Each appears in the command line's help with its option, runs from the command line with a config option, and
reaches the bench (the attribution method is scored by the vision bench's adapter, the kind by the features
family's adapter, which trains it through the kinds registry) and the report.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import mechscope as ms
from mechscope import attribution as at
from mechscope import bench, organisms
from mechscope.core._registry import MethodSpec
from mechscope.features import KINDS, Dictionary, TrainResult, load_dictionary, recovery, train, train_config
from mechscope.organisms import FeatureConfig, SmallCNN, SyntheticFeatures

# --- the plug-ins: one declaration each --------------------------------------------------------------------------


@dataclass(frozen=True)
class GradPowerConfig:
    power: float = 2.0
    """Exponent of |gradient| (1: plain saliency)."""


def grad_power(model: Any, inputs: Any, target: Any, config: GradPowerConfig) -> at.Attribution:
    """|Gradient| raised to a power: sharper saliency."""
    a = at.saliency(model, inputs, target)
    return dataclasses.replace(a, map=a.map**config.power, method="grad_power", params={"power": config.power})


GRAD_POWER = MethodSpec("attribution", "grad_power", GradPowerConfig, grad_power, at.Attribution,
                        "|Gradient| raised to a power.", frozenset({"cnn", "bench"}))  # fmt: skip


@dataclass(frozen=True)
class CappedConfig:
    cap: float = 6.0
    """Largest value a latent may take."""
    l1_coeff: float = 0.05
    """Weight of the L1 penalty."""


class CappedReLUDictionary(Dictionary):
    """ReLU latents capped at ``cap``, with an L1 penalty."""

    def activate(self, pre_acts: torch.Tensor) -> torch.Tensor:
        return pre_acts.clamp(0, self.settings.cap)

    def sparsity_penalty(self, pre_acts: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return latents.sum(-1).mean()

    def penalty_coeff(self, config: Any) -> float:
        return config.l1_coeff


CAPPED = MethodSpec("dictionary kind", "capped_relu", CappedConfig, CappedReLUDictionary, CappedReLUDictionary,
                    "ReLU capped at a value.", frozenset())  # fmt: skip


# --- helpers -----------------------------------------------------------------------------------------------------


def fresh_cli(*modules: str) -> Any:
    """The command line built again (it reads the registries when its commands are defined)."""
    import mechscope.cli

    for name in modules:
        importlib.reload(importlib.import_module(name))
    return importlib.reload(mechscope.cli).app


@pytest.fixture
def cli_restored():
    yield
    fresh_cli("mechscope.cli._attribution", "mechscope.cli._features")


def invoke(app: Any, *args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})  # help text on one line per option


# --- attribution -------------------------------------------------------------------------------------------------


def test_a_declared_attribution_method_reaches_cli_bench_and_report(tmp_path, cli_restored):
    with at.METHODS.added(GRAD_POWER):
        app = fresh_cli("mechscope.cli._attribution")
        help_text = invoke(app, "attribute", "--help").output
        assert "grad_power" in help_text and "--power" in help_text and "Exponent of" in help_text
        res = invoke(app, "attribute", "-m", "grad_power", "-m", "saliency", "--power", "3", "--n", "2", "--out",
                     str(tmp_path), "--json")  # fmt: skip
        assert res.exit_code == 0, res.output
        methods = json.loads(res.stdout)["methods"]
        assert [m["method"] for m in methods] == ["grad_power", "saliency"] and methods[0]["params"] == {"power": 3}
        assert (tmp_path / "test000.grad_power.png").exists() and (tmp_path / "gallery.png").exists()
        wrong = invoke(app, "attribute", "-m", "saliency", "--power", "3", "--n", "1", "--out", str(tmp_path))
        assert wrong.exit_code == 1 and "--power is a setting of grad_power, not of saliency" in wrong.output

        # The vision bench scores it through its one adapter, with the library's Attribution as the output.
        from mechscope.bench._vision_scorers import mass_in

        suite = bench.default_suite()  # reads the declared methods when built: the plug-in is in it
        method = suite.methods["attribution/grad_power"]
        assert not method.baseline and "trojans/grad_power" in suite.methods
        model, twin = (ms.wrap(SmallCNN(width=8).eval(), name=n) for n in ("a", "b"))
        organism = organisms.BuiltBlocks(organisms.BlocksConfig(), 0, model, twin)
        ctx = bench.RunContext(seed=0, quick=True, workdir=tmp_path)
        out = method.fn(organism, ctx)
        assert isinstance(out.maps, at.Attribution) and out.maps.method == "grad_power"
        p = organism.probe(len(out.maps.map))
        want = at.saliency(model, p.images, p.labels).map.pow(2).sum(1)  # the default power, channels summed
        torch.testing.assert_close(out.maps.heatmap(), want)
        got = {s.metric: s.value for s in suite.score("attribution", out, organism, "grad_power")}
        assert set(got) == {"signal_mass", "top_k_precision", "randomisation"}
        twin_masks = organism.twin_probe(len(out.maps.map)).masks
        mean_mass = (mass_in(want, p.masks) + mass_in(out.twin_maps.heatmap(), twin_masks)) / 2
        assert got["signal_mass"] == pytest.approx(mean_mass)

        # The report draws it like any other method.
        from mechscope.report._attribution import gallery

        x = torch.randn(2, 1, 32, 32)
        a = at.METHODS["grad_power"](model, x, torch.tensor([0, 1]), power=1.5)
        assert a.params == {"power": 1.5} and gallery(x, [a])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "grad_power" not in at.METHODS


# --- dictionary kinds --------------------------------------------------------------------------------------------


def test_a_declared_dictionary_kind_reaches_cli_and_training(tmp_path, cli_restored):
    with KINDS.added(CAPPED):
        app = fresh_cli("mechscope.cli._features")
        help_text = invoke(app, "dict", "train", "--help").output
        assert "capped_relu" in help_text and "--cap" in help_text and "Largest value" in help_text

        # Through the library: the kind's settings are saved with the dictionary and read back typed.
        x = torch.randn(2048, 8) * 3
        config = train_config("capped_relu", 8, 16, CappedConfig(cap=0.5), batch_size=128, n_tokens=128 * 20,
                              log_every=5)  # fmt: skip
        assert config.l1_coeff == 0.05 and config.dictionary.options == {"cap": 0.5}
        result = train(config, x, tmp_path / "lib", progress=False)
        assert isinstance(result.dictionary, CappedReLUDictionary) and result.steps == 20
        loaded = load_dictionary(tmp_path / "lib")
        assert type(loaded) is CappedReLUDictionary and loaded.settings == CappedConfig(cap=0.5, l1_coeff=0.05)
        latents = loaded.encode(x).detach()
        assert latents.max() == pytest.approx(0.5) and latents.min() >= 0

        # From the command line, on a store.
        store, run = tmp_path / "store", tmp_path / "run"
        h = invoke(app, "harvest", str(store), "--site", "resid_post.1", "--model", "tiny-llama", "--max-tokens",
                   "1024", "--ctx-len", "64", "--json")  # fmt: skip
        assert h.exit_code == 0, h.output
        t = invoke(app, "dict", "train", str(store), str(run), "--kind", "capped_relu", "--cap", "0.25",
                   "--expansion", "1", "--batch-size", "64", "--n-tokens", "640", "--json")  # fmt: skip
        assert t.exit_code == 0, t.output
        trained = load_dictionary(run)
        assert type(trained) is CappedReLUDictionary and trained.settings.cap == 0.25
        page = (run / "report.html").read_text()  # the run's report: the dictionary's section
        assert "capped_relu" in page and "<td>cap</td><td>0.25</td>" in page and json.loads(t.stdout)["report"]
        wrong = invoke(app, "dict", "train", str(store), str(tmp_path / "r2"), "--kind", "topk", "--cap", "1")
        assert wrong.exit_code == 1 and "--cap is a setting of capped_relu, not of topk" in wrong.output
    assert "capped_relu" not in KINDS


def test_a_declared_dictionary_kind_is_scored_by_the_bench_and_renders(tmp_path):
    from mechscope.report import dictionary_section, render_report

    with KINDS.added(CAPPED):
        suite = bench.default_suite()  # reads the declared kinds when built: the plug-in is in it
        method = suite.methods["features/capped_relu_sae"]
        assert not method.baseline and "features/topk_sae" in suite.methods
        organism = SyntheticFeatures(FeatureConfig(n_samples=2048)).build(0)
        out = method.fn(organism, bench.RunContext(seed=0, quick=True, workdir=tmp_path))
        # The library's own result: the kind trained at its defaults, at the bench's width and quick budget.
        assert isinstance(out, TrainResult) and type(out.dictionary) is CappedReLUDictionary
        assert out.dictionary.settings == CappedConfig() and out.steps == 300 and out.history
        assert (out.dictionary.cfg.d_in, out.dictionary.cfg.d_sae) == (24, 96)
        scores = suite.score("features", out, organism, method.name)
        got = {s.metric: s for s in scores}
        assert set(got) == {"mmcs", "f1", "absorption"}
        rec = recovery(out.dictionary, organism.data)
        assert got["mmcs"].value == pytest.approx(rec.mmcs) and got["f1"].value == pytest.approx(rec.mean_f1)

        # The report renders the trained dictionary, its training and its scores; every cell escaped.
        odd = dataclasses.replace(scores[0], method="<toy>")
        title, body = dictionary_section(out, [*scores, odd])
        assert title == "Dictionary: capped_relu, 96 latents"
        assert "<td>cap</td><td>6.0</td>" in body and "<td>l1_coeff</td><td>0.05</td>" in body
        assert '<td>capped_relu_sae</td><td>synthetic_features</td><td class="num">0</td><td>mmcs</td>' in body
        assert "&lt;toy&gt;" in body and "<toy>" not in body
        assert body.count("<tr>") == 7 + 1 + len(out.history) + 1 + 4  # config, history, scores (+ headers)
        page = render_report("features", [(title, body)])
        assert "<script" not in page and "http" not in page
    assert "features/capped_relu_sae" not in bench.default_suite().methods
