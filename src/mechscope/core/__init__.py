"""The core: open models, name their sites, run, cache, intervene, take gradients and generate.

Everything above this package (data, store, the method families, organisms, the bench, reports and the CLI)
reaches a model only through what is exported here.
"""

from ._families import FAMILIES, Family
from ._hookset import HookSet
from ._interventions import Ablate, Add, Intervention, Patch, Replace
from ._load import BUILTIN, DEFAULT_MODEL, from_hf, load, wrap
from ._model import Batch, GenerateResult, Model, RunResult
from ._registry import ConfigField, MethodSpec, Registry, UnknownMethodError, config_fields
from ._residual import FamilyResidual, ResidualModel, residual
from ._sites import HOOK_NAMES, ModelConfig, Site, SiteInfo, hook_of_site, site_of_hook
from ._tiny import TINY_CONFIGS, byte_tokenizer, tiny

__all__ = [
    "BUILTIN",
    "DEFAULT_MODEL",
    "FAMILIES",
    "HOOK_NAMES",
    "TINY_CONFIGS",
    "Ablate",
    "Add",
    "Batch",
    "ConfigField",
    "Family",
    "FamilyResidual",
    "GenerateResult",
    "HookSet",
    "Intervention",
    "MethodSpec",
    "Model",
    "ModelConfig",
    "Patch",
    "Registry",
    "Replace",
    "ResidualModel",
    "RunResult",
    "Site",
    "SiteInfo",
    "UnknownMethodError",
    "byte_tokenizer",
    "config_fields",
    "from_hf",
    "hook_of_site",
    "load",
    "residual",
    "site_of_hook",
    "tiny",
    "wrap",
]
