"""The bench: model organisms whose mechanism is known, scorers, and a runner that scores every method on them.

Example::

    from mechscope import bench, organisms, report

    board = bench.run_bench(quick=True, seeds=(0,))   # builds (once, cached) and verifies every organism
    report.write_leaderboard(board, "bench-results")  # leaderboard.md / .json / .html

    organism = organisms.obtain(organisms.Induction(), seed=0)   # a verified organism, from the cache
    organism.circuit.circuit                              # {'head.0.z[h..]', 'head.1.z[h..]'}

What a run runs is a ``Suite``: ``default_suite()`` builds the built-in one when called, so importing this package
registers nothing and imports no organism or method. A new method joins a suite with one declaration (see
``register_method``); new organisms subclass ``Organism`` and join with ``register_organism``, a new family's
scorers with ``register_scorer``. Built-in families: circuits, features, frequencies, descriptions, trojans
(trojaned CNNs and their clean twins), attribution (signal-block CNNs and their moved-block twins) and compiled
(RASP programs compiled by tracr, with the ``tracr`` extra) and autointerp (planted and FIND-style text latents
with true descriptions, with the ``autointerp`` extra).

The organisms live in ``mechscope.organisms``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._harness import (
    FULL_SEEDS,
    QUICK_SEEDS,
    THREADS,
    BenchFailure,
    Leaderboard,
    Row,
    default_seeds,
    derive_seed,
    run_bench,
    run_info,
)
from ._registry import (
    PLUGINS,
    MethodSpec,
    RunContext,
    Suite,
    register_method,
    register_organism,
    register_scorer,
)
from ._reproduce import Comparison, Drift, compare, load_tolerances, row_key
from ._scorers import (
    CircuitScores,
    DictionaryOutput,
    Score,
    auroc,
    edge_auroc,
    features_scores,
    frequency_auroc,
    interval_iou,
    iou,
    node_auroc,
    random_dictionary,
)
from ._suite import default_suite, score

if TYPE_CHECKING:
    from ._vision_scorers import AttributionOutput, TrojanOutput

_LAZY = {
    "AttributionOutput": "mechscope.bench._vision_scorers",
    "TrojanOutput": "mechscope.bench._vision_scorers",
}  # fmt: skip
"""Names re-exported on first use (PEP 562): the adapters import nothing until asked for."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FULL_SEEDS",
    "PLUGINS",
    "QUICK_SEEDS",
    "THREADS",
    "AttributionOutput",
    "BenchFailure",
    "CircuitScores",
    "Comparison",
    "DictionaryOutput",
    "Drift",
    "Leaderboard",
    "MethodSpec",
    "Row",
    "RunContext",
    "Score",
    "Suite",
    "TrojanOutput",
    "auroc",
    "compare",
    "default_seeds",
    "default_suite",
    "derive_seed",
    "edge_auroc",
    "features_scores",
    "frequency_auroc",
    "interval_iou",
    "iou",
    "load_tolerances",
    "node_auroc",
    "random_dictionary",
    "register_method",
    "register_organism",
    "register_scorer",
    "row_key",
    "run_bench",
    "run_info",
    "score",
]
