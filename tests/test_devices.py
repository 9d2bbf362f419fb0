"""Placement: accelerate device maps (with disk offload) and reduced precision keep hooked runs faithful."""

import json

import pytest
import torch
from typer.testing import CliRunner

import mechscope as ms
from mechscope.cli import app


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    m = ms.tiny("llama")
    m.module.save_pretrained(path)
    m.tokenizer.save_pretrained(path)
    return path


def test_device_map_with_disk_offload_matches_one_device(saved, tmp_path):
    plain = ms.load(str(saved))
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}  # fmt: skip
    spread = ms.load(str(saved), device_map=device_map, offload_folder=tmp_path / "offload")
    assert any(p.device.type == "meta" for p in spread.module.parameters())  # layer 1 really is offloaded
    assert spread.device.type == "cpu"
    tokens = torch.randint(0, 200, (2, 9), generator=torch.Generator().manual_seed(0))
    sites = ["resid_post.0", "head.1.z", "mlp_out.1"]
    a, b = plain.run(tokens, cache=sites), spread.run(tokens, cache=sites)
    assert torch.equal(a.logits, b.logits) and all(torch.equal(a.cache[s], b.cache[s]) for s in sites)
    with plain.intervene(ms.Ablate("head.1.z", "zero")):
        a = plain.run(tokens)
    with spread.intervene(ms.Ablate("head.1.z", "zero")):
        b = spread.run(tokens)
    assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_hooked_run_equals_the_plain_model(saved, dtype):
    m = ms.load(str(saved), dtype=dtype)
    tokens = torch.randint(0, 200, (2, 9), generator=torch.Generator().manual_seed(1))
    plain = m.module(tokens).logits
    hooked = m.run(tokens, cache=["resid_post.1", "head.0.z"])  # patterns would switch to eager attention
    assert hooked.logits.dtype == dtype and torch.equal(hooked.logits, plain)
    assert m.provenance["dtype"] == str(dtype).removeprefix("torch.")


def test_cli_dtype_and_device_options(saved):
    result = CliRunner().invoke(app, ["--dtype", "bfloat16", "--device", "cpu", "run", str(saved), "hello", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["provenance"]["dtype"] == "bfloat16"
    result = CliRunner().invoke(app, ["--dtype", "float8", "run", "tiny-llama", "hello", "--json"])
    assert result.exit_code == 1 and "float8" in json.loads(result.stdout)["error"]["message"]
