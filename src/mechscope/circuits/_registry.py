"""The circuits family's method registries: one declaration per method (see ``mechscope.core._registry``).

``METHODS`` holds the circuit-discovery methods that ``find_circuit``, ``mechscope circuit`` and the bench run:
a function ``(model, task, config) -> result`` whose result is either ``EdgeScores`` (tag ``"edges"``: a circuit
is its top edges) or a node circuit with a ``circuit()`` method (tag ``"nodes"``, e.g. ``ACDCResult``).
``NODE_METHODS`` holds the methods that score nodes without proposing a circuit (activation and attribution
patching, tag ``"patching"``, which ``mechscope patch`` offers; direct logit attribution), which the bench scores
by how much each head matters. Built-in declarations live in ``_methods.py`` and are imported on first use.
"""

from __future__ import annotations

from typing import Any

from ..core._registry import Registry

METHODS: Registry[Any, Any] = Registry("circuits", builtins=["mechscope.circuits._methods"])
"""Circuit-discovery methods: ``eap``, ``eap-ig`` (edges), ``acdc`` (nodes)."""
NODE_METHODS: Registry[Any, Any] = Registry("nodes", builtins=["mechscope.circuits._methods"])
"""Node-scoring methods: ``activation``, ``attribution`` (patching grids), ``dla`` (direct logit attribution)."""
