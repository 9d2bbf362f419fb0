"""The lenses family's method registry: one declaration per lens (see ``mechscope.core._registry``).

A lens is a function ``(model, inputs, config) -> result`` that reads intermediate residual streams as next-token
predictions; ``mechscope lens`` offers every declared lens with the options of its config. The family also declares
weight readings, representation similarity, probes and steering, tagged ``weights``, ``similarity``, ``probe`` and
``steering``; they have commands of their own (``cli/_weights.py``) and ``mechscope lens`` leaves them out.
Built-in declarations live next to their code and are imported on first use.
"""

from __future__ import annotations

from typing import Any

from ..core._registry import Registry

METHODS: Registry[Any, Any] = Registry(
    "lenses",
    builtins=[
        "mechscope.lenses.logit_lens",
        "mechscope.lenses._tuned",
        "mechscope.lenses._weights",
        "mechscope.lenses._heads",
        "mechscope.lenses._similarity",
        "mechscope.lenses._probes",
        "mechscope.lenses._steering",
    ],
)
"""The family's methods by name: ``logit-lens``, ``tuned-lens``;
``weights``, ``composition``, ``head-types`` (tag ``weights``, run as
``(model, config)``); ``similarity`` (``(model, inputs, config)``); ``probe`` (``(model, inputs, labels, config)``);
``steer`` (tag ``steering``, ``(model, config)``)."""
