"""The features path end to end from the command line, on a tiny model."""

import json
import re
import shlex
from pathlib import Path

import pytest
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
    assert result.exit_code == 4 and "tiny-llama" in result.output and "tiny-gpt2" in result.output


def test_dictionary_of_another_width_is_refused(tmp_path):
    store, run = tmp_path / "store", tmp_path / "run"
    invoke("harvest", str(store), "--site", "resid_post.1", "--site", "mlp.1.post", "--model", "tiny-llama",
           "--max-tokens", "1024")  # fmt: skip
    invoke("dict", "train", str(store), str(run), "--site", "resid_post.1", "--expansion", "1", "--k", "2",
           "--batch-size", "64", "--n-tokens", "640")  # fmt: skip
    width = ActivationStore(store).width("mlp.1.post")
    # The run recorded its site: another site is a mismatch (exit 4), whatever its width.
    result = CliRunner().invoke(app, ["dict", "eval", str(run), str(store), "--site", "mlp.1.post"])
    assert result.exit_code == 4 and "reads site 'resid_post.1', not 'mlp.1.post'" in result.output
    # A dictionary without a record (imported, say) is still checked by width.
    (run / "provenance.json").unlink()
    result = CliRunner().invoke(app, ["dict", "eval", str(run), str(store), "--site", "mlp.1.post"])
    assert result.exit_code == 1 and f"is {width} wide" in result.output and "d_in=64" in result.output


EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "features-example.md"
# The documented example's scale, cut down for CI; every other argument runs as written.
TINY = {"--max-tokens": "512", "--n-tokens": "1024", "--expansion": "2"}


def documented_commands() -> list[list[str]]:
    """The ``mechscope ...`` lines of the first bash block of docs/features-example.md, split like a shell."""
    block = re.search(r"```bash\n(.*?)```", EXAMPLE.read_text(), re.S)
    assert block, f"{EXAMPLE} has no bash block"
    lines = [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]
    assert all(line[0] == "mechscope" for line in lines), lines
    return [line[1:] for line in lines]


def tiny_scale(args: list[str], root: Path) -> list[str]:
    out = [str(root / a.removeprefix("runs/")) if a.startswith("runs/") else a for a in args]
    for i, a in enumerate(out[:-1]):
        if a in TINY:
            out[i + 1] = TINY[a]
    if out[:2] == ["dict", "train"]:
        out += ["--batch-size", "256"]
    return out


@pytest.mark.real
def test_documented_example_runs_on_the_built_in_model(tmp_path):
    commands = documented_commands()
    assert [c[:2] for c in commands] == [["harvest", "runs/store"], ["dict", "train"], ["dict", "eval"],
                                         ["features", "build"], ["features", "show"]]  # fmt: skip
    assert all(flag in (a for c in commands for a in c) for flag in TINY)  # the flags cut down are documented ones
    *chain, show = [tiny_scale(c, tmp_path) for c in commands]
    h, t, e, _ = (invoke(*c) for c in chain)
    assert h["tokens"] == 512 and h["model"] == "smollm2-135m" and h["sites"] == {"resid_post.6": 576}
    assert t["steps"] == 4 and t["tokens"] == 1024
    assert e["l0"] <= 32 and 0 < e["fvu"] < 1 and e["splice"]["ce_zero_ablated"] > e["splice"]["ce_clean"]
    fired = FeatureDB(tmp_path / "features.db").top_latents(by="frequency")[0].latent
    card = invoke(*show[:-1], str(fired))  # the documented latent need not fire at this scale
    assert card["latent"] == fired and card["n_active"] > 0 and card["top_examples"]


def test_train_live_reads_the_model_as_it_trains(tmp_path):
    # No store: batches come from the model's forward passes; the run is a normal, loadable, resumable dictionary.
    run = tmp_path / "run"
    t = invoke("dict", "train-live", str(run), "--site", "resid_post.1", "--model", "tiny-llama", "--ctx-len", "32",
               "--expansion", "2", "--k", "4", "--batch-size", "64", "--n-tokens", "640")  # fmt: skip
    assert t["steps"] == 10 and t["tokens"] == 640 and 0 <= t["last"]["fvu"] < 1.5
    d = load_dictionary(run)
    assert d.cfg.d_in == 64 and d.cfg.d_sae == 128 and d.cfg.site == "resid_post.1"
    again = invoke("dict", "train-live", str(run), "--site", "resid_post.1", "--model", "tiny-llama", "--ctx-len",
                   "32", "--expansion", "2", "--k", "4", "--batch-size", "64", "--n-tokens", "1280")  # fmt: skip
    assert again["steps"] == 20 and again["tokens"] == 1280  # the same run folder, continued to the larger budget


def test_dict_train_defaults_are_the_libraries():
    import inspect

    from mechscope.cli import _features
    from mechscope.features import TrainConfig

    for command in (_features.dict_train, _features.dict_train_live):
        params = inspect.signature(command).parameters
        for name in ("lr", "batch_size", "n_tokens", "seed"):
            assert params[name].default == getattr(TrainConfig, name), (command.__name__, name)
        assert "k" in params and params["k"].default is None  # a kind setting: the kind's own default applies
