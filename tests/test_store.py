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
from mechscope.store import ActivationStore, HarvestConfig, ProvenanceError, harvest
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
