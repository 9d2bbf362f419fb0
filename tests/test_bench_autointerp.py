"""The auto-interpretation bench rows: planted and FIND-style latents with true descriptions, explainers and scorers
through the library's own jobs, with chance, a random baseline and the oracle."""

import dataclasses
import shutil

import pytest

from mechscope import bench, organisms
from mechscope.autointerp import FIND, NegativePool, Tools, ground_truth, planted_db
from mechscope.bench import _autointerp
from mechscope.organisms import _planted_text

pytestmark = pytest.mark.skipif(not organisms.embedder_available(), reason=organisms.MISSING_EMBEDDER)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    _planted_text.tokenizer()  # from the shared model cache, before the organism cache moves
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MECHSCOPE_CACHE", str(tmp_path_factory.mktemp("cache")))
        run = bench.run_bench(seeds=(0,), organisms=["planted_text", "find_text"], progress=False)
    return run, {(r.organism, r.metric, r.method): r for r in run.rows()}


def test_every_library_explainer_and_scorer_that_can_run_is_a_bench_method():
    suite = bench.default_suite()
    names = {m.name for m in suite.methods.values() if m.family == "autointerp"}
    # output-tokens needs a decoder, llm / detection / fuzzing a chat model, output a steerer: not bench methods
    assert names == {"explain-top-tokens", "explain-ngrams", "score-embedding", "score-simulation", "random", "oracle"}
    assert {"planted_text", "find_text"} <= set(suite.organisms)


def test_bench_rows_have_chance_baselines_and_beat_chance(board):
    run, rows = board
    assert not run.errors, run.errors
    for organism in ("planted_text", "find_text"):
        recovery = rows[organism, "description_recovery", "oracle"]
        assert recovery.mean == 1.0 and recovery.chance == pytest.approx(1 / 6)
        for metric in ("true_vs_shuffled", "true_vs_random"):
            assert rows[organism, metric, "oracle"].mean == 1.0 and rows[organism, metric, "oracle"].chance == 0.5
        # measured (seed 0): recovery@1 of the baseline explainers 3-4 of 6 on both sets (chance 1 of 6)
        for explainer in ("explain-top-tokens", "explain-ngrams"):
            row = rows[organism, "description_recovery", explainer]
            assert row.mean >= 3 / 6 and set(row.baselines) == {"random", "oracle"}, row
            sim = rows[organism, "description_similarity", explainer]
            assert sim.mean > sim.chance + 0.1 and sim.mean > sim.baselines["random"] + 0.1, sim
    # measured (seed 0): true vs shuffled 0.833 (embedding) and 0.767 (simulation) on the FIND-style latents, 0.567
    # and 0.667 on the planted ones (blind to case and position); true vs random 0.72-0.92
    for scorer in ("score-embedding", "score-simulation"):
        assert rows["find_text", "true_vs_shuffled", scorer].mean >= 0.7
        assert rows["planted_text", "true_vs_shuffled", scorer].mean > 0.5
        for organism in ("planted_text", "find_text"):
            assert rows[organism, "true_vs_random", scorer].mean >= 0.65


def test_separation_and_recovery_scorers_follow_their_definitions():
    built = _planted_text.BuiltKnownText("find_text", "find", organisms.TextConfig(), 0, None)  # type: ignore[arg-type]
    names = [p.name for p in FIND]
    # latent 0: true beats 4 of 5 shuffled and ties one; latent 1..5: loses to all
    scores = {n: ((0.9, (0.1, 0.2, 0.3, 0.4, 0.9), (0.0,) * 6) if n == names[0] else (0.0, (1.0,) * 5, (1.0,) * 6))
              for n in names}  # fmt: skip
    got = {s.metric: s for s in _autointerp.description_separation(_autointerp.DescriptionOutput(scores=scores),
                                                                   built, "m")}  # fmt: skip
    assert got["true_vs_shuffled"].value == pytest.approx((4.5 / 5) / 6)
    assert got["true_vs_random"].value == pytest.approx(1 / 6) and got["true_vs_shuffled"].chance == 0.5
    texts: dict[str, str | None] = {p.name: p.description for p in FIND}
    texts[names[1]] = None  # a failed latent recovers nothing
    texts[names[2]] = FIND[3].description  # another latent's description: not recovered
    got = {s.metric: s for s in _autointerp.description_recovery(_autointerp.DescriptionOutput(texts), built, "m")}
    assert got["description_recovery"].value == pytest.approx(4 / 6)
    assert got["description_recovery"].chance == pytest.approx(1 / 6)
    assert _autointerp.description_recovery(_autointerp.DescriptionOutput(scores=scores), built, "m") is None


def test_known_text_organism_fails_verification_when_a_latent_is_too_rare():
    organism = organisms.PlantedText(dataclasses.replace(organisms.TextConfig(), min_active=10_000))
    with pytest.raises(organisms.OrganismVerificationError, match="fires on >= 10000 tokens"):
        organism.build(0).verify()
    built = organisms.FindText().build(0)
    numbers = built.verify()
    assert numbers["min_active_tokens"] >= 2 and numbers["max_jaccard_overlap"] < 0.9


def test_find_style_latents_true_descriptions_beat_shuffled(tmp_path):
    db, store, oracle = planted_db(_planted_text.tokenizer(), tmp_path / "find", n_contexts=128, ctx_len=64,
                                   planted=FIND)  # fmt: skip
    pool = NegativePool.build(store, oracle, db, n_windows=256)
    path = tmp_path / "copy.db"
    shutil.copy(db.path, path)
    gt = ground_truth(path, pool, tools=Tools(), explainers=("top-tokens",))
    # measured (docs/autointerp.md): embedding and simulation both put the true description above the shuffled
    # mean on 5 of 6 FIND-style latents (both miss long-words, which no token's meaning states)
    for scorer in ("embedding", "simulation"):
        checks = [c for c in gt.checks if c.scorer == scorer]
        assert sum(c.true > c.shuffled for c in checks) >= 4, gt.to_markdown()
        assert sum(c.true - c.shuffled for c in checks) / len(checks) >= 0.15, gt.to_markdown()
    assert [r.feature for r in gt.recovery] == [p.name for p in FIND]
