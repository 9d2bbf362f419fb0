"""Compiled-transformer organisms (tracr): the torch conversion, its verification, the ground truth, the adapter to
the residual-model contract (the library's circuit methods on compiled programs) and the bench's scorers.

Needs the optional ``tracr`` extra (``pip install -e .[tracr]``, which ``make test`` installs, so CI runs these);
skipped where it is missing. Uses ``frac_prevs`` at a small length (2 layers, 84 inputs) to stay fast.
"""

import pytest

pytest.importorskip("tracr")

import torch

import mechscope as ms
from mechscope import bench, circuits, organisms, report
from mechscope.bench import _tracr
from mechscope.bench._registry import RunContext
from mechscope.bench._scorers import node_auroc
from mechscope.circuits._edgerun import SenderActs, Wiring, reference, run_edges
from mechscope.circuits._ids import EdgeId
from mechscope.core import ResidualModel
from mechscope.organisms import _tracr as _organism
from mechscope.organisms._tracr import program_output

SMALL = organisms.TracrFracPrevs(organisms.TracrConfig("frac_prevs", max_seq_len=3))


pytestmark = pytest.mark.usefixtures("organism_cache")  # a fresh organism cache (conftest.py)


@pytest.fixture(scope="module")
def organism():
    return organisms.obtain(SMALL, seed=0)


def test_torch_conversion_reproduces_tracr_and_the_rasp_program(organism):
    assert organism.accuracy() == 1.0  # every position of every input of length 1-3 equals rasp.evaluate's output
    assert organism.logit_error() <= 1e-5  # against jax logits of tracr's own assembled model, stored at build time
    assert organism.verification["inputs"] == 4 + 16 + 64
    tokens, expected = organism.groups()[-1]  # inputs of length 3: the share of 1s so far, at every position
    got = organism.model.run(tokens).logits[:, 1:, 0]
    assert torch.allclose(got, expected[:, 1:], atol=1e-4)
    assert torch.allclose(expected[tokens[:, 1:].eq(tokens[0, 1]).all(1)][0, 1:], torch.ones(3))
    # mechscope sees the heads and MLPs by their module paths, and the uniform sites of the residual stream
    assert {"blocks.1.attn.heads.0", "blocks.0.mlp", "head.1.q", "resid_mid.0"} <= {
        s.name for s in organism.model.sites()
    }


def test_ground_truth_is_the_emitted_components_and_their_edges(organism):
    truth = organism.circuit
    assert set(truth.nodes) == {"a0.h0", "m0", "a1.h0", "m1"}  # graph ids, as the library's results name them
    assert truth.circuit == {"m0", "a1.h0"}  # the map tokens == 1, then a mean over i <= j
    assert organism.site("a1.h0") == "blocks.1.attn.heads.0"
    assert truth.circuit_edges == {"input->m0", "m0->a1.h0<v>", "input->a1.h0<q>", "input->a1.h0<k>",
                                   "a1.h0->logits"}  # fmt: skip
    assert organism.truth["components"]["blocks.1.attn.heads.0"][0].startswith("frac_prevs")


def test_cached_organism_loads_without_recompiling(organism, monkeypatch):
    monkeypatch.setattr(_organism._Compiled, "build", lambda self, seed: pytest.fail("recompiled"))
    again = organisms.obtain(SMALL, seed=0)
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
    with pytest.raises(organisms.OrganismVerificationError, match="reproduces the RASP program"):
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
    assert zero.nodes["a0.h0"] == zero.nodes["m1"] == 0.0  # all-zero blocks
    mean = _tracr.mean_ablation(organism, RunContext(0, True, None))
    assert set(mean.nodes) == set(organism.circuit.nodes)


def test_harness_scores_the_compiled_family(organism):
    suite = bench.default_suite()
    bench.register_organism(SMALL, suite=suite)  # the small variant, already in the cache
    board = bench.run_bench(seeds=(0,), organisms=[SMALL.name], progress=False, suite=suite)
    assert not board.errors
    metrics = {(s.method, s.metric) for s in board.scores}
    assert {("oracle", "node_auroc"), ("oracle", "edge_auroc"), ("random", "node_auroc")} <= metrics
    # the library's circuit methods run on the compiled program, with MIB's faithfulness areas
    for method in ("eap", "eap-ig", "acdc"):
        assert {(method, m) for m in ("node_auroc", "edge_auroc", "cpr", "cmd")} <= metrics
    got = {(s.method, s.metric): s for s in board.scores}
    assert got["oracle", "node_auroc"].value == got["oracle", "edge_auroc"].value == 1.0
    assert got["qk-selectors", "selector_auroc"].value == 1.0  # weights only, one row per program
    assert {m for meth, m in metrics if meth == "qk-selectors"} == {"selector_auroc"}  # frac_prevs: no value map
    # the harness's areas are MIB's for the method's own output: recomputed here, they agree number for number
    for method, fn in (("oracle", _tracr.oracle_components), ("eap", _tracr.edge_attribution_patching)):
        cpr, cmd = _tracr._faithfulness_areas(fn(organism, RunContext(0, True, None)), organism, method)
        for mine, theirs in ((cpr, got[method, "cpr"]), (cmd, got[method, "cmd"])):
            numbers = [(s.value, s.chance, s.spread, s.chance_spread, *(y for _, y in s.curve)) for s in (mine, theirs)]
            assert numbers[0] == pytest.approx(numbers[1], abs=1e-9)
    oracle, oracle_cmd = got["oracle", "cpr"], got["oracle", "cmd"]  # random circuits: 0 until the full graph
    assert oracle.value > oracle.chance + 0.2 and oracle_cmd.value < oracle_cmd.chance - 0.2
    sizes = circuits.usable_sizes(circuits.SIZES, circuits.Graph.of(organism.model.cfg).n_edges)[0]
    assert [x for x, _ in oracle.curve] == list(sizes) and oracle.curve[-1][1] == pytest.approx(1.0, abs=1e-6)


def test_qk_selectors_reads_the_compiled_selector_from_the_weights(organism):
    truth = organism.selectors["blocks.1.attn.heads.0"]  # frac_prevs: a mean over the positions j <= i
    assert truth["predicate"] == "Comparison.LEQ" and truth["ov"] is None  # a numerical mean: no value map
    assert truth["selector"] == [[k <= q for k in range(3)] for q in range(3)]
    assert [organism.residual_labels[i] for i in truth["query"]] == ["indices:0", "indices:1", "indices:2"]
    read = _tracr.qk_selectors(organism, RunContext(0, True, None))
    (auroc,) = _tracr._selector_scores(read, organism, "qk-selectors")
    assert auroc.metric == "selector_auroc" and auroc.value == 1.0 and auroc.chance == 0.5
    assert auroc.baselines["oracle"] == 1.0 and auroc.baselines["random_matrix"] < 1.0
    # the scorers of the circuit methods leave this output alone, and this scorer theirs
    assert _tracr._node_auroc(read, organism, "qk-selectors") is None
    assert _tracr._selector_scores(_tracr.oracle_components(organism, RunContext(0, True, None)), organism, "x") is None


def test_qk_selectors_fails_on_swapped_queries_and_keys(organism):
    broken = SMALL.load(0, {k: v.clone() for k, v in organism.tensors().items()})
    head = broken.module.blocks[1].attn.heads[0]
    with torch.no_grad():  # attends to j >= i instead of j <= i: the reading must say so
        q, k = head.q.weight.clone(), head.k.weight.clone()
        head.q.weight.copy_(k)
        head.k.weight.copy_(q)
    (auroc,) = _tracr._selector_scores(_tracr.qk_selectors(broken, RunContext(0, True, None)), broken, "qk-selectors")
    assert auroc.value < 0.5


def test_qk_selectors_reads_the_value_map_of_a_categorical_aggregate():
    import dataclasses

    recipe = organisms.TracrReverse()
    built = organisms.obtain(dataclasses.replace(recipe, cfg=dataclasses.replace(recipe.cfg, max_seq_len=3)), 0)
    (site,) = [site for site, s in built.selectors.items() if s["ov"] is not None]  # reverse: tokens at length - i - 1
    ov = built.selectors[site]["ov"]
    assert [built.residual_labels[i].split(":")[1] for i in ov["input"]] == ["1", "2", "3", "4"]
    read = _tracr.qk_selectors(built, RunContext(0, True, None))
    scores = {s.metric: s for s in _tracr._selector_scores(read, built, "qk-selectors")}
    assert scores["selector_auroc"].value == scores["ov_map_accuracy"].value == 1.0
    assert scores["ov_map_accuracy"].chance == 0.25
    read.ov[site][:] = read.ov[site].roll(1, dims=1)  # each value written as the next one: a wrong map
    assert _tracr._selector_scores(read, built, "qk-selectors")[1].value == 0.0


def test_missing_extra_is_listed_as_skipped():
    suite = bench.default_suite()
    suite.unavailable["tracr_fake"] = organisms.MISSING_TRACR
    board = bench.run_bench(seeds=(0,), organisms=["tracr_fake"], progress=False, suite=suite)
    assert board.skipped == ("tracr_fake: needs tracr and jax to build: pip install -e .[tracr]",)
    assert "Skipped organisms" in report.leaderboard_markdown(board)


def test_the_adapter_satisfies_the_residual_model_contract(organism):
    contract = organism.residual
    assert isinstance(contract, ResidualModel) and contract.cfg.n_layers == 2 and not contract.cfg.parallel
    head = organism.module.blocks[1].attn.heads[0]
    weight, bias = contract.qkv(1, "k")  # [d_model head d_head], [head d_head]
    torch.testing.assert_close(weight[:, 0], head.k.weight.T)
    torch.testing.assert_close(bias[0], head.k.bias)
    torch.testing.assert_close(contract.w_o(1)[0], head.o.weight.T)
    # the uniform per-head sites are the heads' own tensors
    tokens, _ = organism.groups()[-1]
    run = organism.model.run(tokens, cache=["head.1.k", "head.*.z", "blocks.1.attn.heads.0", "attn_out.*"])
    x = organism.model.run(tokens, cache=["resid_pre.1"]).cache["resid_pre.1"]
    torch.testing.assert_close(run.cache["head.1.k"][:, :, 0], head.k(x))
    torch.testing.assert_close(run.cache["blocks.1.attn.heads.0"], head.o(run.cache["head.1.z"][:, :, 0]))
    # the graph's premise: attention output = its heads' outputs + a constant
    wiring = Wiring.of(contract)
    wiring.check_additive([(run.cache, torch.ones(tokens.shape, dtype=torch.long))])


def test_edge_swaps_through_the_adapter_match_ablating_by_hand(organism):
    # a1.h0's only reader with weights is the logits (m1 is all zero): swapping the edge a1.h0 -> logits for the
    # mean over inputs and positions is mean-ablating the head's output, done by hand with ms.Ablate
    task = organism.task()
    tokens = task.clean
    contract = organism.residual
    wiring = Wiring.of(contract)
    g = wiring.graph
    cache = organism.model.run(tokens, cache=SenderActs.sites(g.n_layers)).cache
    mean = reference(SenderActs.of(cache, g.n_layers), "global_mean", torch.ones_like(tokens),
                                      len(tokens))  # fmt: skip
    swap = torch.zeros(1, len(g.senders), len(g.receivers))
    swap[0, g.head_index(1, 0), len(g.receivers) - 1] = 1.0
    got = run_edges(wiring, tokens, torch.ones_like(tokens), mean, swap)
    site = organism.site("a1.h0")
    with organism.model.intervene(ms.Ablate(site, how="mean", reference=tokens, over="batch_pos")):
        want = organism.model.run(tokens).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # and the library's faithfulness of the circuit without that edge is the metric of that run, normalised
    keep = [e for e in g.edge_names() if e != "a1.h0->logits"]
    circuit = circuits.Circuit.from_edge_names(g, keep)
    full, empty, (value,) = circuits.circuit_metrics(contract, task, [circuit], ablation="global_mean",
                                                     metric=program_output, progress=False)  # fmt: skip
    assert value == pytest.approx(float(program_output(want, task).mean()), abs=1e-4)
    assert full > value and value == pytest.approx(empty, abs=1e-5)  # the program's one path to the output is cut


def test_library_eap_ig_walks_from_the_mean_input_to_the_real_one(organism):
    task = organism.task()
    inputs = []

    def record(_module, args):
        if args[0].shape[0] == _tracr.IG_STEPS * len(task):  # the stacked pass along the path
            inputs.append(args[0].detach().clone())

    handle = organism.module.blocks[0].attn.register_forward_pre_hook(record)  # sees the block input as replaced
    try:
        _tracr.edge_attribution_patching_ig(organism, RunContext(0, True, None))  # circuits.eap_ig on every length
    finally:
        handle.remove()
    x = organism.model.run(task.clean, cache=["resid_pre.0"]).cache["resid_pre.0"]  # the real inputs
    mean = x.mean(dim=(0, 1), keepdim=True)
    (path,) = inputs
    for k, point in enumerate(path.unflatten(0, (_tracr.IG_STEPS, -1))):  # left Riemann sum: k / steps of the way
        torch.testing.assert_close(point, (mean + k / _tracr.IG_STEPS * (x - mean)).expand_as(point))


def test_library_eap_ig_sees_what_flat_gradients_hide(organism):
    ctx = RunContext(0, True, None)
    eap = _tracr.edge_attribution_patching(organism, ctx)
    ig = _tracr.edge_attribution_patching_ig(organism, ctx)
    assert set(ig.edges) == set(eap.edges) == set(organism.circuit.edges)
    # the output is exact at the real inputs, so the squared error's gradient vanishes there: EAP sees nothing ...
    assert max(abs(v) for v in eap.edges.values()) < 1e-4
    # ... while the path from the mean input crosses the region where the program's edges matter, the key edge
    # of the last head (it reads positions) included
    assert "input->a1.h0<k>" in organism.circuit.circuit_edges
    assert ig.edges["input->a1.h0<k>"] > 1e-3 and ig.edges["a1.h0->logits"] > 0.1
    assert all(v == 0.0 for e, v in ig.edges.items() if e.startswith(("a0.h0->", "m1->")))  # all-zero blocks
    assert _tracr._edge_auroc(ig, organism, "ig").value == 1.0  # as the bench's own EAP-IG scored it before


def test_library_acdc_finds_the_emitted_components(organism):
    scores = _tracr.acdc_components(organism, RunContext(0, True, None))
    assert _tracr._node_auroc(scores, organism, "acdc").value == 1.0
    assert {str(EdgeId.parse(e).sender) for e in scores.edges} == {"input", "m0", "a1.h0"}  # kept nodes' out-edges


def test_numerically_zero_scores_tie_with_unused_blocks(organism):
    # A circuit block scored 1e-12 (a vanished gradient) must not outrank the exact zeros of unused blocks.
    vanished = {"m0": 1e-12, "a1.h0": 1.0, "a0.h0": 0.0, "m1": 0.0}
    scores = _tracr.CircuitScores(vanished)
    assert node_auroc(scores, organism, "raw").value == 1.0  # the plain scorer is fooled by rounding
    assert _tracr._node_auroc(scores, organism, "tied").value == 0.75  # ties count half: (2 + 0.5 + 0.5) / 4


def test_organisms_package_exports_the_compiled_programs():
    assert organisms.TracrFracPrevs is organisms.TracrFracPrevs and organisms.BuiltCompiled is organisms.BuiltCompiled


@pytest.mark.parametrize("program", [o.name for o in organisms.TRACR_ORGANISMS])
def test_library_eap_eap_ig_and_acdc_run_on_every_compiled_program(program):
    # The library's own methods through the adapter, on each of the five programs at a small length (the bench runs
    # them at full length). Measured here (seed 0): EAP-IG edge AUROC 0.86-1.00 and at least EAP's everywhere (EAP's
    # flat gradients at tracr's saturated MLPs are what the integration path repairs); ACDC node AUROC 0.86-1.00.
    import dataclasses

    recipe = next(o for o in organisms.TRACR_ORGANISMS if o.name == program)
    built = organisms.obtain(dataclasses.replace(recipe, cfg=dataclasses.replace(recipe.cfg, max_seq_len=3)), 0)
    ctx = RunContext(0, True, None)
    got = {}
    for name, method in (("eap", _tracr.edge_attribution_patching), ("eap-ig", _tracr.edge_attribution_patching_ig),
                         ("acdc", _tracr.acdc_components)):  # fmt: skip
        out = method(built, ctx)
        nodes, edges = _tracr._node_auroc(out, built, name), _tracr._edge_auroc(out, built, name)
        assert edges is not None
        got[name] = (None if nodes is None else nodes.value, edges.value)
    assert got["eap-ig"][1] >= max(0.8, got["eap"][1]), got
    for name in ("eap-ig", "acdc"):
        assert got[name][0] is None or got[name][0] >= 0.8, got  # hist's truth has no node ranking to score
