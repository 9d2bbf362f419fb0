"""AttnLRP on transformer LMs: relevance is conserved, forward values are unchanged, every rule is needed."""

import pytest
import torch

import mechscope as ms
from mechscope.attribution import attn_lrp, input_x_gradient, lrp_rules, token_attribution


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 250, (3, 11), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["llama", "gemma", "qwen3", "mistral"])  # bias-free: relevance is conserved
def test_relevance_of_the_embeddings_sums_to_the_logit(family):
    m = ms.tiny(family)
    result = attn_lrp(m, tokens(), 7)
    logit = m.run(tokens()).logits[:, -1, 7]
    assert torch.allclose(result.output_change, logit, atol=1e-5)  # the rules leave forward values alone
    assert result.map.shape == (3, 11, m.cfg.d_model)
    assert result.completeness_gap.abs().max() < 1e-4 * logit.abs().max() + 1e-5
    # Plain gradient x input is not conservative on the same model: the test can tell the rules apart.
    plain = input_x_gradient(m, tokens(), 7, at="embed")
    assert (plain.map.reshape(3, -1).sum(-1) - logit).abs().max() > 100 * result.completeness_gap.abs().max()


def test_every_rule_is_needed_for_conservation(monkeypatch):
    import contextlib

    import mechscope.attribution._attnlrp as rules

    m = ms.tiny("llama")  # its logits are about 0.06: the gaps below are 1e-6 relative with the rules, 3e-2 without

    def gap() -> float:
        return float(attn_lrp(m, tokens(1), 5).completeness_gap.abs().max())

    assert gap() < 1e-6
    broken = {
        "_half_product": lambda module, args: args,
        "_identity_rule": lambda module, args, out: out,
        "_constant_softmax": contextlib.nullcontext,
        "_norm_rule": lambda path: lambda module, args, out: out,
    }
    for name, replacement in broken.items():
        with monkeypatch.context() as patch:
            patch.setattr(rules, name, replacement)
            assert gap() > 5e-4, name  # measured: 1.8e-3 (activations) to 0.11 (norms)


def test_queries_and_keys_get_no_relevance_and_hooks_are_removed():
    m = ms.tiny("llama")
    with lrp_rules(m):
        run = m.run(tokens(), grad_at=["head.1.q", "head.1.k", "head.1.v"], grad_of=lambda r: r.logits[:, -1, 3].sum())
    assert run.grads["head.1.q"].abs().max() == 0 and run.grads["head.1.k"].abs().max() == 0
    assert run.grads["head.1.v"].abs().max() > 0
    assert torch.equal(m.run(tokens()).logits, m.module(tokens()).logits)  # everything put back
    assert torch.nn.functional.softmax.__name__ == "softmax"


def test_token_attribution_with_attn_lrp():
    m = ms.tiny("llama")
    result = token_attribution(m, "ab ab a", continuation="b", method="attn_lrp")
    assert result.method == "attn_lrp" and result.scores.shape[0] == 1
    assert abs(float(result.completeness_gap[0])) < 1e-4


def test_refusals_name_the_reason():
    with pytest.raises(TypeError, match="mixture-of-experts"):
        attn_lrp(ms.tiny("mixtral"), tokens(), 3)


def test_cli_prompt_with_attn_lrp(tmp_path):
    import json

    from typer.testing import CliRunner

    from mechscope.cli import app

    args = ["attribute", "--prompt", "hello world", "--model", "tiny-llama", "--max-new-tokens", "2", "--out",
            str(tmp_path), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "-m", "attn_lrp"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["attribution"]["method"] == "attn_lrp" and len(summary["new_tokens"]) == 2
    result = CliRunner().invoke(app, [*args, "-m", "grad_cam"])
    assert result.exit_code == 1 and "one --method of" in result.stdout
