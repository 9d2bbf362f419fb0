"""mechscope: open any PyTorch model, name its internals, cache and intervene on them faithfully.

import mechscope as ms
model = ms.load("smollm2-135m")
out = model.run("When Mary and John went to the store, John gave a drink to", cache=["resid_post.*"])
with model.intervene(ms.Ablate("head.9.z", heads=[3])):
    ablated = model.run(...)
"""

from . import attribution, bench, circuits, features, lenses, store, visualize
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


def __getattr__(name: str) -> object:
    if name == "organisms":  # on first use: importing mechscope (or its bench) builds no organism module
        import importlib

        return importlib.import_module(".organisms", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "lenses",
    "load",
    "organisms",
    "store",
    "tiny",
    "visualize",
    "wrap",
]
