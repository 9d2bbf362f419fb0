import errno
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch

import mechscope as ms
import mechscope.features as mf
from mechscope.data.corpus import Corpus, load_corpus, text_sha256, token_contexts
from mechscope.store import ActivationStore, HarvestConfig, LiveActivations, ProvenanceError, harvest
from mechscope.store import _harvest as harvest_module
from mechscope.store import _store as store_module


@pytest.fixture(scope="module")
def model() -> ms.Model:
    return ms.tiny("llama", seed=0)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """Real English (pydoc topics), a few thousand byte-level tokens, as JSONL: several documents."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    docs = [topics[k][:1000] for k in sorted(topics)[:4]]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def config(corpus_file: Path, **kw) -> HarvestConfig:
    base = {"sites": ("resid_post.1",), "corpus": str(corpus_file), "ctx_len": 32, "batch_size": 6,
            "shard_size": 32 * 16}  # fmt: skip
    return HarvestConfig(**{**base, **kw})


def shard_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.glob("shard_*.safetensors"))}


# --- corpus --------------------------------------------------------------------------------------------------


def test_python_docs_is_deterministic_real_text():
    a, b = load_corpus(), load_corpus("python-docs")
    assert a == b and a.sha256 == text_sha256(a.texts)
    assert len(a.texts) > 79 and sum(map(len, a.texts)) > 465_000
    assert any("Assignment statements" in t for t in a.texts)


def test_corpus_files_and_errors(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("Hello world.")
    assert load_corpus(txt).texts == ("Hello world.",) and load_corpus(txt).name == "a.txt"
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n')
    assert load_corpus(jsonl).texts == ("one", "two")
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        load_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 has no string field 'text'"):
        load_corpus(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="datasets"):
        load_corpus("no-such-dataset-name")


def test_token_contexts_cut_the_eos_joined_stream(model):
    tok = model.tokenizer
    corpus = Corpus.of("t", ["abcdefgh", "ijklmnopqrstuvwxyz" * 3])
    ctx = token_contexts(corpus, tok, ctx_len=8, seed=0)
    stream = [*tok.encode("abcdefgh"), tok.eos_token_id, *tok.encode("ijklmnopqrstuvwxyz" * 3), tok.eos_token_id]
    n = len(stream) // 7
    assert ctx.shape == (n, 8) and ctx.dtype == torch.long
    assert tok.bos_token_id is None and (ctx[:, 0] == tok.eos_token_id).all()  # no BOS: EOS starts contexts
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    unshuffled = torch.empty_like(ctx)
    unshuffled[order] = ctx
    assert unshuffled[:, 1:].flatten().tolist() == stream[: n * 7]
    assert torch.equal(ctx, token_contexts(corpus, tok, 8, seed=0))
    assert not torch.equal(ctx, token_contexts(corpus, tok, 8, seed=1))
    assert token_contexts(corpus, tok, 8, bos=False).shape == (len(stream) // 8, 8)
    with pytest.raises(ValueError, match="fewer than one context"):
        token_contexts(corpus, tok, ctx_len=1000)


def _fast_tokenizer(extra: str = ""):
    """A ``tokenizers``-backed word-level tokenizer, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["a", "and", "cat", "dog", "mat", "on", "ran", "sat", "the"] + ([extra] if extra else [])
    vocab = {"<unk>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")


def test_token_stream_cache_is_exact_and_keyed_by_corpus_and_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    corpus = Corpus.of("t", ["the cat sat on a mat", "a dog ran and the cat sat"] * 5)
    tok = _fast_tokenizer()
    first = token_contexts(corpus, tok, ctx_len=4, seed=0)
    (entry,) = (tmp_path / "token_streams").glob("*.safetensors")
    monkeypatch.setattr(type(tok), "__call__", lambda *a, **k: pytest.fail("tokenised despite the cache"))
    assert torch.equal(token_contexts(corpus, tok, ctx_len=4, seed=0), first)
    monkeypatch.undo()
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    entry.write_bytes(b"not safetensors")  # a corrupt entry is rebuilt, not trusted
    assert torch.equal(token_contexts(corpus, tok, ctx_len=4, seed=0), first)
    token_contexts(Corpus.of("u", ["the dog sat"] * 9), tok, ctx_len=4)  # another corpus: its own entry
    other = _fast_tokenizer("zebra")  # another vocabulary: its own entry, its own ids
    token_contexts(corpus, other, ctx_len=4)
    assert len(list((tmp_path / "token_streams").glob("*.safetensors"))) == 3


# --- harvest -------------------------------------------------------------------------------------------------


def test_harvest_equals_model_run(model, corpus_file, tmp_path):
    sites = ("head.0.z", "resid_post.1")
    store = harvest(model, config(corpus_file, sites=sites), tmp_path / "s", progress=False)
    m = store.manifest
    assert m.complete and len(m.shards) > 2 and m.n_tokens == m.n_contexts * 32
    assert store.provenance.sites == {"head.0.z": 64, "resid_post.1": 64}
    assert store.provenance.corpus_sha256 == load_corpus(corpus_file).sha256
    tokens = store.tokens()
    assert torch.equal(tokens, token_contexts(load_corpus(corpus_file), model.tokenizer, 32)[: m.n_contexts])
    for site in sites:
        got = torch.cat([s.acts for s in store.shards(site)])
        want = model.run(tokens, cache=[site]).cache[site].reshape(len(tokens) * 32, -1)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    store.verify()
    store.check(model)


def test_harvest_bfloat16_and_max_tokens(model, corpus_file, tmp_path):
    store = harvest(model, config(corpus_file, dtype="bfloat16", max_tokens=32 * 5 + 7), tmp_path / "s", progress=False)
    assert store.manifest.n_contexts == 5
    (shard,) = store.shards("resid_post.1")
    want = model.run(shard.tokens, cache=["resid_post.1"]).cache["resid_post.1"].reshape(5 * 32, -1)
    assert shard.acts.dtype == torch.bfloat16
    torch.testing.assert_close(shard.acts, want.to(torch.bfloat16), rtol=0, atol=0)


def test_resume_after_truncation_is_byte_identical(model, corpus_file, tmp_path):
    full = harvest(model, config(corpus_file), tmp_path / "full", progress=False)
    part = harvest(model, config(corpus_file, max_tokens=32 * 40), tmp_path / "part", progress=False)
    assert [(s.start, s.stop) for s in part.manifest.shards] == [(0, 16), (16, 32), (32, 40)]  # last one partial
    resumed = harvest(model, config(corpus_file), tmp_path / "part", progress=False)
    assert shard_bytes(tmp_path / "part") == shard_bytes(tmp_path / "full")
    assert resumed.manifest.shards == full.manifest.shards


def test_resume_after_crash_between_shard_and_manifest(model, corpus_file, tmp_path, monkeypatch):
    out = tmp_path / "s"
    real_write, calls = harvest_module.atomic_write_bytes, []

    def crash_on_third_manifest(path, data):
        if path.name == "manifest.json":
            calls.append(path)
            if len(calls) == 3:  # fresh manifest, shard 0 listed, then shard 1 written but never listed
                raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(harvest_module, "atomic_write_bytes", crash_on_third_manifest)
    with pytest.raises(KeyboardInterrupt):
        harvest(model, config(corpus_file), out, progress=False)
    monkeypatch.undo()
    assert len(ActivationStore(out).manifest.shards) == 1 and (out / "shard_00001.safetensors").exists()
    (out / ".shard_00002.safetensors.x1y2").write_bytes(b"half a shard")  # what SIGKILL mid-write leaves
    (out / "shard_00001.safetensors").write_bytes(b"corrupt")  # never listed, so never trusted
    harvest(model, config(corpus_file), out, progress=False)
    harvest(model, config(corpus_file), tmp_path / "ref", progress=False)
    assert shard_bytes(out) == shard_bytes(tmp_path / "ref")
    assert not list(out.glob(".*"))
    ActivationStore(out).verify()


def test_disk_full_keeps_the_written_shards_and_resumes(model, corpus_file, tmp_path, monkeypatch):
    out = tmp_path / "s"
    real_write = harvest_module.atomic_write_bytes

    def full_at_third_shard(path, data):
        if path.name == "shard_00002.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(harvest_module, "atomic_write_bytes", full_at_third_shard)
    with pytest.raises(OSError, match="No space left"):
        harvest(model, config(corpus_file), out, progress=False)
    monkeypatch.undo()
    assert [s.file for s in ActivationStore(out).manifest.shards] == [
        "shard_00000.safetensors",
        "shard_00001.safetensors",
    ]
    ActivationStore(out).verify()
    harvest(model, config(corpus_file), out, progress=False)
    harvest(model, config(corpus_file), tmp_path / "ref", progress=False)
    assert shard_bytes(out) == shard_bytes(tmp_path / "ref")


@pytest.mark.slow
def test_resume_after_sigkill(model, corpus_file, tmp_path):
    out, ref = tmp_path / "killed", tmp_path / "ref"
    cfg = config(corpus_file, batch_size=1, shard_size=32, max_tokens=32 * 12)  # a context per shard: many commits
    script = (
        "import torch\nimport mechscope as ms\nfrom mechscope.store import harvest, HarvestConfig\n"
        "torch.set_num_threads(1)\n"
        f"harvest(ms.tiny('llama', seed=0), HarvestConfig(**{cfg.__dict__!r}), {str(out)!r}, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            manifest = out / "manifest.json"
            if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 3:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = len(ActivationStore(out).manifest.shards)
    resumed = harvest(model, cfg, out, progress=False)
    assert 3 <= killed_at < len(resumed.manifest.shards)
    harvest(model, cfg, ref, progress=False)
    assert shard_bytes(out) == shard_bytes(ref)


def test_live_activations_compute_the_harvested_rows_in_a_reproducible_shuffle(model, corpus_file, tmp_path):
    store = harvest(model, config(corpus_file), tmp_path / "s", progress=False)
    live = LiveActivations(model, "resid_post.1", 31, corpus=str(corpus_file), ctx_len=32, buffer_contexts=10)
    assert torch.equal(live.contexts, store.tokens())  # the contexts harvest cuts, in its order
    stored = torch.cat([s.acts for s in store.shards("resid_post.1")]).view(-1, 32, 64)  # [n_ctx pos d]
    assert torch.allclose(live._rows(store.tokens()[:6]), stored[:6, 1:].reshape(-1, 64), atol=1e-6)
    n = len(live.contexts)
    live.contexts = torch.arange(n * 32).view(n, 32)  # fake ids, so a row says which (context, pos) it is
    live._rows = lambda c: c[:, 1:].reshape(-1, 1).float()
    first = list(itertools.islice(live, 2 * n))  # two epochs of 31-row batches
    assert [len(b) for b in first] == [31] * (2 * n)
    everything = sorted(live.contexts[:, 1:].flatten().tolist())
    epoch0, epoch1 = torch.cat(first[:n]).flatten(), torch.cat(first[n:]).flatten()
    assert sorted(epoch0.tolist()) == everything == sorted(epoch1.tolist())  # each row once per epoch
    assert not torch.equal(epoch0, epoch1) and not torch.equal(epoch0, torch.tensor(everything, dtype=torch.float))
    assert all(torch.equal(a, b) for a, b in zip(first, itertools.islice(live, 2 * n), strict=True))


def test_live_activations_train_a_dictionary(model, corpus_file, tmp_path):
    live = LiveActivations(model, "resid_post.1", 64, corpus=str(corpus_file), ctx_len=32)
    cfg = mf.TrainConfig(mf.DictionaryConfig("topk", d_in=64, d_sae=128, k=4), batch_size=64, n_tokens=64 * 30)
    result = mf.train(cfg, live, tmp_path / "run", progress=False)
    assert result.steps == 30 and result.history[-1].fvu < result.history[0].fvu
    with pytest.raises(ValueError, match="names 2 sites"):
        LiveActivations(model, "resid_post.*", 64, corpus=str(corpus_file))


def test_mismatched_provenance_shows_both(model, corpus_file, tmp_path):
    out = tmp_path / "s"
    harvest(model, config(corpus_file, max_tokens=64), out, progress=False)
    other = ms.tiny("llama", seed=1)
    with pytest.raises(ProvenanceError) as err:
        harvest(other, config(corpus_file, max_tokens=64), out, progress=False)
    text = str(err.value)
    assert "weights_sha256" in text and "stored:" in text and "requested:" in text
    assert model.provenance["weights_sha256"][:16] in text and other.provenance["weights_sha256"][:16] in text
    for change in ({"sites": ("resid_post.0",)}, {"ctx_len": 16}, {"dtype": "float16"}):
        with pytest.raises(ProvenanceError, match=next(iter(change))):
            harvest(model, config(corpus_file, max_tokens=64, **change), out, progress=False)
    edited = corpus_file.parent / "edited.jsonl"
    edited.write_text(corpus_file.read_text().replace("the", "teh"))
    with pytest.raises(ProvenanceError, match="corpus_sha256"):
        harvest(model, config(corpus_file, max_tokens=64, corpus=str(edited)), out, progress=False)
    with pytest.raises(ProvenanceError, match="tiny-llama-s1"):
        ActivationStore(out).check(other)


def test_refuses_folders_that_are_not_stores(model, corpus_file, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        harvest(model, config(corpus_file), tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="not an activation store"):
        ActivationStore(tmp_path)


def test_verify_catches_corruption(model, corpus_file, tmp_path):
    store = harvest(model, config(corpus_file, max_tokens=32 * 16), tmp_path / "s", progress=False)
    shard = tmp_path / "s" / "shard_00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        store.verify()


# --- reading -------------------------------------------------------------------------------------------------


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    key = x.double() @ torch.linspace(1, 2, x.shape[1], dtype=torch.float64)
    return x[key.argsort()]


def test_batches_cover_every_token_once_with_two_shards_in_memory(model, corpus_file, tmp_path, monkeypatch):
    store = harvest(model, config(corpus_file), tmp_path / "s", progress=False)
    all_rows = torch.cat([s.acts for s in store.shards("resid_post.1")])  # [tokens d]
    not_bos = torch.arange(len(all_rows)) % 32 != 0
    live, peak, real_read = [0], [0], ActivationStore._read

    def tracked_read(self, shard, key):
        t = real_read(self, shard, key)
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        weakref.finalize(t, lambda: live.__setitem__(0, live[0] - 1))
        return t

    monkeypatch.setattr(store_module.ActivationStore, "_read", tracked_read)
    batches = list(store.batches("resid_post.1", 50, seed=3))
    assert all(len(b) == 50 for b in batches[:-1]) and 0 < len(batches[-1]) <= 50
    got = torch.cat(batches)
    assert torch.equal(_sorted_rows(got), _sorted_rows(all_rows[not_bos]))
    assert peak[0] <= 2 and len(store.manifest.shards) > 2
    assert not torch.equal(got, all_rows[not_bos])  # shuffled
    assert torch.equal(got, torch.cat(list(store.batches("resid_post.1", 50, seed=3))))  # deterministic
    assert not torch.equal(got, torch.cat(list(store.batches("resid_post.1", 50, seed=4))))
    ordered = torch.cat(list(store.batches("resid_post.1", 64, shuffle=False, skip_bos=False)))
    assert torch.equal(ordered, all_rows)
    with pytest.raises(KeyError, match=r"resid_post\.1"):
        next(store.batches("resid_post.0", 8))


def test_store_feeds_dictionary_training(model, corpus_file, tmp_path):
    store = harvest(model, config(corpus_file), tmp_path / "s", progress=False)
    cfg = mf.TrainConfig(mf.DictionaryConfig("topk", d_in=64, d_sae=128, k=4), batch_size=64, n_tokens=64 * 6)
    result = mf.train(cfg, store.batches("resid_post.1", 64), tmp_path / "dict", progress=False)
    assert result.steps == 6
    # it trained on exactly the store's rows: the same batches handed over directly give the same dictionary, and
    # the same number of other rows (the store's rows in another order) gives another one
    batches = list(store.batches("resid_post.1", 64))
    same = mf.train(cfg, iter(batches), tmp_path / "same", progress=False)
    other = mf.train(cfg, iter(batches[::-1]), tmp_path / "other", progress=False)
    weights = [d.state_dict() for d in (result.dictionary, same.dictionary, other.dictionary)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
