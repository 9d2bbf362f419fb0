"""The explorer's attribution-graph endpoints (Starlette's TestClient, loopback only) against the library's numbers:
the computed graph, its pruning, a node's edges, supernodes saved with the graph, and verification of a node."""

from __future__ import annotations

import re

import pytest
import torch

pytest.importorskip("starlette", reason="the explorer's extra is not installed: pip install -e '.[serve,browser]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx: pip install -e '.[serve,browser]'")

from _explorer_data import XSS, graph_file, transcoders
from starlette.testclient import TestClient

import mechscope as ms
from mechscope.features import save_dictionary
from mechscope.graphs import METHODS, AttributionGraph, GraphConfig, ReplacementModel, attribute, verify
from mechscope.ui import Explorer, Roots, create_app

BASE = "http://127.0.0.1:8000"
PROMPT = "The cat sat on"


@pytest.fixture(scope="module")
def model() -> ms.Model:
    """A tiny GPT-2 with ReLU MLPs and nonzero biases, so its MLPs are exactly ReLU transcoders."""
    model = ms.tiny("gpt2", seed=1, activation_function="relu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.module.named_parameters():
            if name.endswith("bias"):
                param.copy_(0.05 * torch.randn(param.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def exact(model) -> dict:
    """Each MLP as a ReLU transcoder (W_enc = W_in, W_dec = W_out): no error, so verification is sharp."""
    from mechscope.graphs import relu_mlp_transcoders

    return relu_mlp_transcoders(model.module)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model, exact):
    root = tmp_path_factory.mktemp("graphs")
    graph_file(model, exact, root / "saved")
    return root


@pytest.fixture(scope="module")
def client(model, exact, run_dir):
    with TestClient(
        create_app(Explorer(model, Roots([run_dir]), max_tokens=64, transcoders=exact)), base_url=BASE
    ) as c:
        yield c


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_listing_comes_from_the_registry_and_finds_saved_graphs(client, exact):
    out = client.get("/api/graphs").json()
    assert out["method"] == METHODS["attribution-graph"].describe()
    assert {f["name"] for f in out["method"]["fields"]} >= {"max_feature_nodes", "node_threshold", "edge_threshold"}
    assert out["transcoders"] == {"kind": "per-layer", "layers": [0, 1], "d_sae": exact[0].cfg.d_sae}
    assert [(f["ref"], f["kind"]) for f in out["found"]] == [("0/saved/graph.json", "graph")]


def test_a_computed_graph_is_the_librarys(client, model, exact):
    settings = {"max_feature_nodes": 20, "max_logits": 3}
    d = client.post("/api/graph/run", json={"prompt": PROMPT, "settings": settings, "node_threshold": 0.6,
                                            "edge_threshold": 0.9}).json()  # fmt: skip
    assert re.fullmatch(r"graph:\d+", d["ref"])
    graph = attribute(model, PROMPT, exact, GraphConfig(**settings))
    pruned = graph.prune(0.6, 0.9)
    assert [n["id"] for n in d["nodes"]] == [n.id for n in pruned.nodes]
    assert d["full"]["nodes"] == len(graph.nodes) and d["full"]["features"] == 20
    assert d["full"]["replacement"] == pytest.approx(graph.replacement_score())
    assert d["pruned"]["completeness"] == pytest.approx(pruned.completeness_score())
    assert d["pruned"]["node_threshold"] == 0.6
    got = torch.zeros_like(pruned.adjacency)
    for t, s, w in d["edges"]:
        got[t, s] = w
    torch.testing.assert_close(got, pruned.adjacency)
    assert abs(d["edges"][0][2]) == pytest.approx(float(pruned.adjacency.abs().max()))  # strongest first
    # the held graph is listed, and a target makes one logit node
    assert d["ref"] in [f["ref"] for f in client.get("/api/graphs").json()["found"]]
    one = client.post("/api/graph/run", json={"prompt": PROMPT, "target": " ", "settings": settings}).json()
    assert [n["token"] for n in one["nodes"] if n["kind"] == "logit"] == [" "]


def test_sliders_prune_the_held_graph(client, model, exact):
    ref = client.post("/api/graph/run", json={"prompt": PROMPT, "settings": {"max_feature_nodes": None}}).json()["ref"]
    graph = attribute(model, PROMPT, exact, GraphConfig(max_feature_nodes=None))
    tight = client.get(f"/api/graph?ref={ref}&node_threshold=0.3&edge_threshold=0.5").json()
    loose = client.get(f"/api/graph?ref={ref}&node_threshold=0.95&edge_threshold=0.99").json()
    assert [n["id"] for n in tight["nodes"]] == [n.id for n in graph.prune(0.3, 0.5).nodes]
    assert [n["id"] for n in loose["nodes"]] == [n.id for n in graph.prune(0.95, 0.99).nodes]
    assert len(tight["nodes"]) < len(loose["nodes"]) and len(tight["edges"]) < len(loose["edges"])
    assert "node_threshold" in error_of(client.get(f"/api/graph?ref={ref}&node_threshold=1.5"), 400)
    assert loose["n_edges"] == len(loose["edges"]) == int((graph.prune(0.95, 0.99).adjacency != 0).sum())


def test_a_large_view_sends_the_strongest_edges_and_says_how_many(client, monkeypatch):
    from mechscope.ui import _graphs

    ref = client.post("/api/graph/run", json={"prompt": PROMPT, "settings": {"max_feature_nodes": 20}}).json()["ref"]
    whole = client.get(f"/api/graph?ref={ref}").json()
    monkeypatch.setattr(_graphs, "MAX_VIEW_EDGES", 10)
    cut = client.get(f"/api/graph?ref={ref}").json()
    assert cut["n_edges"] == whole["n_edges"] > 10 and cut["edges"] == whole["edges"][:10]
    assert min(abs(e[2]) for e in cut["edges"]) >= max(abs(e[2]) for e in whole["edges"][10:])
    monkeypatch.setattr(_graphs, "MAX_VIEW_NODES", 5)
    assert "lower the node threshold" in error_of(client.get(f"/api/graph?ref={ref}"), 400)


def test_a_node_lists_its_strongest_edges_in_the_full_graph(client, model, exact):
    ref = client.post("/api/graph/run", json={"prompt": PROMPT, "settings": {"max_feature_nodes": 20}}).json()["ref"]
    graph = attribute(model, PROMPT, exact, GraphConfig(max_feature_nodes=20))
    top = max((n for n in graph.nodes if n.kind == "feature"), key=lambda n: float(n.activation or 0))
    d = client.get(f"/api/graph/node?ref={ref}&node={top.id}&k=5").json()
    i = graph.index(top.id)
    assert d["node"]["activation"] == pytest.approx(top.activation)
    assert d["node"]["influence"] == pytest.approx(float(graph.node_influence()[i]))
    incoming = graph.adjacency[i]
    want = torch.argsort(incoming.abs(), descending=True)[:5]
    assert [e["node"] for e in d["incoming"]] == [graph.nodes[j].id for j in want.tolist()]
    assert [e["weight"] for e in d["incoming"]] == pytest.approx(incoming[want].tolist())
    outgoing = graph.adjacency[:, i]
    assert len(d["outgoing"]) == min(5, int((outgoing != 0).sum())) > 0
    assert d["outgoing"][0]["weight"] == pytest.approx(float(outgoing[outgoing.abs().argmax()]))
    assert "no node" in error_of(client.get(f"/api/graph/node?ref={ref}&node=feature:9:9@99"), 400)


def test_a_supernode_is_saved_with_the_graph(client):
    ref = "0/saved/graph.json"
    view = client.get(f"/api/graph?ref={ref}&node_threshold=0.9&edge_threshold=0.99").json()
    assert view["supernodes"] and XSS in view["supernodes"]  # the file's own supernode, as data
    ids = [n["id"] for n in view["nodes"] if n["kind"] == "feature"][:3]
    r = client.post("/api/graph/supernode", json={"ref": ref, "name": "cat", "nodes": ids}).json()
    assert r["supernodes"]["cat"] == ids
    saved = AttributionGraph.from_dict(client.get(f"/api/graph/json?ref={ref}").json())
    assert saved.supernodes["cat"] == tuple(ids) and XSS in saved.supernodes
    assert client.get(f"/api/graph/node?ref={ref}&node={ids[0]}").json()["supernodes"] == [
        name for name, members in saved.supernodes.items() if ids[0] in members
    ]
    assert "not in the graph" in error_of(
        client.post("/api/graph/supernode", json={"ref": ref, "name": "x", "nodes": ["feature:0:0@99"]}), 400
    )
    assert "name the supernode" in error_of(
        client.post("/api/graph/supernode", json={"ref": ref, "name": " ", "nodes": ids}), 400
    )


def test_verify_a_node_is_the_librarys_and_the_graph_predicts_it(client, model, exact):
    ref = client.post("/api/graph/run", json={"prompt": PROMPT, "settings": {"max_feature_nodes": None}}).json()["ref"]
    graph = attribute(model, PROMPT, exact, GraphConfig(max_feature_nodes=None))
    inf = graph.node_influence()
    inf[~graph.mask("feature")] = -1
    node = graph.nodes[int(inf.argmax())].id
    v = client.post("/api/graph/verify", json={"ref": ref, "node": node}).json()
    want = verify(ReplacementModel(model, exact), graph, nodes=[node]).checks[0]
    assert v["node"] == node and v["factor"] == 0.0 and v["value"] == 0.0
    assert [r["target"] for r in v["rows"]] == want.targets
    assert [r["predicted"] for r in v["rows"]] == pytest.approx(want.predicted)
    assert [r["real"] for r in v["rows"]] == pytest.approx(want.real, abs=1e-6)
    assert max(abs(r["real"]) for r in v["rows"]) > 1e-4  # the ablation really moves something
    assert v["correlation"] > 0.9 and 0.8 < v["slope"] < 1.25  # exact transcoders: the graph predicts it
    doubled = client.post("/api/graph/verify", json={"ref": ref, "node": node, "factor": 2}).json()
    assert doubled["rows"][-1]["real"] * v["rows"][-1]["real"] < 0  # the opposite direction
    err = error_of(client.post("/api/graph/verify", json={"ref": ref, "node": "embedding@0"}), 400)
    assert "only feature nodes" in err


def test_bad_requests_get_a_sentence(client, model, run_dir, tmp_path):
    assert "no graph 'graph:99'" in error_of(client.get("/api/graph?ref=graph:99"), 404)
    assert "refused" in error_of(client.get("/api/graph?ref=0/../etc/passwd"), 403)
    err = error_of(client.post("/api/graph/run", json={"prompt": PROMPT, "settings": {"bogus": 1}}), 400)
    assert "no setting 'bogus'" in err and "max_feature_nodes" in err
    assert "single token" in error_of(client.post("/api/graph/run", json={"prompt": PROMPT, "target": " cat"}), 400)
    # a server without transcoders: graphs open, computing them says how to start it
    with TestClient(create_app(Explorer(model, Roots([run_dir]))), base_url=BASE) as bare:
        assert bare.get("/api/graphs").json()["transcoders"] is None
        assert bare.get("/api/graph?ref=0/saved/graph.json").json()["nodes"]
        assert "--transcoders" in error_of(bare.post("/api/graph/run", json={"prompt": PROMPT}), 400)
    # a graph of another model is not verified on this one
    other = ms.tiny("gpt2", seed=7, activation_function="relu")
    graph_file(other, transcoders(other), tmp_path / "other")
    with TestClient(create_app(Explorer(model, Roots([tmp_path]), transcoders=transcoders(model))),
                    base_url=BASE) as c:  # fmt: skip
        ref = "0/other/graph.json"
        node = next(n["id"] for n in c.get(f"/api/graph?ref={ref}").json()["nodes"] if n["kind"] == "feature")
        assert "not on the served" in error_of(c.post("/api/graph/verify", json={"ref": ref, "node": node}), 400)


def test_serve_takes_a_transcoders_folder(monkeypatch, tmp_path, run_dir):
    import uvicorn
    from typer.testing import CliRunner

    from mechscope.cli import app

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda asgi, **kw: served.update(app=asgi, **kw))
    model = ms.tiny("llama")  # the model `tiny-llama` opens
    for layer, tc in transcoders(model).items():
        save_dictionary(tc, tmp_path / "tcs" / f"layer_{layer}")
    result = CliRunner().invoke(app, ["serve", "--model", "tiny-llama", "--transcoders", str(tmp_path / "tcs")])
    assert result.exit_code == 0, result.output
    with TestClient(served["app"], base_url=BASE) as c:
        assert c.get("/api/graphs").json()["transcoders"]["layers"] == [0, 1]
        d = c.post("/api/graph/run", json={"prompt": PROMPT, "settings": {"max_feature_nodes": 8}}).json()
        assert d["full"]["features"] == 8
    import shutil

    shutil.rmtree(tmp_path / "tcs" / "layer_1")
    result = CliRunner().invoke(app, ["serve", "--model", "tiny-llama", "--transcoders", str(tmp_path / "tcs")])
    assert result.exit_code != 0 and "missing [1]" in result.output


def test_a_cross_layer_transcoder_serves_graphs(model):
    from mechscope.graphs import CLTConfig, CrossLayerTranscoder

    clt = CrossLayerTranscoder(CLTConfig(2, model.cfg.d_model, 16, "relu"), seed=0)
    with TestClient(create_app(Explorer(model, transcoders=clt)), base_url=BASE) as c:
        assert c.get("/api/graphs").json()["transcoders"] == {"kind": "cross-layer", "layers": [0, 1], "d_sae": 16}
        d = c.post("/api/graph/run", json={"prompt": PROMPT, "settings": {"max_feature_nodes": 6}}).json()
        want = attribute(ReplacementModel(model, clt), PROMPT, config=GraphConfig(max_feature_nodes=6))
        assert d["full"]["nodes"] == len(want.nodes) and d["full"]["replacement"] == pytest.approx(
            want.replacement_score()
        )
