import statistics

import pytest
import torch

from mechscope import bench, organisms
from mechscope.attribution import METHODS
from mechscope.bench import _vision_methods as V
from mechscope.bench._harness import derive_seed
from mechscope.bench._registry import RunContext
from mechscope.bench._vision_scorers import mass_in, pick, top_k_precision
from mechscope.data.triggers import KINDS, candidates

pytestmark = pytest.mark.usefixtures("organism_cache")  # a fresh organism cache (conftest.py)
SUITE = bench.default_suite()


@pytest.fixture(scope="module")
def trojan():
    torch.set_num_threads(1)
    return organisms.obtain(organisms.TrojanPatch(), 0)


@pytest.fixture(scope="module")
def blocks():
    torch.set_num_threads(1)
    return organisms.obtain(organisms.SignalBlocks(), 0)


def ctx(seed: int) -> RunContext:
    return RunContext(seed=derive_seed("test", seed), quick=True, workdir=None)  # type: ignore[arg-type]


def scores(method, organism, seeds) -> dict[str, tuple[float, float]]:
    """Metric -> (mean value, mean chance) of ``method`` over ``seeds``."""
    family = SUITE.organisms[organism.organism].family
    got = [s for seed in seeds for s in SUITE.score(family, method(organism, ctx(seed)), organism, "m")]
    metrics = {s.metric for s in got}
    return {m: (statistics.fmean(s.value for s in got if s.metric == m),
                statistics.fmean(s.chance for s in got if s.metric == m)) for m in metrics}  # fmt: skip


# --- triggers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_eight_distinct_candidates_and_their_regions(kind):
    found = candidates(kind, seed=3)
    assert len(found) == 8 and len({c.name for c in found}) == 8
    for a in found:
        assert all(not torch.equal(a.pattern, b.pattern) for b in found if b is not a)
    x = torch.zeros(4, 1, 32, 32)
    y, mask = found[0].apply(x, seed=0)
    changed = (y != x)[:, 0]
    if kind == "blend":
        assert mask.all()
    else:
        assert (mask.sum((1, 2)) == found[0].pattern.numel()).all()
        assert not (changed & ~mask).any()  # the trigger stays inside its region
    assert torch.equal(found[0].apply(x, seed=0)[0], y)  # seeded


def test_pick_breaks_ties_at_random_in_expectation():
    assert pick([0, 3, 1], 1) == 1.0 and pick([0, 3, 1], 0) == 0.0
    assert pick([2, 2, 1, 1], 0) == 0.5 and pick([1] * 8, 5) == 0.125
    with pytest.raises(ValueError):
        pick([0.0, float("nan")], 0)


def test_mass_and_top_k_precision_match_their_definitions():
    maps = torch.zeros(1, 4, 4)
    maps[0, 0, :2] = 3.0
    maps[0, 3, 3] = -2.0  # |map| counts
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0] = True
    assert mass_in(maps, mask) == pytest.approx(6 / 8)
    # Top 4 pixels: the two 3s and the -2, then one of 13 tied zeros, 2 of which are in the mask.
    assert top_k_precision(maps, mask) == pytest.approx((2 + 2 / 13) / 4)
    assert top_k_precision(torch.ones(1, 4, 4), mask) == pytest.approx(0.25)


# --- trojans -----------------------------------------------------------------------------------------------------


def test_trojan_verifies_and_fails_when_the_trojan_is_removed(trojan):
    v = trojan.verification
    assert v["clean_accuracy"] >= 0.85 and v["attack_success"] >= 0.9
    assert v["twin_attack_success"] <= 0.3 and v["max_decoy_attack_success"] <= 0.5
    card = organisms.read_card(organisms.organism_dir(organisms.TrojanPatch(), 0))
    assert card["truth"]["trigger"] == trojan.trigger.name and len(card["sha256"]) == 64
    # A deliberately broken organism: the "trojaned" model is the clean twin.
    tensors = trojan.tensors()
    broken = organisms.TrojanPatch().load(0, {**tensors, **{k.replace("twin.", "trojan."): v for k, v in tensors.items()
                                                        if k.startswith("twin.")}})  # fmt: skip
    with pytest.raises(organisms.OrganismVerificationError, match=r"attack success >= 0\.9"):
        broken.verify()


@pytest.mark.parametrize("recipe", [organisms.TrojanBlend(), organisms.TrojanNatural()], ids=lambda r: r.name)
def test_blend_and_natural_trojans_build_verify_and_fail_without_their_trojan(recipe):
    """The two other trigger kinds are built here too (from an empty cache), not only by the bench."""
    torch.set_num_threads(1)
    built = organisms.obtain(recipe, 0)
    v, c = built.verification, recipe.cfg
    assert v["clean_accuracy"] >= c.min_clean_accuracy and v["twin_clean_accuracy"] >= c.min_clean_accuracy
    assert v["attack_success"] >= c.min_attack_success and v["twin_attack_success"] <= c.max_twin_attack_success
    assert v["max_decoy_attack_success"] <= c.max_decoy_attack_success
    card = organisms.read_card(organisms.organism_dir(recipe, 0))
    assert card["truth"]["trigger"] == built.trigger.name and built.kind == card["truth"]["kind"] == recipe.kind
    # the planted trigger is the one the trojaned model answers to: oracle picks score 1 on the built organism
    oracle = scores(V.oracle_trojan, built, [0])
    assert oracle["trigger_pick"][0] == 1.0 and oracle["trojan_detection"][0] == 1.0
    tensors = built.tensors()
    broken = recipe.load(0, {**tensors, **{k.replace("twin.", "trojan."): v for k, v in tensors.items()
                                          if k.startswith("twin.")}})  # fmt: skip
    with pytest.raises(organisms.OrganismVerificationError, match="attack success"):
        broken.verify()


def test_trojan_scorers_random_is_chance_and_oracle_is_perfect(trojan):
    random = scores(V.random_trojan, trojan, range(120))
    for metric in ("trigger_pick", "trigger_overlap", "trojan_detection"):
        value, chance = random[metric]
        assert abs(value - chance) < 0.05 * max(1, 4 * chance), (metric, value, chance)
    assert random["trigger_pick"][1] == 0.125 and random["trojan_detection"][1] == 0.5
    oracle = scores(V.oracle_trojan, trojan, [0])
    assert all(oracle[m][0] == 1.0 for m in ("trigger_pick", "trigger_overlap", "trojan_detection"))


def test_the_insertion_probe_finds_the_trigger_and_the_trojaned_model(trojan):
    got = scores(V.insertion_probe, trojan, [0])
    assert got["trigger_pick"][0] == 1.0 and got["trojan_detection"][0] == 1.0


# --- signal blocks -----------------------------------------------------------------------------------------------


def test_block_images_put_the_signal_in_its_block():
    d = organisms.block_images(64, 2, seed=0, distractor=1)
    assert d.masks[:, 16:, :16].all() and d.masks.float().mean() == 0.25
    assert (d.labels != d.distractors).any() and d.images.shape == (64, 1, 32, 32)
    with pytest.raises(ValueError, match="must differ"):
        organisms.block_images(4, 2, seed=0, distractor=2)


def test_signal_blocks_verify_and_fail_when_the_twin_is_swapped(blocks):
    v = blocks.verification
    assert min(v["accuracy"], v["twin_accuracy"]) >= 0.85
    assert max(v["distractor_agreement"], v["twin_distractor_agreement"]) <= 0.4
    broken = organisms.BuiltBlocks(blocks.cfg, 0, blocks.twin, blocks.model)  # each model reads the other's block
    with pytest.raises(organisms.OrganismVerificationError, match="accuracy of both models"):
        broken.verify()


def test_attribution_scorers_random_is_chance_and_oracle_is_perfect(blocks):
    random = scores(V.random_attribution, blocks, range(30))
    for metric in ("signal_mass", "top_k_precision"):
        assert random[metric][1] == 0.25 and abs(random[metric][0] - 0.25) < 0.02, metric
    oracle = scores(V.oracle_attribution, blocks, [0])
    assert oracle["signal_mass"][0] == 1.0 and oracle["top_k_precision"][0] == 1.0
    # The randomisation check: a map of the image alone fails it; a map that changes with the model passes.
    edges = V.block_method(METHODS["edge_detector"])
    assert scores(edges, blocks, [0])["randomisation"][0] == pytest.approx(0.0, abs=1e-9)
    assert random["randomisation"][0] > 0.9


def test_gradients_follow_the_block_the_model_reads(blocks):
    spec = METHODS["input_x_gradient"]
    p, q = blocks.probe(32), blocks.twin_probe(32)
    mine = V.attribute(spec, blocks.model, p.images, p.labels, quick=True).heatmap()
    twins = V.attribute(spec, blocks.twin, q.images, q.labels, quick=True).heatmap()
    # Same images, different models: each model's map sits on its own block, far above the 0.25 share.
    assert mass_in(mine, p.masks) > 0.4 and mass_in(twins, q.masks) > 0.4
    assert mass_in(mine, p.masks) > mass_in(mine, q.masks)


def test_a_trojan_that_misses_a_threshold_is_retrained_longer_once(monkeypatch):
    # Seeds that learn slowly get one deterministic retry with twice the epochs; a second miss is left to obtain().
    from mechscope.organisms import SmallCNN, _trojan

    epochs: list[int] = []

    def fake_train(cfg, seed, found, answer, target, poisoned):
        epochs.append(cfg.epochs)
        return SmallCNN(width=cfg.width).eval()

    def fake_verify(self):
        if self.cfg.epochs < 12:
            raise organisms.OrganismVerificationError("attack success too low")
        return {"attack_success": 1.0}

    monkeypatch.setattr(_trojan, "train_cnn", fake_train)
    monkeypatch.setattr(_trojan.BuiltTrojan, "verify", fake_verify)
    built = organisms.TrojanBlend().build(seed=4)
    assert epochs == [6, 6, 12, 12] and built.cfg.epochs == 12
    epochs.clear()
    monkeypatch.setattr(_trojan.BuiltTrojan, "verify", lambda self: _trojan.require("t", 0, {}, {"never": False}))
    assert organisms.TrojanPatch().build(seed=0).cfg.epochs == 12 and epochs == [6, 6, 12, 12]  # no third attempt


def test_signal_blocks_that_miss_a_threshold_are_retrained_longer_once(monkeypatch):
    from mechscope.organisms import SmallCNN, _blocks

    epochs: list[int] = []

    def fake_train(cfg, seed, block):
        epochs.append(cfg.epochs)
        return SmallCNN(width=cfg.width).eval()

    def fake_verify(self):
        if self.cfg.epochs < 16:
            raise organisms.OrganismVerificationError("accuracy 0.8496 < 0.85")
        return {"accuracy": 0.9}

    monkeypatch.setattr(_blocks, "train_blocks", fake_train)
    monkeypatch.setattr(_blocks.BuiltBlocks, "verify", fake_verify)
    assert organisms.SignalBlocks().build(seed=0).cfg.epochs == 16 and epochs == [8, 8, 16, 16]
