"""Report sections for the lenses family: every declared result type renders, with its numbers in the page."""

from __future__ import annotations

import pytest
import torch

import mechscope as ms
from mechscope.lenses import (
    METHODS,
    CompositionConfig,
    HeadTypesConfig,
    ProbeConfig,
    SimilarityConfig,
    SteerConfig,
    TunedLens,
    WeightsConfig,
    evaluate_tuned_lens,
    logit_lens,
    logit_lens_grid,
    train_probe,
    tuned_lens,
)
from mechscope.lenses._tuned_train import TrainLensConfig
from mechscope.report import lens_section, render_report
from mechscope.report._lens_sections import SECTIONS


def test_every_declared_result_type_has_a_section() -> None:
    declared = {spec.result for spec in METHODS.specs()}
    assert declared <= set(SECTIONS), declared - set(SECTIONS)


def test_sections_show_the_results_numbers() -> None:
    model = ms.tiny("llama")
    lens = logit_lens(model, "hello", top_k=2)
    title, body = lens_section(lens)
    assert title == "Logit lens" and "<img" in body and f"{float(lens.answer_probs[0, 1]):.4g}" in body
    assert lens_section(tuned_lens(model, TunedLens.for_model(model), "hello"))[0] == "Tuned lens"
    evaluation = evaluate_tuned_lens(model, TunedLens.for_model(model), TrainLensConfig(held_out=2, ctx_len=16))
    assert f"{evaluation.kl_logit[0]:.3g}" in lens_section(evaluation)[1]
    assert "<img" in lens_section(logit_lens_grid(model, "hi"))[1]
    types = METHODS["head-types"](model, config=HeadTypesConfig(rep_len=4, n_seqs=2))
    (layer, head), score = types.top("induction", 1)[0]
    assert f"{layer}.{head}" in lens_section(types)[1] and f"{score:.3g}" in lens_section(types)[1]
    assert "writer" in lens_section(METHODS["composition"](model, config=CompositionConfig()))[1]
    assert "OV" in lens_section(METHODS["weights"](model, config=WeightsConfig()))[1]
    g = torch.Generator().manual_seed(0)
    acts, labels = torch.randn(40, 8, generator=g), torch.arange(40) % 2
    probe = train_probe(acts, labels, ProbeConfig())
    assert f"{probe.accuracy:.3g}" in lens_section(probe)[1]
    sim = METHODS["similarity"](model, ["hello world", "abc def"], config=SimilarityConfig(sites="resid_post.*"))
    assert "<img" in lens_section(sim)[1]
    sweep = METHODS["steer"](model, config=SteerConfig(task="induction", n=4, layers=(1,), scales=(0.0, 2.0),
                                                       damage_texts=1, damage_len=8))  # fmt: skip
    assert lens_section(sweep)[0] == "Steering: induction"
    page = render_report("lenses", [lens_section(lens), lens_section(probe)])
    assert page.count("<h2") >= 2
    with pytest.raises(TypeError, match="no report section for int"):
        lens_section(3)
