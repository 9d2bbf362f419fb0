"""The bench's scorers and metrics against their definitions, on cases where a wrong implementation differs.

Each test here is one that a deliberate bug in ``.ci/mutations.py`` must fail (CI runs that check): the |·| in CMD,
the trapezoid of CPR, AUROC's labels and ties, the tie rules of trigger picking and trojan detection, and the
randomisation check leaving the caller's model untouched.
"""

import itertools
from types import SimpleNamespace

import torch
from torch import nn

import mechscope as ms
from mechscope._cache import state_sha256
from mechscope.attribution import randomisation_check, saliency
from mechscope.bench._scorers import auroc
from mechscope.bench._vision_scorers import TrojanOutput, pick, trojan_detection
from mechscope.circuits import area_from_one, area_under


def test_cpr_is_the_trapezoidal_area_under_the_curve():
    assert area_under([0.0, 0.5, 1.0], [0.0, 1.0, 1.0]) == 0.75  # 0.5 * 0.5 + 0.5 * 1
    assert abs(area_under([0.0, 0.1, 1.0], [0.2, 0.6, 0.6]) - (0.1 * 0.4 + 0.9 * 0.6)) < 1e-12


def test_cmd_is_the_distance_from_one_on_either_side():
    # MIB's CMD integrates |1 - f|: a curve overshooting 1 is as far from the model as one falling short
    over, under = area_from_one([0.0, 1.0], [1.5, 1.5]), area_from_one([0.0, 1.0], [0.5, 0.5])
    assert over == under == 0.5
    assert area_from_one([0.0, 0.5, 1.0], [1.0, 1.0, 1.0]) == 0.0


def test_auroc_counts_pairs_and_ties_half():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (30,), generator=gen).double()  # many ties
    labels = torch.rand(30, generator=gen) < 0.4
    pos, neg = scores[labels].tolist(), scores[~labels].tolist()
    pairs = list(itertools.product(pos, neg))
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert abs(auroc(scores, labels) - expected) < 1e-12
    assert auroc([1.0, 2.0, 3.0], [False, False, True]) == 1.0
    assert auroc([3.0, 2.0, 1.0], [False, False, True]) == 0.0
    assert auroc([1.0, 1.0], [True, False]) == 0.5


def test_trigger_pick_scores_a_k_way_tie_as_one_in_k():
    assert pick([0.1, 0.9, 0.3], answer=1) == 1.0
    assert pick([0.1, 0.9, 0.3], answer=0) == 0.0
    assert pick([0.9, 0.9, 0.3, 0.9], answer=1) == 1 / 3  # a random tie-break hits the answer one time in three


def test_trojan_detection_scores_a_tie_as_half():
    organism = SimpleNamespace(organism="trojan_patch", seed=0)

    def detect(mine: list[float], twin: list[float]) -> float:
        score = trojan_detection(TrojanOutput(candidates=mine, twin_candidates=twin), organism, "m")
        assert score is not None
        return score.value

    assert detect([0.2, 0.8], [0.1, 0.5]) == 1.0
    assert detect([0.2, 0.5], [0.1, 0.8]) == 0.0
    assert detect([0.2, 0.8], [0.8, 0.1]) == 0.5  # equally strong: no evidence either way


def test_randomisation_check_leaves_the_callers_model_untouched():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    model = ms.wrap(module)
    x, y = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0])
    before = state_sha256(module)
    check = randomisation_check(model, x, y, saliency)
    assert state_sha256(module) == before  # recomputed, not a hash stored at construction
    assert len(check.stages) == 2 and bool((check.spearman_abs[-1] < 0.99).all())  # the copy really was randomised
