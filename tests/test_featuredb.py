import itertools
import json

import pytest
import torch

import mechscope as ms
import mechscope.features as mf
from mechscope.core._tiny import byte_tokenizer
from mechscope.store import ActivationStore, FeatureDB, FeatureDBConfig, HarvestConfig, build_feature_db, harvest
from mechscope.store import _featuredb as featuredb_module
from mechscope.store._accumulate import HIST_EDGES, Reservoirs
from mechscope.store._store import ProvenanceError

CTX = 32
CONFIG = FeatureDBConfig(top_k=5, window=8, before=5, n_quantiles=3, samples_per_quantile=4, n_logits=6)


@pytest.fixture(scope="module")
def model() -> ms.Model:
    return ms.tiny("llama", seed=0)


@pytest.fixture(scope="module")
def store(model, tmp_path_factory) -> ActivationStore:
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("featuredb")
    corpus = root / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": topics[k][:1000]}) + "\n" for k in sorted(topics)[:4]))
    cfg = HarvestConfig(("resid_post.1",), corpus=str(corpus), ctx_len=CTX, batch_size=16, shard_size=CTX * 40)
    return harvest(model, cfg, root / "store", progress=False)


@pytest.fixture(scope="module")
def dictionary(store) -> mf.Dictionary:
    d = mf.build_dictionary(mf.DictionaryConfig("topk", d_in=64, d_sae=48, k=6, site="resid_post.1"), seed=1)
    d.init_b_dec_(torch.cat([s.acts for s in store.shards("resid_post.1")]), "mean")  # spread the firing
    with torch.no_grad():
        d.b_enc.normal_(
            -0.05, 0.05, generator=torch.Generator().manual_seed(0)
        )  # uneven rates, activations over decades
    return d.eval()


@pytest.fixture(scope="module")
def latents(store, dictionary) -> torch.Tensor:
    """Brute force: every latent on every stored token, BOS positions zeroed. [n_ctx pos d_sae]"""
    acts = torch.cat([s.acts for s in store.shards("resid_post.1")])
    with torch.no_grad():
        lat = dictionary.encode(acts).view(-1, CTX, 48).clone()
    lat[:, 0] = 0
    return lat


@pytest.fixture(scope="module")
def db(store, dictionary, model, tmp_path_factory) -> FeatureDB:
    path = tmp_path_factory.mktemp("db") / "features.db"
    W_U = model.module.get_output_embeddings().weight.T
    return build_feature_db(store, dictionary, path, CONFIG, W_U=W_U, tokenizer=model.tokenizer, progress=False)


def test_statistics_match_brute_force(db, latents):
    flat = latents.view(-1, 48)
    n_tokens = latents.shape[0] * (CTX - 1)
    assert db.meta["n_tokens"] == n_tokens
    for i in range(48):
        card, col = db.latent(i), flat[:, i]
        fired = col[col > 0]
        assert card.n_active == len(fired)
        if not len(fired):  # a dead latent: no examples, no histogram
            assert card.top_examples == () and card.hist_counts == () and card.frequency == 0
            continue
        assert card.frequency == pytest.approx(len(fired) / n_tokens)
        assert card.mean_activation == pytest.approx(fired.double().mean().item(), rel=1e-6)
        assert card.max_activation == pytest.approx(fired.max().item())
        hist = torch.bincount(torch.bucketize(fired, HIST_EDGES, right=True) - 1, minlength=len(HIST_EDGES))
        nonzero = hist.nonzero().flatten()
        assert list(card.hist_counts) == hist[nonzero[0] : nonzero[-1] + 1].tolist()
        assert card.hist_edges[0] <= fired.min() and fired.max() <= card.hist_edges[-1]


def test_top_contexts_are_the_top_activations(db, latents, store):
    peak, _ = latents.max(dim=1)  # [n_ctx d_sae]
    tokens = store.tokens()
    for i in range(48):
        card = db.latent(i)
        values, contexts = peak[:, i].topk(CONFIG.top_k)
        values, contexts = values[values > 0], contexts[values > 0]  # contexts where it fired at all
        assert [e.activation for e in card.top_examples] == pytest.approx(values.tolist())
        assert len({e.context for e in card.top_examples}) == len(values)  # distinct contexts (ties: any of them)
        for e in card.top_examples:
            assert latents[e.context, e.position, i].item() == peak[e.context, i].item() == e.activation
            window = slice(e.window_start, e.window_start + CONFIG.window)
            assert e.window_start <= e.position < e.window_start + CONFIG.window
            assert list(e.activations) == pytest.approx(latents[e.context, window, i].tolist())
            assert list(e.token_ids) == tokens[e.context, window].tolist()
            assert e.tokens == tuple(byte_tokenizer().decode([t]) for t in e.token_ids)


def test_quantile_samples_are_real_and_ordered(db, latents):
    for i in range(48):
        card = db.latent(i)
        groups = [g for g in card.quantile_examples if g]
        assert len(card.quantile_examples) == CONFIG.n_quantiles
        assert bool(groups) == (card.n_active > 0)
        assert all(len(g) <= CONFIG.samples_per_quantile for g in groups)
        for lower, upper in itertools.pairwise(groups):
            assert max(e.activation for e in lower) <= min(e.activation for e in upper)
        for e in (e for g in groups for e in g):
            assert e.activation > 0 and latents[e.context, e.position, i].item() == pytest.approx(e.activation)
            window = latents[e.context, e.window_start : e.window_start + CONFIG.window, i]
            assert list(e.activations) == pytest.approx(window.tolist())
        assert len({(e.context, e.position) for g in groups for e in g}) == sum(map(len, groups))
        fired = latents[:, :, i][latents[:, :, i] > 0]
        for k, group in enumerate(card.quantile_examples):  # the sample's bin overlaps its quantile
            for e in group:
                b = torch.bucketize(torch.tensor([e.activation]), HIST_EDGES, right=True).item() - 1
                bin_low = (fired < HIST_EDGES[b]).float().mean().item()
                bin_high = 1.0 if b + 1 == len(HIST_EDGES) else (fired < HIST_EDGES[b + 1]).float().mean().item()
                assert bin_low <= (k + 1) / CONFIG.n_quantiles and bin_high >= k / CONFIG.n_quantiles
        if card.n_active >= 100:  # a bin's sample is shared by the quantiles the bin spans, so some get fewer
            assert all(card.quantile_examples) and sum(map(len, groups)) >= 2 * CONFIG.samples_per_quantile


def test_large_reservoirs_keep_every_firing_token(store, dictionary, latents, tmp_path):
    cfg = FeatureDBConfig(top_k=1, window=4, before=1, n_quantiles=1, samples_per_quantile=400, n_logits=0)
    big = build_feature_db(store, dictionary, tmp_path / "big.db", cfg, progress=False)
    for i in range(48):
        fired = {(c, p) for c, p in (latents[:, :, i] > 0).nonzero().tolist()}
        kept = {(e.context, e.position) for e in big.latent(i).quantile_examples[0]}
        assert kept <= fired and len(kept) == min(len(fired), 400)
        if len(fired) <= 400:
            assert kept == fired


def test_reservoir_sample_is_uniform():
    # 1000 latents are 1000 independent trials: each fires on 40 tokens of one histogram bin, offered in 4
    # chunks of 10; R = 4 keeps each token with probability 0.1.
    trials = 1000
    lat3 = torch.full((1, 10, trials), 0.5)
    rows, latent = torch.arange(10).repeat_interleave(trials), torch.arange(trials).repeat(10)
    bins = torch.bucketize(torch.full((10 * trials,), 0.5), HIST_EDGES, right=True) - 1
    gen = torch.Generator().manual_seed(0)
    res = Reservoirs.empty(trials, 4, 2)
    for chunk in range(4):
        res.update(lat3, chunk, rows, latent, bins, torch.rand(10 * trials, generator=gen), 0)
    assert len(res.key) == trials and (res.key > -torch.inf).all()
    hits = torch.zeros(4, 10)
    hits.index_put_((res.ctx.flatten(), res.pos.flatten()), torch.ones(4 * trials), accumulate=True)
    rate = hits / trials
    assert rate.sum() == pytest.approx(0.1 * 40)
    assert rate.min() > 0.1 - 0.04 and rate.max() < 0.1 + 0.04  # 4.2 sigma per cell (sigma = 0.0095)


def test_logit_effects_and_token_search(db, dictionary, model):
    W_U = model.module.get_output_embeddings().weight.T.detach()
    effects = dictionary.W_dec.detach() @ W_U  # [d_sae d_vocab]
    for i in (0, 17, 47):
        card = db.latent(i)
        up, down = effects[i].topk(CONFIG.n_logits), effects[i].topk(CONFIG.n_logits, largest=False)
        assert [e.token_id for e in card.promoted] == up.indices.tolist()
        assert [e.effect for e in card.promoted] == pytest.approx(up.values.tolist(), rel=1e-5)
        assert [e.token_id for e in card.suppressed] == down.indices.tolist()
        assert card.promoted[0].token == model.tokenizer.decode([card.promoted[0].token_id])
    target = db.latent(5).promoted[0]
    matches = db.search_token(target.token)
    assert any(m.latent == 5 and m.rank == 0 for m in matches)
    assert [m.effect for m in matches] == sorted((m.effect for m in matches), reverse=True)
    assert all(m.token_id == target.token_id for m in db.search_token(target.token_id))


def test_queries_and_rendering(db, latents):
    freq = (latents > 0).flatten(0, 1).float().mean(0) * CTX / (CTX - 1)
    top = db.top_latents("frequency", n=5)
    assert [t.latent for t in top] == freq.topk(5).indices.tolist()
    rarest = db.top_latents("frequency", n=3, descending=False)
    assert [t.frequency for t in rarest] == pytest.approx(freq.topk(3, largest=False).values.tolist())
    with pytest.raises(ValueError, match="by must be one of"):
        db.top_latents("latent; DROP TABLE latents")
    card = db.latent(top[0].latent)
    assert json.loads(json.dumps(card.to_dict()))["latent"] == top[0].latent
    text = card.to_text()
    assert f"latent {top[0].latent}" in text and "[[" in text and "promotes" in text
    with pytest.raises(IndexError, match="48 latents"):
        db.latent(48)


def test_bad_inputs_name_both_sides(store, dictionary, tmp_path):
    wide = mf.build_dictionary(mf.DictionaryConfig("topk", d_in=32, d_sae=16, k=2))
    with pytest.raises(ProvenanceError, match=r"d_in=32.*width 64"):
        build_feature_db(store, wide, tmp_path / "x.db", progress=False)
    elsewhere = mf.build_dictionary(mf.DictionaryConfig("topk", d_in=64, d_sae=16, k=2, site="resid_post.0"))
    with pytest.raises(ProvenanceError, match=r"resid_post\.0.*resid_post\.1"):
        build_feature_db(store, elsewhere, tmp_path / "x.db", FeatureDBConfig(site="resid_post.1"), progress=False)
    with pytest.raises(ValueError, match=r"get_output_embeddings\(\)\.weight\.T"):
        build_feature_db(store, dictionary, tmp_path / "x.db", W_U=torch.zeros(258, 64), progress=False)
    assert not list(tmp_path.iterdir())


def test_build_is_atomic_and_deterministic(store, dictionary, db, tmp_path, monkeypatch):
    path = tmp_path / "f.db"
    first = build_feature_db(store, dictionary, path, CONFIG, progress=False)
    before = path.read_bytes()

    def fail(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(featuredb_module, "_write_examples", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        build_feature_db(store, dictionary, path, CONFIG, progress=False)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["f.db"]
    monkeypatch.undo()
    again = build_feature_db(store, dictionary, tmp_path / "g.db", CONFIG, progress=False)
    for i in (0, 23):
        a, b = first.latent(i), again.latent(i)
        assert a == b
        assert [e.activations for e in a.top_examples] == [e.activations for e in db.latent(i).top_examples]


def test_explanations_are_written_read_and_searched(db, tmp_path):
    import shutil

    from mechscope.store import Explanation, add_explanations

    path = shutil.copy(db.path, tmp_path / "explained.db")
    with FeatureDB(path) as fresh:  # built without the table: no explanations, searches find nothing
        assert fresh.explanations(3) == [] and fresh.search_explanations("digits") == []
    written = [
        Explanation(3, "fires on digits after a dollar sign", "top_tokens", 0.4, "detection"),
        Explanation(3, "Digits in prices", "llm", 0.9, "detection"),
        Explanation(7, "closing brackets", "human"),
        Explanation(9, "100% of digits_here", "llm", 0.1, "fuzzing"),
    ]
    assert add_explanations(path, written) == 4
    add_explanations(path, [Explanation(7, "closing brackets ) and ]", "human", 0.5, "detection")])  # replaces
    with FeatureDB(path) as explained:
        assert [e.explainer for e in explained.explanations(3)] == ["llm", "top_tokens"]  # best score first
        assert explained.explanations(7) == [Explanation(7, "closing brackets ) and ]", "human", 0.5, "detection")]
        assert explained.explanations(4) == []
        assert [(e.latent, e.explainer) for e in explained.search_explanations("DIGITS")] == [
            (3, "llm"), (3, "top_tokens"), (9, "llm")]  # fmt: skip
        assert [e.latent for e in explained.search_explanations("digits dollar")] == [3]  # every word
        assert [e.latent for e in explained.search_explanations("100%")] == [9]  # % and _ are literal
        assert [e.latent for e in explained.search_explanations("s_h")] == [9]
        assert explained.search_explanations("s%h") == []
        assert len(explained.search_explanations("digits", n=1)) == 1
        with pytest.raises(ValueError, match="search text is empty"):
            explained.search_explanations("  ")
    with pytest.raises(ValueError, match=r"out of range.*48 latents"):
        add_explanations(path, [Explanation(48, "x", "human")])
    with pytest.raises(ValueError, match="non-empty text"):
        add_explanations(path, [Explanation(1, " ", "human")])
    with pytest.raises(FileNotFoundError, match="no feature database"):
        add_explanations(tmp_path / "missing.db", [])
