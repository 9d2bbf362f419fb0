"""The features path end to end from the command line, on a tiny model."""

import json

from typer.testing import CliRunner

from mechscope.cli import app
from mechscope.features import load_dictionary
from mechscope.store import ActivationStore, FeatureDB


def invoke(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[: result.stdout.rindex("}") + 1])


def test_harvest_train_eval_build_show(tmp_path):
    store, run, db = tmp_path / "store", tmp_path / "run", tmp_path / "f.db"
    h = invoke("harvest", str(store), "--site", "resid_post.1", "--model", "tiny-llama", "--max-tokens", "4096",
               "--ctx-len", "64")  # fmt: skip
    assert h["tokens"] == 4096 and ActivationStore(store).width("resid_post.1") == 64
    t = invoke("dict", "train", str(store), str(run), "--expansion", "2", "--k", "4", "--batch-size", "128",
               "--n-tokens", "6400")  # fmt: skip
    assert t["steps"] == 50 and load_dictionary(run).cfg.d_sae == 128
    e = invoke("dict", "eval", str(run), str(store), "--model", "tiny-llama", "--splice-contexts", "4")
    assert e["l0"] == 4.0 and 0 <= e["fvu"] < 1
    assert e["splice"]["ce_zero_ablated"] != e["splice"]["ce_clean"] and e["splice"]["n_tokens"] > 0
    invoke("features", "build", str(store), str(run), str(db), "--model", "tiny-llama")
    fired = FeatureDB(db).top_latents(by="frequency")[0].latent
    card = invoke("features", "show", str(db), str(fired))
    assert card["latent"] == fired and card["n_active"] > 0 and len(card["top_examples"]) > 0
    assert len(card["promoted"]) == 10


def test_store_from_another_model_is_refused(tmp_path):
    store, run = tmp_path / "store", tmp_path / "run"
    invoke("harvest", str(store), "--site", "resid_post.1", "--model", "tiny-llama", "--max-tokens", "1024")
    invoke("dict", "train", str(store), str(run), "--expansion", "1", "--k", "2", "--batch-size", "64",
           "--n-tokens", "640")  # fmt: skip
    result = CliRunner().invoke(app, ["features", "build", str(store), str(run), str(tmp_path / "f.db"), "--model",
                                      "tiny-gpt2"])  # fmt: skip
    assert result.exit_code == 1 and "tiny-llama" in result.output and "tiny-gpt2" in result.output
