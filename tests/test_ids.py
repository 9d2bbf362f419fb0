"""Component identity: every node and edge name formats and parses in one place (``circuits._ids``)."""

import pytest
import torch

import mechscope as ms
from mechscope.circuits import Circuit, ComponentNameError, EdgeId, Graph, NodeId
from mechscope.organisms import CircuitTruth


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])  # grouped-query attention; parallel blocks
def test_every_component_of_a_tiny_graph_round_trips(family):
    g = Graph.of(ms.tiny(family, seed=0).cfg)
    for s in g.senders:
        assert NodeId.parse(s.name) == s.node and s.node.format() == s.name
    for r in g.receivers:
        assert NodeId.parse(r.node.format()) == r.node
    ids = g.edge_ids()
    assert len(set(ids)) == g.n_edges
    for edge, name in zip(ids, g.edge_names(), strict=True):
        assert EdgeId.parse(name) == edge and edge.format() == name == str(edge)
    picked = ids[:: max(1, g.n_edges // 7)]
    a, b = Circuit.from_edge_names(g, picked), Circuit.from_edge_names(g, [e.format() for e in picked])
    assert torch.equal(a.edges, b.edges) and a.n_edges == len(picked)


def test_grouped_query_receivers_are_key_value_heads():
    g = Graph(n_layers=2, n_heads=4, n_kv_heads=2, parallel=False)
    assert EdgeId.parse("a0.h1->a1.kv1<k>") in g.edge_ids()
    assert EdgeId.parse("a0.h1->a1.kv1<k>").receiver == NodeId("kv", 1, 1)
    assert "a0.h1->a1.h3<q>" in g.edge_names() and "a0.h1->a1.h3<k>" not in g.edge_names()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a3.h", "not a node name"),
        ("head.3.z[h5]", "not a node name"),  # a patching-grid label, not a graph node
        ("a3h5->m4", "not a node name"),
        ("a3.h5->a4.h1", "needs its input"),
        ("a3.h5->m4<q>", "takes no <part>"),
        ("input->a3.kv1<q>", "has no query"),
        ("logits->m0", "cannot send"),
        ("m0->input", "cannot receive"),
        ("a3.h5->a4.h1<x>", "not an edge name"),
        ("", "not an edge name"),
    ],
)
def test_malformed_names_say_what_is_wrong(name, message):
    with pytest.raises(ComponentNameError, match=message):
        EdgeId.parse(name) if "->" in name or not name or "<" in name else NodeId.parse(name)


def test_circuits_and_truths_refuse_malformed_edges():
    g = Graph(n_layers=1, n_heads=2, n_kv_heads=2, parallel=False)
    with pytest.raises(ComponentNameError, match="not an edge name"):
        Circuit.from_edge_names(g, ["a0.h0=>logits"])
    with pytest.raises(ValueError, match="not edges of this graph"):
        Circuit.from_edge_names(g, ["a0.h5->logits"])
    with pytest.raises(ComponentNameError):
        CircuitTruth(("a0.h0",), frozenset(), ("a0.h0 -> logits",), frozenset())
