"""One declaration adds a circuit method everywhere: CLI options and choices, ``find_circuit``, the bench, the report.

The toy method keeps the ``keep_heads`` heads with the largest |direct logit attribution| as a node circuit; it is
declared in the test with a single ``METHODS.added(spec)`` and nothing else is edited.
"""

import json
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import mechscope as ms
from mechscope import bench, organisms
from mechscope.bench._circuits import circuit_scores
from mechscope.bench._registry import RunContext
from mechscope.bench._scorers import auroc
from mechscope.circuits import (
    METHODS,
    Circuit,
    CircuitRun,
    EAPIGConfig,
    FindConfig,
    Graph,
    Node,
    direct_logit_attribution,
    eap_ig,
    edge_ranking,
    faithfulness,
    faithfulness_curve,
    find_circuit,
    ranking_curve,
    tie_orders,
)
from mechscope.cli import app
from mechscope.core._registry import MethodSpec
from mechscope.data.tasks import induction
from mechscope.organisms._induction import BuiltInduction, _llama
from mechscope.report import run_section, write_run_files


@dataclass(frozen=True)
class TopDLAConfig:
    keep_heads: int = 2
    """Heads kept: those with the largest |direct logit attribution|."""


@dataclass(frozen=True, eq=False)
class TopDLAResult:
    graph: Graph
    kept: tuple[str, ...]

    def circuit(self) -> Circuit:
        return Circuit.from_nodes(self.graph, list(self.kept))

    def to_dict(self) -> dict[str, Any]:
        return {"kept": list(self.kept)}


def top_dla(model, task, config: TopDLAConfig) -> TopDLAResult:
    """Keep the heads with the largest |DLA|: a node circuit in one forward pass."""
    heads = direct_logit_attribution(model, task).heads.abs()
    order = heads.flatten().argsort(descending=True)[: config.keep_heads].tolist()
    graph = Graph.of(model.cfg)
    return TopDLAResult(graph, tuple(f"a{i // heads.shape[1]}.h{i % heads.shape[1]}" for i in order))


TOY = MethodSpec("circuits", "top-dla", TopDLAConfig, top_dla, TopDLAResult, "Keep the top-|DLA| heads.",
                 frozenset({"nodes"}))  # fmt: skip


@pytest.fixture
def toy():
    with METHODS.added(TOY) as spec:
        yield spec
    assert "top-dla" not in METHODS


@pytest.fixture(scope="module")
def llama():
    return ms.tiny("llama")


@pytest.fixture(scope="module")
def task(llama):
    return induction(llama.tokenizer, n=4, seq_len=6)


@pytest.fixture
def task_file(tmp_path):
    rows = [{"clean": "ab ba a ", "corrupt": "ab cd a ", "answer": "b", "wrong": "a"},
            {"clean": "cd dc c ", "corrupt": "cd ab c ", "answer": "d", "wrong": "c"}]  # fmt: skip
    path = tmp_path / "task.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def test_a_declared_method_appears_in_the_cli_help_with_its_option(toy):
    text = CliRunner().invoke(app, ["circuit", "--help"], env={"COLUMNS": "200"}).output
    assert "top-dla" in text and "--keep-heads" in text and "largest |direct logit attribution|" in text
    assert "--keep-heads" not in CliRunner().invoke(app, ["patch", "--help"], env={"COLUMNS": "200"}).output


def test_a_method_not_declared_is_not_offered():
    text = CliRunner().invoke(app, ["circuit", "--help"], env={"COLUMNS": "200"}).output
    assert "top-dla" not in text and "--keep-heads" not in text and "--tau" in text and "--steps" in text


def test_a_declared_method_runs_from_the_cli_with_its_config_option(toy, task_file, tmp_path):
    args = ["circuit", "--model", "tiny-llama", "--task", task_file, "--method", "top-dla", "--keep-heads", "1",
            "--random", "1", "--out", str(tmp_path), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["method"] == "top-dla" and s["config"] == {"keep_heads": 1} and len(s["scores"]["kept"]) == 1
    assert s["circuit"]["n_nodes"] >= 2 and len(s["circuit"]["random_faithfulness"]) == 1 and s["curve"] is None
    assert (tmp_path / "circuit.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "summary.json").read_text())["circuit"] == s["circuit"]
    bad = CliRunner().invoke(app, [*args[:-1], "--tau", "0.1", "--json"])
    assert bad.exit_code == 1 and "--tau is a setting of acdc, not of top-dla" in bad.stdout


def test_find_circuit_runs_it_and_the_run_round_trips_and_renders(toy, llama, task, tmp_path):
    run = find_circuit(llama, task, FindConfig("top-dla", TopDLAConfig(keep_heads=3), random=2))
    assert len(run.scores["kept"]) == 3 and run.curve is None and run.edge_scores == {}
    kept = top_dla(llama, task, TopDLAConfig(3)).circuit()
    assert torch.equal(run.circuit.edges, kept.edges)
    assert run.faithfulness == pytest.approx(faithfulness(llama, task, kept, progress=False)[0], abs=1e-6)
    random = [Circuit.random(kept.graph, kept.n_edges, seed=i) for i in range(2)]
    assert run.random_faithfulness == pytest.approx(faithfulness(llama, task, random, progress=False), abs=1e-6)
    payload = json.loads(json.dumps(run.to_dict()))
    assert json.loads(json.dumps(CircuitRun.from_dict(payload).to_dict())) == payload
    with pytest.raises(TypeError, match="TopDLAConfig"):
        find_circuit(llama, task, FindConfig("top-dla", EAPIGConfig()))
    with pytest.raises(ValueError, match="finds its own circuit"):
        find_circuit(llama, task, FindConfig("top-dla", top=3))
    title, body = run_section(run)
    assert "top-dla" in title and "keep_heads" in body and "data:image/png;base64," in body
    assert (write_run_files(run, tmp_path)["png"]).read_bytes()[:4] == b"\x89PNG"


def test_edge_runs_round_trip_and_their_curve_is_faithfulness_curve(llama, task):
    run = find_circuit(llama, task, FindConfig("eap-ig", EAPIGConfig(steps=2), top=12, random=1))
    payload = json.loads(json.dumps(run.to_dict()))
    back = CircuitRun.from_dict(payload)
    assert json.loads(json.dumps(back.to_dict())) == payload and back.curve.cpr == run.curve.cpr
    assert run.circuit.n_edges == 12 == len(run.edge_scores) and run.scores["steps"] == 2
    scores = eap_ig(llama, task, steps=2, progress=False)
    assert torch.equal(run.circuit.edges, scores.top(12).edges)
    direct = faithfulness_curve(llama, task, scores, random=2, seed=5, progress=False)
    orders = tie_orders(scores.scores.abs(), seed=5)  # the tiny model's zero scores tie: five random orders
    ranked = ranking_curve(llama, task, scores.graph, orders, "eap-ig", random=2, seed=5)
    assert ranked.to_dict() | {"seconds": 0} == direct.to_dict() | {"seconds": 0}
    by_index = ranking_curve(llama, task, scores.graph, edge_ranking(scores), "eap-ig", random=0)
    assert by_index.faithfulness == pytest.approx(direct.faithfulness, abs=1e-6)  # the tied edges carry nothing
    assert run.curve.faithfulness == pytest.approx(direct.faithfulness, abs=1e-6)  # the curve find_circuit draws


def test_the_bench_scores_a_declared_method_through_the_circuits_adapter(toy):
    cfg = organisms.InductionConfig()
    organism = BuiltInduction(cfg, 0, _llama(cfg), prev_head=1, ind_head=2)  # the truth needs no training
    suite = bench.default_suite()  # built now: the toy method declared by the fixture is in it
    specs = {m.name: m for m in suite.methods_for(organisms.Induction())}
    assert {"top-dla", "eap", "eap-ig", "acdc", "activation", "attribution", "dla", "random"} <= set(specs)
    output = specs["top-dla"].fn(organism, RunContext(0, True, None))
    assert isinstance(output, TopDLAResult)  # the method's own result type
    scores = {s.metric: s for s in suite.score("circuits", output, organism, "top-dla")}
    assert set(scores) == {"node_auroc", "edge_auroc", "edge_auroc_full", "head_pair_auroc", "cpr", "cmd"}
    assert [x for x, _ in scores["cpr"].curve] == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]  # sizes holding an edge
    assert scores["cpr"].curve[-1][1] == pytest.approx(1.0, abs=1e-6) and scores["cmd"].chance_spread > 0
    truth = organism.circuit
    graph = Graph.of(organism.model.cfg)
    kept = {Node("head.z", s.layer, s.head).label() for s in graph.senders if s.name in output.kept}
    assert len(kept) == 2
    expected = auroc([float(n in kept) for n in truth.nodes], [n in truth.circuit for n in truth.nodes])
    assert scores["node_auroc"].value == expected
    assert circuit_scores(output).edges == dict.fromkeys(output.circuit().edge_names(), 1.0)
