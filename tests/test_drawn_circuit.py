"""The demo's circuit holds: EAP-IG's steps rule by completeness, the smallest faithful circuit, the report's claim.

Completeness is checked against integrated gradients computed by hand (plain autograd at the input embeddings);
the drawn circuit against the curve it is picked from and against its faithfulness measured again from the
circuit file the report writes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re

import pytest
import torch
from matplotlib.patches import FancyArrowPatch

import mechscope as ms
from mechscope.circuits import (
    AnalysisConfig,
    Circuit,
    EAPIGConfig,
    FaithfulnessCurve,
    FindConfig,
    Graph,
    analyse,
    eap_ig,
    eap_ig_until_complete,
    faithfulness,
    find_circuit,
    pick_size,
)
from mechscope.circuits._contrast import Contrast
from mechscope.core._interventions import Replace
from mechscope.data.tasks import Task, logit_diff
from mechscope.report import analysis_sections, draw_node_circuit, faithfulness_sentence, node_links, run_section

CLEAN = ["Alice gave the key to B", "The cat sat on a mat.", "one two three four"]
CORRUPT = ["Alice gave the key to T", "The cat sat on a hat.", "one two three fous"]


def toy_task(model: ms.Model) -> Task:
    def one(ch: str) -> int:
        return model.tokenizer(ch)["input_ids"][0]

    return Task("toy", CLEAN, CORRUPT, torch.tensor([one(c) for c in "!?."]), torch.tensor([one(c) for c in "xyz"]))


@pytest.fixture(scope="module")
def llama() -> ms.Model:
    return ms.tiny("llama", seed=0)


def curve_of(faith: tuple[float, ...]) -> FaithfulnessCurve:
    sizes = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)[: len(faith)]
    return FaithfulnessCurve(sizes, tuple(int(1000 * s) for s in sizes), faith, (), 1.0, 0.0, "patch", "eap-ig",
                             "logit_diff", "toy")  # fmt: skip


# --- which circuit is drawn ----------------------------------------------------------------------------------------


def test_pick_size_is_the_smallest_reaching_the_goal_else_the_most_faithful():
    wiggly = curve_of((0.1, 0.5, 0.85, 0.7, 0.9, 1.0))
    assert pick_size(wiggly, 0.8) == (2, True)  # not the later, larger 0.9, nor the full graph
    assert pick_size(wiggly, 0.86) == (4, True)  # a dip after a hit does not count
    assert pick_size(wiggly, 0.5) == (1, True)  # reaching exactly counts
    never = curve_of((0.1, 0.6, 0.4, 0.6, 0.3))
    assert pick_size(never, 0.8) == (1, False)  # the most faithful, the smallest of equals
    assert pick_size(curve_of((-0.2, -0.1)), 0.8) == (1, False)


def test_config_rejects_goals_and_steps_that_cannot_work():
    with pytest.raises(ValueError, match="faithful_at"):
        AnalysisConfig(faithful_at=0.0)
    with pytest.raises(ValueError, match="max_ig_steps"):
        AnalysisConfig(ig_steps=40, max_ig_steps=20)
    with pytest.raises(ValueError, match="completeness_tolerance"):
        AnalysisConfig(completeness_tolerance=0.0)


# --- completeness and the steps rule -------------------------------------------------------------------------------


def integrated_gradients_by_hand(model: ms.Model, task: Task, steps: int) -> float:
    """Left Riemann sum of ``(x_clean - x_corrupt) . dM/dx`` on the line from the corrupt to the clean embeddings."""
    c = Contrast.of(model, task, logit_diff)
    mask = c.attention_mask
    x_clean = model.run(c.clean, cache=["resid_pre.0"], attention_mask=mask).cache["resid_pre.0"]
    x_corrupt = model.run(c.corrupt, cache=["resid_pre.0"], attention_mask=mask).cache["resid_pre.0"]
    total = 0.0
    for k in range(steps):
        point = x_corrupt + (k / steps) * (x_clean - x_corrupt)
        with model.intervene(Replace("resid_pre.0", lambda act, p=point: p.to(act.dtype))):
            run = model.run(c.corrupt, attention_mask=mask, grad_at=["resid_pre.0"],
                            grad_of=lambda out: c.score(out.logits).mean())  # fmt: skip
        total += float(((x_clean - x_corrupt) * run.grads["resid_pre.0"]).sum()) / steps
    return total


@pytest.mark.parametrize("steps", [1, 3, 16])
def test_completeness_is_integrated_gradients_over_the_clean_corrupt_change(llama, steps):
    task = toy_task(llama)
    ig = eap_ig(llama, task, steps=steps, progress=False)
    by_hand = integrated_gradients_by_hand(llama, task, steps)
    inputs = [i for i, (s, _) in enumerate(ig.graph.edges()) if s.name == "input"]
    assert float(ig.scores[inputs].sum()) == pytest.approx(by_hand, rel=1e-4, abs=1e-7)
    plain = Contrast.of(llama, task, logit_diff)
    clean, _ = plain.run(llama, plain.clean)
    corrupt, _ = plain.run(llama, plain.corrupt)
    assert ig.completeness == pytest.approx(by_hand / (clean - corrupt), rel=1e-4)
    assert abs(float(ig.scores.sum()) - by_hand) > 1e-3 * abs(by_hand)  # all edges together are not the measure


def test_steps_rule_doubles_until_complete_and_keeps_every_try(llama):
    task = toy_task(llama)
    scores, tries = eap_ig_until_complete(llama, task, EAPIGConfig(steps=2), tolerance=0.3, max_steps=128)
    assert [t.steps for t in tries] == [2 * 2**i for i in range(len(tries))] and len(tries) > 2
    assert all(abs(t.completeness - 1) > 0.3 for t in tries[:-1]) and abs(tries[-1].completeness - 1) <= 0.3
    assert scores.steps == tries[-1].steps and scores.completeness == tries[-1].completeness
    again = eap_ig(llama, task, steps=tries[1].steps, progress=False)
    assert again.completeness == pytest.approx(tries[1].completeness, rel=1e-5)
    assert [t.rows for t in tries] == [t.steps * len(task) for t in tries]
    capped, few = eap_ig_until_complete(llama, task, EAPIGConfig(steps=2), tolerance=0.3, max_steps=6)
    assert [t.steps for t in few] == [2, 4, 6] and capped.steps == 6  # the cap is the last try, met or not
    fixed, one = eap_ig_until_complete(llama, task, EAPIGConfig(steps=2), tolerance=None)
    assert len(one) == 1 and fixed.steps == 2


# --- the analysis draws and states the faithful circuit ------------------------------------------------------------


@pytest.fixture(scope="module")
def analysis(llama):
    config = AnalysisConfig(patch_prompts=2, ig_steps=4, completeness_tolerance=0.3, random=2, faithful_at=0.6)
    return analyse(llama, toy_task(llama), config)


def test_drawn_circuit_is_the_smallest_faithful_one_on_the_curve(llama, analysis):
    a, curve = analysis, analysis.curve
    first = next(i for i, f in enumerate(curve.faithfulness) if f >= 0.6)
    assert a.circuit_reached and a.circuit_size == curve.sizes[first]
    assert a.circuit_size < 1.0  # the toy curve reaches 0.6 before the full graph: a real choice was made
    assert a.circuit.n_edges == curve.n_edges[first]
    assert torch.equal(a.circuit.edges, a.scores.top(curve.n_edges[first]).edges)
    assert a.circuit_faithfulness == pytest.approx(curve.faithfulness[first], abs=1e-5)
    assert a.circuit_faithfulness >= 0.6 and all(f < 0.6 for f in curve.faithfulness[:first])
    g = a.scores.graph
    randoms = [Circuit.random(g, a.circuit.n_edges, seed=i) for i in range(2)]
    assert a.circuit_random == pytest.approx(faithfulness(llama, a.task, randoms, progress=False), abs=1e-5)
    assert abs(a.scores.completeness - 1) <= 0.3 and a.ig_tries[-1].steps == a.scores.steps
    d = json.loads(json.dumps(a.to_dict()))
    assert d["circuit"]["faithfulness"] == a.circuit_faithfulness and d["circuit"]["reached"] is True
    assert d["eap_ig"]["tries"][-1]["steps"] == a.scores.steps


def stated(page: str) -> tuple[int, float, float]:
    found = re.search(r"The drawn circuit \(([\d,]+) edges, ([\d.]+) % of the graph\) recovers (-?[\d.]+) of", page)
    assert found, "the report does not state the drawn circuit's faithfulness"
    return int(found[1].replace(",", "")), float(found[2]), float(found[3])


@pytest.mark.parametrize("max_edges", [10_000, 5])
def test_report_states_the_faithfulness_of_the_circuit_it_writes(llama, analysis, tmp_path, max_edges):
    sections, files = analysis_sections(analysis, tmp_path, max_edges=max_edges)
    page = dict(sections)["EAP-IG circuit"]
    n, percent, f = stated(page)
    written = json.loads(files["json"].read_text())
    circuit = Circuit.from_edge_names(Graph.from_dict(written["graph"]), written["edges"])
    measured = faithfulness(llama, analysis.task, circuit, progress=False)[0]
    assert n == circuit.n_edges and f == pytest.approx(measured, abs=0.006)  # the number printed is this circuit's
    assert percent == pytest.approx(100 * circuit.fraction, rel=1e-2)
    assert f"faithfulness {f:.2f}; 1 = the whole model, 0 = the corrupted run" in page
    assert "random circuits of the same size: " + ", ".join(f"{x:.2f}" for x in analysis.circuit_random) in page
    assert "smallest circuit on the faithfulness curve that reaches faithfulness 0.6" in page
    grouped = "drawn grouped by node" in page
    assert grouped == (analysis.circuit.n_edges > max_edges)
    if grouped:
        assert files["nodes_dot"].read_text().count("->") <= 5


def test_report_says_plainly_when_no_circuit_reaches_the_goal(analysis):
    missed = dataclasses.replace(analysis, circuit_reached=False)
    text = faithfulness_sentence(missed)
    assert "No circuit on the faithfulness curve reaches faithfulness 0.6" in text and "not a faithful one" in text
    assert "smallest circuit" not in text


def test_node_links_sum_the_circuit_edges(analysis):
    a = analysis
    links = node_links(a.circuit, a.scores)
    kept = torch.nonzero(a.circuit.edges).flatten()
    assert sum(links.values()) == pytest.approx(float(a.scores.scores[kept].sum()), abs=1e-6)
    whole = Circuit.full(a.circuit.graph)
    assert len(node_links(whole, a.scores)) < whole.n_edges  # q, k, v edges of a head from one sender: one link
    values = list(links.values())
    assert all(abs(x) >= abs(y) for x, y in itertools.pairwise(values))
    edges = a.circuit.graph.edges()
    i = int(kept[0])
    s, r = edges[i][0].name, edges[i][1].node.format()
    same = [int(j) for j in kept if edges[int(j)][0].name == s and edges[int(j)][1].node.format() == r]
    assert links[(s, r)] == pytest.approx(float(a.scores.scores[same].sum()), abs=1e-7)
    ax = draw_node_circuit(a.circuit, a.scores, max_links=3).axes[0]
    arcs = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]  # links between nodes one above the other
    assert len(ax.lines) - 2 + len(arcs) == 3  # three links (lines or arcs), two legend entries


def test_find_circuit_report_states_completeness(llama):
    task = toy_task(llama)
    run = find_circuit(llama, task, FindConfig("eap-ig", EAPIGConfig(steps=3), top=5, random=1, curve=False))
    _, body = run_section(run)
    expected = eap_ig(llama, task, steps=3, progress=False).completeness
    assert f"3 integration step(s): completeness {expected:.2f}" in body
