"""Fewer passes: a run that starts at a block, or unembeds only the scored rows, equals the full run it shortcuts.

``Model.run(start_at=L, resid=resid_pre.L)`` against the full run on every tiny family (4 blocks, padding on either
side, GQA, parallel blocks), ``logits="final"`` against the full logits at each row's last real token, and every
activation-patching sweep (all kinds, both directions) against patching one node at a time with plain full runs.
"""

from __future__ import annotations

import pytest
import torch

import mechscope as ms
from mechscope.circuits import activation_patching
from mechscope.circuits._contrast import Contrast
from mechscope.circuits._prefix import Prefix
from mechscope.data.tasks import Task, final_logits, logit_diff, tokenize_task

FAMILIES = ["gpt2", "llama", "gpt_neox", "gemma", "gemma2"]
PROMPTS = ["a much longer prompt than the other", "short", "mid length"]
CLEAN = ["Alice gave the key to B", "The cat sat on a mat.", "one two three four"]
CORRUPT = ["Alice gave the key to T", "The cat sat on a hat.", "one two three fous"]
KINDS = ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head.z", "head.q", "head.k", "head.v"]


def four_blocks(family: str, seed: int = 0) -> ms.Model:
    return ms.tiny(family, seed=seed, **({"n_layer": 4} if family == "gpt2" else {"num_hidden_layers": 4}))


@pytest.fixture(scope="module")
def deep() -> dict[str, ms.Model]:
    return {f: four_blocks(f) for f in FAMILIES}


def toy_task(model: ms.Model) -> Task:
    def one(ch: str) -> int:
        return model.tokenizer(ch)["input_ids"][0]

    return Task("toy", CLEAN, CORRUPT, torch.tensor([one(c) for c in "!?."]), torch.tensor([one(c) for c in "xyz"]))


def sites_from(model: ms.Model, layer: int) -> list[str]:
    first = model.resolve(f"resid_pre.{layer}")[0].order
    return [s.name for s in model.resolve("*") if s.writable and s.order >= first]


# --- start_at ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", FAMILIES)
def test_start_at_is_bitwise_the_full_run_from_that_block(deep, family, side):
    model = deep[family]
    batch = model.encode(PROMPTS, side)
    full = model.run(PROMPTS, cache=sites_from(model, 0), padding_side=side)
    for layer in range(model.cfg.n_layers):
        part = model.run(batch.tokens, attention_mask=batch.attention_mask, start_at=layer,
                         resid=full.cache[f"resid_pre.{layer}"], cache=sites_from(model, layer))  # fmt: skip
        assert torch.equal(part.logits, full.logits), (family, side, layer)
        for name, act in part.cache.items():
            assert torch.equal(act, full.cache[name]), (family, side, layer, name)


def test_start_at_keeps_interventions_and_skips_the_blocks_below(deep):
    model = deep["llama"]
    batch = model.encode(PROMPTS)
    full = model.run(PROMPTS, cache=["resid_pre.2", "head.2.z"])
    ivs = [ms.Add("resid_pre.2", torch.ones(64), pos=3), ms.Patch("head.3.z", torch.zeros(1), heads=[1])]
    with model.intervene(*ivs):
        want = model.run(PROMPTS, cache=["resid_pre.2", "mlp_out.3"])
    calls = {i: 0 for i in range(4)}
    blocks = model.module.model.layers
    handles = [blocks[i].register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1)) for i in range(4)]
    modules = dict(model.module.named_modules())
    try:
        with model.intervene(*ivs):
            got = model.run(batch.tokens, attention_mask=batch.attention_mask, start_at=2,
                            resid=full.cache["resid_pre.2"], cache=["resid_pre.2", "mlp_out.3"])  # fmt: skip
    finally:
        for h in handles:
            h.remove()
    assert calls == {0: 0, 1: 0, 2: 1, 3: 1}
    assert dict(model.module.named_modules()) == modules  # the skipped blocks are back
    assert torch.equal(got.logits, want.logits)
    assert torch.equal(got.cache["resid_pre.2"], want.cache["resid_pre.2"])  # the Add sees the given residual
    assert torch.equal(got.cache["mlp_out.3"], want.cache["mlp_out.3"])
    # off by one block: the residual entering block 2 given to block 1 (or 3) is another run
    for wrong in (1, 3):
        other = model.run(batch.tokens, attention_mask=batch.attention_mask, start_at=wrong,
                          resid=full.cache["resid_pre.2"])  # fmt: skip
        assert not torch.allclose(other.logits, full.logits, atol=1e-3)


def test_start_at_explains_bad_arguments(deep):
    model = deep["llama"]
    batch = model.encode(PROMPTS)
    resid = model.run(PROMPTS, cache="resid_pre.2").cache["resid_pre.2"]
    run = {"attention_mask": batch.attention_mask}
    with pytest.raises(ValueError, match=r"sites \['head.1.z'\] are computed before block 2"):
        model.run(batch.tokens, start_at=2, resid=resid, cache=["head.1.z", "head.2.z"], **run)
    with pytest.raises(ValueError, match=r"resid has shape \[3, 10, 64\].*\[3, 35, 64\]"):
        model.run(batch.tokens, start_at=2, resid=resid[:, :10], **run)
    with pytest.raises(ValueError, match="start_at=4 is not a block"):
        model.run(batch.tokens, start_at=4, resid=resid, **run)
    with pytest.raises(ValueError, match="start_at and resid go together"):
        model.run(batch.tokens, resid=resid, **run)


# --- logits="final" ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", FAMILIES)
def test_final_logits_are_each_rows_last_real_token(deep, family, side):
    model = deep[family]
    full = model.run(PROMPTS, padding_side=side)
    final = model.run(PROMPTS, padding_side=side, logits="final")
    assert final.logits is None and final.final.shape == (3, model.cfg.d_vocab)
    assert torch.equal(final.final_logits(), final.final)
    torch.testing.assert_close(final.final, final_logits(full.logits, full.attention_mask), atol=1e-5, rtol=1e-5)
    for i, prompt in enumerate(PROMPTS):  # the short prompts' last real token, not the padded slot
        alone = model.run(prompt).logits[0, -1]
        torch.testing.assert_close(final.final[i], alone, atol=2e-5, rtol=1e-4)


def test_final_logits_carry_gradients(deep):
    model = deep["gpt_neox"]

    def metric(out: ms.RunResult) -> torch.Tensor:
        return out.final_logits()[:, 5].sum()

    full = model.run(PROMPTS, grad_at="resid_pre.1", grad_of=metric)
    final = model.run(PROMPTS, grad_at="resid_pre.1", grad_of=metric, logits="final")
    assert final.final is not None and not final.final.requires_grad
    torch.testing.assert_close(final.grads["resid_pre.1"], full.grads["resid_pre.1"], atol=1e-6, rtol=1e-5)
    assert final.grads["resid_pre.1"].abs().sum() > 0


# --- sweeps ------------------------------------------------------------------------------------------------------


def one_at_a_time(model: ms.Model, task: Task, kind: str, direction: str) -> torch.Tensor:
    """The sweep by its definition: each node patched alone, a full run from the embedding, full logits."""
    toks = tokenize_task(task, model.tokenizer)
    base, source = (toks.corrupt, toks.clean) if direction == "denoising" else (toks.clean, toks.corrupt)
    from mechscope.circuits._nodes import layout

    grid = layout(kind, model.cfg, ["p"] * toks.clean.shape[1])
    cache = model.run(source, cache=sorted({n.site for n in grid.nodes()}), attention_mask=toks.attention_mask).cache
    scores = []
    for node in grid.nodes():
        head = None if node.head is None else [node.head]
        with model.intervene(ms.Patch(node.site, cache[node.site], pos=node.pos, heads=head)):
            logits = model.run(base, attention_mask=toks.attention_mask).logits
        scores.append(float(logit_diff(final_logits(logits, toks.attention_mask), task).mean()))
    return torch.tensor(scores).reshape(grid.shape)


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_every_sweep_equals_patching_one_node_at_a_time(deep, family, direction):
    """Prefix starts and final-row unembedding change no score (GQA: llama; parallel blocks: gpt_neox)."""
    model = deep[family]
    task = toy_task(model)
    for kind in KINDS:
        if kind == "resid_mid" and model.cfg.parallel:
            continue
        swept = activation_patching(model, task, kind, direction=direction, batch_size=7, progress=False)
        torch.testing.assert_close(swept.scores, one_at_a_time(model, task, kind, direction), atol=1e-5, rtol=0)


def test_a_sweep_pass_starts_at_its_lowest_patched_block(deep):
    model = deep["llama"]
    calls = [0, 0, 0, 0]
    blocks = model.module.model.layers
    handles = [blocks[i].register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1)) for i in range(4)]
    try:  # 3 prompts, batch_size 3: one node per pass; 16 heads, 4 per block
        activation_patching(model, toy_task(model), "head.z", batch_size=3, progress=False)
    finally:
        for h in handles:
            h.remove()
    assert calls == [2 + 4, 2 + 8, 2 + 12, 2 + 16]  # the two unpatched runs, then each pass from its own block


def test_prefix_fits_its_budget(deep):
    model = deep["llama"]
    tokens = torch.zeros(3, 10, dtype=torch.long)
    per_block = 3 * 10 * 64 * 4
    assert Prefix.sites(model, tokens) == ["resid_pre.1", "resid_pre.2", "resid_pre.3"]
    assert Prefix.sites(model, tokens, budget=2 * per_block) == ["resid_pre.2"]  # every 2nd block
    assert Prefix.sites(model, tokens, budget=per_block - 1) == []  # nothing fits: passes start at the embedding
    prefix = Prefix({2: torch.zeros(1)})
    assert prefix.start(1) is None and prefix.start(2)[0] == 2 and prefix.start(3)[0] == 2


def test_contrast_scores_final_rows_like_full_logits(deep):
    model = deep["gemma2"]  # soft-capped logits: the model's own head caps the gathered rows
    contrast = Contrast.of(model, toy_task(model), logit_diff)
    full = model.run(contrast.corrupt, attention_mask=contrast.attention_mask)
    got = contrast.forward(model, contrast.corrupt)
    torch.testing.assert_close(got, contrast.score(full.logits), atol=1e-6, rtol=0)


@pytest.mark.parametrize("freeze_mlps", [False, True])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_path_patching_equals_its_three_full_runs(deep, direction, freeze_mlps):
    """Path patching starts step 1 at the lowest sender and step 3 at the lowest receiver: same score as the three
    steps done with full runs from the embedding (Wang et al. 2022, appendix B)."""
    model = deep["llama"]
    task = toy_task(model)
    senders, receivers = [(1, 3), (2, 1)], [(2, 0, "q"), (3, 1, "v"), "mlp_out.3"]
    got = ms.circuits.path_patching(model, task, senders, receivers, direction=direction, freeze_mlps=freeze_mlps)
    toks = tokenize_task(task, model.tokenizer)
    base, source = (toks.corrupt, toks.clean) if direction == "denoising" else (toks.clean, toks.corrupt)
    run = {"attention_mask": toks.attention_mask}
    heads = [f"head.{i}.z" for i in range(4)]
    mlps = [f"mlp_out.{i}" for i in range(4)] if freeze_mlps else []
    src, frozen = model.run(source, cache=heads, **run).cache, model.run(base, cache=heads + mlps, **run).cache
    step1 = [ms.Patch(site, frozen[site]) for site in heads + mlps]
    step1 += [ms.Patch(f"head.{layer}.z", src[f"head.{layer}.z"], heads=[h]) for layer, h in senders]
    with model.intervene(*step1):
        recorded = model.run(base, cache=["head.2.q", "head.3.v", "mlp_out.3"], **run).cache
    step2 = [
        ms.Patch("head.2.q", recorded["head.2.q"], heads=[0]),
        ms.Patch("head.3.v", recorded["head.3.v"], heads=[1]),
        ms.Patch("mlp_out.3", recorded["mlp_out.3"]),
    ]
    with model.intervene(*step2):
        logits = model.run(base, **run).logits
    want = float(logit_diff(final_logits(logits, toks.attention_mask), task).mean())
    assert got.score == pytest.approx(want, abs=1e-6)
    assert abs(got.score - got.corrupt_metric) > 1e-4  # the paths carry something


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_edge_runs_started_late_equal_full_edge_runs(deep, family):
    """An edge run starts at its lowest swapped receiver, the senders below taken from the unpatched run."""
    from mechscope.circuits._edgerun import EdgePrefix, SenderActs, Wiring, run_edges

    model = deep[family]
    wiring, contrast = Wiring.of(model), Contrast.of(model, toy_task(model), logit_diff)
    g, mask = wiring.graph, contrast.attention_mask
    fixed = SenderActs.of(model.run(contrast.clean, cache=SenderActs.sites(4), attention_mask=mask).cache, 4)
    base = contrast.corrupt
    prefix = EdgePrefix.of(model.run(base, cache=EdgePrefix.sites(model, base), attention_mask=mask).cache, 4)
    pairs = torch.nonzero(g.upstream.T).flip(1)  # (sender, receiver) in edge order
    swap = torch.zeros(6, len(g.senders), len(g.receivers))
    late = [i for i, (s, r) in enumerate(pairs.tolist()) if g.receivers[r].layer >= 2]
    for c, e in enumerate([late[0], late[len(late) // 2], late[-1], late[-2]]):  # into blocks 2, 3 and the logits
        swap[c, pairs[e, 0], pairs[e, 1]] = 1.0
    swap[4, pairs[late, 0], pairs[late, 1]] = 1.0  # every edge into blocks 2 and 3 and the logits
    some = torch.rand(g.upstream.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    swap[5] = g.upstream.float() * some  # a random circuit's complement: edges out of the input included
    assert [(prefix.start(g, swap[c : c + 1]) or (0,))[0] for c in range(6)] == [2, 3, 3, 3, 2, 0]
    want = run_edges(wiring, base, mask, fixed, swap)
    for c in range(6):
        got = run_edges(wiring, base, mask, fixed, swap[c : c + 1], prefix=prefix)
        torch.testing.assert_close(got, want[c * 3 : (c + 1) * 3], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(want[:3], model.run(base, attention_mask=mask).logits, atol=1e-4)  # swaps matter
