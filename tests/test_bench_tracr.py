"""Compiled-transformer organisms (tracr): the torch conversion, its verification, the ground truth and scorers.

Needs the optional ``tracr`` extra (``pip install -e .[tracr]``, which ``make test`` installs, so CI runs these);
skipped where it is missing. Uses ``frac_prevs`` at a small length (2 layers, 84 inputs) to stay fast.
"""

import pytest

pytest.importorskip("tracr")

import torch

import mechscope as ms
from mechscope import bench, report
from mechscope.bench import _tracr
from mechscope.bench._registry import RunContext
from mechscope.bench._scorers import node_auroc
from mechscope.core._interventions import Patch

SMALL = bench.TracrFracPrevs(bench.TracrConfig("frac_prevs", max_seq_len=3))


pytestmark = pytest.mark.usefixtures("organism_cache")  # a fresh organism cache (conftest.py)


@pytest.fixture(scope="module")
def organism():
    return bench.obtain(SMALL, seed=0)


def test_torch_conversion_reproduces_tracr_and_the_rasp_program(organism):
    assert organism.accuracy() == 1.0  # every position of every input of length 1-3 equals rasp.evaluate's output
    assert organism.logit_error() <= 1e-5  # against jax logits of tracr's own assembled model, stored at build time
    assert organism.verification["inputs"] == 4 + 16 + 64
    tokens, expected = organism.groups()[-1]  # inputs of length 3: the share of 1s so far, at every position
    got = organism.model.run(tokens).logits[:, 1:, 0]
    assert torch.allclose(got, expected[:, 1:], atol=1e-4)
    assert torch.allclose(expected[tokens[:, 1:].eq(tokens[0, 1]).all(1)][0, 1:], torch.ones(3))
    # mechscope sees the heads and MLPs as sites of a plain wrapped module
    assert {"blocks.1.attn.heads.0", "blocks.0.mlp"} <= {s.name for s in organism.model.sites()}


def test_ground_truth_is_the_emitted_components_and_their_edges(organism):
    truth = organism.circuit
    assert set(truth.nodes) == {"blocks.0.attn.heads.0", "blocks.0.mlp", "blocks.1.attn.heads.0", "blocks.1.mlp"}
    assert truth.circuit == {"blocks.0.mlp", "blocks.1.attn.heads.0"}  # the map tokens == 1, then a mean over i <= j
    assert truth.circuit_edges == {"input->m0", "m0->a1.h0<v>", "input->a1.h0<q>", "input->a1.h0<k>",
                                   "a1.h0->logits"}  # fmt: skip
    assert organism.truth["components"]["blocks.1.attn.heads.0"][0].startswith("frac_prevs")


def test_cached_organism_loads_without_recompiling(organism, monkeypatch):
    monkeypatch.setattr(_tracr._Compiled, "build", lambda self, seed: pytest.fail("recompiled"))
    again = bench.obtain(SMALL, seed=0)
    assert again.accuracy() == 1.0 and again.circuit == organism.circuit


@pytest.mark.parametrize("break_it", ["zero_head", "swap_qk"])
def test_a_broken_organism_fails_verification(organism, break_it):
    broken = SMALL.load(0, {k: v.clone() for k, v in organism.tensors().items()})
    head = broken.module.blocks[1].attn.heads[0]
    with torch.no_grad():
        if break_it == "zero_head":
            head.o.weight.zero_()
        else:  # queries and keys exchanged: attends to j >= i instead of j <= i
            q, k = head.q.weight.clone(), head.k.weight.clone()
            head.q.weight.copy_(k)
            head.k.weight.copy_(q)
    with pytest.raises(bench.OrganismVerificationError, match="reproduces the RASP program"):
        broken.verify()


def test_scorer_gives_chance_to_random_and_one_to_the_oracle(organism):
    oracle = _tracr.oracle_components(organism, RunContext(0, True, None))
    assert node_auroc(oracle, organism, "oracle").value == 1.0
    values = [node_auroc(_tracr.random_components(organism, RunContext(s, True, None)), organism, "random").value
              for s in range(300)]  # fmt: skip
    assert abs(sum(values) / len(values) - 0.5) < 0.05


def test_ablation_methods_run_through_mechscope_interventions(organism):
    zero = _tracr.zero_ablation(organism, RunContext(0, True, None))
    assert node_auroc(zero, organism, "zero_ablation").value == 1.0
    assert zero.nodes["blocks.0.attn.heads.0"] == zero.nodes["blocks.1.mlp"] == 0.0  # all-zero blocks
    mean = _tracr.mean_ablation(organism, RunContext(0, True, None))
    assert set(mean.nodes) == set(organism.circuit.nodes)


def test_harness_scores_the_compiled_family(organism):
    suite = bench.default_suite()
    bench.register_organism(SMALL, suite=suite)  # the small variant, already in the cache
    board = bench.run_bench(seeds=(0,), organisms=[SMALL.name], methods=["random", "oracle"], progress=False,
                            suite=suite)  # fmt: skip
    assert not board.errors
    metrics = {(s.method, s.metric) for s in board.scores}
    assert {("oracle", "node_auroc"), ("oracle", "edge_auroc"), ("random", "node_auroc")} <= metrics


def test_missing_extra_is_listed_as_skipped():
    suite = bench.default_suite()
    suite.unavailable["tracr_fake"] = bench.MISSING_TRACR
    board = bench.run_bench(seeds=(0,), organisms=["tracr_fake"], progress=False, suite=suite)
    assert board.skipped == ("tracr_fake: needs tracr and jax to build: pip install -e .[tracr]",)
    assert "Skipped organisms" in report.leaderboard_markdown(board)


def test_attribution_patching_is_exact_where_the_model_is_linear(organism):
    # The last head writes straight to the (numerical) output: its first-order estimate equals real mean ablation.
    scores = _tracr.attribution_patching(organism, RunContext(0, True, None))
    assert _tracr._node_auroc(scores, organism, "attribution_patching").value == 1.0
    assert scores.nodes["blocks.0.attn.heads.0"] == scores.nodes["blocks.1.mlp"] == 0.0
    site, real, count = "blocks.1.attn.heads.0", 0.0, 0
    for tokens, _ in organism.groups():
        clean = organism.model.run(tokens).logits[:, 1:, 0].sum(1)
        with organism.model.intervene(ms.Ablate(site, how="mean", reference=tokens, over="batch_pos")):
            ablated = organism.model.run(tokens).logits[:, 1:, 0].sum(1)
        real, count = real + float((ablated - clean).abs().sum()), count + len(tokens)
    assert scores.nodes[site] == pytest.approx(real / count, rel=1e-4)


def test_numerically_zero_scores_tie_with_unused_blocks(organism):
    # A circuit block scored 1e-12 (a vanished gradient) must not outrank the exact zeros of unused blocks.
    vanished = {"blocks.0.mlp": 1e-12, "blocks.1.attn.heads.0": 1.0, "blocks.0.attn.heads.0": 0.0, "blocks.1.mlp": 0.0}
    scores = _tracr.CircuitScores(vanished)
    assert node_auroc(scores, organism, "raw").value == 1.0  # the plain scorer is fooled by rounding
    assert _tracr._node_auroc(scores, organism, "tied").value == 0.75  # ties count half: (2 + 0.5 + 0.5) / 4


def test_edge_attribution_patching_is_exact_on_a_linear_path(organism):
    # a1.h0 -> logits is the last head's only live path (the MLP after it is all zero), and the output is linear in
    # it: the edge's estimate equals the node's, which equals real mean ablation (the test above).
    edges = _tracr.edge_attribution_patching(organism, RunContext(0, True, None))
    nodes = _tracr.attribution_patching(organism, RunContext(0, True, None))
    assert set(edges.edges) == set(organism.circuit.edges)
    assert edges.edges["a1.h0->logits"] == pytest.approx(nodes.nodes["blocks.1.attn.heads.0"], rel=1e-5)
    assert edges.edges["a1.h0->logits"] > 0.1
    assert all(v == 0.0 for e, v in edges.edges.items() if e.startswith(("a0.h0->", "m1->")))  # all-zero blocks
    assert _tracr._edge_auroc(edges, organism, "eap").value > 0.5


def test_edge_attribution_patching_ig_sees_what_flat_gradients_hide(organism):
    ctx = RunContext(0, True, None)
    eap = _tracr.edge_attribution_patching(organism, ctx)
    ig = _tracr.edge_attribution_patching_ig(organism, ctx)
    assert set(ig.edges) == set(eap.edges)
    # The output is linear in a1.h0's contribution, so the gradient is the same everywhere on the path.
    assert ig.edges["a1.h0->logits"] == pytest.approx(eap.edges["a1.h0->logits"], rel=1e-6)
    # The last head's key edge is in the circuit, but its softmax is flat at the real inputs: EAP sees ~0 there,
    # and the path from the mean input crosses the region where the keys matter.
    assert "input->a1.h0<k>" in organism.circuit.circuit_edges
    assert eap.edges["input->a1.h0<k>"] < 1e-4 and ig.edges["input->a1.h0<k>"] > 1e-3
    assert _tracr._edge_auroc(ig, organism, "ig").value >= _tracr._edge_auroc(eap, organism, "eap").value


def test_edge_attribution_patching_ig_walks_from_the_mean_input_to_the_real_one(organism, monkeypatch):
    patched = []

    def spy(site, value, **kwargs):
        patched.append(value)
        return Patch(site, value, **kwargs)

    monkeypatch.setattr(_tracr, "Patch", spy)
    _tracr.edge_attribution_patching_ig(organism, RunContext(0, True, None))
    tokens, _ = organism.groups()[0]
    run = organism.model.run(tokens, cache=["token_embed", "pos_embed"])
    x = run.cache["token_embed"] + run.cache["pos_embed"]  # the real input
    mean = x.mean(dim=(0, 1), keepdim=True)
    for k, value in enumerate(patched[: _tracr.IG_STEPS]):  # the first length's path, midpoints of the steps
        alpha = (k + 0.5) / _tracr.IG_STEPS
        torch.testing.assert_close(value + run.cache["pos_embed"], mean + alpha * (x - mean))
