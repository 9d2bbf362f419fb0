"""The bench's scorers and metrics against their definitions, on cases where a wrong implementation differs.

Each test here is one that a deliberate bug in ``.ci/mutations.py`` must fail (CI runs that check): the |·| in CMD,
the trapezoid of CPR, MIB's signed ranking for CPR and absolute ranking for CMD, chance as the mean of random
circuits' areas, sizes that hold an edge, ties in random order, AUROC's labels and ties, the tie rules of trigger
picking and trojan detection, and the randomisation check leaving the caller's model untouched.
"""

import itertools
import statistics
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import mechscope as ms
from mechscope._cache import state_sha256
from mechscope.attribution import randomisation_check, saliency
from mechscope.bench._faithfulness import edge_keys
from mechscope.bench._scorers import CircuitScores, auroc
from mechscope.bench._vision_scorers import TrojanOutput, pick, trojan_detection
from mechscope.circuits import (
    SIZES,
    FaithfulnessCurve,
    Graph,
    area_from_one,
    area_under,
    eap,
    mib_curves,
    ranking_curve,
    tie_orders,
    usable_sizes,
)
from mechscope.data.tasks import Task


def test_cpr_is_the_trapezoidal_area_under_the_curve():
    assert area_under([0.0, 0.5, 1.0], [0.0, 1.0, 1.0]) == 0.75  # 0.5 * 0.5 + 0.5 * 1
    assert abs(area_under([0.0, 0.1, 1.0], [0.2, 0.6, 0.6]) - (0.1 * 0.4 + 0.9 * 0.6)) < 1e-12


def test_cmd_is_the_distance_from_one_on_either_side():
    # MIB's CMD integrates |1 - f|: a curve overshooting 1 is as far from the model as one falling short
    over, under = area_from_one([0.0, 1.0], [1.5, 1.5]), area_from_one([0.0, 1.0], [0.5, 0.5])
    assert over == under == 0.5
    assert area_from_one([0.0, 0.5, 1.0], [1.0, 1.0, 1.0]) == 0.0


def curve(orders, random=()) -> FaithfulnessCurve:
    """A curve over sizes 1 %, 10 %, 100 % with given tie-order rows and random rows (no model needed)."""
    mean = tuple(statistics.fmean(c) for c in zip(*orders, strict=True))
    return FaithfulnessCurve((0.01, 0.1, 1.0), (1, 11, 110), mean, tuple(random), 2.0, 0.0, "patch", "m", "logit_diff",
                             "toy", orders=tuple(orders))  # fmt: skip


def test_cpr_and_cmd_of_a_curve_overshooting_one_by_hand():
    c = curve([(0.5, 1.5, 1.0)])
    assert c.cpr == pytest.approx(0.09 * (0.5 + 1.5) / 2 + 0.9 * (1.5 + 1.0) / 2)  # 1.215
    # |1 - f| = (0.5, 0.5, 0): without the |.| the overshoot would cancel the shortfall (and CMD would be -0.225)
    assert c.cmd == pytest.approx(0.09 * (0.5 + 0.5) / 2 + 0.9 * (0.5 + 0.0) / 2)  # 0.27
    assert c.cpr_spread == c.cmd_spread == 0.0


def test_areas_are_means_over_tie_orders_with_their_spread():
    c = curve([(0.0, 1.0, 1.0), (2.0, 1.0, 1.0)])  # the mean curve is 1 everywhere; neither order is
    cprs = [0.09 * 0.5 + 0.9, 0.09 * 1.5 + 0.9]
    cmds = [0.09 * 0.5, 0.09 * 0.5]
    assert c.faithfulness == (1.0, 1.0, 1.0) and area_from_one(c.sizes, c.faithfulness) == 0.0
    assert c.cpr == pytest.approx(statistics.fmean(cprs)) and c.cmd == pytest.approx(statistics.fmean(cmds))  # 0.045
    assert c.cpr_spread == pytest.approx(statistics.stdev(cprs)) and c.cmd_spread == 0.0
    payload = c.to_dict()
    assert payload["orders"] == [[0.0, 1.0, 1.0], [2.0, 1.0, 1.0]] and payload["cpr_spread"] == c.cpr_spread


def test_chance_is_the_mean_of_each_random_circuits_area_with_its_spread():
    c = curve([(1.0, 1.0, 1.0)], random=[(0.0, 2.0, 1.0), (0.0, 0.5, 1.0)])
    cmds = [0.09 * 1.0 + 0.9 * 0.5, 0.09 * 0.75 + 0.9 * 0.25]  # |1 - f| per circuit: (1, 1, 0) and (1, .5, 0)
    cprs = [0.09 * 1.0 + 0.9 * 1.5, 0.09 * 0.25 + 0.9 * 0.75]
    assert c.random_cmd == pytest.approx(statistics.fmean(cmds))  # 0.41625
    assert c.random_cmd != pytest.approx(area_from_one(c.sizes, c.random_mean))  # the mean curve's: 0.16875
    assert c.random_cpr == pytest.approx(statistics.fmean(cprs))
    assert c.random_cmd_spread == pytest.approx(statistics.stdev(cmds))
    assert c.random_cpr_spread == pytest.approx(statistics.stdev(cprs))


def test_only_sizes_that_hold_an_edge_and_more_than_a_smaller_one():
    # the induction organism's 110 edges: MIB's 0.1, 0.2 and 0.5 % hold none
    assert usable_sizes(SIZES, 110) == ((0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0), (1, 2, 5, 11, 22, 55, 110))
    assert usable_sizes(SIZES, 40_000) == (SIZES, tuple(int(s * 40_000) for s in SIZES))
    assert usable_sizes((0.1, 0.15, 0.3, 1.0), 10) == ((0.1, 0.3, 1.0), (1, 3, 10))  # 0.15 is 0.1's circuit again
    with pytest.raises(ValueError, match="holds an edge"):
        usable_sizes((0.001, 0.01), 50)
    with pytest.raises(ValueError, match="must increase"):
        usable_sizes((0.5, 0.1), 50)


def test_ties_are_broken_at_random_within_their_group():
    key = torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0, 0.0, 0.0, 1.0])
    orders = tie_orders(key, 6, seed=3)
    assert len(orders) == 6 and all(torch.equal(o, p) for o, p in zip(orders, tie_orders(key, 6, seed=3), strict=True))
    for o in orders:
        assert sorted(o.tolist()) == list(range(8)) and o[0] == 4  # a permutation, the top score first
        assert set(o[1:5].tolist()) == {1, 2, 3, 7} and set(o[5:].tolist()) == {0, 5, 6}  # ties stay in their group
    assert len({tuple(o.tolist()) for o in orders}) > 1  # not the edge order every time
    assert {int(o[1]) for o in orders} != {1}  # the first tied edge in graph order does not always come first
    untied = tie_orders(torch.tensor([0.3, -1.0, 2.0]), 6)
    assert len(untied) == 1 and untied[0].tolist() == [2, 0, 1]


@pytest.fixture(scope="module")
def llama() -> ms.Model:
    return ms.tiny("llama", seed=0)


def toy_task(model: ms.Model) -> Task:
    def one(ch: str) -> int:
        return model.tokenizer(ch)["input_ids"][0]

    clean = ["Alice gave the key to B", "The cat sat on a mat.", "one two three four"]
    corrupt = ["Alice gave the key to T", "The cat sat on a hat.", "one two three fous"]
    return Task("toy", clean, corrupt, torch.tensor([one(c) for c in "!?."]), torch.tensor([one(c) for c in "xyz"]))


def test_cpr_ranks_by_signed_gain_and_cmd_by_magnitude(llama):
    task = toy_task(llama)
    noising = eap(llama, task, direction="noising", progress=False)
    assert torch.equal(noising.gain, -noising.scores)  # positive gain: keeping the edge raises the metric
    signed, absolute = edge_keys(noising, noising.graph)
    assert torch.equal(signed, -noising.scores) and torch.equal(absolute, noising.scores.abs())
    g = noising.graph
    both = mib_curves(llama, task, g, signed, "eap", magnitude=absolute, random=2)
    by_gain = ranking_curve(llama, task, g, tie_orders(signed), "eap", random=2)
    by_size = ranking_curve(llama, task, g, tie_orders(absolute), "eap", random=2)
    assert both.signed.faithfulness == pytest.approx(by_gain.faithfulness, abs=1e-6)
    assert both.absolute.faithfulness == pytest.approx(by_size.faithfulness, abs=1e-6)
    assert both.signed.faithfulness != pytest.approx(both.absolute.faithfulness, abs=1e-3)  # two rankings, two curves
    assert both.cpr == both.signed.cpr and both.cmd == both.absolute.cmd
    assert both.signed.random == both.absolute.random  # one set of random circuits behind both chance levels
    assert all(n >= 1 for n in both.signed.n_edges) and both.signed.sizes == usable_sizes(SIZES, g.n_edges)[0]
    scores = CircuitScores({}, {"input->a0.h0<q>": -2.0}, {"input->a0.h0<q>": 3.0})
    signed, absolute = edge_keys(scores, g)  # a bench method's signed edges rank CPR; |edges| rank CMD
    assert float(signed.max()) == 3.0 and float(absolute.max()) == 2.0


def test_an_oracle_with_tied_scores_is_not_ranked_by_the_graphs_edge_order(llama):
    task = toy_task(llama)
    g = Graph.of(llama.cfg)
    scores = eap(llama, task, progress=False)
    truth = scores.ranking()[:8]  # the "true" edges: the eight that move the metric most
    oracle = torch.zeros(g.n_edges).index_fill_(0, truth, 1.0)  # 1 for each, tied; 0 for the rest, tied
    by_index = ranking_curve(llama, task, g, torch.sort(oracle, descending=True, stable=True).indices, "oracle",
                             random=0)  # fmt: skip
    tied = ranking_curve(llama, task, g, tie_orders(oracle, 8, seed=0), "oracle", random=0)
    assert len(tied.orders) == 8 and tied.cpr_spread > 0  # the orders differ where ties straddle a size
    assert tied.faithfulness == pytest.approx([statistics.fmean(c) for c in zip(*tied.orders, strict=True)])
    assert tied.faithfulness != pytest.approx(by_index.faithfulness, abs=1e-3)


def test_the_full_truth_row_counts_the_edge_the_task_cannot_reveal():
    from mechscope.bench._methods import oracle_circuit
    from mechscope.bench._registry import RunContext
    from mechscope.bench._scorers import edge_auroc, full_edge_auroc
    from mechscope.organisms import BuiltInduction, InductionConfig
    from mechscope.organisms._induction import _llama

    cfg = InductionConfig()
    organism = BuiltInduction(cfg, 0, _llama(cfg), prev_head=1, ind_head=2)  # the truth needs no training
    truth = organism.circuit
    query = "input->a1.h2<q>"  # the induction head's query: clean and corrupt prompts end in the same token
    assert truth.unseen_edges == {query} and truth.full().circuit_edges == truth.circuit_edges | {query}
    oracle = oracle_circuit(organism, RunContext(0, True, None))  # reads the seen truth: the query edge scores 0
    assert edge_auroc(oracle, organism, "oracle").value == 1.0
    full = full_edge_auroc(oracle, organism, "oracle")
    assert full.metric == "edge_auroc_full" and full.value == (7 + 0.5) / 8  # the query edge ties every negative
    compiled = SimpleNamespace(circuit=SimpleNamespace(unseen_edges=frozenset()), organism="x", seed=0)
    assert full_edge_auroc(oracle, compiled, "oracle") is None  # no second row where the truth hides nothing


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
