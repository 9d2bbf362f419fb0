"""The graphs family's method registry: one declaration, ``attribution-graph`` (see ``mechscope.core._registry``).

Its config, ``GraphConfig``, gives ``mechscope graph`` its options.
"""

from __future__ import annotations

from typing import Any

from mechscope.core._registry import Registry

METHODS: Registry[Any, Any] = Registry("graphs", builtins=["mechscope.graphs._attribute"])
"""The family's methods by name: ``attribution-graph`` (``(model, prompt, transcoders, config)``)."""
