"""The ``mechscope`` CLI, mostly on tiny models; one real test runs the built-in model end to end."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import mechscope as ms
from mechscope import organisms
from mechscope.circuits import AnalysisConfig
from mechscope.circuits._analysis import ANALYSIS_STEPS
from mechscope.cli import app, open_model
from mechscope.data.tasks import induction
from mechscope.demo import IOI_PROMPT, DemoConfig, run_demo

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_sites_json_lists_matching_sites():
    result = invoke("sites", "tiny-llama", "resid_post.*", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["resid_post.0", "resid_post.1"]
    assert rows[0]["shape"] == "[batch pos d_model=64]" and "residual" in rows[0]["meaning"]


def test_sites_table_shows_every_site():
    result = invoke("sites", "tiny-gpt2")
    assert result.exit_code == 0, result.output
    model = ms.tiny("gpt2")
    assert f"{len(model.sites())} sites matching" in result.stdout
    for name in ("embed", "head.1.pattern", "mlp.0.post", "logits"):
        assert name in result.stdout


def test_unknown_site_prints_the_core_message_without_traceback():
    result = invoke("sites", "tiny-gpt-neox", "resid_mid.*")
    assert result.exit_code == 1
    assert "error: unknown site 'resid_mid.*'" in result.stderr
    assert "parallel blocks" in result.stderr and "Traceback" not in result.output
    swapped = invoke("sites", "resid_post.*")
    assert swapped.exit_code == 1 and "MODEL comes before PATTERN" in swapped.stderr


def test_run_json_matches_the_model():
    result = invoke("run", "tiny-llama", "hello", "--top-k", "3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    probs = ms.tiny("llama").run("hello").final_logits()[0].softmax(-1)
    values, ids = probs.topk(3)
    assert [t["id"] for t in data["top"]] == ids.tolist()
    torch.testing.assert_close(torch.tensor([t["prob"] for t in data["top"]]), values)
    assert data["prompt"] == "hello" and data["provenance"]["model"] == "tiny-llama-s0"


def test_run_table_and_argument_errors():
    result = invoke("run", "tiny-gpt2", "hi [there]", "-k", "2")  # brackets are text, not rich markup
    assert result.exit_code == 0, result.output
    assert "'hi [there]'" in result.stdout and "probability" in result.stdout
    assert invoke("run", "tiny-gpt2", "a", "b").exit_code == 2
    assert "expected [MODEL] PROMPT" in invoke("run", "tiny-gpt2", "a", "b").stderr
    zero = invoke("run", "tiny-gpt2", "hi", "-k", "0")
    assert zero.exit_code == 1 and "top-k must be at least 1" in zero.stderr


def test_tiny_model_names():
    assert open_model("tiny-llama").name == "tiny-llama-s0"
    assert open_model("tiny-gpt-neox-s3").name == "tiny-gpt_neox-s3"
    result = invoke("sites", "tiny-bert")
    assert result.exit_code == 1 and "unknown tiny model 'tiny-bert'" in result.stderr
    assert "tiny-llama" in result.stderr


def test_demo_needs_a_single_token_answer(tmp_path):
    # The byte-level tiny tokenizer splits " Mary": the CLI shows the core's message and writes nothing.
    result = invoke("demo", "--model", "tiny-llama", "--out", str(tmp_path / "demo"))
    assert result.exit_code == 1
    assert "' Mary' is 5 tokens" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "demo").exists()


def test_run_demo_writes_plot_and_summary(tmp_path):
    model = ms.tiny("llama")
    task = induction(model.tokenizer, n=4, seq_len=6)  # the byte tokenizer cannot make IOI names
    config = DemoConfig(4, analysis=AnalysisConfig(patch_prompts=2, ig_steps=2, random=1))
    steps: list[str] = []
    result = run_demo(model, tmp_path, prompt="ab ab", answer=" ", top_k=4, task=task, config=config,
                      on_step=steps.append)  # fmt: skip
    assert tuple(steps) == ANALYSIS_STEPS  # every step reported, in order, as it starts
    assert result.plot.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(result.summary.read_text())
    assert data["prompt"] == "ab ab" and data["answer"] == " "
    assert len(data["top_predictions"]) == 4
    assert data["files"]["plot"] == "logit_lens.png" and data["files"]["summary"] == "demo.json"
    assert data["files"]["report"] == "report.html" and (tmp_path / data["files"]["dot"]).exists()
    assert data["logit_lens"]["answers"][0]["token"] == " "
    assert data["circuits"]["task"] == "induction" and data["circuits"]["n_prompts"] == 4
    # The lens's last layer and the top predictions are the same distribution.
    top = data["top_predictions"][0]
    assert data["logit_lens"]["top"][0][-1][0]["id"] == top["id"]
    assert data["logit_lens"]["top"][0][-1][0]["prob"] == pytest.approx(top["prob"], rel=1e-5)


@pytest.mark.real
def test_builtin_model_end_to_end(tmp_path):
    sites = json.loads(invoke("sites", "smollm2-135m", "resid_post.*", "--json").stdout)
    assert [s["name"] for s in sites] == [f"resid_post.{i}" for i in range(30)]

    result = invoke("run", IOI_PROMPT, "--json")  # MODEL defaults to the built-in model
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)["top"]
    assert top[0]["token"] == " Mary" and top[0]["prob"] == pytest.approx(0.92, abs=0.02)

    # Small settings: the full demo's settings take minutes (see tests/test_ioi_smollm2.py for the analysis itself).
    small = ("--prompts", "4", "--patch-prompts", "1", "--steps", "2", "--no-steps-rule", "--random", "1",
             "--no-vision")  # fmt: skip
    result = invoke("demo", "--out", str(tmp_path), *small)
    assert result.exit_code == 0, result.output
    assert "' Mary'" in result.stdout and "0.92" in result.stdout and "CPR" in result.stdout
    # Not a terminal: the steps are plain log lines on stderr, not a spinner.
    assert "mechscope: IOI analysis: activation patching (at" in result.stderr and "done in" in result.stderr
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["answer_top_layer"] == 29 and len(summary["logit_lens"]["answer_probs"][0]) == 30
    assert summary["circuits"]["n_prompts"] == 4 and summary["circuits"]["eap_ig"]["steps"] == 2
    assert (tmp_path / "logit_lens.png").stat().st_size > 10_000
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()


@pytest.mark.real
def test_patch_attribution_with_self_check(tmp_path):
    result = CliRunner().invoke(
        app,
        ["patch", "head.z", "--n", "2", "--method", "attribution", "--verify", "4", "--out", str(tmp_path), "--json"],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    grid = payload["result"]
    assert grid["kind"] == "head.z" and grid["method"] == "attribution"
    assert payload["check"]["n"] == 4 and payload["check"]["pearson"] > 0.9
    assert (tmp_path / "ioi_head.z_attribution_denoising.png").stat().st_size > 1000


def test_bench_writes_the_leaderboard_through_report(tmp_path, monkeypatch):
    from mechscope import bench

    full = bench.default_suite()
    small = bench.Suite(scorers=full.scorers)
    small.add_organism(full.organisms["numeric_functions"])
    small.methods = {k: m for k, m in full.methods.items() if m.family == "descriptions"}
    monkeypatch.setattr(bench, "default_suite", lambda: small)  # the command runs the suite default_suite() gives
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    result = invoke("bench", "--quick", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "## numeric_functions — interval_iou (higher is better)" in result.stdout
    board = bench.Leaderboard.from_dict(json.loads((tmp_path / "out" / "leaderboard.json").read_text()))
    assert {s.method for s in board.scores} == {"jump_detector", "random", "oracle"}
    assert "| jump_detector |" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert "data:image/png;base64," in (tmp_path / "out" / "leaderboard.html").read_text()


def _small_suite(bench, full, *, broken: bool = False, bad_organism: bool = False):
    small = bench.Suite(scorers=full.scorers)
    config = organisms.NumericConfig(width=(0.0, 0.0)) if bad_organism else organisms.NumericConfig()
    small.add_organism(organisms.NumericFunctions(config))
    small.methods = {k: m for k, m in full.methods.items() if m.family == "descriptions"}
    if broken:

        @bench.register_method(family="descriptions", name="test_broken", suite=small)
        def boom(organism, ctx):
            raise RuntimeError("boom")

    return small


@pytest.mark.parametrize("keep_going", [False, True])
def test_bench_exits_nonzero_when_a_method_fails(tmp_path, monkeypatch, keep_going):
    from mechscope import bench

    small = _small_suite(bench, bench.default_suite(), broken=True)
    monkeypatch.setattr(bench, "default_suite", lambda: small)
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = invoke("bench", "--quick", "--out", str(out), *(["--keep-going"] if keep_going else []))
    assert result.exit_code == 1, result.output
    assert "test_broken: RuntimeError: boom" in result.stderr
    # keep-going finishes and writes the table (the other methods' rows are there); fail-fast writes nothing
    assert (out / "leaderboard.md").exists() == keep_going
    if keep_going:
        assert "| jump_detector |" in (out / "leaderboard.md").read_text()


def test_bench_exits_nonzero_when_an_organism_fails_verification(tmp_path, monkeypatch):
    from mechscope import bench

    small = _small_suite(bench, bench.default_suite(), bad_organism=True)
    monkeypatch.setattr(bench, "default_suite", lambda: small)
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    result = invoke("bench", "--quick", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1, result.output
    assert "organism failed its verification: numeric_functions/seed0" in result.stderr
