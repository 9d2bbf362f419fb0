import torch

import mechscope as ms

PROMPTS = ["Once upon a time", "The quick brown fox jumps"]


def hf_generate(model: ms.Model, prompts, **kwargs) -> torch.Tensor:
    batch = model.encode(prompts, padding_side="left")
    with torch.no_grad():
        return model.module.generate(
            input_ids=batch.tokens, attention_mask=batch.attention_mask, pad_token_id=model.pad_id, **kwargs
        )


def test_generation_without_intervention_equals_hf(tiny):
    ours = tiny.generate(PROMPTS, max_new_tokens=6, cache=["resid_post.0", "head.1.z"])
    assert torch.equal(ours.tokens, hf_generate(tiny, PROMPTS, max_new_tokens=6, do_sample=False))
    prompt_len = tiny.encode(PROMPTS, padding_side="left").tokens.shape[1]
    # One cached step per generated token after the prompt (the last token is never fed back).
    assert ours.cache["resid_post.0"].shape[1] == prompt_len + ours.new_tokens.shape[1] - 1
    assert len(ours.texts) == 2


def test_cache_across_generation_matches_a_full_forward(tiny_models):
    model = tiny_models["llama"]
    ours = model.generate(PROMPTS[:1], max_new_tokens=5, cache=["resid_post.1", "head.0.pattern"])
    full = model.run(ours.tokens[:, :-1], cache=["resid_post.1", "head.0.pattern"])
    torch.testing.assert_close(ours.cache["resid_post.1"], full.cache["resid_post.1"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.cache["head.0.pattern"], full.cache["head.0.pattern"], atol=1e-6, rtol=1e-5)


def test_sampling_is_seeded_and_matches_hf(tiny_models):
    model = tiny_models["gpt2"]
    a = model.generate(PROMPTS, max_new_tokens=8, do_sample=True, temperature=1.5, seed=4)
    b = model.generate(PROMPTS, max_new_tokens=8, do_sample=True, temperature=1.5, seed=4)
    torch.manual_seed(4)
    ref = hf_generate(model, PROMPTS, max_new_tokens=8, do_sample=True, temperature=1.5)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens, ref)


def test_steering_changes_generation(tiny_models):
    model = tiny_models["llama"]
    plain = model.generate(PROMPTS, max_new_tokens=8)
    direction = model.module.get_output_embeddings().weight[ord("z")]  # byte tokenizer: id of "z"
    with model.intervene(ms.Add("resid_post.1", direction, scale=200.0)):
        steered = model.generate(PROMPTS, max_new_tokens=8)
    assert not torch.equal(plain.new_tokens, steered.new_tokens)
    assert (steered.new_tokens == ord("z")).float().mean() > 0.5


def test_pos_selects_prompt_positions_during_generation(tiny_models):
    """``pos=`` addresses prompt positions: the first pass edits them, later passes (one new token each, cached
    keys and values) are left alone. Checked against greedy decoding that reruns the whole sequence each step under
    the same intervention (there the selected positions are always the same prompt positions)."""
    model = tiny_models["llama"]
    prompt = PROMPTS[1]
    iv = ms.Patch("resid_post.0", 8.0, pos=[1, -1])  # -1: the prompt's last token, not each new token
    with model.intervene(iv):
        ours = model.generate(prompt, max_new_tokens=5, cache="resid_post.0")
    n_prompt = model.encode(prompt).tokens.shape[1]
    tokens = model.encode(prompt).tokens
    for _ in range(5):
        with model.intervene(ms.Patch("resid_post.0", 8.0, pos=[1, n_prompt - 1])):
            tokens = torch.cat([tokens, model.run(tokens).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(ours.tokens, tokens)
    assert not torch.equal(ours.tokens, model.generate(prompt, max_new_tokens=5).tokens)  # it did something
    edited = ours.cache["resid_post.0"][0]
    assert (edited[[1, n_prompt - 1]] == 8.0).all() and not (edited[n_prompt:] == 8.0).any()
    assert model._generated_offset == 0
