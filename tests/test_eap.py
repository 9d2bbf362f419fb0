"""Edge-level circuits: the graph, EAP / EAP-IG, edge patching, faithfulness, ACDC and path patching.

Every estimate is checked against its definition on tiny random-weight models: EAP against gradients taken by
hand and against the directional derivative of the edge-patched run, edge patching against the plain clean and
corrupt runs and against path patching, ACDC's decisions against replaying them with ordinary interventions.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import mechscope as ms
from mechscope.circuits import (
    SIZES,
    Circuit,
    EdgeScores,
    Graph,
    acdc,
    area_from_one,
    area_under,
    circuit_metrics,
    eap,
    eap_ig,
    faithfulness,
    faithfulness_curve,
    patch_edges,
    path_patching,
    pearson,
    verify_edges,
)
from mechscope.circuits._contrast import Contrast
from mechscope.circuits._edgerun import SenderActs, Wiring, reference, run_edges
from mechscope.core import ResidualModel, residual
from mechscope.data.tasks import Task, final_logits, kl_to_clean, logit_diff
from mechscope.report import plot_faithfulness_curve

CLEAN = ["Alice gave the key to B", "The cat sat on a mat.", "one two three four"]
CORRUPT = ["Alice gave the key to T", "The cat sat on a hat.", "one two three fous"]
FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma"]  # GQA, fused qkv + biases, parallel blocks, MQA + (1+w) norm


def toy_task(model: ms.Model) -> Task:
    def one(ch: str) -> int:
        return model.tokenizer(ch)["input_ids"][0]

    return Task("toy", CLEAN, CORRUPT, torch.tensor([one(c) for c in "!?."]), torch.tensor([one(c) for c in "xyz"]))


@pytest.fixture(scope="module")
def llama() -> ms.Model:
    return ms.tiny("llama", seed=0)  # 4 query heads share 2 key/value heads


def swap_one_edge(graph: Graph, edges: list[int]) -> torch.Tensor:
    """``run_edges`` swap masks: copy ``c`` swaps edge ``edges[c]`` alone."""
    pairs = torch.nonzero(graph.upstream.T).flip(1)  # (sender, receiver) in edge order
    swap = torch.zeros(len(edges), len(graph.senders), len(graph.receivers))
    swap[torch.arange(len(edges)), pairs[edges, 0], pairs[edges, 1]] = 1.0
    return swap


# --- the graph ---------------------------------------------------------------------------------------------------


def test_graph_nodes_edges_and_names():
    llama = Graph(n_layers=2, n_heads=4, n_kv_heads=2, parallel=False)
    names = llama.edge_names()
    assert len(names) == llama.n_edges == len(set(names))
    # heads of layer 0 read the input; MLP 0 reads input + 4 heads; layer 1's 8 receivers read 6 senders; MLP 1
    # reads 10; logits read all 11
    assert llama.n_edges == 8 * 1 + 5 + 8 * 6 + 10 + 11
    assert "a0.h3->a1.h0<q>" in names and "a0.h1->a1.kv1<k>" in names and "m0->m1" in names
    assert "a1.h0->m1" in names and "a1.h0->a1.h1<q>" not in names and "m1->logits" in names
    gpt2 = Graph(n_layers=2, n_heads=4, n_kv_heads=4, parallel=False)
    assert "a0.h1->a1.h1<k>" in gpt2.edge_names()  # MIB's names when there is no grouping
    neox = Graph(n_layers=2, n_heads=4, n_kv_heads=4, parallel=True)
    assert "a1.h0->m1" not in neox.edge_names() and "a0.h0->m1" in neox.edge_names()
    values = torch.randn(llama.n_edges)
    torch.testing.assert_close(llama.flat(llama.dense(values)), values)
    assert (llama.dense(values)[~llama.upstream] == 0).all()
    assert Graph.from_dict(json.loads(json.dumps(llama.to_dict()))) == llama


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma", "gemma2"])
def test_residual_contract_from_family_tables(family):
    """The contract reads the model's own wiring: q/k/v and unembedding slices reproduce the sites they feed."""
    model = ms.tiny(family, seed=0)
    contract = residual(model)
    assert isinstance(contract, ResidualModel) and contract.cfg == model.cfg
    last = model.cfg.n_layers - 1
    mlp_in = "resid_pre" if model.cfg.parallel else "resid_mid"
    sites = ["resid_pre.*", f"{mlp_in}.*", "head.*.q", "head.*.k", "head.*.v", "ln2.*", f"resid_post.{last}"]
    run = model.run("hello there", cache=sites)
    for layer in range(model.cfg.n_layers):
        normed = contract.attn_norm(layer).forward(run.cache[f"resid_pre.{layer}"])
        for part in ("q", "k", "v"):
            weight, bias = contract.qkv(layer, part)  # [d_model head d_head], [head d_head]
            got = torch.einsum("bpd,dhe->bphe", normed, weight) + bias
            torch.testing.assert_close(got, run.cache[f"head.{layer}.{part}"], atol=1e-5, rtol=1e-4)
        mlp_normed = contract.mlp_norm(layer).forward(run.cache[f"{mlp_in}.{layer}"])
        torch.testing.assert_close(mlp_normed, run.cache[f"ln2.{layer}"], atol=1e-5, rtol=1e-4)
    assert contract.w_o(0).shape == (model.cfg.n_heads, model.cfg.d_head, model.cfg.d_model)
    norm, w_u = contract.unembed()
    logits = norm.forward(run.cache[f"resid_post.{last}"]) @ w_u
    if family != "gemma2":  # Gemma 2 soft-caps its logits after the unembedding
        torch.testing.assert_close(logits, run.logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(TypeError, match="ResidualModel"):
        residual(ms.wrap(torch.nn.Linear(2, 2)))


def test_circuits_from_scores(llama):
    scores = eap(llama, toy_task(llama), progress=False)
    g = scores.graph
    top = scores.top(5)
    assert top.n_edges == 5 and top.fraction == pytest.approx(5 / g.n_edges)
    assert set(top.edge_names()) == {name for name, _ in scores.top_edges(5)}
    t = float(scores.scores.abs().sort(descending=True).values[4])
    assert torch.equal(scores.threshold(t).edges, top.edges)
    signed = scores.top(3, absolute=False)
    assert (scores.scores[signed.edges] >= scores.scores[~signed.edges].max()).all()
    again = Circuit.from_edge_names(g, top.to_dict()["edges"])
    assert torch.equal(again.edges, top.edges)
    dot = top.to_dot()
    assert dot.startswith("digraph") and dot.count("->") == 5
    assert Circuit.random(g, 7, seed=1).n_edges == 7 and Circuit.full(g).fraction == 1.0
    node = Circuit.from_nodes(g, ["a0.h1"])  # every edge out of input and a0.h1
    assert node.n_edges == sum(s.name in ("input", "a0.h1") for s, _ in g.edges())
    payload = json.loads(json.dumps(scores.to_dict()))
    assert len(payload["edges"]) == len(payload["scores"]) == g.n_edges
    with pytest.raises(ValueError, match="not edges"):
        Circuit.from_edge_names(g, ["a1.h0->a0.h0<q>"])


# --- EAP against its definition ----------------------------------------------------------------------------------


def _grad_by_hand(model: ms.Model, task: Task, tokens, mask, receiver: str) -> torch.Tensor:
    """``dM/dx_r`` for one receiver of tiny Llama, with plain torch hooks giving that receiver its own residual."""
    m = model.module.model
    keep: dict[str, torch.Tensor] = {}

    def own_copy(x: torch.Tensor) -> torch.Tensor:
        keep["leaf"] = x.detach().clone().requires_grad_(True)
        return keep["leaf"]

    handles = []
    if receiver == "logits":
        handles.append(m.norm.register_forward_pre_hook(lambda mod, args: (own_copy(args[0]),)))
    elif receiver.startswith("m"):
        block = m.layers[int(receiver[1:])]
        handles.append(block.post_attention_layernorm.register_forward_pre_hook(
            lambda mod, args: keep.__setitem__("x", args[0])))  # fmt: skip
        handles.append(block.mlp.register_forward_pre_hook(
            lambda mod, args: (block.post_attention_layernorm.forward(own_copy(keep["x"])),)))  # fmt: skip
    else:  # "a{L}.h{H}<q>" or "a{L}.kv{K}<k|v>"
        layer, rest = receiver[1:].split(".", 1)
        head, part = int(rest.split("<")[0].lstrip("hkv")), rest[-2]
        block = m.layers[int(layer)]
        proj = getattr(block.self_attn, f"{part}_proj")
        handles.append(
            block.input_layernorm.register_forward_pre_hook(lambda mod, args: keep.__setitem__("x", args[0]))
        )

        def swap_head(mod, args, out):
            own = F.linear(block.input_layernorm.forward(own_copy(keep["x"])), proj.weight, proj.bias)
            out = out.clone()
            out[..., head * 16 : (head + 1) * 16] = own[..., head * 16 : (head + 1) * 16]
            return out

        handles.append(proj.register_forward_hook(swap_head))
    try:
        with torch.enable_grad():
            logits = model.module(input_ids=tokens, attention_mask=mask).logits
            logit_diff(final_logits(logits, mask), task).mean().backward()
    finally:
        for h in handles:
            h.remove()
    return keep["leaf"].grad


def test_eap_equals_gradient_times_difference_by_hand(llama):
    """Each edge's score is ``(clean_u - corrupt_u) . dM/dx_r``, with ``x_r`` the receiver's own residual copy."""
    task = toy_task(llama)
    c = Contrast.of(llama, task, logit_diff)
    scores = eap(llama, task, progress=False)
    names = scores.graph.edge_names()
    sites = ["resid_pre.0", "head.0.z", "head.1.z", "mlp_out.0"]
    clean = llama.run(c.clean, cache=sites, attention_mask=c.attention_mask).cache
    corrupt = llama.run(c.corrupt, cache=sites, attention_mask=c.attention_mask).cache

    def head_out(cache, layer, h):  # z_h through its 16 columns of W_O
        w_o = llama.module.model.layers[layer].self_attn.o_proj.weight[:, h * 16 : (h + 1) * 16]
        return cache[f"head.{layer}.z"][:, :, h] @ w_o.T

    senders = {
        "input": clean["resid_pre.0"] - corrupt["resid_pre.0"],
        "a0.h1": head_out(clean, 0, 1) - head_out(corrupt, 0, 1),
        "a1.h2": head_out(clean, 1, 2) - head_out(corrupt, 1, 2),
        "m0": clean["mlp_out.0"] - corrupt["mlp_out.0"],
    }
    checked = ["a0.h1->a1.h3<q>", "a0.h1->a1.kv1<k>", "input->a1.kv0<v>", "input->a0.h2<q>", "a0.h1->m0",
               "m0->m1", "a1.h2->m1", "a1.h2->logits", "input->logits"]  # fmt: skip
    for edge in checked:
        sender, receiver = edge.split("->")
        grad = _grad_by_hand(llama, task, c.corrupt, c.attention_mask, receiver)
        by_hand = float((senders[sender] * grad).sum())
        assert float(scores.scores[names.index(edge)]) == pytest.approx(by_hand, abs=1e-6, rel=1e-4), edge


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_eap_is_the_derivative_of_edge_patching(family, direction):
    """For every edge at once: EAP = d/dt M(base run with edge u->r carrying base_u + t (source_u - base_u)).

    Float64 and a central difference with t = 0.01 (the metric is computed in float32, which limits smaller
    steps); measured error <= 4e-6 against scores up to 0.2.
    """
    check_eap_is_the_derivative(ms.tiny(family, seed=1), direction)


def check_eap_is_the_derivative(model: ms.Model, direction: str) -> None:
    """The body of the test above, for any model (``test_families`` runs it on more families)."""
    model.module.double()
    task = toy_task(model)
    scores = eap(model, task, direction=direction, progress=False)
    c = Contrast.of(model, task, logit_diff)
    base, source = c.base_and_source(direction)
    wiring = Wiring.of(model)
    g, n_layers = wiring.graph, model.cfg.n_layers
    at = {
        k: SenderActs.of(
            model.run(t, cache=SenderActs.sites(n_layers), attention_mask=c.attention_mask).cache, n_layers
        )
        for k, t in (("base", base), ("source", source))
    }
    swap = swap_one_edge(g, list(range(g.n_edges))).double()
    eps, metric = 1e-2, []
    for t in (eps, -eps):
        moved = SenderActs(
            at["base"].input + t * (at["source"].input - at["base"].input),
            tuple(x + t * (y - x) for x, y in zip(at["base"].z, at["source"].z, strict=True)),
            tuple(x + t * (y - x) for x, y in zip(at["base"].mlp, at["source"].mlp, strict=True)),
        )
        metric.append(c.score(run_edges(wiring, base, c.attention_mask, moved, swap), copies=g.n_edges))
    derivative = (metric[0] - metric[1]) / (2 * eps)
    torch.testing.assert_close(scores.scores, derivative, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("ablation", ["mean", "global_mean", "resample"])
def test_eap_toward_a_reference_is_the_derivative_of_edge_patching_to_it(ablation):
    """Noising toward a reference (mean ablation...): EAP = d/dt M(clean run with edge u->r carrying
    clean_u + t (ref_u - clean_u)), for every edge at once, ``ref`` built by ``reference`` from the corrupt runs."""
    model = ms.tiny("llama", seed=1)
    model.module.double()
    task = toy_task(model)
    scores = eap(model, task, direction="noising", ablation=ablation, seed=3, progress=False)
    c = Contrast.of(model, task, logit_diff)
    wiring = Wiring.of(model)
    g, n_layers, mask = wiring.graph, model.cfg.n_layers, c.attention_mask
    clean = SenderActs.of(model.run(c.clean, cache=SenderActs.sites(n_layers), attention_mask=mask).cache, n_layers)
    corrupt = model.run(c.corrupt, cache=SenderActs.sites(n_layers), attention_mask=mask).cache
    ref = reference(SenderActs.of(corrupt, n_layers), ablation, mask, c.n_prompts, seed=3)
    swap = swap_one_edge(g, list(range(g.n_edges))).double()
    eps, metric = 1e-2, []
    for t in (eps, -eps):
        moved = SenderActs(
            clean.input + t * (ref.input - clean.input),
            tuple(x + t * (y - x) for x, y in zip(clean.z, ref.z, strict=True)),
            tuple(x + t * (y - x) for x, y in zip(clean.mlp, ref.mlp, strict=True)),
        )
        metric.append(c.score(run_edges(wiring, c.clean, mask, moved, swap), copies=g.n_edges))
    derivative = (metric[0] - metric[1]) / (2 * eps)
    torch.testing.assert_close(scores.scores, derivative, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(scores.scores, eap(model, task, direction="noising", progress=False).scores)


def test_reference_means(llama):
    acts = SenderActs(torch.arange(24.0).view(2, 3, 4), (), ())
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    per_pos = reference(acts, "mean", mask, rows=2).input
    torch.testing.assert_close(per_pos[1, 0], (acts.input[0, 0] + acts.input[1, 0]) / 2)
    torch.testing.assert_close(per_pos[0, 2], acts.input[0, 2])  # the padded position left out
    overall = reference(acts, "global_mean", mask, rows=2).input
    torch.testing.assert_close(overall[1, 2], acts.input[mask.bool()].mean(0))
    with pytest.raises(ValueError, match="global_mean"):
        reference(acts, "median", mask, rows=2)  # type: ignore[arg-type]


def test_eap_ig_with_one_step_is_eap_and_batching_changes_nothing(llama):
    task = toy_task(llama)
    plain = eap(llama, task, progress=False)
    assert plain.method == "eap" and plain.steps == 1
    torch.testing.assert_close(eap_ig(llama, task, steps=1, progress=False).scores, plain.scores, atol=0, rtol=0)
    torch.testing.assert_close(
        eap(llama, task, batch_size=1, progress=False).scores, plain.scores, atol=1e-6, rtol=1e-5
    )
    ig = eap_ig(llama, task, steps=4, progress=False)
    assert ig.method == "eap-ig" and ig.steps == 4
    torch.testing.assert_close(eap_ig(llama, task, steps=4, batch_size=4, progress=False).scores, ig.scores,
                               atol=1e-6, rtol=1e-5)  # fmt: skip


def test_eap_ig_completeness(llama):
    """Integrated gradients from the input: the edges out of ``input`` sum to the whole clean - corrupt change, up
    to the left Riemann sum's error, which falls like 1 / steps (Hanna et al. 2024, section 3).

    Measured errors: 0.054, 0.014, 0.0035 at 2, 8, 32 steps (the change is 0.022).
    """
    task = toy_task(llama)
    errors = []
    for steps in (2, 8, 32):
        ig = eap_ig(llama, task, steps=steps, progress=False)
        from_input = float(ig.scores[[i for i, (s, _) in enumerate(ig.graph.edges()) if s.name == "input"]].sum())
        change = ig.clean_metric - ig.corrupt_metric
        errors.append(abs(from_input - change))
        assert ig.completeness == pytest.approx(from_input / change)
    assert errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3
    noising = eap_ig(llama, task, steps=32, direction="noising", progress=False)
    assert noising.completeness == pytest.approx(1.0, abs=0.2)


# --- EAP against real edge patching ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_edge_scores_track_real_edge_patching(family):
    """Every edge patched for real. Measured Pearson (seed 0): EAP 0.49 / 0.96 / 0.95 / 0.99 (llama, gpt2, neox,
    gemma) over all edges and >= 0.97 without the edges out of ``input``; EAP-IG 0.93 / 0.999 / 0.995 / 0.9998.

    Edges out of the input carry the whole token change, a large step through the final norm when they reach the
    logits: that is where first-order EAP fails and integrating along the input path helps.
    """
    model = ms.tiny(family, seed=0)
    task = toy_task(model)
    plain, ig = eap(model, task, progress=False), eap_ig(model, task, progress=False)
    g = plain.graph
    patched, clean, corrupt = patch_edges(model, task, list(range(g.n_edges)), progress=False)
    assert clean == pytest.approx(plain.clean_metric, abs=1e-5) and corrupt == pytest.approx(plain.corrupt_metric)
    actual = patched - corrupt
    not_input = torch.tensor([s.name != "input" for s, _ in g.edges()])
    assert pearson(plain.scores[not_input], actual[not_input]) > 0.95
    assert pearson(ig.scores, actual) > 0.9
    assert pearson(ig.scores, actual) >= pearson(plain.scores, actual) - 0.01


def test_verify_edges_patches_the_sampled_edges(llama):
    task = toy_task(llama)
    scores = eap_ig(llama, task, verify=6, seed=2, progress=False)
    check = scores.check
    assert check is not None and check.n == 6 and check.seed == 2
    top = verify_edges(scores, llama, task, sample=4, top=3, seed=2, progress=False)
    assert [e.edge for e in top.edges[:3]] == [name for name, _ in scores.top_edges(3)]
    names = scores.graph.edge_names()
    patched, clean, corrupt = patch_edges(llama, task, [names.index(e.edge) for e in top.edges], progress=False)
    torch.testing.assert_close(torch.tensor([e.actual for e in top.edges]), (patched - corrupt) / (clean - corrupt))
    assert top.pearson > 0.9 and top.mean_abs_error < 0.5
    json.dumps(scores.to_dict())
    with pytest.raises(ValueError, match="metric"):
        verify_edges(scores, llama, task, metric=lambda logits, t: logits[:, 0], progress=False)


def test_gemma2_is_refused_with_a_reason():
    model = ms.tiny("gemma2", seed=0)  # normalises the attention output before adding it to the residual
    task = toy_task(model)
    with pytest.raises(ValueError, match="not the sum of its heads"):
        eap(model, task, progress=False)
    with pytest.raises(ValueError, match="not the sum of its heads"):
        faithfulness(model, task, Circuit.empty(Graph.of(model.cfg)), progress=False)
    with pytest.raises(ValueError, match="not the sum of its heads"):
        patch_edges(model, task, [0], progress=False)
    assert acdc(model, task, tau=1e9, progress=False).kept == ()  # node-level methods still work


# --- faithfulness ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_full_graph_is_the_clean_run_and_empty_graph_the_corrupt_run(family):
    model = ms.tiny(family, seed=1)
    task = toy_task(model)
    c = Contrast.of(model, task, logit_diff)
    g = Graph.of(model.cfg)
    full, empty, (again_full, again_empty) = circuit_metrics(model, task, [Circuit.full(g), Circuit.empty(g)],
                                                             progress=False)  # fmt: skip
    # No receiver touched: the plain clean run, up to the float rounding of a larger batch (several circuits share
    # a pass; bitwise equal with AVX-512 kernels, 1e-6 relative with AVX2's).
    assert full == pytest.approx(c.run(model, c.clean)[0], rel=1e-5, abs=1e-7)
    assert empty == pytest.approx(c.run(model, c.corrupt)[0], abs=1e-5)
    assert (again_full, again_empty) == (full, empty)
    ends = faithfulness(model, task, [Circuit.full(g), Circuit.empty(g)], progress=False)
    assert ends == pytest.approx([1.0, 0.0], abs=1e-5)


@pytest.mark.parametrize("ablation", ["mean", "resample"])
def test_empty_graph_is_every_node_ablated(llama, ablation):
    """With mean or resampled references the empty graph is the run with every sender replaced by its reference
    (``ms.Ablate`` on the input, every head and every MLP; prompts of one length, so no padding enters the mean)."""
    clean = ["Alice gave the key to B", "Alice gave the pen to C", "Alice gave the cup to D"]
    task = Task("same-length", clean, [p[:-1] + "T" for p in clean], toy_task(llama).answers, toy_task(llama).wrongs)
    c = Contrast.of(llama, task, logit_diff)
    _, empty, _ = circuit_metrics(llama, task, [], ablation=ablation, seed=3, progress=False)
    sites = ["resid_pre.0", "head.0.z", "head.1.z", "mlp_out.0", "mlp_out.1"]
    corrupt = llama.run(c.corrupt, cache=sites, attention_mask=c.attention_mask).cache
    how = {"how": "mean"} if ablation == "mean" else {"how": "resample", "seed": 3}
    with llama.intervene(*[ms.Ablate(s, reference=corrupt[s], **how) for s in sites]):
        expected, _ = c.run(llama, c.clean)
    assert empty == pytest.approx(expected, abs=1e-5)
    one = faithfulness(llama, task, Circuit.empty(Graph.of(llama.cfg)), ablation=ablation, seed=3, progress=False)
    assert one == pytest.approx([0.0], abs=1e-6)


def test_faithfulness_curve_and_areas(llama, tmp_path):
    task = toy_task(llama)
    scores = eap_ig(llama, task, progress=False)
    curve = faithfulness_curve(llama, task, scores, random=2, batch_size=7, progress=False)
    n = scores.graph.n_edges  # 82: MIB's 0.1 to 1 % hold no edge and are dropped
    sizes = tuple(s for s in SIZES if int(s * n) >= 1)
    assert curve.sizes == sizes == SIZES[4:] and curve.n_edges == tuple(int(s * n) for s in sizes)
    assert curve.ranked_by == "absolute" and len(curve.orders) == 1  # no tied scores: one order
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-6)
    assert len(curve.random) == 2 and all(r[-1] == pytest.approx(1.0, abs=1e-6) for r in curve.random)
    top10 = faithfulness(llama, task, scores.top(curve.n_edges[sizes.index(0.1)]), progress=False)[0]
    assert curve.at(0.1) == pytest.approx(top10, abs=1e-5)  # normalised by a small gap (0.02): float noise
    with pytest.raises(ValueError, match="not a size of this curve"):
        curve.at(0.001)
    f = curve.faithfulness
    trapz = sum((sizes[i + 1] - sizes[i]) * (f[i] + f[i + 1]) / 2 for i in range(len(sizes) - 1))
    assert curve.cpr == pytest.approx(trapz) and curve.cpr == pytest.approx(area_under(sizes, curve.faithfulness))
    assert area_under([0, 1], [1, 1]) == 1.0 and area_from_one([0, 0.5, 1], [0, 1, 1]) == pytest.approx(0.25)
    assert curve.cmd == pytest.approx(area_from_one(sizes, curve.faithfulness))
    payload = json.loads(json.dumps(curve.to_dict()))
    assert payload["cpr"] == curve.cpr and len(payload["random_mean"]) == len(sizes)
    first = next(i for i, v in enumerate(f) if v >= 0.8)  # the full graph (1.0) always qualifies
    assert curve.smallest_faithful(0.8) == (sizes[first], curve.n_edges[first])
    assert curve.smallest_faithful(2.0) is None and "no circuit" in curve.reach(2.0)
    plot_faithfulness_curve(curve, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000


# --- ACDC --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["kl", logit_diff])
def test_acdc_thresholds(llama, metric):
    task = toy_task(llama)
    keep_all = acdc(llama, task, tau=0.0, metric=metric, progress=False)
    assert keep_all.removed == () and len(keep_all.kept) == 10 and len(keep_all.steps) == 10
    assert keep_all.final_score == keep_all.clean_score
    drop_all = acdc(llama, task, tau=1e9, metric=metric, progress=False)
    assert drop_all.kept == () and len(drop_all.removed) == 10
    assert [s.node for s in drop_all.steps][:5] == ["m1", "a1.h3", "a1.h2", "a1.h1", "a1.h0"]  # logits first


@pytest.mark.parametrize("metric", ["kl", logit_diff])
def test_acdc_decisions_replay(llama, metric):
    """Replaying ACDC's trace with plain interventions: every removal moved the score by < tau, every kept node
    by >= tau, and the final circuit scores the same as the edge circuit it converts to."""
    task = toy_task(llama)
    c = Contrast.of(llama, task, logit_diff)
    tau = 2e-4 if metric == "kl" else 3e-3
    found = acdc(llama, task, tau=tau, metric=metric, progress=False)
    assert found.kept and found.removed  # a threshold in the interesting range
    corrupt = llama.run(c.corrupt, cache=SenderActs.sites(2), attention_mask=c.attention_mask).cache
    clean_last = final_logits(llama.run(c.clean, attention_mask=c.attention_mask).logits, c.attention_mask)

    def score(removed: set[str]) -> float:
        ivs = [ms.Patch(f"head.{i}.z", corrupt[f"head.{i}.z"], heads=[int(n.split("h")[1])])
               for n in sorted(removed) if n.startswith("a") for i in [int(n[1])]]  # fmt: skip
        ivs += [ms.Patch(f"mlp_out.{n[1]}", corrupt[f"mlp_out.{n[1]}"]) for n in removed if n.startswith("m")]
        with llama.intervene(*ivs):
            logits = llama.run(c.clean, attention_mask=c.attention_mask).logits
        if metric == "kl":
            return float(kl_to_clean(final_logits(logits, c.attention_mask), clean_last).mean())
        return float(logit_diff(final_logits(logits, c.attention_mask), task).mean())

    removed: set[str] = set()
    for step in found.steps:
        before, after = score(removed), score(removed | {step.node})
        change = after - before if metric == "kl" else abs(after - before)
        assert step.removed == (change < tau), step
        assert (before, after) == pytest.approx((step.before, step.after), abs=1e-6)
        removed |= {step.node} if step.removed else set()
    assert set(found.removed) == removed
    if metric is logit_diff:
        _, _, (as_edges,) = circuit_metrics(llama, task, [found.circuit()], progress=False)
        assert as_edges == pytest.approx(found.final_score, abs=1e-5)
    json.dumps(found.to_dict())


# --- path patching -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_direct_path_patching_is_edge_patching(family):
    """Wang et al.'s path patching with MLPs frozen leaves only the direct edge: it equals patching that edge.

    Checked on the head -> head edge with the largest real effect for each of q, k and v, in models with larger
    weights than the default (initializer range 0.1, not 0.02), so that those effects are not tiny.
    """
    model = ms.tiny(family, seed=1, initializer_range=0.1)
    task = toy_task(model)
    g = Graph.of(model.cfg)
    head_to_head = [i for i, (s, r) in enumerate(g.edges()) if s.kind == "head" and r.kind in "qkv"]
    patched, _, corrupt = patch_edges(model, task, head_to_head, progress=False)
    for part in "qkv":
        mine = [j for j, i in enumerate(head_to_head) if g.edges()[i][1].kind == part]
        j = max(mine, key=lambda j: abs(float(patched[j]) - corrupt))
        sender, receiver = g.edges()[head_to_head[j]]
        effect = float(patched[j]) - corrupt
        assert abs(effect) > 1e-3
        path = path_patching(model, task, [(sender.layer, sender.head)], [(receiver.layer, receiver.head, part)],
                             freeze_mlps=True)  # fmt: skip
        assert path.score - path.corrupt_metric == pytest.approx(effect, rel=1e-3, abs=1e-7), (sender, receiver)
    several = path_patching(model, task, [(0, 0), (0, 3)], [(1, 2, "q"), "mlp_out.1"], direction="noising")
    assert several.receivers == ("head.1.q[2]", "mlp_out.1") and several.direction == "noising"
    json.dumps(several.to_dict())


def test_path_patching_baselines(llama):
    task = toy_task(llama)
    c = Contrast.of(llama, task, logit_diff)
    none = path_patching(llama, task, [], [(1, 0, "q")])
    assert none.score == pytest.approx(none.corrupt_metric, abs=1e-6) and none.effect == pytest.approx(0, abs=1e-4)
    backwards = path_patching(llama, task, [(1, 2)], [(0, 1, "q")])  # no path from layer 1 to layer 0
    assert backwards.score == pytest.approx(backwards.corrupt_metric, abs=1e-6)
    # every head into the final residual, patched whole (MLPs recompute): the corrupt run with every head's
    # output clean
    every_head = [(layer, h) for layer in range(2) for h in range(4)]
    to_logits = path_patching(llama, task, every_head, ["resid_post.1"])
    heads = ["head.0.z", "head.1.z"]
    clean = llama.run(c.clean, cache=heads, attention_mask=c.attention_mask).cache
    with llama.intervene(*[ms.Patch(h, clean[h]) for h in heads]):
        expected, _ = c.run(llama, c.corrupt)
    assert to_logits.score == pytest.approx(expected, abs=1e-6)
    assert abs(to_logits.score - to_logits.corrupt_metric) > 1e-3
    with pytest.raises(ValueError, match="key/value heads"):
        path_patching(llama, task, [(0, 0)], [(1, 3, "k")])  # tiny Llama has 2 key/value heads
    with pytest.raises(ValueError, match="part"):
        path_patching(llama, task, [(0, 0)], [(1, 0, "z")])


def test_edge_scores_result_type(llama):
    scores = eap(llama, toy_task(llama), progress=False)
    assert isinstance(scores, EdgeScores) and scores.matrix().shape == (11, 19)
    assert scores.clean_metric != scores.corrupt_metric and scores.seconds > 0
