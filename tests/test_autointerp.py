"""Auto-interpretation: scorers against their definitions (scripted fake chat model), the planted-feature ground
truth, kill-and-resume of an explain job, and an OpenAI-compatible HTTP endpoint stubbed on loopback."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from scipy.stats import spearmanr
from typer.testing import CliRunner

from mechscope.autointerp import (
    PLANTED,
    SCORERS,
    ChatError,
    ContextConfig,
    ContextStates,
    EmbeddingConfig,
    ExplanationRecord,
    HTTPChat,
    LLMConfig,
    NegativePool,
    Records,
    Tools,
    Window,
    derange,
    explain,
    gather,
    ground_truth,
    planted_db,
    read_explanations,
    score,
    store_context_tokens,
)
from mechscope.autointerp._explainers import explain_prompt, mark, parse_explanation
from mechscope.autointerp._scorers import auroc, misplaced, parse_labels, pearson
from mechscope.cli import app


@pytest.fixture(scope="module")
def planted(tmp_path_factory, smol):
    out = tmp_path_factory.mktemp("planted")
    db, store, oracle = planted_db(smol.tokenizer, out, n_contexts=128, ctx_len=64)
    pool = NegativePool.build(store, oracle, db, n_windows=256)
    return db, store, oracle, pool


@pytest.fixture(scope="module")
def tools():
    return Tools()


def fresh(planted, tmp_path) -> Path:
    """A copy of the planted feature database, without explanations."""
    path = tmp_path / "features.db"
    shutil.copy(planted[0].path, path)
    return path


# --- the planted features are what they say -----------------------------------------------------------------------


def test_planted_latents_fire_where_their_definition_says(planted, smol):
    db, store, _, _ = planted
    tokens = store.tokens()
    texts = [smol.tokenizer.decode([i]) for i in range(len(smol.tokenizer))]
    for latent, p in enumerate(PLANTED):
        card = db.latent(latent)
        assert card.n_active > 0, p.name
        for e in card.top_examples:
            peak = e.position - e.window_start
            tok = texts[e.token_ids[peak]].strip()
            prev = texts[tokens[e.context, e.position - 1]].strip()
            expected = {"digits": tok.isdigit(), "python-keywords": tok in __import__("keyword").kwlist,
                        "after-def": prev == "def", "closing-brackets": bool(tok) and set(tok) <= set(")]}"),
                        "capitalised": re.fullmatch(r"[A-Z][a-z]+", tok) is not None,
                        "position": 1 <= e.position <= 3}[p.name]  # fmt: skip
            assert expected, (p.name, tok, e.position)


def test_negatives_are_silent_and_matched_ones_share_tokens(planted):
    db, _, _, pool = planted
    for latent in range(len(PLANTED)):
        c = gather(db, latent, ContextConfig(n_negatives=10, matched_fraction=0.5), pool)
        assert len(c.negatives) == 10 and all(not w.active for w in c.negatives)
        assert all(w.active for w in c.activating)
    # the pool's peak activations are the oracle's on the pool windows (encoded once, from the store)
    ids = pool.token_ids[0]
    assert pool.peak.shape == (len(pool), len(PLANTED))
    digits = [i for i in range(len(pool)) if pool.peak[i, 0] > 0]
    assert digits and all(any(pool._vocab[t].strip().isdigit() for t in pool.token_ids[i].tolist()) for i in digits)
    assert len(ids) == db.meta["config"]["window"]


# --- scorers against their definitions ----------------------------------------------------------------------------


class FakeJudge:
    """A scripted chat model: knows which example texts are positives for the explanations it knows.

    For a known explanation it answers right; for any other one it answers at random (seeded by the text), so a
    shuffled explanation must score near chance. ``mode`` 'all-ones' / 'garbage' script the other answers.
    """

    name = "fake-judge"
    concurrency = 1

    def __init__(self, positives: dict[str, set[str]], mode: str = "truth") -> None:
        self.positives, self.mode, self.calls = positives, mode, 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(self, messages, *, max_tokens, seed):
        self.calls += 1
        user = messages[-1]["content"]
        explanation = re.match(r"Feature explanation: (.*)\n", user).group(1)
        examples = re.findall(r"^Example \d+: (.*)$", user, flags=re.M)
        if self.mode == "garbage":
            return "I think they all match!"
        if self.mode == "all-ones":
            return str([1] * len(examples))
        known = self.positives.get(explanation)
        rng = random.Random(explanation + "|".join(examples))
        labels = [int(e in known) if known is not None else rng.randint(0, 1) for e in examples]
        return f"Sure. {labels}"


def _truth_positives(db, pool, scorer: str) -> dict[str, set[str]]:
    out = {}
    for latent, p in enumerate(PLANTED):
        c = gather(db, latent, ContextConfig(), pool)
        if scorer == "detection":
            out[p.description] = {w.text.replace("\n", "⏎") for w in c.activating}
        else:
            out[p.description] = {mark(w) for w in c.activating}
    return out


def _store_truth(path: Path) -> None:
    with Records(path) as r:
        for latent, p in enumerate(PLANTED):
            r.put_explanation(ExplanationRecord(latent, "truth", "r0", p.description, None, "", "", "", 0, 0.0, {}))


@pytest.mark.parametrize("scorer", ["detection", "fuzzing"])
def test_judge_scorers_compute_balanced_accuracy_with_chance_and_shuffled_baseline(planted, tmp_path, scorer):
    db, _, _, pool = planted
    spec = SCORERS[scorer]
    cfg = spec.make_config(n_examples=15)  # detection: 15 activating, 10 non-activating contexts (unbalanced)
    c = gather(db, 0, ContextConfig(), pool)
    truth = FakeJudge(_truth_positives(db, pool, scorer))
    right = spec.fn(c, PLANTED[0].description, Tools(truth), cfg)
    assert right.value == 1.0 and right.chance == 0.5 and right.detail["unparsed"] == 0
    ones = spec.fn(c, PLANTED[0].description, Tools(FakeJudge({}, "all-ones")), cfg)
    assert ones.value == 0.5  # every positive right, every negative wrong: balanced accuracy (1 + 0) / 2
    if scorer == "detection":
        assert ones.n == 25 and ones.detail["totals"] == [10, 15]
    garbage = spec.fn(c, PLANTED[0].description, Tools(FakeJudge({}, "garbage")), cfg)
    assert garbage.value == 0.0 and garbage.detail["unparsed"] == garbage.n  # unreadable answers count as wrong
    # the job: true explanations score 1, shuffled ones (another latent's) land near chance
    path = fresh(planted, tmp_path)
    _store_truth(path)
    summary = score(path, scorer, explainer="truth", llm=truth, pool=pool, progress=False)
    assert summary.done == len(PLANTED) and not summary.failed
    rows = Records(path).scores(scorer=scorer)
    assert [r.value for r in rows] == [1.0] * len(PLANTED)
    shuffled = sum(r.shuffled for r in rows) / len(rows)
    assert abs(shuffled - 0.5) < 0.2, shuffled
    assert all(r.detail["shuffled_text"] != PLANTED[r.latent].description for r in rows)


class FakeProbJudge(FakeJudge):
    """A scripted judge that gives answer probabilities: P(1) = 0.8 on its known positives, 0.3 on the rest (so a
    threshold of 0.5 is right on all), seeded random for unknown explanations; ``mode`` 'none' gives none."""

    name = "fake-prob-judge"

    def answer_probs(self, messages, answers, *, prefix, seed):
        assert answers == (" 1", " 0") and prefix == "Answer:"
        user = messages[-1]["content"]
        explanation = re.match(r"Feature explanation: (.*)\n", user).group(1)
        (example,) = re.findall(r"^Text example: (.*)$", user, flags=re.M)
        if self.mode == "none":
            return None
        known = self.positives.get(explanation)
        p = (0.8 if example in known else 0.3) if known is not None else random.Random(explanation + example).random()
        return [p / 2, (1 - p) / 2]  # half the model's mass on the two answers


@pytest.mark.parametrize("scorer", ["detection", "fuzzing"])
def test_judge_scorers_read_answer_probabilities_when_the_model_gives_them(planted, tmp_path, scorer):
    db, _, _, pool = planted
    spec = SCORERS[scorer]
    cfg = spec.make_config(n_examples=15)
    c = gather(db, 0, ContextConfig(), pool)
    judge = FakeProbJudge(_truth_positives(db, pool, scorer))
    right = spec.fn(c, PLANTED[0].description, Tools(judge), cfg)
    assert right.value == 1.0 and right.detail["mode"] == "probabilities" and right.detail["auroc"] == 1.0
    assert judge.calls == 0 and len(right.detail["p1"]) == right.n  # one request per item, no text parsed
    assert right.detail["answer_mass"] == pytest.approx(0.5) and right.detail["unparsed"] == 0
    assert right.detail["hits"] == right.detail["totals"]
    # a model that gives no probabilities (an HTTP server without logprobs): the text judge, batch_size per request
    text = spec.fn(c, PLANTED[0].description, Tools(FakeProbJudge(judge.positives, "none")), cfg)
    assert text.value == 1.0 and text.detail["mode"] == "text"
    assert (
        spec.fn(c, PLANTED[0].description, Tools(judge), spec.make_config(probabilities=False)).detail["mode"] == "text"
    )
    path = fresh(planted, tmp_path)
    _store_truth(path)
    score(path, scorer, explainer="truth", llm=judge, pool=pool, progress=False)
    rows = Records(path).scores(scorer=scorer)
    assert [r.value for r in rows] == [1.0] * len(PLANTED)
    assert abs(sum(r.shuffled for r in rows) / len(rows) - 0.5) < 0.2


class FakeSimulator:
    """A scripted simulator: predicts 10 on the tokens its rule for the explanation accepts, 0 elsewhere.

    ``mode`` 'garbage' answers prose; 'partial' answers only the first three lines of each sequence.
    """

    name = "fake-simulator"
    concurrency = 1
    RULES: ClassVar[dict] = {PLANTED[0].description: str.isdigit, PLANTED[3].description: lambda t: bool(t) and
                             set(t) <= set(")]}")}  # fmt: skip

    def __init__(self, mode: str = "rule") -> None:
        self.mode, self.calls = mode, 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(self, messages, *, max_tokens, seed):
        self.calls += 1
        return simulate_reply(messages, self.mode, self.RULES)


def simulate_reply(messages, mode, rules) -> str:
    user = messages[-1]["content"]
    explanation = re.match(r"Neuron explanation: (.*)\n", user).group(1)
    lines = user.split("<start>\n", 1)[1].split("\n<end>", 1)[0].split("\n")
    tokens = [ln.rsplit("\tunknown", 1)[0] for ln in lines]
    if mode == "garbage":
        return "I predict that this neuron is about numbers."
    rule = str.isdigit if mode == "digits" else rules.get(explanation, lambda t: False)
    out = [f"{t}\t{10 if rule(t.strip()) else 0}" for t in tokens]
    return "Sure:\n" + "\n".join(out[:3] if mode == "partial" else out)


def test_llm_simulation_correlates_predicted_with_real_activations(planted, tmp_path):
    db, _, _, pool = planted
    spec = SCORERS["llm-simulation"]
    cfg = spec.config()
    c = gather(db, 0, ContextConfig(), pool)  # digits
    windows = [*c.activating[: cfg.n_examples], *c.negatives[: cfg.n_examples]]
    real = torch.tensor([a for w in windows for a in w.activations])
    rule = torch.tensor([10.0 * t.strip().isdigit() for w in windows for t in w.tokens])
    fake = FakeSimulator()
    right = spec.fn(c, PLANTED[0].description, Tools(fake), cfg)
    assert right.value == pytest.approx(pearson(rule, real)) and right.value > 0.9, right
    assert right.chance == 0.0 and right.n == len(real) and right.detail == {"unparsed": 0, "requests": len(windows)}
    assert fake.calls == len(windows) == 2 * cfg.n_examples  # one request per context, negatives included
    wrong = spec.fn(c, PLANTED[3].description, Tools(fake), cfg)  # closing brackets: predicts where digits are not
    assert wrong.value < 0.1
    garbage = spec.fn(c, PLANTED[0].description, Tools(FakeSimulator("garbage")), cfg)
    assert garbage.value == 0.0 and garbage.detail["unparsed"] == len(real)  # predicts nothing: chance, not above
    partial = spec.fn(c, PLANTED[0].description, Tools(FakeSimulator("partial")), cfg)
    assert partial.detail["unparsed"] == len(real) - 3 * len(windows)
    with pytest.raises(ValueError, match="llm-simulation scorer needs a chat model"):
        spec.fn(c, PLANTED[0].description, Tools(), cfg)
    # through the job: the true explanation of digits correlates, the shuffled one (another latent's) does not
    path = fresh(planted, tmp_path)
    _store_truth(path)
    summary = score(path, "llm-simulation", explainer="truth", llm=fake, pool=pool, latents=[0], progress=False)
    assert summary.done == 1 and not summary.failed
    (row,) = Records(path).scores(scorer="llm-simulation")
    assert row.value == pytest.approx(right.value) and row.chance == 0.0 and row.shuffled < 0.1


def test_fuzzing_mismarks_as_many_quiet_tokens():
    from mechscope.autointerp import Window

    w = Window(("a", "b", "c", "d", "e"), (0.0, 2.0, 0.0, 1.0, 0.0), "top")
    bad = misplaced(w, random.Random(0))
    assert sum(a > 0 for a in bad.activations) == 2
    assert all(w.activations[i] == 0 for i, a in enumerate(bad.activations) if a > 0)
    assert mark(w) == "a<<b>>c<<d>>e"


def test_auroc_and_pearson_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(7, generator=g).round(), torch.randn(9, generator=g).round()  # ties on purpose
    brute = sum((p > n) + 0.5 * (p == n) for p in pos.tolist() for n in neg.tolist()) / (7 * 9)
    assert auroc(pos, neg) == pytest.approx(brute)
    x, y = torch.randn(50, generator=g), torch.randn(50, generator=g)
    assert pearson(x, y) == pytest.approx(float(torch.corrcoef(torch.stack([x, y]))[0, 1]), abs=1e-6)
    assert pearson(torch.ones(5), x[:5]) == 0.0
    assert parse_labels("answer: [1, 0,1]", 3) == [1, 0, 1]
    assert parse_labels("[1, 0]", 3) is None and parse_labels("[1, 2, 0]", 3) is None


def test_embedding_scorer_is_the_auroc_of_similarities(planted, tools):
    db, _, _, pool = planted
    c = gather(db, 0, ContextConfig(), pool)
    s = SCORERS["embedding"].fn(c, "digits", tools, SCORERS["embedding"].config())
    e = tools.embedder
    q = e(["digits"])[0]
    pos = e([w.text for w in c.activating[:20]]) @ q
    neg = e([w.text for w in c.negatives[:20]]) @ q
    assert s.value == pytest.approx(auroc(pos, neg)) and s.chance == 0.5 and s.n == len(pos) + len(neg)


def test_embedding_job_embeds_each_chunk_in_one_call_with_the_same_scores(planted, tmp_path, tools):
    db, _, _, pool = planted
    e = tools.embedder
    calls: list[int] = []
    embed = e._embed

    def counted(texts):
        calls.append(len(texts))
        return embed(texts)

    values = {}
    for batch in (64, 1):
        path = tmp_path / f"b{batch}.db"
        shutil.copy(db.path, path)
        _store_truth(path)
        e.clear()
        calls.clear()
        e._embed = counted
        try:
            score(path, "embedding", explainer="truth", embedder=e, pool=pool, batch_latents=batch, progress=False)
        finally:
            e._embed = embed
        values[batch] = [v for r in Records(path).scores(scorer="embedding") for v in (r.value, r.shuffled)]
        if batch == 64:  # every text of the six latents (windows, true and shuffled explanation) in one call
            assert len(calls) == -(-sum(calls) // e.batch_size) and sum(calls) > 6 * 20
        else:
            assert len(calls) >= len(PLANTED)
    assert values[64] == pytest.approx(values[1], abs=1e-6)
    # the chunk is scored at once (embedding_chunk): the same values as the scorer latent by latent
    shuffled = derange({i: p.description for i, p in enumerate(PLANTED)}, 0)
    spec = SCORERS["embedding"]
    one_by_one = [spec.fn(c, text, tools, spec.config()).value for i, p in enumerate(PLANTED)
                  for c in [gather(db, i, ContextConfig(), pool)] for text in (p.description, shuffled[i])]  # fmt: skip
    assert values[64] == pytest.approx(one_by_one, abs=1e-6)


def test_pooled_window_embedding_is_the_window_alone_when_it_is_the_whole_context(tools):
    ctx = {0: ("", "Hello", " world", ",", " this", " is", " a", " tokenisation", " test", "."),
           1: ("", "def", " foo", "(x", "):", " return", " 42")}  # fmt: skip
    states = ContextStates(tools.embedder, lambda c: ctx[c])
    whole = [Window(ctx[c][1:], (0.0,) * (len(ctx[c]) - 1), "top", c, 1) for c in ctx]
    assert torch.allclose(states(whole), tools.embedder([w.text for w in whole]), atol=1e-5)
    # a part of a context: the mean over its own wordpieces only (tokens attend to the whole context: not exact)
    part = Window(ctx[0][4:8], (0.0,) * 4, "top", 0, 4)
    pooled = states([part])[0]
    assert 0.5 < float(pooled @ tools.embedder([part.text])[0]) < 0.999
    assert float(pooled @ states(whole[:1])[0]) < 0.999
    with pytest.raises(ValueError, match="tokens 4:8 of store context 1"):
        states([Window(ctx[0][4:8], (0.0,) * 4, "top", 1, 4)])
    with pytest.raises(ValueError, match="which store context"):
        states([Window(ctx[0][4:8], (0.0,) * 4, "top")])


def test_pooled_job_embeds_each_store_context_once(planted, tmp_path, tools):
    db, store, _, pool = planted
    path = fresh(planted, tmp_path)
    _store_truth(path)
    states = ContextStates(tools.embedder, store_context_tokens(store, db.path))
    seen: list[tuple[str, ...]] = []
    run = states._run

    def counted(contexts):
        seen.extend(contexts)
        return run(contexts)

    states._run = counted
    cfg = EmbeddingConfig(pooled_contexts=True)
    score(path, "embedding", explainer="truth", config=cfg, embedder=tools.embedder, pool=pool,
          context_tokens=states, batch_latents=2, progress=False)  # fmt: skip
    wanted = {w.context for i in range(len(PLANTED)) for c in [gather(db, i, ContextConfig(), pool)]
              for w in (*c.activating[:20], *c.negatives[:20])}  # fmt: skip
    assert len(seen) == states.contexts_embedded == len(wanted) > 20  # three chunks of latents, no context twice
    assert len(set(seen)) == len(seen)
    scores = Records(path).scores(scorer="embedding")
    assert len(scores) == len(PLANTED) and all(r.error is None for r in scores)
    shuffled = derange({i: p.description for i, p in enumerate(PLANTED)}, 0)
    mine = Tools(embedder=tools.embedder, contexts=states)
    one_by_one = [SCORERS["embedding"].fn(gather(db, r.latent, ContextConfig(), pool), text, mine, cfg).value
                  for r in scores for text in (PLANTED[r.latent].description, shuffled[r.latent])]  # fmt: skip
    assert [v for r in scores for v in (r.value, r.shuffled)] == pytest.approx(one_by_one, abs=1e-6)
    with pytest.raises(ValueError, match="pooled_contexts needs the store's context tokens"):
        SCORERS["embedding"].fn(gather(db, 0, ContextConfig(), pool), "digits", Tools(embedder=tools.embedder), cfg)


def test_pooled_and_exact_embedding_scores_agree_on_planted_latents(planted, tools):
    db, store, _, pool = planted
    pooled_tools = Tools(embedder=tools.embedder, contexts=store_context_tokens(store, db.path))
    spec = SCORERS["embedding"]
    scores: dict[bool, list[float]] = {False: [], True: []}
    margins: dict[bool, list[float]] = {False: [], True: []}
    for latent in range(len(PLANTED)):
        c = gather(db, latent, ContextConfig(), pool)
        for mode in scores:
            values = [spec.fn(c, q.description, pooled_tools, EmbeddingConfig(pooled_contexts=mode)).value
                      for q in PLANTED]  # fmt: skip
            scores[mode] += values
            margins[mode].append(values[latent] - (sum(values) - values[latent]) / (len(values) - 1))
    rho = spearmanr(scores[False], scores[True]).statistic
    # measured (docs/autointerp.md): Spearman 0.79 over the 36 (latent, description) scores; true beats the mean
    # shuffled on 4/6 pooled, margin 0.112 (exact: 5/6, 0.112)
    assert rho > 0.6
    assert sum(m > 0 for m in margins[True]) >= 3 and sum(margins[True]) / len(PLANTED) > 0.05


# --- the ground truth ---------------------------------------------------------------------------------------------


def test_true_descriptions_beat_shuffled_and_random_ones(planted, tmp_path, tools):
    path = fresh(planted, tmp_path)
    gt = ground_truth(path, planted[3], tools=tools, explainers=("top-tokens", "ngrams"))
    # measured (docs/autointerp.md): embedding beats shuffled on 3/6 (digits, after-def, closing brackets; it is
    # blind to case and position) and random on 5/6, mean margin over shuffled 0.125; simulation 4/6 and 4/6, 0.127
    for scorer, min_wins, min_above_random, min_margin in (("embedding", 3, 4, 0.07), ("simulation", 4, 3, 0.07)):
        checks = [c for c in gt.checks if c.scorer == scorer]
        wins = sum(c.true > c.shuffled for c in checks)
        margin = sum(c.true - c.shuffled for c in checks) / len(checks)
        above_random = sum(c.true > c.random for c in checks)
        assert wins >= min_wins and above_random >= min_above_random and margin >= min_margin, gt.to_markdown()
    token_level = {"digits", "after-def", "closing-brackets"}
    assert all(c.true > c.shuffled + 0.2 for c in gt.checks if c.scorer == "embedding" and c.feature in token_level)
    assert len(gt.recovery) == 2 * len(PLANTED) and all(r.text for r in gt.recovery)
    after_def = next(r for r in gt.recovery if r.explainer == "ngrams" and r.feature == "after-def")
    assert "def" in (after_def.text or "")


# --- prompts ------------------------------------------------------------------------------------------------------


def test_prompt_drops_contexts_to_fit_and_says_so(planted):
    db = planted[0]
    c = gather(db, 0, ContextConfig())
    count = lambda s: len(s.split())  # noqa: E731
    full, note = explain_prompt(c.activating, LLMConfig(max_prompt_tokens=100_000), count)
    assert note == "" and full[1]["content"].count("Example") == len(c.activating)
    cut, note = explain_prompt(c.activating, LLMConfig(max_prompt_tokens=400), count)
    kept = cut[1]["content"].count("Example ")
    assert 0 < kept < len(c.activating) and note == f"dropped {len(c.activating) - kept} of {len(c.activating)} "\
        "contexts to fit 400 prompt tokens"  # fmt: skip
    assert count(cut[0]["content"] + cut[1]["content"]) <= 400
    with pytest.raises(ValueError, match="max_prompt_tokens=10"):
        explain_prompt(c.activating, LLMConfig(max_prompt_tokens=10), count)
    assert parse_explanation("blah\n[EXPLANATION]: digits in numbers\n") == "digits in numbers"
    with pytest.raises(ChatError):
        parse_explanation("[EXPLANATION]:   ")


# --- kill and resume ----------------------------------------------------------------------------------------------

_SLOW = textwrap.dedent(
    """
    import sys, time
    from mechscope.autointerp import EXPLAINERS, Checkpoint, TokensConfig, explain
    from mechscope.autointerp._explainers import top_tokens

    @EXPLAINERS.declare("slow-top", config=TokensConfig)
    def slow(contexts, llm, config):
        with open(sys.argv[2], "a") as log:
            log.write(f"{contexts.latent}\\n")
        time.sleep(float(sys.argv[3]))
        return top_tokens(contexts, llm, config)

    s = explain(sys.argv[1], "slow-top", progress=False, checkpoint=Checkpoint(int(sys.argv[4]), float(sys.argv[5])))
    print(s.done, s.skipped)
    """
)


def _run_slow(db: Path, log: Path, delay: float, every: int = 256, seconds: float = 1.0) -> subprocess.Popen:
    args = [str(db), str(log), str(delay), str(every), str(seconds)]
    return subprocess.Popen([sys.executable, "-c", _SLOW, *args], stdout=subprocess.PIPE, text=True)


def _rows(db: Path) -> dict[int, str]:
    con = sqlite3.connect(db)
    try:
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'explanations'").fetchone() is None:
            return {}
        return dict(con.execute("SELECT latent, text FROM explanations WHERE text IS NOT NULL"))
    finally:
        con.close()


def test_killed_explain_job_resumes_without_recomputing(planted, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    a, b = fresh(planted, whole), fresh(planted, killed)
    assert _run_slow(a, whole / "log", 0.0).wait(timeout=300) == 0
    proc = _run_slow(b, killed / "log", 1.0)
    deadline = time.time() + 300
    while len(_rows(b)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(b)
    assert 2 <= len(before) < len(PLANTED)
    resumed = _run_slow(b, killed / "resumed", 0.0)
    out, _ = resumed.communicate(timeout=300)
    assert out.split() == [str(len(PLANTED) - len(before)), str(len(before))]
    assert _rows(b) == _rows(a)  # same results as the uninterrupted run
    redone = {int(x) for x in (killed / "resumed").read_text().split()}
    assert not redone & set(before)  # nothing finished before the kill ran again


def test_killed_job_checkpointing_in_batches_loses_at_most_one_batch(planted, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    a, b = fresh(planted, whole), fresh(planted, killed)
    assert _run_slow(a, whole / "log", 0.0, every=2, seconds=float("inf")).wait(timeout=300) == 0
    proc = _run_slow(b, killed / "log", 0.5, every=2, seconds=float("inf"))
    seen: set[int] = set()
    deadline = time.time() + 300
    while max(seen, default=0) < 2 and time.time() < deadline and proc.poll() is None:
        seen.add(len(_rows(b)))
        time.sleep(0.02)
    time.sleep(0.6)  # the latent after the commit has finished, uncommitted: what the kill loses
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(b)
    assert seen <= {0, 2, 4} and len(before) in (2, 4)  # rows appear two at a time, never one by one
    ran = {int(x) for x in (killed / "log").read_text().split()}
    lost = ran - set(before)
    assert 1 <= len(lost) <= 2  # at most one checkpoint's latents ran and were not kept
    resumed = _run_slow(b, killed / "resumed", 0.0, every=2, seconds=float("inf"))
    out, _ = resumed.communicate(timeout=300)
    assert out.split() == [str(len(PLANTED) - len(before)), str(len(before))]
    assert _rows(b) == _rows(a)
    redone = {int(x) for x in (killed / "resumed").read_text().split()}
    assert not redone & set(before) and lost <= redone  # only the lost latents (and those never run) run again


# --- an OpenAI-compatible endpoint on loopback --------------------------------------------------------------------


class _Stub(BaseHTTPRequestHandler):
    script: ClassVar[
        list[str]
    ] = []  # per request, in order: 'ok', '500', 'nonjson', 'empty', 'slow', 'refusal'; then 'ok'
    seen: ClassVar[list[dict]] = []
    logprobs = False  # whether the server answers logprobs requests with top_logprobs
    in_flight = 0
    max_in_flight = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with _Stub.lock:
            _Stub.seen.append(body)
            what = _Stub.script.pop(0) if _Stub.script else "ok"
            _Stub.in_flight += 1
            _Stub.max_in_flight = max(_Stub.max_in_flight, _Stub.in_flight)
        try:
            if what == "slow":
                time.sleep(4.0)  # past the client timeout (2 s), with room for a loaded machine
            time.sleep(0.05)
            n = body["messages"][1]["content"].count("Example ")
            if body.get("logprobs") and _Stub.logprobs and what == "ok":
                what = "logprobs"  # a judge's single example: P(1) = 0.9 where it has a digit, else 0.2
            if body["messages"][0]["content"].startswith("We're studying neurons") and what == "ok":
                what = "simulate"  # the LLM simulator's prompt: predict 10 on digits, whatever the explanation says
            content = {"simulate": simulate_reply(body["messages"], "digits", {}) if what == "simulate" else "",
                       "ok": f"The examples.\n[EXPLANATION]: pattern with {n} examples", "empty": "  ",
                       "nonjson": None, "slow": "[EXPLANATION]: late", "refusal": "", "500": "",
                       "logprobs": ""}[what]  # fmt: skip
            choice: dict = {}
            if what == "logprobs":
                example = body["messages"][1]["content"].split("Text example: ")[1]
                p = 0.9 if any(ch.isdigit() for ch in example) else 0.2
                content, top = (" 1" if p > 0.5 else " 0"), [("1", 0.95 * p), ("0", 0.95 * (1 - p)), (" 1", 0.05 * p)]
                choice["logprobs"] = {"content": [  # a first token without the answers, as a tokenizer may give
                    {"token": " ", "logprob": -0.01, "top_logprobs": [{"token": " ", "logprob": -0.01},
                                                                      {"token": "Answer", "logprob": -6.0}]},
                    {"token": content.strip(), "logprob": math.log(max(p, 1 - p)),
                     "top_logprobs": [{"token": t, "logprob": math.log(q)} for t, q in top]}]}  # fmt: skip
            message = {"role": "assistant", "content": content}
            if what == "refusal":
                message["refusal"] = "I cannot help with that."
            reply = {"choices": [{"message": message, **choice}]}
            raw = b"<html>oops</html>" if content is None else json.dumps(reply).encode()
        finally:
            # Counted out before the reply is sent: the client cannot start its next request before it has this
            # reply, so the count never includes a request the client has already finished with.
            with _Stub.lock:
                _Stub.in_flight -= 1
        if what == "500":
            self.send_response(500)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def stub():
    _Stub.script, _Stub.seen, _Stub.max_in_flight, _Stub.in_flight, _Stub.logprobs = [], [], 0, 0, False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    # A request the client gave up on (a timeout) may still be sleeping in its handler: let it finish here, so it is
    # not counted in flight by the next test's server.
    deadline = time.monotonic() + 10
    while _Stub.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)


def test_http_chat_retries_then_fails_clearly(stub):
    chat = HTTPChat(stub, "m", retries=3, backoff=0.01, timeout=2.0)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "Example 1: x"}]
    _Stub.script = ["500", "nonjson"]
    assert chat.complete(messages, max_tokens=5, seed=0).endswith("pattern with 1 examples")
    assert len(_Stub.seen) == 3 and _Stub.seen[0]["model"] == "m" and _Stub.seen[0]["max_tokens"] == 5
    _Stub.script = ["refusal"]
    with pytest.raises(ChatError, match="refused: I cannot help"):
        HTTPChat(stub, retries=1).complete(messages, max_tokens=5, seed=0)
    _Stub.script = ["empty", "slow", "500"]
    with pytest.raises(ChatError, match=r"HTTP 500.*after 3 of 3 tries"):
        chat.complete(messages, max_tokens=5, seed=0)
    with pytest.raises(ChatError, match="no response"):
        HTTPChat("http://127.0.0.1:9/v1", retries=2, backoff=0.01, timeout=0.5).complete(messages, max_tokens=5, seed=0)


def test_judge_over_http_reads_top_logprobs_and_falls_back_to_text(planted, stub):
    db, _, _, pool = planted
    c = gather(db, 0, ContextConfig(), pool)  # digits: the stub's P(1) is 0.9 on examples with a digit
    chat = HTTPChat(stub, "m", retries=1, timeout=5)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "Text example: in 1999"}]
    _Stub.logprobs = True
    assert chat.answer_probs(messages, (" 1", " 0"), prefix="Answer:", seed=0) == pytest.approx([0.9, 0.095])
    assert _Stub.seen[-1]["logprobs"] is True and _Stub.seen[-1]["top_logprobs"] == 20
    cfg = SCORERS["detection"].make_config(n_examples=10)
    s = SCORERS["detection"].fn(c, PLANTED[0].description, Tools(chat), cfg)
    items = [(w.text, 1) for w in c.activating[:10]] + [(w.text, 0) for w in c.negatives[:10]]
    said = [int(any(ch.isdigit() for ch in t.replace("\n", "⏎"))) for t, _ in items]
    expected = [sum(p == y for p, (_, y) in zip(said, items, strict=True) if y == k) / 10 for k in (0, 1)]
    assert s.detail["mode"] == "probabilities" and s.detail["unparsed"] == 0
    assert s.value == pytest.approx(sum(expected) / 2) and s.value > 0.8
    assert [p > 0.5 for p in s.detail["p1"]] == [bool(x) for x in said]  # in item order
    _Stub.logprobs, sent = False, len(_Stub.seen)  # a server that ignores logprobs: one try, then text
    assert chat.answer_probs(messages, (" 1", " 0"), prefix="Answer:", seed=0) is None
    s = SCORERS["detection"].fn(c, PLANTED[0].description, Tools(chat), cfg)
    assert s.detail["mode"] == "text" and s.detail["unparsed"] == 20  # the stub's text is no list of 0/1
    assert len(_Stub.seen) - sent == 1 + 1 + 20 // cfg.batch_size


def test_explain_job_over_http_is_concurrent_stores_prompts_and_resumes_failures(planted, tmp_path, stub):
    path = fresh(planted, tmp_path)
    chat = HTTPChat(stub, "m", retries=1, backoff=0.01, timeout=5, concurrency=3)
    _Stub.script = ["ok", "500"]  # one latent fails (one try only), the rest succeed
    s = explain(path, "llm", llm=chat, progress=False)
    assert s.done == len(PLANTED) - 1 and len(s.failed) == 1
    assert 1 < _Stub.max_in_flight <= 3
    (failed,) = s.failed
    assert "HTTP 500" in s.failed[failed]
    rows = {r.latent: r for r in read_explanations(path)}
    assert rows[failed].text is None and "HTTP 500" in rows[failed].error
    ok = rows[(failed + 1) % len(PLANTED)]
    assert ok.text.startswith("pattern with") and "<<" in ok.prompt and ok.response.startswith("The examples.")
    assert ok.provenance["llm"] == chat.name and ok.provenance["prompt_version"] == "delphi-v1"
    with pytest.raises(ValueError, match="llm needs a chat model"):
        explain(path, "llm", progress=False)
    with pytest.raises(ValueError, match=r"out of range: the dictionary has 6 latents"):
        explain(path, "ngrams", latents=[7], progress=False)
    again = explain(path, "llm", llm=chat, progress=False)
    assert (again.done, again.skipped, again.failed) == (1, len(PLANTED) - 1, {})


def test_llm_simulation_job_over_http_is_concurrent_and_records_failures(planted, tmp_path, stub):
    path = fresh(planted, tmp_path)
    _store_truth(path)
    chat = HTTPChat(stub, "m", retries=1, backoff=0.01, timeout=5, concurrency=3)
    _Stub.script = ["500"]  # the first request fails (one try only): that latent's row holds the error
    s = score(path, "llm-simulation", explainer="truth", llm=chat, pool=planted[3], latents=[0, 1, 3], progress=False)
    assert s.done == 2 and len(s.failed) == 1 and 1 < _Stub.max_in_flight <= 3
    rows = {r.latent: r for r in Records(path).scores(scorer="llm-simulation")}
    (failed,) = s.failed
    assert rows[failed].value is None and "HTTP 500" in rows[failed].error
    if failed != 0:  # the stub predicts 10 on digits whatever the explanation: digits correlates, with both texts
        assert rows[0].value > 0.9 and rows[0].shuffled > 0.9 and rows[0].detail["unparsed"] == 0
    sent = next(b for b in _Stub.seen if "Sequence:" in b["messages"][1]["content"])
    assert (
        sent["messages"][1]["content"].startswith("Neuron explanation: ")
        and "\tunknown\n" in sent["messages"][1]["content"]
    )
    again = score(
        path, "llm-simulation", explainer="truth", llm=chat, pool=planted[3], latents=[0, 1, 3], progress=False
    )
    assert (again.done, again.skipped, again.failed) == (1, 2, {})


# --- the command line ---------------------------------------------------------------------------------------------


def test_cli_explain_score_show(planted, tmp_path):
    path = fresh(planted, tmp_path)
    r = CliRunner().invoke(app, ["explain", str(path), "--explainer", "ngrams", "--latents", "0-2,5", "--n-tokens",
                                 "3", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout[: r.stdout.rindex("}") + 1])["done"] == 4
    r = CliRunner().invoke(app, ["score", str(path), "--scorer", "embedding", "--explainer", "ngrams", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout[: r.stdout.rindex("}") + 1])["embedding"]
    assert got["latents_scored"] == 4 and got["chance"] == 0.5
    r = CliRunner().invoke(app, ["features", "show", str(path), "2"])
    assert r.exit_code == 0 and "explanation [ngrams" in r.stdout and "embedding:" in r.stdout, r.output
    # The explorer reads the same tables: each explanation with its best score, and searchable by its words.
    from mechscope.store import FeatureDB

    db = FeatureDB(path)
    (shown,) = db.explanations(2)
    with Records(path) as records:
        (text,) = [r.text for r in records.explanations(latent=2)]
        (value,) = [r.value for r in records.scores(latent=2, scorer="embedding")]
    assert shown.text == text and shown.explainer == "ngrams" and shown.score == value and shown.scorer == "embedding"
    assert 2 in {e.latent for e in db.search_explanations(text.split()[0], 10)}
    r = CliRunner().invoke(app, ["score", str(path), "--scorer", "output", "--explainer", "ngrams"])
    assert r.exit_code == 1 and "give --dictionary" in r.output and "planted oracle has no decoder" in r.output
    r = CliRunner().invoke(app, ["score", str(path), "--scorer", "embedding", "--explainer", "llm"])
    assert r.exit_code == 1 and "no explanations by 'llm'" in r.output


def test_cli_chat_options_reach_the_endpoint_for_explain_and_score(planted, tmp_path, stub):
    path = fresh(planted, tmp_path)
    common = ["--url", stub, "--llm-model", "m2", "--concurrency", "2", "--timeout", "5", "--retries", "1", "--json"]
    r = CliRunner().invoke(app, ["explain", str(path), "--explainer", "llm", "--latents", "0-1", *common])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout[: r.stdout.rindex("}") + 1])["done"] == 2
    assert {b["model"] for b in _Stub.seen} == {"m2"} and {e.provenance["llm"] for e in read_explanations(path)} == {
        f"{stub} m2"}  # fmt: skip
    _Stub.logprobs, sent = True, len(_Stub.seen)
    r = CliRunner().invoke(app, ["score", str(path), "--scorer", "detection", "--explainer", "llm", "--n-examples",
                                 "2", *common])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout[: r.stdout.rindex("}") + 1])["detection"]["latents_scored"] == 2
    asked = _Stub.seen[sent:]
    assert asked and all(b["model"] == "m2" and b["logprobs"] is True for b in asked)


def test_cli_score_pooled_contexts_matches_the_api(planted, tmp_path, tools):
    db, store, _, pool = planted
    values = {}
    for how in ("cli", "api", "exact"):
        path = tmp_path / f"{how}.db"
        shutil.copy(db.path, path)
        explain(path, "ngrams", progress=False)
        if how == "cli":
            r = CliRunner().invoke(app, ["score", str(path), "--scorer", "embedding", "--explainer", "ngrams",
                                         "--pooled-contexts", "--json"])  # fmt: skip
            assert r.exit_code == 0, r.output
        else:
            cfg = EmbeddingConfig(pooled_contexts=how == "api")
            score(path, "embedding", explainer="ngrams", config=cfg, embedder=tools.embedder, pool=pool,
                  context_tokens=store_context_tokens(store, db.path), progress=False)  # fmt: skip
        rows = Records(path).scores(scorer="embedding")
        values[how] = [r.value for r in sorted(rows, key=lambda r: r.latent)]
        assert len(rows) == len(PLANTED) and all(r.provenance["config"]["pooled_contexts"] == (how != "exact")
                                                 for r in rows)  # fmt: skip
    assert values["cli"] == pytest.approx(values["api"], abs=1e-6) and values["api"] != values["exact"]


# --- the built-in chat model --------------------------------------------------------------------------------------


def test_llm_explainer_with_the_built_in_model_fits_its_budget_and_stores_the_exchange(planted, tmp_path, smol):
    from mechscope.autointerp import LocalChat

    path = fresh(planted, tmp_path)
    chat = LocalChat(smol)
    s = explain(path, "llm", config=LLMConfig(max_prompt_tokens=400, max_new_tokens=8), latents=[2], llm=chat,
                progress=False)  # fmt: skip
    (row,) = read_explanations(path)
    assert row.prompt_tokens <= 400 and row.note.startswith("dropped ") and "<<" in row.prompt
    assert row.prompt_tokens == chat.count_tokens(row.prompt)
    if row.text is None:  # a 135M model may reply with nothing usable; that is a per-latent error, not a crash
        assert s.failed and "ChatError" in row.error
    else:
        assert row.response and row.text in row.response and row.provenance["llm"] == "smollm2-135m"


def test_local_chat_answer_probabilities_are_the_models_next_token_probabilities(smol):
    from mechscope.autointerp import LocalChat

    chat = LocalChat(smol)
    messages = [{"role": "user", "content": "Is 7 a prime number? Answer 1 for yes, 0 for no."}]
    got = chat.answer_probs(messages, (" 1", " 0"), prefix="Answer:", seed=0)
    tok = smol.tokenizer
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + "Answer: "
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(smol.module(input_ids=ids).logits[0, -1].float(), -1)
    one, zero = (tok(d, add_special_tokens=False)["input_ids"] for d in ("1", "0"))
    assert len(one) == len(zero) == 1  # SmolLM2 splits " 1" into " " and "1": the shared " " is conditioned on
    assert got == pytest.approx([float(probs[one[0]]), float(probs[zero[0]])], rel=1e-4)
    assert 0 < sum(got) <= 1
    # answers of several tokens (one batched pass): the product of their tokens' probabilities
    multi = chat.answer_probs(messages, (" 1", " 0 0"), prefix="Answer:", seed=0)
    seq = tok(text + "0 0", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(smol.module(input_ids=seq).logits[0].float(), -1)
    n = ids.shape[1]
    expected = math.exp(sum(float(logp[j - 1, seq[0, j]]) for j in range(n, seq.shape[1])))
    assert seq.shape[1] - n == 3 and multi == pytest.approx([got[0], expected], rel=1e-3)


# --- output scoring (steering) ------------------------------------------------------------------------------------


class FakeSteerer:
    """Steered continuations that talk about the latent's planted meaning; plain ones about something else."""

    prompts = ("a", "b", "c", "d")

    def generations(self, latent):
        topic = PLANTED[latent].description
        return [f"{topic}, again {k}" for k in range(4)], ["the weather was mild", "we went home", "ok", "and then"]


def test_output_scorer_is_the_auroc_of_steered_against_plain(planted, tmp_path, tools):
    from mechscope.autointerp import Tools as T

    db = planted[0]
    c = gather(db, 0, ContextConfig())
    spec = SCORERS["output"]
    steer = FakeSteerer()
    s = spec.fn(c, "digits and numbers", T(embedder=tools.embedder, steer=steer), spec.config())
    steered, plain = steer.generations(0)
    q = tools.embedder(["digits and numbers"])[0]
    expected = auroc(tools.embedder(steered) @ q, tools.embedder(plain) @ q)
    assert s.value == pytest.approx(expected) and s.value == 1.0 and s.chance == 0.5 and s.detail["changed"] == 4
    with pytest.raises(ValueError, match="needs a steerer"):
        spec.fn(c, "digits", T(embedder=tools.embedder), spec.config())
    # the job: true descriptions separate steered from plain text, shuffled ones (another latent's) less so
    path = fresh(planted, tmp_path)
    _store_truth(path)
    score(path, "output", explainer="truth", embedder=tools.embedder, steer=steer, progress=False)
    rows = Records(path).scores(scorer="output")
    assert len(rows) == len(PLANTED) and all(r.value == 1.0 for r in rows)
    assert sum(r.shuffled for r in rows) / len(rows) < 0.95


def test_dictionary_steerer_adds_the_decoder_direction(tiny_models):
    from types import SimpleNamespace

    from mechscope.autointerp import DictionarySteerer

    model = tiny_models["llama"]
    d_model = model.cfg.d_model
    W_dec = torch.randn(3, d_model, generator=torch.Generator().manual_seed(0))
    dictionary = SimpleNamespace(cfg=SimpleNamespace(site="resid_post.0"), W_dec=W_dec)
    plain = list(model.generate(list(DictionarySteerer(model, dictionary).prompts), max_new_tokens=12).texts)
    zero, base = DictionarySteerer(model, dictionary, strength=0.0).generations(1)
    assert zero == base == plain  # adding nothing changes nothing
    steered, base = DictionarySteerer(model, dictionary, strength=200.0).generations(1)
    assert base == plain and steered != plain


# --- a trained-dictionary layout: the negative pool against brute force ------------------------------------------


def test_negative_pool_of_a_real_dictionary_matches_brute_force(tmp_path, tiny_models, tools):
    from pydoc_data.topics import topics

    import mechscope.features as mf
    from mechscope.store import FeatureDBConfig, HarvestConfig, build_feature_db, harvest

    model = tiny_models["llama"]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": topics[k][:800]}) + "\n" for k in sorted(topics)[:4]))
    cfg = HarvestConfig(("resid_post.1",), corpus=str(corpus), ctx_len=32, batch_size=16, shard_size=32 * 20)
    store = harvest(model, cfg, tmp_path / "store", progress=False)
    d = mf.build_dictionary(mf.DictionaryConfig("topk", d_in=64, d_sae=24, k=4, site="resid_post.1"), seed=1).eval()
    W_U = model.module.get_output_embeddings().weight.T
    db = build_feature_db(store, d, tmp_path / "f.db", FeatureDBConfig(top_k=5, window=8, before=4), W_U=W_U,
                          tokenizer=model.tokenizer, progress=False)  # fmt: skip
    pool = NegativePool.build(store, d, db, n_windows=40, seed=3)
    # brute force: encode every stored token, take each pool window's largest activation per latent
    acts = torch.cat([s.acts for s in store.shards("resid_post.1")]).float()
    with torch.no_grad():
        lat = d.encode(acts).view(-1, 32, 24)  # [n_ctx pos d_sae]
    tokens = store.tokens()
    for w in range(len(pool)):
        hits = [(c, s) for c in range(len(tokens)) for s in range(1, 32 - 8 + 1)
                if torch.equal(tokens[c, s : s + 8], pool.token_ids[w])]  # fmt: skip
        assert any(torch.allclose(lat[c, s : s + 8].amax(0), pool.peak[w], atol=1e-5) for c, s in hits)
    fired = [s.latent for s in db.top_latents("n_active", 24) if s.n_active > 0][:3]
    summary = explain(db.path, "output-tokens", latents=fired, progress=False)
    assert summary.done == len(fired)
    assert all(r.text.startswith("predicts the tokens") for r in read_explanations(db.path))
    scored = score(db.path, "embedding", explainer="output-tokens", embedder=tools.embedder, pool=pool, progress=False)
    assert scored.done + len(scored.failed) == len(fired) and scored.done >= 1, scored
    assert all("non-activating" in e for e in scored.failed.values())  # a latent firing in every pool window
    # output scoring from the command line: the model is the store's, the steering direction the dictionary's
    mf.save_dictionary(d, tmp_path / "sae")
    args = ["score", str(db.path), "--scorer", "output", "--explainer", "output-tokens", "--json"]
    r = CliRunner().invoke(app, [*args, "--dictionary", str(tmp_path / "sae"), "--steer-strength", "50"])
    assert r.exit_code == 0, r.output
    rows = Records(db.path).scores(scorer="output")
    assert len(rows) == len(fired) and all(r.chance == 0.5 and r.error is None for r in rows)
    assert all(r.detail["changed"] > 0 for r in rows)  # steering at strength 50 changes the continuations
    r = CliRunner().invoke(app, args)
    assert r.exit_code != 0 and "give --dictionary" in r.output
