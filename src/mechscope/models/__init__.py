"""Opening models and the ``Model`` handle."""

from ._families import FAMILIES, Family
from ._load import BUILTIN, DEFAULT_MODEL, from_hf, load, wrap
from ._model import Batch, GenerateResult, Model, RunResult
from ._tiny import TINY_CONFIGS, byte_tokenizer, tiny

__all__ = [
    "BUILTIN",
    "DEFAULT_MODEL",
    "FAMILIES",
    "TINY_CONFIGS",
    "Batch",
    "Family",
    "GenerateResult",
    "Model",
    "RunResult",
    "byte_tokenizer",
    "from_hf",
    "load",
    "tiny",
    "wrap",
]
