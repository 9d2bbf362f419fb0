"""Feature synthesis and candidate scoring for trojans: one kind-agnostic similarity finds each kind of trigger in
images of any channel count and size; the synthesis methods are declared audit methods; the synthesised patch for
the colour organism's target picks the planted candidate; the bench's audit scorers read the truth correctly."""

import pytest
import torch

from mechscope import organisms, trojans
from mechscope.bench._registry import RunContext
from mechscope.bench._vision_methods import feature_visualisation, oracle_trojan, random_trojan
from mechscope.bench._vision_scorers import (
    TrojanOutput,
    false_alarm_chance,
    target_identification,
    trigger_reconstruction,
    twin_false_alarm,
)
from mechscope.data.images import shapes
from mechscope.data.triggers import candidates
from mechscope.organisms import ColourTrojanConfig

STEPS = 120


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared: more threads only contend
    yield
    torch.set_num_threads(threads)


def colour_images(n: int, seed: int) -> torch.Tensor:
    tint = torch.rand(n, 3, 1, 1, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.2
    return shapes(n, seed=seed).images * tint


# --- the similarity ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["patch", "blend", "natural"])
def test_similarity_picks_the_inserted_candidate_of_any_kind(kind):
    """Each candidate put into 3-channel images scores itself highest among the 8 pictures, drawn at twice the size
    (64 x 64) and given as grey: the measure knows neither the kind, the channels nor the size."""
    found = candidates(kind, seed=1003)
    x = colour_images(8, 5)
    pictures = [torch.nn.functional.interpolate(c.image()[None, None], size=(64, 64))[0, 0] for c in found]
    for i, c in enumerate(found):
        triggered, _ = c.apply(x, seed=i)
        scores = trojans.rank_candidates(triggered, pictures)
        assert max(range(8), key=scores.__getitem__) == i, (kind, i, scores)


def test_similarity_finds_a_patch_exactly_in_any_channel():
    """A pasted patch is found at its place with correlation 1 (the picture is cropped to its content), and still
    found when the first channel is noise: every channel counts, not the first one."""
    found = candidates("patch", seed=1003)
    x = colour_images(4, 6)
    triggered, _ = found[2].apply(x, seed=0)
    assert trojans.similarity(triggered, found[2].image()) > 0.999
    triggered[:, 0] = torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(0)) * 3
    scores = trojans.rank_candidates(triggered, [c.image() for c in found])
    assert max(range(8), key=scores.__getitem__) == 2, scores


def test_similarity_ignores_a_gratings_phase_and_flat_pictures():
    """A grating shifted by a quarter period still matches itself fully; a constant picture scores 0."""
    g = candidates("blend", seed=3)[0].pattern
    shifted = torch.roll(g, shifts=4, dims=1)
    assert trojans.similarity(shifted, g) > 0.95
    assert trojans.similarity(shifted, torch.ones(10, 10)) == 0.0
    with pytest.raises(ValueError, match="expected an image"):
        trojans.similarity(torch.zeros(1, 1, 1, 4, 4), g)


# --- the synthesis methods on the colour organisms -----------------------------------------------------------------


def test_synthesis_methods_are_declared_on_the_same_footing():
    names = trojans.METHODS.names()
    assert {"neural_cleanse", "blend", "class_visualisation", "prototype", "trigger_synthesis"} <= set(names)
    for name in ("class_visualisation", "prototype", "trigger_synthesis"):
        assert trojans.METHODS[name].result is trojans.ReversedTrigger


@pytest.fixture(scope="module")
def rgb():
    return organisms.obtain(organisms.TrojanRGB(), 0)


@pytest.fixture(scope="module")
def two():
    return organisms.obtain(organisms.TrojanTwo(), 0)


# --- the bench's audit scorers --------------------------------------------------------------------------------------


def test_audit_scorers_read_the_truth(two, tmp_path):
    """The oracle scores 1 / 0 / 1; a ranking that misses both targets scores 0 on identification, a twin with a
    suspect raises the alarm, and a mask off the region scores 0 reconstruction."""
    ctx = RunContext(seed=1, quick=True, workdir=tmp_path)
    oracle = oracle_trojan(two, ctx)
    assert target_identification(oracle, two, "o").value == 1.0
    assert target_identification(oracle, two, "o").chance == 0.5  # two targets among four classes
    assert twin_false_alarm(oracle, two, "o").value == 0.0
    assert trigger_reconstruction(oracle, two, "o").value == pytest.approx(1.0)
    others = [c for c in range(4) if c not in two.targets]
    off = torch.zeros(32, 32)
    off[:6, :6] = 1  # the top-left corner; the patch sits at the bottom right
    wrong = TrojanOutput(ranking=[*others, *two.targets], n_classes=4, twin_suspects=1, trigger_mask=off)
    assert target_identification(wrong, two, "w").value == 0.0
    assert twin_false_alarm(wrong, two, "w").value == 1.0
    assert trigger_reconstruction(wrong, two, "w").value == 0.0
    rand = random_trojan(two, ctx)
    assert 0 <= target_identification(rand, two, "r").value <= 1


def test_false_alarm_chance_is_the_audits_own_index():
    """The chance level counts the same anomaly index the audit computes, on normal random sizes."""
    gen = torch.Generator().manual_seed(0)
    draws = [trojans.anomaly_index(torch.randn(4, generator=gen).tolist()) for _ in range(3000)]
    rate = sum(max(a) > 2 for a in draws) / len(draws)
    assert false_alarm_chance(4) == pytest.approx(rate, abs=0.02)


def test_feature_visualisation_runs_on_colour_inputs(rgb, tmp_path):
    """The bench's pixel-space visualisation takes the organism's input shape (3 x 32 x 32), not a fixed one."""
    out = feature_visualisation(rgb, RunContext(seed=0, quick=True, workdir=tmp_path))
    assert len(out.candidates) == len(out.twin_candidates) == 8
    assert all(-1 <= v <= 1 for v in [*out.candidates, *out.twin_candidates])


# --- the colour organisms ---------------------------------------------------------------------------------------------


def test_colour_organisms_are_built_as_planned(rgb, two):
    """3-channel models; trojan_two plants a patch and a grating to two different targets, each verified."""
    assert rgb.clean(2).shape == (2, 3, 32, 32) and rgb.targets == (rgb.target,)
    assert len(two.planted) == 2 and two.planted[1].trigger.kind == "blend"
    assert two.targets[0] != two.targets[1]
    for k in range(2):
        assert two.verification[f"attack_success_{k}"] >= 0.9
        assert two.verification[f"twin_attack_success_{k}"] <= 0.3
    triggered, masks, _ = rgb.probe(4)
    assert masks.any(0).sum() == 36 and (triggered[:, 0] == triggered[:, 1])[masks].all()  # one fixed 6 x 6 place


def test_trigger_synthesis_picks_the_planted_candidate():
    """The 8-way pick: the patch synthesised for the target class of trojan_rgb is most like the planted
    candidate among the 8 pictures (given reversed, so the answer is not at the index a bug would return).

    On the recipe without displaced-trigger negatives (``displaced=0``), whose trojan answers to its patch anywhere:
    trigger synthesis pastes its patch at random places, and the default recipe's trojan answers at one place only
    (there this seed's pick is candidate 3, not 0)."""
    rgb = organisms.obtain(organisms.TrojanRGB(cfg=ColourTrojanConfig(displaced=0.0)), 0)
    pictures = [c.image() for c in rgb.candidates][::-1]
    result = trojans.trigger_synthesis(
        rgb.model, rgb.clean(120), rgb.target, trojans.TriggerSynthesisConfig(steps=STEPS)
    )
    scores = trojans.rank_candidates(result.picture(), pictures)
    assert max(range(8), key=scores.__getitem__) == 7 - rgb.answer, scores
    assert max(scores) > min(scores)


def test_synthesised_pictures_compare_with_reverse_engineered_triggers(rgb):
    """``compare_triggers``: an audit against itself scores 1 per class; against another method, one value per class."""
    images = rgb.clean(40)
    cleanse = trojans.audit(rgb.model, images, method="neural_cleanse", steps=3, progress=False)
    synth = trojans.audit(rgb.model, images, method="trigger_synthesis", steps=3, progress=False)
    assert all(v > 0.999 for v in trojans.compare_triggers(cleanse, cleanse))
    across = trojans.compare_triggers(synth, cleanse)
    assert len(across) == 4 and all(-1 <= v < 0.999 for v in across)
