"""mechscope: open any PyTorch model, name its internals, cache and intervene on them faithfully.

import mechscope as ms
model = ms.load("smollm2-135m")
out = model.run("When Mary and John went to the store, John gave a drink to", cache=["resid_post.*"])
with model.intervene(ms.Ablate("head.9.z", heads=[3])):
    ablated = model.run(...)

Importing the package imports nothing heavy: each public name below (and each method family's package) is loaded on
first use (PEP 562 ``__getattr__``), so ``import mechscope`` and ``mechscope --help`` stay fast and a family's
dependencies (captum, matplotlib, jax, sqlite) load only when that family is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the type checker (and editors) see the real names; at run time they load on first use
    from . import attribution, bench, circuits, features, graphs, lenses, organisms, store, trojans, visualize
    from .core import (
        DEFAULT_MODEL,
        Ablate,
        Add,
        GenerateResult,
        Intervention,
        Model,
        ModelConfig,
        Patch,
        Replace,
        RunResult,
        Site,
        SiteInfo,
        from_hf,
        load,
        tiny,
        wrap,
    )

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "Ablate",
    "Add",
    "GenerateResult",
    "Intervention",
    "Model",
    "ModelConfig",
    "Patch",
    "Replace",
    "RunResult",
    "Site",
    "SiteInfo",
    "attribution",
    "bench",
    "circuits",
    "features",
    "from_hf",
    "graphs",
    "lenses",
    "load",
    "organisms",
    "store",
    "tiny",
    "trojans",
    "visualize",
    "wrap",
]

_SUBPACKAGES = frozenset(
    {"attribution", "bench", "circuits", "features", "graphs", "lenses", "organisms", "store", "trojans", "visualize"}
)
_FROM_CORE = frozenset(__all__) - _SUBPACKAGES


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)  # the import binds it on this package too
    if name in _FROM_CORE:
        value = getattr(importlib.import_module(".core", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # What `ms.<tab>` offers: the public names (loaded or not) and the module's own dunders, not its helpers.
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
