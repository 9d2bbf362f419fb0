"""IOI on the built-in SmolLM2-135M: the behaviour is there, and attribution patching finds the heads patching finds.

Real per-head patching costs one forward pass per head and prompt (270 heads), so it runs once per module on
two prompt pairs (one ABBA, one BABA) and every test shares the result.
"""

import pytest
import torch

from mechscope.circuits import activation_patching, attribution_patching, direct_logit_attribution
from mechscope.circuits._analysis import per_prompt_logit_diffs
from mechscope.circuits._contrast import subtask
from mechscope.data.tasks import ioi

pytestmark = pytest.mark.real

N_PROMPTS = 8
N_PATCHED = 2
TOP = 10


@pytest.fixture(scope="module")
def task(smol):
    return ioi(smol.tokenizer, n=N_PROMPTS, seed=0)


@pytest.fixture(scope="module")
def heads(smol, task):
    few = subtask(task, slice(0, N_PATCHED))
    real = activation_patching(smol, few, "head.z", progress=False)
    estimate = attribution_patching(smol, few, ["head.z"], progress=False)["head.z"]
    return real, estimate


def top_heads(grid, k=TOP):
    return {(n.layer, n.head) for n, _ in grid.top(k)}


def test_ioi_logit_difference_is_positive_on_most_prompts(smol, task):
    clean, corrupt = per_prompt_logit_diffs(smol, task)
    assert int((clean > 0).sum()) >= 0.75 * N_PROMPTS, clean
    assert float(clean.mean()) > float(corrupt.mean()) + 1.0  # ABC corruption removes the preference


def test_patched_prompts_cover_both_templates(task):
    templates = [m["order"] for m in task.metadata["pairs"][:N_PATCHED]]
    assert sorted(templates) == ["ABBA", "BABA"], templates


def test_top_heads_by_patching_and_attribution_overlap_well_above_chance(heads):
    real, estimate = heads
    overlap = len(top_heads(real) & top_heads(estimate))
    chance = TOP * TOP / real.scores.numel()  # 10 * 10 / 270 = 0.37
    print(f"top-{TOP} heads: patching and attribution share {overlap} (chance {chance:.2f})")
    assert overlap >= 5


def test_attribution_estimates_correlate_with_real_patching(heads):
    real, estimate = heads
    r = torch.corrcoef(torch.stack([real.effect.flatten(), estimate.effect.flatten()]))[0, 1]
    assert r > 0.8, r


def test_dla_top_heads_include_heads_that_matter_when_patched(smol, task, heads):
    # Name movers write the answer directly (high DLA) and restore it when patched (high effect).
    real, _ = heads
    dla = direct_logit_attribution(smol, task).heads
    by_dla = {divmod(i, dla.shape[1]) for i in dla.abs().flatten().argsort(descending=True)[:TOP].tolist()}
    assert len(by_dla & top_heads(real)) >= 2
