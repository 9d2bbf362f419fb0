"""Attribution graphs against their definitions, on tiny models of several families.

- The replacement model (transcoders + error nodes) reproduces the real logits.
- Every edge weight equals the change its source's write makes to its target in a forward pass with attention
  patterns, norm scales and MLP outputs frozen at the prompt's values (a finite difference, exact because that
  model is linear), computed here with hooks independently of the backward passes under test.
- A ReLU MLP is exactly a ReLU transcoder (W_enc = W_in, W_dec = W_out): error nodes vanish, scores are 1.
- Real ablations of the top features move downstream features and logits as the graph predicts.
"""

from __future__ import annotations

import json
from xml.etree import ElementTree

import pytest
import torch
from torch import nn

import mechscope as ms
from mechscope.core import HookSet
from mechscope.features import DictionaryConfig, build_dictionary, save_dictionary
from mechscope.graphs import (
    AttributionGraph,
    CLTConfig,
    CLTTrainConfig,
    CrossLayerTranscoder,
    GraphConfig,
    ReplacementModel,
    attribute,
    load_transcoders,
    propagate,
    relu_mlp_transcoders,
    save_clt,
    train_clt,
    verify,
)
from mechscope.graphs._graph import cumulative_threshold
from mechscope.report import graph_svg

PROMPT = "The cat sat on"


def random_transcoders(model: ms.Model, kind: str = "relu", *, skip: bool = False, d_sae: int = 48, seed: int = 0):
    """Untrained transcoders of ``kind`` (random encoder and decoder): large errors, many active features."""
    assert model.cfg is not None
    d = model.cfg.d_model
    out = {}
    for layer in range(model.cfg.n_layers):
        cfg = DictionaryConfig(kind, d_in=d, d_sae=d_sae, d_out=d, k=6, apply_b_dec_to_input=False,
                               skip_connection=skip, target_site=f"mlp_out.{layer}")  # fmt: skip
        tc = build_dictionary(cfg, seed=seed + layer)
        gen = torch.Generator().manual_seed(100 + layer)
        with torch.no_grad():
            tc.W_dec.mul_(0.05)
            tc.b_enc.copy_(0.1 * torch.randn(d_sae, generator=gen))
            if skip:
                tc.W_skip.copy_(0.05 * torch.randn(d, d, generator=gen))
        out[layer] = tc.eval()
    return out


def exact_transcoders(model: ms.Model):
    """GPT-2's ReLU MLP as a ReLU transcoder: ``relu(x W_in + b_in) W_out + b_out`` exactly."""
    return relu_mlp_transcoders(model.module)


@pytest.fixture(scope="module")
def relu_gpt2():
    """A tiny GPT-2 with ReLU MLPs and nonzero biases (the tiny models start with zero biases)."""
    model = ms.tiny("gpt2", seed=1, activation_function="relu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.module.named_parameters():
            if name.endswith("bias"):
                param.copy_(0.05 * torch.randn(param.shape, generator=gen))
    return model


# --- the replacement model -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "kind", "skip"),
    [("llama", "relu", True), ("gpt2", "topk", False), ("gpt_neox", "jumprelu", False), ("gemma2", "relu", False)],
)
def test_replacement_reproduces_logits(tiny_models, family, kind, skip):
    model = tiny_models.get(family) or ms.tiny(family)
    rm = ReplacementModel(model, random_transcoders(model, kind, skip=skip))
    trace = rm.trace(PROMPT)
    assert max(float(e.abs().max()) for e in trace.errors) > 1e-3  # untrained: the errors carry real weight
    assert sum(int((z != 0).sum()) for z in trace.latents) > 0
    torch.testing.assert_close(rm.logits(PROMPT, trace), trace.logits, rtol=1e-4, atol=1e-5)
    # and the errors matter: without them the logits move
    zero = type(trace)(trace.tokens, trace.logits, trace.embed, trace.inputs, trace.mlp_out, trace.latents,
                       tuple(torch.zeros_like(e) for e in trace.errors))  # fmt: skip
    assert float((rm.logits(PROMPT, zero) - trace.logits).abs().max()) > 1e-4


def test_exact_transcoders_leave_no_error(relu_gpt2):
    tcs = exact_transcoders(relu_gpt2)
    graph = attribute(relu_gpt2, PROMPT, tcs, GraphConfig(max_feature_nodes=None))
    errors = graph.mask("error")
    assert max(abs(n.activation or 0.0) for n, e in zip(graph.nodes, errors, strict=True) if e) < 1e-5
    assert float(graph.adjacency[:, errors].abs().max()) < 1e-6
    assert graph.replacement_score() == pytest.approx(1.0, abs=1e-6)
    assert graph.completeness_score() == pytest.approx(1.0, abs=1e-6)
    # random transcoders on the same model: errors carry influence, and both scores say so
    rough = attribute(relu_gpt2, PROMPT, random_transcoders(relu_gpt2), GraphConfig(max_feature_nodes=None))
    assert rough.replacement_score() < 0.9 and rough.completeness_score() < 0.95
    # a GELU MLP is not a ReLU transcoder: refused, naming what is needed
    with pytest.raises(ValueError, match="activation_function='relu'"):
        relu_mlp_transcoders(ms.tiny("gpt2", seed=1).module)


# --- edges against finite differences of the frozen model ------------------------------------------------------


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.lower().endswith(("rmsnorm", "layernorm"))


class FrozenModel:
    """The prompt's model with attention patterns, norm scales and MLP outputs held at their clean values.

    Built from forward hooks only (no autograd): queries and keys are patched to their clean values, every norm
    divides by its clean scale, and every MLP output is its clean value (plus a skip transcoder's linear skip of the
    live input). ``run(writes)`` adds extra vectors at ``mlp_out.L`` / ``resid_pre.0`` and returns each layer's
    transcoder input and the logits.
    """

    def __init__(self, rm: ReplacementModel, tokens: torch.Tensor) -> None:
        self.rm, self.tokens = rm, tokens[None]
        model = rm.model
        self.norms = {name: m for name, m in model.module.named_modules() if _is_norm(m)}
        self.clean_norm: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        handles = [m.register_forward_hook(self._recorder(n)) for n, m in self.norms.items()]
        try:
            qk = [s.name for s in model.resolve(["head.*.q", "head.*.k"])]
            sites = [*qk, *(s.name for s in rm.input_sites), *(s.name for s in rm.output_sites)]
            self.clean = model.run(self.tokens, cache=sites).cache
        finally:
            for h in handles:
                h.remove()
        self.qk = qk

    def _recorder(self, name):
        def hook(_m, args, out):
            self.clean_norm[name] = (args[0].detach(), out.detach())

        return hook

    def _frozen_norm(self, name):
        x_c, out_c = self.clean_norm[name]

        def hook(module, args, out):
            x = args[0]
            if "rms" in type(module).__name__.lower():
                return x * (out_c / x_c)
            bias = module.bias if getattr(module, "bias", None) is not None else 0
            cx, cc = x - x.mean(-1, keepdim=True), x_c - x_c.mean(-1, keepdim=True)
            return cx * ((out_c - bias) / cc) + bias

        return hook

    @torch.no_grad()
    def run(self, writes: dict[str, tuple[int, torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        rm, model = self.rm, self.rm.model
        got: dict = {}
        handles = [m.register_forward_hook(self._frozen_norm(n)) for n, m in self.norms.items()]
        hooks = HookSet(model.module)
        try:
            for name in self.qk:
                hooks.add(model.resolve(name)[0], lambda act, name=name: self.clean[name].clone())
            hooks.add(model.resolve("resid_pre.0")[0], self._writer(writes.get("resid_pre.0"), None))
            for layer in range(rm.n_layers):
                hooks.add(rm.input_sites[layer], lambda act, layer=layer: got.__setitem__(layer, act.clone()))
                site = f"mlp_out.{layer}"
                hooks.add(rm.output_sites[layer], self._mlp(layer, writes.get(site), got))
            hooks.add(model.resolve("logits")[0], lambda act: got.__setitem__("logits", act.clone()))
            model._forward(model.encode(self.tokens))
        finally:
            hooks.close()
            for h in handles:
                h.remove()
        return [got[layer][0] for layer in range(rm.n_layers)], got["logits"][0, -1]

    def _writer(self, write, base):
        def add(act):
            out = act.clone() if base is None else base.clone()
            if write is not None:
                out[0, write[0]] += write[1].to(out)
            return out

        return add

    def _mlp(self, layer, write, got):
        clean_out, clean_in = self.clean[f"mlp_out.{layer}"], self.clean[self.rm.input_sites[layer].name]

        def frozen(act):
            out = clean_out.clone()
            moved = (got[layer] - clean_in)[0]
            skip = self.rm.coders.skip(layer, moved)
            if skip is not None:
                out = out + skip[None]
            if write is not None:
                out[0, write[0]] += write[1].to(out)
            return out

        return frozen


@pytest.mark.parametrize(
    ("family", "kind", "skip"),
    [("llama", "relu", True), ("gpt2", "topk", False), ("gpt_neox", "relu", False), ("gemma2", "jumprelu", False)],
)
def test_edges_equal_frozen_finite_differences(tiny_models, family, kind, skip):
    model = tiny_models[family]
    rm = ReplacementModel(model, random_transcoders(model, kind, skip=skip))
    graph = attribute(rm, PROMPT, config=GraphConfig(max_feature_nodes=None, batch_size=5))
    trace = rm.trace(PROMPT)
    frozen = FrozenModel(rm, trace.tokens)
    base_inputs, base_logits = frozen.run({})
    # the frozen pass with nothing added is the real run
    torch.testing.assert_close(base_logits, trace.logits[-1], rtol=1e-4, atol=1e-5)
    nodes = graph.nodes
    last = len(trace.tokens) - 1
    logit_row = next(i for i, n in enumerate(nodes) if n.kind == "logit")
    feature_row = max((i for i, n in enumerate(nodes) if n.kind == "feature" and n.layer == rm.n_layers - 1),
                      key=lambda i: (nodes[i].position, nodes[i].feature or 0))  # fmt: skip
    sources = [i for i, n in enumerate(nodes) if n.kind in ("embedding", "error") and n.layer < rm.n_layers - 1]
    sources += [i for i, n in enumerate(nodes) if n.kind == "feature" and n.layer == 0][::7]
    assert len(sources) > 10
    logit_id = nodes[logit_row].token_id
    t = nodes[feature_row]
    w_enc = rm.transcoders[t.layer].W_enc.detach()[:, t.feature]

    def targets(inputs, logits):
        centred = logits - logits.mean()
        return torch.stack([centred[logit_id], inputs[t.layer][t.position] @ w_enc])

    base = targets(base_inputs, base_logits)
    expected, got = [], []
    for s in sources:
        n = nodes[s]
        if n.kind == "embedding":
            write = {"resid_pre.0": (n.position, trace.embed[n.position])}
        elif n.kind == "error":
            write = {f"mlp_out.{n.layer}": (n.position, trace.errors[n.layer][n.position])}
        else:
            vec = n.activation * rm.transcoders[n.layer].W_dec.detach()[n.feature]
            write = {f"mlp_out.{n.layer}": (n.position, vec)}
        expected.append(targets(*frozen.run(write)) - base)
        got.append(torch.stack([graph.adjacency[logit_row, s], graph.adjacency[feature_row, s]]))
    expected_t, got_t = torch.stack(expected), torch.stack(got)
    assert float(expected_t.abs().max()) > 1e-3  # the sources do move the targets
    scale = float(expected_t.abs().max())
    torch.testing.assert_close(got_t, expected_t, rtol=1e-3, atol=2e-5 * scale)
    assert last == nodes[logit_row].position


def test_batching_does_not_change_rows(tiny_models):
    model = tiny_models["llama"]
    tcs = random_transcoders(model)
    one = attribute(model, PROMPT, tcs, GraphConfig(max_feature_nodes=None, batch_size=1))
    many = attribute(model, PROMPT, tcs, GraphConfig(max_feature_nodes=None, batch_size=13))
    assert many.stats is not None and one.stats is not None
    assert one.stats.n_backward == one.stats.n_rows
    assert many.stats.n_backward == -(-many.stats.n_rows // 13)
    torch.testing.assert_close(one.adjacency, many.adjacency, rtol=1e-4, atol=1e-6)


def test_feature_budget_keeps_the_most_influential(tiny_models):
    model = tiny_models["gpt2"]
    tcs = random_transcoders(model)
    full = attribute(model, PROMPT, tcs, GraphConfig(max_feature_nodes=None, batch_size=8))
    small = attribute(model, PROMPT, tcs, GraphConfig(max_feature_nodes=8, batch_size=4))
    assert int(small.mask("feature").sum()) == 8
    assert small.stats is not None and small.stats.n_active_features == int(full.mask("feature").sum())
    # the logits' direct rows are the same; the chosen features are among the full graph's most influential
    inf = full.node_influence()
    ranked = [full.nodes[i].id for i in torch.argsort(inf, descending=True).tolist() if full.nodes[i].kind == "feature"]
    chosen = {n.id for n in small.nodes if n.kind == "feature"}
    assert len(chosen & set(ranked[:16])) >= 6


def test_target_token_is_the_only_logit(tiny_models):
    model = tiny_models["llama"]
    graph = attribute(model, PROMPT, random_transcoders(model), GraphConfig(max_feature_nodes=4), target=" ")
    logits = [n for n in graph.nodes if n.kind == "logit"]
    assert [n.token for n in logits] == [" "]
    assert logits[0].probability is not None and 0 < logits[0].probability < 1


# --- pruning, scores, files --------------------------------------------------------------------------------------


def test_prune_keeps_influence_and_structure(relu_gpt2):
    graph = attribute(relu_gpt2, PROMPT, random_transcoders(relu_gpt2), GraphConfig(max_feature_nodes=None))
    pruned = graph.prune(0.5, 0.9)
    assert 0 < int(pruned.mask("feature").sum()) < int(graph.mask("feature").sum())
    for kind in ("embedding", "logit"):
        assert int(pruned.mask(kind).sum()) == int(graph.mask(kind).sum())
    assert pruned.pruned == {"node_threshold": 0.5, "edge_threshold": 0.9}
    # kept features hold the top share of influence, and every kept feature has edges in and out
    inf = graph.node_influence()
    cutoff = cumulative_threshold(inf, 0.5)
    kept = [graph.index(n.id) for n in pruned.nodes]
    assert all(float(inf[i]) >= cutoff for i in kept if graph.nodes[i].kind in ("feature", "error"))
    f = pruned.mask("feature")
    assert bool((pruned.adjacency[f] != 0).any(1).all()) and bool((pruned.adjacency[:, f] != 0).any(0).all())
    # kept edges carry the original weights
    sub = graph.adjacency[torch.tensor(kept)][:, torch.tensor(kept)]
    nonzero = pruned.adjacency != 0
    torch.testing.assert_close(pruned.adjacency[nonzero], sub[nonzero])
    assert int(nonzero.sum()) < int((sub != 0).sum())
    looser = graph.prune(0.9, 0.99)
    assert len(looser.nodes) >= len(pruned.nodes)
    with pytest.raises(ValueError, match="node_threshold"):
        graph.prune(1.5)


def test_json_round_trip_and_viewer_format(relu_gpt2):
    graph = attribute(relu_gpt2, PROMPT, random_transcoders(relu_gpt2), GraphConfig(max_feature_nodes=20))
    top = [n.id for n in graph.nodes if n.kind == "feature"][:3]
    graph = graph.with_supernodes(group=top)
    back = AttributionGraph.from_json(graph.to_json())
    assert back.nodes == graph.nodes and back.supernodes == {"group": tuple(top)}
    torch.testing.assert_close(back.adjacency, graph.adjacency)
    assert back.replacement_score() == pytest.approx(graph.replacement_score())
    viewer = json.loads(json.dumps(graph.prune().to_graph_json("cat")))
    assert set(viewer) == {"metadata", "qParams", "nodes", "links"}
    kinds = {n["feature_type"] for n in viewer["nodes"]}
    assert {"embedding", "logit"} <= kinds
    ids = {n["node_id"] for n in viewer["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in viewer["links"])
    assert sum(n["is_target_logit"] for n in viewer["nodes"]) == 1
    with pytest.raises(ValueError, match="not a mechscope attribution graph"):
        AttributionGraph.from_dict({"format": "something else"})
    with pytest.raises(ValueError, match="not in the graph"):
        graph.with_supernodes(bad=["feature:0:0@99"])


# --- verification -----------------------------------------------------------------------------------------------


def test_verify_predicts_real_ablations(relu_gpt2):
    tcs = exact_transcoders(relu_gpt2)
    graph = attribute(relu_gpt2, PROMPT, tcs, GraphConfig(max_feature_nodes=None))
    result = verify(relu_gpt2, graph, tcs, n=4)
    assert len(result.checks) == 4
    assert result.correlation is not None and result.correlation > 0.9
    pred = torch.tensor([p for c in result.checks for p in c.predicted], dtype=torch.float64)
    real = torch.tensor([r for c in result.checks for r in c.real], dtype=torch.float64)
    slope = float((pred * real).sum() / (pred * pred).sum())  # least squares, real ~ slope * predicted
    assert result.slope == pytest.approx(slope) and 0.8 < slope < 1.25
    assert result.spearman is not None and result.spearman > 0.8
    assert result.mean_abs_error == pytest.approx(float((pred - real).abs().mean()))
    for check in result.checks:
        assert len(check.targets) == len(check.predicted) == len(check.real)
        assert max(abs(r) for r in check.real) > 1e-4  # the ablations really move something
    # clamping to twice the activation: the same check, the opposite direction
    doubled = verify(relu_gpt2, graph, tcs, n=2, value=2 * graph.nodes[graph.index(result.checks[0].node)].activation)
    assert doubled.checks[0].factor is None and doubled.checks[0].correlation > 0.9
    assert doubled.checks[0].real[-1] * result.checks[0].real[-1] < 0
    # the prediction is the graph's propagation: its direct part is the intervened feature's column
    s = graph.index(result.checks[0].node)
    a_s = graph.nodes[s].activation
    direct = graph.adjacency[:, s].double() * -1.0  # ablation: delta = -a_s, edge = a_s * d(target)/d(a_s)
    only_s = torch.where(torch.arange(len(graph.nodes)) == s, graph.adjacency, 0.0)  # keeps column s
    one_step = AttributionGraph(graph.prompt, graph.tokens, graph.token_ids, graph.nodes, only_s, graph.n_layers)
    moved = propagate(one_step, s, -a_s)
    moved[s] = 0
    torch.testing.assert_close(moved, direct, rtol=1e-5, atol=1e-7)


def test_verify_follows_indirect_paths_on_a_deeper_model():
    """Four layers whose only nonlinearities are the MLPs' ReLUs (queries and keys zero: fixed uniform attention;
    LayerNorm epsilon 1e8: a constant scale), with exact transcoders: the graph's propagation must predict a real
    intervention to 1e-3, which a prediction from direct edges alone misses (indirect paths carry ~1% here)."""
    model = ms.tiny("gpt2", seed=1, activation_function="relu", n_layer=4, layer_norm_epsilon=1e8)
    d = model.cfg.d_model
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.module.named_parameters():
            if name.endswith("bias"):
                param.copy_(0.05 * torch.randn(param.shape, generator=gen))
            if ".ln_" in name and name.endswith("weight"):
                param.mul_(1e4)  # LayerNorm(x) = 1e4 (x - mean) / sqrt(var + 1e8): centring at a usual size
        for block in model.module.transformer.h:
            block.attn.c_attn.weight[:, : 2 * d] = 0
            block.attn.c_attn.bias[: 2 * d] = 0
    tcs = exact_transcoders(model)
    graph = attribute(model, PROMPT, tcs, GraphConfig(max_feature_nodes=None))
    result = verify(model, graph, tcs, n=3, factor=0.5)
    for check in result.checks:
        s = graph.index(check.node)
        a_s = graph.nodes[s].activation
        rows = torch.tensor([graph.index(t) for t in check.targets])
        direct = graph.adjacency[rows, s].double() * (check.value - a_s) / a_s
        pred, real = torch.tensor(check.predicted, dtype=torch.float64), torch.tensor(check.real, dtype=torch.float64)
        assert max(graph.nodes[int(i)].layer for i in rows) >= graph.nodes[s].layer + 3  # targets three layers on
        assert float((pred - real).norm() / real.norm()) < 1e-3
        assert float((direct - real).norm() / real.norm()) > 3e-3  # the test can tell direct from propagated


# --- bad input -----------------------------------------------------------------------------------------------------


def test_bad_input_errors(tiny_models, tmp_path):
    model = tiny_models["llama"]
    tcs = random_transcoders(model)
    with pytest.raises(ValueError, match=r"missing \[1\]"):
        ReplacementModel(model, {0: tcs[0]})
    d = model.cfg.d_model
    sae = build_dictionary(DictionaryConfig("relu", d_in=d, d_sae=16))
    with pytest.raises(TypeError, match="autoencoder"):
        ReplacementModel(model, {0: tcs[0], 1: sae})
    narrow = build_dictionary(DictionaryConfig("relu", d_in=d, d_sae=16, d_out=d // 2, apply_b_dec_to_input=False))
    with pytest.raises(ValueError, match="layer 1's transcoder"):
        ReplacementModel(model, {0: tcs[0], 1: narrow})
    wrong = build_dictionary(DictionaryConfig("relu", d_in=d, d_sae=16, d_out=d, apply_b_dec_to_input=False,
                                              target_site="mlp_out.0"))  # fmt: skip
    with pytest.raises(ValueError, match=r"predicts 'mlp_out\.0'"):
        ReplacementModel(model, {0: tcs[0], 1: wrong})
    with pytest.raises(ValueError, match="single token"):
        attribute(model, PROMPT, tcs, target=" cat")
    with pytest.raises(ValueError, match="logit_prob"):
        GraphConfig(logit_prob=0)
    with pytest.raises(TypeError, match="transcoder"):
        attribute(model, PROMPT)
    with pytest.raises(FileNotFoundError, match="layer_0"):
        load_transcoders(tmp_path)
    for layer, tc in tcs.items():
        save_dictionary(tc, tmp_path / f"layer_{layer}")
    loaded = load_transcoders(tmp_path)
    assert sorted(loaded) == [0, 1]
    torch.testing.assert_close(loaded[1].W_dec, tcs[1].W_dec)


# --- command line ----------------------------------------------------------------------------------------------


def test_cli_graph(tmp_path):
    from typer.testing import CliRunner

    from mechscope.cli import app

    model = ms.tiny("llama")  # the model `tiny-llama` opens
    folder = tmp_path / "tcs"
    for layer, tc in random_transcoders(model).items():
        save_dictionary(tc, folder / f"layer_{layer}")
    out = tmp_path / "out"
    args = ["graph", "tiny-llama", PROMPT, "--transcoders", str(folder), "--verify", "2", "--out", str(out),
            "--max-feature-nodes", "12", "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["stats"]["n_rows"] == 12 + len(summary["logits"])
    assert len(summary["verification"]["checks"]) == 2
    full = AttributionGraph.from_json((out / "graph.json").read_text())
    assert int(full.mask("feature").sum()) == 12
    viewer = json.loads((out / "graph-viewer.json").read_text())
    assert viewer["metadata"]["prompt"] == full.prompt
    page = (out / "graph.html").read_text()
    ElementTree.fromstring(graph_svg(AttributionGraph.from_json((out / "graph-pruned.json").read_text())))
    assert "<svg" in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    # a folder missing a layer: the error names it
    import shutil

    shutil.rmtree(folder / "layer_1")
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "missing [1]" in result.output


# --- every family -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(ms.core.TINY_CONFIGS))
def test_every_family_replaces_and_attributes(family):
    """Spliced logits equal the real ones, and the top logit's row equals frozen finite differences."""
    model = ms.tiny(family)
    rm = ReplacementModel(model, random_transcoders(model))
    trace = rm.trace(PROMPT)
    torch.testing.assert_close(rm.logits(PROMPT, trace), trace.logits, rtol=1e-4, atol=1e-5)
    graph = attribute(rm, PROMPT, config=GraphConfig(max_feature_nodes=8, max_logits=1, batch_size=9))
    frozen = FrozenModel(rm, trace.tokens)
    _, base = frozen.run({})
    row = graph.index(next(n.id for n in graph.nodes if n.kind == "logit"))
    v = graph.nodes[row].token_id
    expected, got = [], []
    for s in [i for i, n in enumerate(graph.nodes) if n.kind in ("embedding", "error")][::3][:6]:
        n = graph.nodes[s]
        if n.kind == "embedding":
            write = {"resid_pre.0": (n.position, trace.embed[n.position])}
        else:
            write = {f"mlp_out.{n.layer}": (n.position, trace.errors[n.layer][n.position])}
        _, logits = frozen.run(write)
        expected.append(float((logits - logits.mean())[v] - (base - base.mean())[v]))
        got.append(float(graph.adjacency[row, s]))
    scale = max(abs(e) for e in expected)
    assert scale > 0
    # float32 differences of O(1) logits are good to ~1e-7 (Bloom's tiny model moves its logits by ~1e-5)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-3, atol=max(1e-4 * scale, 5e-7))


# --- cross-layer transcoders ---------------------------------------------------------------------------------------


def test_cross_layer_edges_equal_frozen_finite_differences(tiny_models):
    model = tiny_models["llama"]
    clt = CrossLayerTranscoder(CLTConfig(2, model.cfg.d_model, 48, "topk", k=6), seed=3)
    rm = ReplacementModel(model, clt)
    trace = rm.trace(PROMPT)
    torch.testing.assert_close(rm.logits(PROMPT, trace), trace.logits, rtol=1e-4, atol=1e-5)
    # layer 1's MLP output is predicted from both layers' features (the definition, written out)
    z0, z1 = trace.latents
    with torch.no_grad():
        predicted = z0 @ clt.W_dec[0][1] + z1 @ clt.W_dec[1][0] + clt.b_dec[1]
    torch.testing.assert_close(trace.errors[1], trace.mlp_out[1] - predicted, rtol=1e-5, atol=1e-6)
    assert float((z0 @ clt.W_dec[0][1]).abs().max()) > 1e-2
    graph = attribute(rm, PROMPT, config=GraphConfig(max_feature_nodes=None, batch_size=7))
    frozen = FrozenModel(rm, trace.tokens)
    _, base = frozen.run({})
    row = graph.index(next(n.id for n in graph.nodes if n.kind == "logit"))
    v = graph.nodes[row].token_id
    expected, got = [], []
    last = len(trace.tokens) - 1
    layer0 = [i for i, n in enumerate(graph.nodes) if n.kind == "feature" and n.layer == 0]
    for s in layer0[::7] + [i for i in layer0 if graph.nodes[i].position == last]:
        n = graph.nodes[s]
        f = torch.tensor([n.feature])
        # a layer-0 feature writes both MLP outputs: its edge to the logit sums both paths
        write = {f"mlp_out.{dst}": (n.position, n.activation * clt.decoder_rows(0, dst, f)[0]) for dst in (0, 1)}
        _, logits = frozen.run(write)
        expected.append(float((logits - logits.mean())[v] - (base - base.mean())[v]))
        got.append(float(graph.adjacency[row, s]))
        if n.position == last:  # there the write to mlp_out.1 reaches the logits directly, and counts
            _, logits = frozen.run({"mlp_out.0": write["mlp_out.0"]})
            assert abs(float((logits - logits.mean())[v] - (base - base.mean())[v]) - expected[-1]) > 1e-4
    scale = max(abs(e) for e in expected)
    assert len(expected) >= 4 and scale > 1e-4
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-3, atol=max(1e-4 * scale, 5e-7))


def test_per_layer_transcoders_as_a_cross_layer_one_give_the_same_graph(relu_gpt2):
    tcs = exact_transcoders(relu_gpt2)
    d_model, d_mlp = tcs[0].cfg.d_in, tcs[0].cfg.d_sae
    clt = CrossLayerTranscoder(CLTConfig(2, d_model, d_mlp, "relu"))
    with torch.no_grad():
        for layer, tc in tcs.items():
            clt.W_enc[layer].copy_(tc.W_enc)
            clt.b_enc[layer].copy_(tc.b_enc)
            clt.W_dec[layer].zero_()
            clt.W_dec[layer][0].copy_(tc.W_dec)
            clt.b_dec[layer].copy_(tc.b_dec)
    config = GraphConfig(max_feature_nodes=None)
    per_layer = attribute(relu_gpt2, PROMPT, tcs, config)
    cross = attribute(relu_gpt2, PROMPT, clt, config)
    assert cross.nodes == per_layer.nodes
    torch.testing.assert_close(cross.adjacency, per_layer.adjacency, rtol=1e-5, atol=1e-6)
    assert verify(relu_gpt2, cross, clt, n=2).correlation > 0.9


def test_train_clt_learns_the_mlps(relu_gpt2, tmp_path):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (64, 12), generator=gen)
    clt, fvu = train_clt(relu_gpt2, tokens, CLTTrainConfig(d_sae=64, k=8, steps=60, lr=3e-3))
    assert fvu[-1] < 0.5 * fvu[0]
    rm = ReplacementModel(relu_gpt2, clt)
    graph = attribute(rm, PROMPT, config=GraphConfig(max_feature_nodes=32))
    assert 0 < graph.replacement_score() < 1
    with pytest.raises(ValueError, match="cross-layer transcoder has 2 layers"):
        ReplacementModel(ms.tiny("llama", num_hidden_layers=3), clt)
    save_clt(clt, tmp_path / "clt")
    loaded = load_transcoders(tmp_path / "clt")
    assert isinstance(loaded, CrossLayerTranscoder)
    again = attribute(relu_gpt2, PROMPT, loaded, GraphConfig(max_feature_nodes=32))
    torch.testing.assert_close(again.adjacency, graph.adjacency)
