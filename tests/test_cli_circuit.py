"""``mechscope circuit`` on tiny models: EAP / EAP-IG / ACDC, the files it writes and its JSON summary."""

import json

import pytest
from typer.testing import CliRunner

from mechscope.circuits._faithfulness import SIZES, usable_sizes
from mechscope.cli import app


@pytest.fixture
def task_file(tmp_path):
    # The byte tokenizer of the tiny models makes every character a token: answers are single characters.
    rows = [
        {"clean": "ab ba a ", "corrupt": "ab cd a ", "answer": "b", "wrong": "a"},
        {"clean": "cd dc c ", "corrupt": "cd ab c ", "answer": "d", "wrong": "c"},
        {"clean": "ef fe e ", "corrupt": "ef gh e ", "answer": "f", "wrong": "e"},
        {"clean": "gh hg g ", "corrupt": "gh ef g ", "answer": "h", "wrong": "g"},
    ]
    path = tmp_path / "task.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def circuit(*args: str):
    return CliRunner().invoke(app, ["circuit", "--model", "tiny-llama", *args, "--json"])


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_edge_methods_write_graph_curve_and_summary(tmp_path, task_file, method):
    out = tmp_path / "out"
    steps = ("--steps", "3") if method == "eap-ig" else ()  # --steps is a setting of eap-ig only
    result = circuit("--task", task_file, "--method", method, *steps, "--top", "20", "--random", "2",
                     "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["method"] == method and s["n_prompts"] == 4
    assert s["circuit"]["n_edges"] == 20 and len(s["circuit"]["random_faithfulness"]) == 2
    assert s["scores"]["steps"] == (1 if method == "eap" else 3)
    # MIB's sizes that hold at least one edge of this graph (the 0.1-0.5 % sizes hold none on a tiny model)
    sizes, counts = usable_sizes(SIZES, s["curve"]["n_edges"][-1])  # size 1.0 holds every edge
    assert tuple(s["curve"]["sizes"]) == sizes and tuple(s["curve"]["n_edges"]) == counts
    assert len(s["curve"]["faithfulness"]) == len(sizes) < len(SIZES)
    assert s["curve"]["faithfulness"][-1] == pytest.approx(1.0, abs=1e-5)
    saved = json.loads((out / "circuit.json").read_text())
    assert len(saved["edges"]) == len(saved["scores"]) == 20
    assert (out / "circuit.dot").read_text().count("->") == 20
    assert (out / "circuit.png").read_bytes()[:4] == (out / "faithfulness.png").read_bytes()[:4] == b"\x89PNG"
    assert ("svg" in s["files"]) == (s["svg"] == "written")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["circuit"] == s["circuit"]
    # every scored edge is saved, strongest first, so the explorer can re-prune a saved run to any size
    ranked = summary["ranked_edges"]
    assert len(ranked) == s["circuit"]["of_edges"] and len({n for n, _ in ranked}) == len(ranked)
    assert [abs(v) for _, v in ranked] == sorted((abs(v) for _, v in ranked), reverse=True)
    assert {n for n, _ in ranked[:20]} == set(s["circuit"]["edges"])
    assert dict(ranked[:20]) == pytest.approx(summary["edge_scores"])


def test_saved_scores_are_capped(tmp_path, task_file, monkeypatch):
    from mechscope.circuits import _find

    monkeypatch.setattr(_find, "SAVED_EDGES", 7)
    result = circuit("--task", task_file, "--method", "eap", "--top", "3", "--no-curve", "--random", "0")
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.stdout)["ranked_edges"]
    assert len(ranked) == 7 and {n for n, _ in ranked[:3]} == set(json.loads(result.stdout)["circuit"]["edges"])


def test_threshold_keeps_edges_above_it(tmp_path, task_file):
    result = circuit("--task", task_file, "--method", "eap", "--threshold", "0", "--no-curve", "--random", "0",
                     "--out", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["circuit"]["n_edges"] == s["circuit"]["of_edges"]  # |score| >= 0: every edge
    assert s["circuit"]["faithfulness"] == pytest.approx(1.0, abs=1e-5) and s["curve"] is None


def test_acdc_node_circuit(tmp_path, task_file):
    result = circuit("--task", task_file, "--method", "acdc", "--tau", "0.0001", "--random", "1",
                     "--out", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["curve"] is None and isinstance(s["scores"]["kept"], list) and s["config"]["tau"] == 0.0001
    assert json.loads((tmp_path / "circuit.json").read_text())["result"]["tau"] == 0.0001
    # the same numbers as the library: ACDC's kept nodes, and the faithfulness of their circuit under patching
    import mechscope as ms
    from mechscope import circuits
    from mechscope.data import tasks

    model = ms.tiny("llama")
    task = tasks.from_jsonl(task_file, model.tokenizer)
    found = circuits.acdc(model, task, tau=0.0001, progress=False)
    assert s["scores"]["kept"] == list(found.kept)
    faith = circuits.faithfulness(model, task, [found.circuit()], progress=False)[0]
    assert s["circuit"]["faithfulness"] == pytest.approx(faith, abs=1e-6)
    assert s["circuit"]["n_edges"] == found.circuit().n_edges


def test_bad_options_are_one_line_errors(tmp_path, task_file):
    result = circuit("--task", task_file, "--method", "magic", "--out", str(tmp_path))
    assert result.exit_code == 2 and "'magic' is not one of" in result.output and "Traceback" not in result.output
    result = circuit("--task", task_file, "--top", "3", "--threshold", "0.1", "--out", str(tmp_path))
    assert result.exit_code == 1 and "not both" in result.stdout  # --json: the error object is on stdout
    result = circuit("--task", task_file, "--method", "acdc", "--top", "3", "--out", str(tmp_path))
    assert result.exit_code == 1 and "acdc finds its own circuit" in result.stdout
    result = circuit("--task", task_file, "--method", "eap", "--tau", "0.1", "--out", str(tmp_path))
    assert result.exit_code == 1 and "--tau is a setting of acdc, not of eap" in result.stdout


def test_patch_reads_its_methods_and_options_from_the_registry(tmp_path, task_file):
    def patch(*args: str):
        return CliRunner().invoke(app, ["patch", *args, "--model", "tiny-llama", "--task", task_file, "--out",
                                        str(tmp_path), "--json"])  # fmt: skip

    result = patch("resid_pre", "--method", "attribution", "--no-by-pos", "--verify", "2", "--direction", "noising")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["result"]["axes"] == ["layer"] and payload["result"]["direction"] == "noising"
    assert payload["check"]["n"] == 2
    result = patch("head.z", "--by-pos")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"]["axes"] == ["layer", "head", "pos"]
    result = patch("head.z", "--verify", "2")
    assert result.exit_code == 1 and "--verify is a setting of attribution, not of activation" in result.stdout
