"""Fault injection: corrupt files, mismatched artefacts, diverging runs, interrupts, full disks, wrong names.

Each case asserts the error the user sees (message and exit status) and that nothing already written is lost.
"""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import mechscope as ms
from mechscope._errors import EXIT_CODES, IntegrityError, MismatchError, NonFiniteError
from mechscope.cli import app
from mechscope.features import load_dictionary, train, train_config
from mechscope.store import ActivationStore, HarvestConfig, harvest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def json_error(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])["error"]


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def tiny():
    return ms.tiny("llama")


def small_store(model, path: Path) -> ActivationStore:
    # 4 shards of 4 contexts of 32 tokens: enough to corrupt one in the middle.
    config = HarvestConfig(("resid_post.1",), ctx_len=32, batch_size=4, shard_size=128, max_tokens=512)
    return harvest(model, config, path, progress=False)


# --- stores ------------------------------------------------------------------------------------------------------


def test_corrupt_shard_is_refused_by_readers_and_reharvested_by_harvest(tiny, tmp_path):
    store = small_store(tiny, tmp_path / "store")
    manifest = json.loads((store.path / "manifest.json").read_text())
    victim = store.path / store.manifest.shards[2].file
    flip_byte(victim)

    # Training reads through the checksum: the bad shard is named, nothing trains on it.
    with pytest.raises(IntegrityError, match=victim.name):
        list(ActivationStore(store.path).batches("resid_post.1", 64))
    result = cli("dict", "train", str(store.path), str(tmp_path / "run"), "--k", "2", "--expansion", "1",
                 "--batch-size", "64", "--n-tokens", "640", "--json")  # fmt: skip
    err = json_error(result)
    assert result.exit_code == 4 and err["type"] == "IntegrityError" and victim.name in err["message"]
    assert "harvest" in err["hint"]

    # Harvest again: the corrupt shard goes to quarantine/, shards 0-1 are kept, 2-3 are harvested again.
    kept = [(store.path / s.file).stat().st_mtime_ns for s in store.manifest.shards[:2]]
    with pytest.warns(UserWarning, match="does not match its checksum"):
        again = small_store(tiny, store.path)
    assert [(store.path / s.file).stat().st_mtime_ns for s in again.manifest.shards[:2]] == kept
    assert next((store.path / "quarantine").iterdir()).name.startswith(victim.name)
    again.verify()
    assert json.loads((store.path / "manifest.json").read_text())["shards"] == manifest["shards"]  # same bytes


def test_truncated_or_missing_shard(tiny, tmp_path):
    store = small_store(tiny, tmp_path / "store")
    victim = store.path / store.manifest.shards[1].file
    victim.write_bytes(victim.read_bytes()[:50])
    with pytest.raises(IntegrityError, match="corrupt"):
        ActivationStore(store.path).verify()
    victim.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        ActivationStore(store.path).tokens()
    small_store(tiny, store.path).verify()  # harvest fills the hole


def test_context_longer_than_the_model_is_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="256 positions"):
        harvest(tiny, HarvestConfig(("resid_post.1",), ctx_len=1000, max_tokens=1000), tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="positions"):
        tiny.run(torch.zeros(1, 300, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens long"):
        tiny.run(" word" * 400)


def test_disk_full_keeps_finished_shards(tiny, tmp_path, monkeypatch):
    import mechscope.store._harvest as h
    from mechscope.cli._errors import classify

    real, calls = h.atomic_write_bytes, {"n": 0, "limit": 5}

    def filling(path, data):
        calls["n"] += 1
        if calls["n"] > calls["limit"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(h, "atomic_write_bytes", filling)
    # The manifest, then two shards with their manifests: the disk fills on the third shard.
    with pytest.raises(OSError) as info:
        small_store(tiny, tmp_path / "store")
    failure = classify(info.value)
    assert failure.exit_code == 6 and failure.type == "DiskFull" and "kept" in (failure.hint or "")
    store = ActivationStore(tmp_path / "store")
    assert len(store.manifest.shards) == 2
    store.verify()  # what was committed before the disk filled is intact
    calls["limit"] = 10**9  # space freed: the same command finishes the store
    small_store(tiny, tmp_path / "store").verify()

    calls.update(n=0, limit=1)  # and the command line reports it as one JSON object with status 6
    result = cli("harvest", str(tmp_path / "cli"), "--site", "resid_post.1", "--model", "tiny-llama",
                 "--max-tokens", "512", "--ctx-len", "32", "--json")  # fmt: skip
    assert result.exit_code == 6 and json_error(result)["type"] == "DiskFull"


# --- the cached model -------------------------------------------------------------------------------------------


def test_cached_weights_are_verified_on_load(tmp_path):
    from mechscope._cache import sha256_file
    from mechscope.core._load import _verified_sha256

    save_file({"w": torch.arange(1000.0)}, str(tmp_path / "model.safetensors"))
    sha = sha256_file(tmp_path / "model.safetensors")
    (tmp_path / "mechscope.json").write_text(json.dumps({"weights_sha256": sha}))
    assert _verified_sha256(tmp_path) == sha and (tmp_path / ".verified.json").is_file()
    flip_byte(tmp_path / "model.safetensors")
    with pytest.raises(IntegrityError, match="is corrupt") as info:
        _verified_sha256(tmp_path)
    assert "delete" in (info.value.hint or "")


# --- dictionaries -----------------------------------------------------------------------------------------------


def test_dictionary_records_and_checks_its_provenance(tmp_path):
    stores = {}
    for name in ("llama", "gpt2"):
        stores[name] = tmp_path / f"store-{name}"
        r = cli("harvest", str(stores[name]), "--site", "resid_post.1", "--model", f"tiny-{name}", "--max-tokens",
                "1024", "--ctx-len", "32")  # fmt: skip
        assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    args = ["--k", "2", "--expansion", "1", "--batch-size", "64", "--checkpoint-minutes", "5"]
    assert cli("dict", "train", str(stores["llama"]), str(run), *args, "--n-tokens", "640").exit_code == 0
    saved = json.loads((run / "provenance.json").read_text())
    assert saved["model"] == "tiny-llama-s0" and saved["site"] == "resid_post.1"

    # Resuming (a longer run) on another model's store is refused, showing both; nothing is overwritten.
    before = (run / "sae.safetensors").read_bytes()
    result = cli("dict", "train", str(stores["gpt2"]), str(run), *args, "--n-tokens", "1280")
    assert result.exit_code == 4 and "weights_sha256" in result.output and "tiny-gpt2" in result.output
    assert (run / "sae.safetensors").read_bytes() == before

    # Evaluating it on the other model's store is refused as well.
    result = cli("dict", "eval", str(run), str(stores["gpt2"]), "--json")
    assert result.exit_code == 4 and "tiny-llama" in json_error(result)["message"]


def test_non_finite_weights_are_refused(tmp_path):
    d = ms.features.build_dictionary(ms.features.DictionaryConfig(kind="topk", d_in=8, d_sae=16, k=2))
    ms.features.save_dictionary(d, tmp_path / "d")
    tensors = load_file(tmp_path / "d" / "sae.safetensors")
    tensors["W_dec"][3, 1] = float("nan")
    save_file(tensors, str(tmp_path / "d" / "sae.safetensors"))
    with pytest.raises(NonFiniteError, match="W_dec holds NaN"):
        load_dictionary(tmp_path / "d")
    tensors["W_enc"] = tensors.pop("W_dec")
    save_file(tensors, str(tmp_path / "d" / "sae.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['W_dec'\]"):
        load_dictionary(tmp_path / "d")


def test_diverging_run_stops_with_the_last_good_checkpoint(tmp_path):
    x = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    config = train_config("relu", 16, 32, lr=1e6, batch_size=64, n_tokens=4096, checkpoint_every=2)
    with pytest.raises(NonFiniteError, match=r"diverged|NaN|nan|inf") as info:
        train(config, x, tmp_path / "run", progress=False)
    assert "lower" in (info.value.hint or "")
    assert not (tmp_path / "run" / "sae.safetensors").exists()  # no diverged dictionary is saved as the result


def _interrupting(x: torch.Tensor, at: int):
    """Batches of ``x``; sends this process SIGINT while yielding batch ``at`` (as Ctrl-C would)."""

    class Batches:
        def __iter__(self):
            for i in range(0, len(x), 64):
                if i // 64 == at:
                    os.kill(os.getpid(), signal.SIGINT)
                yield x[i : i + 64]

    return Batches()


def test_interrupt_checkpoints_and_resume_equals_an_uninterrupted_run(tmp_path):
    x = torch.randn(64 * 12, 16, generator=torch.Generator().manual_seed(1))
    config = train_config("topk", 16, 32, batch_size=64, n_tokens=64 * 12)
    whole = train(config, _interrupting(x, at=-1), tmp_path / "whole", progress=False).dictionary
    with pytest.raises(KeyboardInterrupt, match="checkpoint written"):
        train(config, _interrupting(x, at=5), tmp_path / "cut", progress=False)
    assert (tmp_path / "cut" / "checkpoints" / "latest").read_text().strip() == "step_000000006"
    resumed = train(config, _interrupting(x, at=-1), tmp_path / "cut", progress=False).dictionary
    for name, tensor in whole.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_time_based_checkpoints(tmp_path):
    x = torch.randn(64 * 6, 16, generator=torch.Generator().manual_seed(2))
    config = train_config("topk", 16, 32, batch_size=64, n_tokens=64 * 6, checkpoint_every=1000,
                          checkpoint_minutes=1e-9, keep_checkpoints=10)  # fmt: skip
    train(config, x, tmp_path / "run", progress=False)
    steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*"))
    assert steps == [f"step_{i:09d}" for i in range(1, 7)]


# --- the command line -------------------------------------------------------------------------------------------


def test_unknown_model_fails_fast_with_suggestions(tmp_path):
    # In a fresh process: the name is checked before torch is imported (so it fails in about a second).
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom mechscope.cli import app\n"
        "r = CliRunner().invoke(app, ['run', 'SmolLM2-135M', 'hi', '--json'])\n"
        "print(r.stdout.strip()); print('torch' in sys.modules); sys.exit(r.exit_code)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    payload, torch_loaded = done.stdout.strip().splitlines()[-2:]
    err = json.loads(payload)["error"]
    assert done.returncode == 3 and "Did you mean 'smollm2-135m'?" in err["message"] and torch_loaded == "False"
    assert "--online" in err["message"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("{tmp}/missing", "no such model directory"),
        ("{tmp}", "not a model: it has no config.json"),
        ("{tmp}/file.txt", "is a file"),
    ],
)
def test_paths_that_are_not_models(tmp_path, name, message):
    (tmp_path / "file.txt").write_text("x")
    result = cli("sites", name.format(tmp=tmp_path))
    assert result.exit_code == 3 and message in result.output


def test_json_errors_and_usage_errors():
    result = cli("sites", "tiny-llama", "nope.*", "--json")
    err = json_error(result)
    assert result.exit_code == 1 and err["type"] == "UnknownSiteError" and "Closest" in err["message"]
    result = cli("sites", "--bogus", "--json")
    assert result.exit_code == 2 and json_error(result)["type"] == "UsageError"
    result = cli("features", "show", "/nonexistent.db", "3", "--json")
    assert result.exit_code in (1, 3) and json_error(result)["message"]


def test_internal_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch):
    import mechscope.cli._common as common

    def broken(name):
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(common, "open_model", broken)
    monkeypatch.setattr("mechscope.cli.open_model", broken)
    result = cli("sites", "tiny-llama")
    assert result.exit_code == 70 and "internal error: RuntimeError: something unexpected" in result.output
    assert "--debug" in result.output and "Traceback" not in result.output
    result = cli("--debug", "sites", "tiny-llama")
    assert isinstance(result.exception, RuntimeError)


def test_exit_code_table_is_documented():
    doc = (ROOT / "docs" / "cli.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} |" in doc, f"docs/cli.md lacks exit status {code} ({meaning})"


def test_mismatch_and_integrity_are_value_errors():
    # Callers that catch ValueError keep working.
    assert issubclass(IntegrityError, ValueError) and issubclass(MismatchError, ValueError)


def test_every_command_accepts_json():
    import typer.main

    def leaves(command, path):
        children = getattr(command, "commands", None)
        if not children:
            yield " ".join(path), command
            return
        for name in list(children):
            child = command.real_command(name) if hasattr(command, "real_command") else children[name]
            yield from leaves(child, [*path, name])

    found = dict(leaves(typer.main.get_group(app), []))
    assert len(found) > 20  # every family's commands were loaded and walked
    missing = [name for name, c in found.items() if "--json" not in {o for p in c.params for o in p.opts}]
    assert not missing, f"commands without --json: {missing}"
