"""The lenses family's method registry: one declaration per lens (see ``mechscope.core._registry``).

A lens is a function ``(model, inputs, config) -> result`` that reads intermediate residual streams as next-token
predictions; ``mechscope lens`` offers every declared lens with the options of its config. Built-in declarations
live next to their code and are imported on first use.
"""

from __future__ import annotations

from typing import Any

from ..core._registry import Registry

METHODS: Registry[Any, Any] = Registry(
    "lenses",
    builtins=[
        "mechscope.lenses.logit_lens",
        "mechscope.lenses._weights",
        "mechscope.lenses._heads",
        "mechscope.lenses._similarity",
        "mechscope.lenses._probes",
    ],
)
"""Lenses by name: ``logit-lens``."""
