import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mechscope import bench, organisms, report
from mechscope.bench import _methods as M
from mechscope.bench._harness import derive_seed
from mechscope.bench._registry import RunContext
from mechscope.organisms._induction import BuiltInduction, _llama

ALL_CHEAP = ["modular_addition", "superposition", "synthetic_features", "numeric_functions"]
SUITE = bench.default_suite()


pytestmark = pytest.mark.usefixtures("organism_cache")  # a fresh organism cache (conftest.py)


@pytest.fixture(scope="module")
def built():
    return {name: organisms.obtain(SUITE.organisms[name], 0) for name in ALL_CHEAP}


@pytest.fixture(scope="module")
def induction():
    return organisms.obtain(organisms.Induction(), 0)


def ctx(seed: int, tmp: Path = Path("/nonexistent")) -> RunContext:
    return RunContext(seed=seed, quick=True, workdir=tmp)


def mean_score(method, organism, metric, seeds=range(60)):
    values = []
    for seed in seeds:
        output = method(organism, ctx(derive_seed("test", seed)))  # as the harness does
        scores = SUITE.score(SUITE.organisms[organism.organism].family, output, organism, "m")
        values += [s for s in scores if s.metric == metric]
    return statistics.fmean(s.value for s in values), statistics.fmean(s.chance for s in values)


# --- the AUROC and IoU definitions --------------------------------------------------------------------------------


def test_auroc_matches_its_definition():
    assert bench.auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert bench.auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert bench.auroc([0.5, 0.5, 0.5], [True, False, False]) == 0.5  # ties count half
    assert bench.auroc([0.9, 0.3, 0.5, 0.1], [True, False, True, False]) == 1.0
    assert bench.auroc([0.4, 0.3, 0.5, 0.1], [True, False, False, True]) == 0.25  # 1 of 4 pairs
    with pytest.raises(ValueError):
        bench.auroc([0.1, 0.2], [True, True])


def test_iou():
    assert bench.iou((0, 2), (1, 3)) == pytest.approx(1 / 3)
    assert bench.iou((0, 1), (2, 3)) == 0.0
    assert bench.iou((0, 1), (0, 1)) == 1.0


# --- organisms: verification passes on the build and fails on a broken organism ----------------------------------


def test_modular_addition_verifies_and_fails_when_its_frequencies_are_removed(built):
    org = built["modular_addition"]
    v = org.verification
    assert v["test_accuracy"] >= 0.9 and v["accuracy_key_ablated"] < 0.25 and v["accuracy_others_ablated"] >= 0.9
    assert 1 <= len(org.key_frequencies) <= 7
    broken = organisms.ModularAddition().load(0, org.tensors())
    torch.manual_seed(0)
    broken.net.embed.weight.data = broken.net.embed.weight.data[torch.randperm(org.p)]  # tokens scrambled
    with pytest.raises(organisms.OrganismVerificationError, match="held-out accuracy"):
        broken.verify()


def test_superposition_verifies_and_fails_without_superposition(built):
    org = built["superposition"]
    assert org.verification["n_represented"] > org.cfg.m
    assert org.verification["loss"] < 0.8 * org.verification["loss_without_superposition"]
    w = org.W.clone()
    w[:, org.cfg.m :] = 0  # only m features kept: no superposition left
    broken = organisms.BuiltTMS(org.cfg, 0, w, org.b, org.inputs)
    with pytest.raises(organisms.OrganismVerificationError, match="more features represented"):
        broken.verify()


def test_synthetic_features_verify_and_fail_when_the_hierarchy_is_broken(built):
    org = built["synthetic_features"]
    assert org.verification["hierarchy_violations"] == 0
    d = org.data
    perm = torch.randperm(len(d.mask), generator=torch.Generator().manual_seed(0))
    mask = d.mask.clone()
    mask[:, 7] = mask[perm, 7]  # child 7 now fires regardless of its parent 6
    broken = organisms.BuiltFeatures(org.cfg, 0, d._replace(mask=mask))
    with pytest.raises(organisms.OrganismVerificationError, match="only with its parent"):
        broken.verify()


def test_numeric_functions_verify_and_fail_without_their_corruption(built):
    org = built["numeric_functions"]
    assert org.verification["max_error_outside"] == 0 and org.verification["min_change_inside"] >= 1.0
    f = org.functions[0]
    assert f(torch.tensor([f.interval[0] - 0.5])) == f.clean(torch.tensor([f.interval[0] - 0.5]))
    clean = organisms.NumericFunction(f.name, f.family, f.params, f.interval, "shift", 0.0)
    broken = organisms.BuiltNumeric(org.cfg, 0, (clean, *org.functions[1:]))
    with pytest.raises(organisms.OrganismVerificationError, match="corruption moves every point"):
        broken.verify()


def test_untrained_induction_model_fails_verification():
    cfg = organisms.InductionConfig(steps=0, distractor_steps=0, circuit_steps=0)
    with pytest.raises(organisms.OrganismVerificationError, match="clean accuracy"):
        organisms.Induction(cfg).build(0).verify()


@pytest.mark.slow
def test_induction_verifies_and_fails_when_its_induction_head_is_removed(induction):
    v = induction.verification
    assert v["accuracy"] >= 0.6
    assert v["accuracy_circuit_ablated"] < 0.4 * v["accuracy"]
    assert v["accuracy_k_edge_ablated"] < 0.4 * v["accuracy"]
    assert v["accuracy_others_ablated"] >= 0.8 * v["accuracy"]
    assert len(induction.circuit.circuit) == 2
    broken = organisms.Induction().load(0, induction.tensors())
    d = broken.cfg.d_head
    o_proj = broken.model.module.model.layers[1].self_attn.o_proj.weight
    o_proj.data[:, broken.ind_head * d : (broken.ind_head + 1) * d] = 0
    with pytest.raises(organisms.OrganismVerificationError, match="clean accuracy"):
        broken.verify()


# --- the cache --------------------------------------------------------------------------------------------------


def test_cache_round_trip_and_checksum(built):
    organism = organisms.SyntheticFeatures()
    again = organisms.obtain(organism, 0)  # from the cache
    assert torch.equal(again.data.x, built["synthetic_features"].data.x)
    assert again.verification == built["synthetic_features"].verification
    folder = organisms.organism_dir(organism, 0)
    card = organisms.read_card(folder)
    assert card["seed"] == 0 and card["config"] == organism.config() and len(card["sha256"]) == 64
    assert card["truth"]["hierarchy"] == [[6, 7], [6, 8], [9, 10], [9, 11]]
    weights = folder / "organism.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(organisms.OrganismChecksumError, match="does not match"):
        organisms.obtain(organism, 0)
    rebuilt = organisms.obtain(organism, 0, rebuild=True)
    assert torch.equal(rebuilt.data.x, again.data.x)


def test_variant_configs_get_their_own_cache_folder():
    assert organisms.SyntheticFeatures().key == "synthetic_features"
    variant = organisms.SyntheticFeatures(organisms.FeatureConfig(n_features=32))
    assert variant.key.startswith("synthetic_features-") and variant.key != "synthetic_features"


def test_a_failed_build_caches_nothing():
    cfg = organisms.NumericConfig(width=(0.0, 0.0))  # an empty corrupted interval: nothing is corrupted
    organism = organisms.NumericFunctions(cfg)
    with pytest.raises(organisms.OrganismVerificationError):
        organisms.obtain(organism, 0)
    assert not (organisms.organism_dir(organism, 0) / "card.json").exists()


# --- scorers: chance for a random method, ~1 for an oracle ------------------------------------------------------


def test_circuit_scorers_random_is_chance_and_oracle_is_one():
    cfg = organisms.InductionConfig()
    organism = BuiltInduction(cfg, 0, _llama(cfg), prev_head=1, ind_head=2)  # the truth needs no training
    for metric in ("node_auroc", "edge_auroc"):
        value, chance = mean_score(M.random_circuit, organism, metric, seeds=range(200))
        assert chance == 0.5 and abs(value - 0.5) < 0.05
        assert mean_score(M.oracle_circuit, organism, metric, seeds=[0])[0] == 1.0
    nodes_only = bench.score("circuits", {"head.1.z[h2]": 1.0, "head.0.z[h1]": 1.0}, organism, "dict")
    assert [s.metric for s in nodes_only] == ["node_auroc"] and nodes_only[0].value == 1.0


def test_head_pair_auroc_ranks_only_the_edges_between_heads():
    """48 head pairs (4 x 4 heads, q/k/v) of which the planted K-composition is the one positive."""
    cfg = organisms.InductionConfig()
    organism = BuiltInduction(cfg, 0, _llama(cfg), prev_head=1, ind_head=2)
    value, chance = mean_score(M.random_circuit, organism, "head_pair_auroc", seeds=range(200))
    assert chance == 0.5 and abs(value - 0.5) < 0.05
    assert mean_score(M.oracle_circuit, organism, "head_pair_auroc", seeds=[0])[0] == 1.0
    # the true pair ranked above all but 12 of the 47 others: 35/47; embedding and logits edges are not counted
    others = [f"a0.h{a}->a1.h{b}<{m}>" for a in range(4) for b in range(4) for m in "qkv"]
    others.remove("a0.h1->a1.h2<k>")
    edges = {e: (1.0 if i < 12 else 0.0) for i, e in enumerate(others)} | {"a0.h1->a1.h2<k>": 0.5,
                                                                             "input->a1.h2<k>": 9.0}  # fmt: skip
    scores = {s.metric: s.value for s in bench.score("circuits", M.CircuitScores({}, edges), organism, "hand")}
    assert scores["head_pair_auroc"] == pytest.approx(35 / 47)


def test_frequency_overlap_random_is_chance_and_oracle_is_one(built):
    organism = built["modular_addition"]
    value, chance = mean_score(M.random_frequencies, organism, "frequency_overlap", seeds=range(200))
    n_key = len(organism.key_frequencies)
    assert chance == n_key / len(organism.frequencies) and abs(value - chance) < 0.05
    assert mean_score(M.oracle_frequencies, organism, "frequency_overlap", seeds=[0])[0] == 1.0


def test_the_unembedding_holds_the_key_frequencies(built):
    """Read from other weights than the embedding that defines the truth: the unembedding's Fourier power."""
    organism = built["modular_addition"]
    scores = {s.metric: s.value for s in bench.score("frequencies", M.unembed_fourier(organism, ctx(0)), organism,
                                                      "unembed_fourier")}  # fmt: skip
    assert scores["frequency_auroc"] == 1.0 and scores["frequency_overlap"] == 1.0


def test_feature_scorers_random_is_chance_and_oracle_is_perfect(built):
    for name in ("synthetic_features", "superposition"):
        organism = built[name]
        for metric in ("mmcs", "f1"):
            value, chance = mean_score(M.random_dictionary_method, organism, metric, seeds=range(5))
            assert abs(value - chance) < 0.05, (name, metric, value, chance)
            assert mean_score(M.oracle_dictionary, organism, metric, seeds=[0])[0] == pytest.approx(1.0)
        assert chance < 0.8
    assert mean_score(M.oracle_dictionary, built["synthetic_features"], "absorption", seeds=[0])[0] == 0.0
    # No hierarchy in the toy model of superposition: absorption is not scored there (it would be 0 for anything).
    toy = built["superposition"]
    scores = bench.score("features", M.oracle_dictionary(toy, ctx(0)), toy, "m")
    assert [s.metric for s in scores] == ["mmcs", "f1"]


def test_frequency_scorer_random_is_chance_and_oracle_is_one(built):
    organism = built["modular_addition"]
    value, chance = mean_score(M.random_frequencies, organism, "frequency_auroc", seeds=range(200))
    assert chance == 0.5 and abs(value - 0.5) < 0.05
    assert mean_score(M.oracle_frequencies, organism, "frequency_auroc", seeds=[0])[0] == 1.0


def test_interval_scorer_random_is_chance_and_oracle_is_one(built):
    organism = built["numeric_functions"]
    value, chance = mean_score(M.random_descriptions, organism, "interval_iou", seeds=range(100))
    assert 0.05 < chance < 0.4 and abs(value - chance) < 0.04
    assert mean_score(M.oracle_descriptions, organism, "interval_iou", seeds=[0])[0] == 1.0


# --- registry and harness -------------------------------------------------------------------------------------


def test_one_declaration_registers_a_method_and_a_broken_method_is_reported(built):
    suite = bench.default_suite()

    @bench.register_method(family="frequencies", name="test_lowest_first", suite=suite)
    def lowest_first(organism, ctx):
        """Scores low frequencies high."""
        return {k: -k for k in organism.frequencies}

    @bench.register_method(family="frequencies", applies_to=("modular_addition",), name="test_broken", suite=suite)
    def broken(organism, ctx):
        raise RuntimeError("boom")

    assert "test_lowest_first" in [m.name for m in suite.methods_for(organisms.ModularAddition())]
    assert "frequencies/test_lowest_first" not in bench.default_suite().methods  # the suite's own, not global
    methods = ["test_lowest_first", "test_broken", "random"]
    board = bench.run_bench(seeds=(0,), organisms=["modular_addition"], methods=methods, progress=False, suite=suite)
    assert {s.method for s in board.scores} == {"test_lowest_first", "random"}
    assert board.errors == ("modular_addition/seed0/test_broken: RuntimeError: boom",)
    row = next(r for r in board.rows() if r.method == "test_lowest_first")
    assert set(row.baselines) == {"random"} and not row.baseline


def test_a_plugin_declared_without_a_suite_joins_every_default_suite(monkeypatch):
    monkeypatch.setattr(bench._registry, "PLUGINS", bench.Suite())
    monkeypatch.setattr(bench._suite, "PLUGINS", bench._registry.PLUGINS)

    @bench.register_method(family="frequencies", name="test_plugin")
    def plugin(organism, ctx):
        return {}

    assert bench.default_suite().methods["frequencies/test_plugin"].fn is plugin
    bench.register_method(family="no_such_family", name="orphan")(plugin)
    with pytest.raises(ValueError, match="'orphan' has family 'no_such_family', which has no scorers"):
        bench.default_suite()


def test_importing_the_bench_registers_nothing_and_imports_no_organism_or_method():
    code = (
        "import sys, mechscope.bench as b; "
        "loaded = sorted(m for m in sys.modules if m.startswith(('mechscope.organisms', 'mechscope.bench.'))); "
        "print(loaded, len(b.PLUGINS.methods), len(b.PLUGINS.organisms))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['mechscope.bench._harness', 'mechscope.bench._registry', 'mechscope.bench._reproduce', " \
                  "'mechscope.bench._scorers', 'mechscope.bench._suite'] 0 0"  # fmt: skip


def test_an_organism_failing_verification_is_reported_not_scored():
    suite = bench.default_suite()
    bench.register_organism(organisms.NumericFunctions(organisms.NumericConfig(width=(0.0, 0.0))), suite=suite)
    board = bench.run_bench(seeds=(0,), organisms=["numeric_functions"], progress=False, suite=suite)
    assert board.scores == () and len(board.errors) == 1
    assert board.errors[0].startswith("numeric_functions/seed0: organism 'numeric_functions' seed 0: planted")


def check_outputs(board, out: Path) -> None:
    report.write_leaderboard(board, out)
    for name in ("leaderboard.md", "leaderboard.json", "leaderboard.html"):
        assert (out / name).is_file()
    data = json.loads((out / "leaderboard.json").read_text())
    assert data["rows"] and data["scores"] and not data["errors"]
    again = bench.Leaderboard.from_dict(data)
    assert again == board.__class__(board.scores, board.organisms, board.errors, board.quick, round(board.seconds, 2),
                                    board.skipped, board.run)  # fmt: skip
    assert data["run"]["torch_threads"] == bench.THREADS and set(data["run"]["seeds"]) == set(board.organisms)
    assert data["run"]["versions"]["torch"] == torch.__version__
    assert report.leaderboard_markdown(again).split("\n")[3:] == report.leaderboard_markdown(board).split("\n")[3:]
    page = (out / "leaderboard.html").read_text()
    assert "<script" not in page and "http" not in page and "data:image/png;base64," in page


def test_harness_runs_end_to_end_on_one_seed(built, tmp_path):
    board = bench.run_bench(quick=True, seeds=(0,), organisms=ALL_CHEAP, progress=False)
    check_outputs(board, tmp_path)
    rows = {(r.organism, r.metric, r.method): r for r in board.rows()}
    for (organism, metric, method), row in rows.items():
        if method == "oracle" and metric != "absorption":
            assert row.mean == pytest.approx(1.0), (organism, metric)
    sae = rows["synthetic_features", "mmcs", "topk_sae"]
    assert sae.mean > sae.chance + 0.2 and sae.baselines["oracle"] == pytest.approx(1.0)
    assert rows["modular_addition", "frequency_auroc", "logit_fourier"].mean > 0.8
    assert rows["numeric_functions", "interval_iou", "jump_detector"].mean > 0.5
    assert "| topk_sae |" in report.leaderboard_markdown(board)


@pytest.mark.slow
def test_harness_scores_circuit_methods_on_the_induction_organism(induction, tmp_path):
    board = bench.run_bench(quick=True, seeds=(0,), organisms=["induction"], progress=False)
    check_outputs(board, tmp_path)
    rows = {(r.metric, r.method): r for r in board.rows()}
    assert rows["node_auroc", "activation"].mean == 1.0
    # Attribution patching finds the induction head, but its linear estimate of the previous-token head's effect
    # (through the induction head's softmax) varies between builds: AUROC 1.0 on one CPU, 0.83 on another.
    ap = rows["node_auroc", "attribution"]
    assert ap.mean > ap.chance
    assert rows["node_auroc", "oracle"].mean == 1.0 and rows["edge_auroc", "oracle"].mean == 1.0
    assert rows["edge_auroc", "eap"].mean > 0.85  # 0.93-0.97 across CPUs; chance 0.5
    assert rows["node_auroc", "acdc"].mean == 1.0
    # the full truth adds the query edge no patching method sees: the oracle (reading the seen truth) ties it at 0
    assert rows["edge_auroc_full", "oracle"].mean == 7.5 / 8 and rows["edge_auroc_full", "eap"].mean < 0.95
    # MIB's areas: random circuits at chance, EAP-IG's circuits carry the behaviour (measured on seed 0: CPR 0.52
    # by signed score against chance 0.26 ± 0.06, CMD 0.09 by |score| against 0.73 ± 0.06), and the oracle, its ties
    # in random orders, is the upper reference on CPR (0.78) that edge order once pushed below EAP-IG
    cpr, cmd = rows["cpr", "eap-ig"], rows["cmd", "eap-ig"]
    assert abs(rows["cpr", "random"].mean - cpr.chance) < 0.15 and cpr.mean > cpr.chance + 0.15
    assert cmd.mean < cmd.chance - 0.3 and not cmd.higher_is_better and cpr.chance_spread > 0
    oracle = rows["cpr", "oracle"]
    assert oracle.mean > cpr.mean and oracle.spread > 0  # its seven tied edges straddle sizes: orders differ
    assert board.organisms["induction"]["0"] == induction.verification


@pytest.mark.slow
def test_weight_readings_single_out_the_planted_k_composition(induction):
    """Composition scores (weights only) and head-type scores rank the planted previous-token -> induction K edge
    first among all 48 head pairs, and the two planted heads above the six others."""
    for method in (M.composition, M.head_types):
        output = method(induction, ctx(0))
        scores = {s.metric: s.value for s in bench.score("circuits", output, induction, method.__name__)}
        assert scores["head_pair_auroc"] == 1.0 and scores["node_auroc"] == 1.0, method.__name__
        assert method(induction, ctx(1)) == output  # deterministic


def test_a_cached_organism_is_verified_again_when_its_verification_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    from mechscope.organisms import _numeric

    organism = organisms.NumericFunctions()
    first = organisms.obtain(organism, 0)
    card = organisms.read_card(organisms.organism_dir(organism, 0))
    assert card["verification_id"] == organisms.verification_id(first)
    calls = []
    original = _numeric.BuiltNumeric.verify

    def stricter(self):
        calls.append(1)
        return original(self) | {"stricter": 1.0}

    organisms.obtain(organism, 0)  # unchanged verification: loaded as cached, not verified again
    monkeypatch.setattr(_numeric.BuiltNumeric, "verify", stricter)
    again = organisms.obtain(organism, 0)  # the check changed: the cached copy is verified again
    assert calls == [1] and again.verification["stricter"] == 1.0
    assert organisms.read_card(organisms.organism_dir(organism, 0))["verification_id"] == organisms.verification_id(
        again
    )
    organisms.obtain(organism, 0)
    assert calls == [1]  # the card now records the new check

    def failing(self):
        raise organisms.OrganismVerificationError("fails the new check")

    monkeypatch.setattr(_numeric.BuiltNumeric, "verify", failing)
    with pytest.raises(organisms.OrganismVerificationError, match="fails the new check"):
        organisms.obtain(organism, 0)


def test_builds_run_on_the_pinned_thread_count_whoever_calls(tmp_path, monkeypatch):
    # a reduction over another number of threads rounds differently: a build made by a one-thread caller must be
    # the build the two-thread bench would make, and a card built on other threads is rebuilt, not reused
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    from mechscope.organisms import _numeric, _organism

    seen = []
    original = _numeric.NumericFunctions.build

    def build(self, seed):
        seen.append(torch.get_num_threads())
        return original(self, seed)

    monkeypatch.setattr(_numeric.NumericFunctions, "build", build)
    organism, before = organisms.NumericFunctions(), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        organisms.obtain(organism, 0)
        assert seen == [_organism.BUILD_THREADS] and torch.get_num_threads() == 1  # the caller's setting restored
    finally:
        torch.set_num_threads(before)
    folder = organisms.organism_dir(organism, 0)
    card = organisms.read_card(folder)
    assert card["build_threads"] == _organism.BUILD_THREADS
    organisms.obtain(organism, 0)
    assert len(seen) == 1  # cached
    (folder / "card.json").write_text(json.dumps(card | {"build_threads": 7}))
    organisms.obtain(organism, 0)
    assert len(seen) == 2 and organisms.read_card(folder)["build_threads"] == _organism.BUILD_THREADS
