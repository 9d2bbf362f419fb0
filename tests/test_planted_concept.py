"""Ground truth for probes and steering: the planted-concept organism and the representations family's bench rows.

The organism computes a known concept direction at ``resid_post.0`` that drives one behaviour and not another
(``organisms.PlantedConcept``). A probe must recover the direction with high selectivity, a probe on shuffled labels
must stay at chance, and steering along the recovered direction must move the planted behaviour and not the other.
Each test names what would break it.
"""

import math
from pathlib import Path

import pytest
import torch

from mechscope import organisms
from mechscope.bench import _concepts as adapter
from mechscope.bench._registry import RunContext


@pytest.fixture(scope="module")
def planted() -> organisms.BuiltPlantedConcept:
    built = organisms.PlantedConcept().build(0)
    built.verification = built.verify()
    return built


def _scores(planted, method, seed: int = 1) -> dict[str, float]:
    out = getattr(adapter, method)(planted, RunContext(seed, True, Path(".")))
    return {s.metric: s.value for s in adapter.concept_scores(out, planted, method)}


def test_planted_concept_verifies_and_fails_when_the_concept_leaks_into_the_other_behaviour(planted):
    v = planted.verification
    assert v["planted_sign_accuracy"] == v["other_sign_accuracy"] == v["direction_reads_label"] == 1.0
    assert v["u_moves_planted"] > 1.0 and abs(v["u_moves_other"]) < 0.05 * v["u_moves_planted"]
    broken = organisms.PlantedConcept().build(0)
    with torch.no_grad():  # the other behaviour's neuron also reads the concept direction: u is no longer specific
        broken.gpt2.transformer.h[1].mlp.c_fc.weight[:, 2] += 0.5 * broken.direction
    with pytest.raises(organisms.OrganismVerificationError, match="adding u leaves the other behaviour"):
        broken.verify()


def test_a_cached_copy_behaves_like_the_build(planted):
    loaded = organisms.PlantedConcept().load(0, {k: v.clone() for k, v in planted.tensors().items()})
    tokens = planted.prompts(16, seed=5)
    for a, b in zip(planted.behaviours(tokens), loaded.behaviours(tokens), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(loaded.direction, planted.direction)


def test_oracle_scores_one_and_random_directions_score_near_chance(planted):
    oracle = _scores(planted, "oracle")
    assert oracle["direction_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert oracle["steer_planted"] == pytest.approx(1.0, abs=1e-6)
    assert oracle["steer_other"] < 0.02
    runs = [adapter.concept_scores(adapter.random_direction(planted, RunContext(seed, True, Path("."))), planted, "r")
            for seed in range(60)]  # fmt: skip
    mean = {m: sum(s.value for r in runs for s in r if s.metric == m) / 60 for m in ("direction_cosine",
            "steer_planted", "steer_other")}  # fmt: skip
    chance = {s.metric: s.chance for s in runs[0]}
    assert mean["direction_cosine"] == pytest.approx(chance["direction_cosine"], abs=0.03)  # 0.142 in 32 dimensions
    assert mean["steer_planted"] == pytest.approx(0.0, abs=0.08)
    assert mean["steer_other"] == pytest.approx(chance["steer_other"], abs=0.07)


def test_probe_recovers_the_planted_direction_selectively_and_steers_with_it(planted):
    s = _scores(planted, "probe")
    assert s["direction_cosine"] > 0.9
    assert s["probe_accuracy"] > 0.9
    assert s["probe_selectivity"] > 0.15  # ~250 byte types in 32 dimensions: the control task is not memorised
    assert s["steer_planted"] > 0.85
    assert s["steer_other"] < 0.15


def test_probe_on_shuffled_labels_stays_at_chance(planted):
    s = _scores(planted, "shuffled_labels")
    _, labels = planted.labelled(adapter.N_PROMPTS, 10_000)
    majority = float(torch.bincount(labels).max()) / len(labels)
    assert s["probe_accuracy"] < majority + 0.08
    assert s["direction_cosine"] < 0.5
    assert abs(s["probe_selectivity"]) < 0.15


def test_caa_vector_points_along_the_concept(planted):
    s = _scores(planted, "caa")
    assert s["direction_cosine"] > 0.9
    assert s["steer_planted"] > 0.85


def test_random_cosine_mean_matches_monte_carlo():
    d = 32
    x = torch.randn(200_000, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mc = float((x[:, 0] / x.norm(dim=1)).abs().mean())
    assert adapter.random_cosine_mean(d) == pytest.approx(mc, abs=2e-3)
    assert adapter.random_cosine_mean(10_000) == pytest.approx(math.sqrt(2 / (math.pi * 10_000)), rel=1e-3)
