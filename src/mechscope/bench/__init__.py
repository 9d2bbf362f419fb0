"""The bench: model organisms whose mechanism is known, scorers, and a runner that scores every method on them.

Example::

    from mechscope import bench, report

    board = bench.run_bench(quick=True, seeds=(0,))   # builds (once, cached) and verifies every organism
    report.write_leaderboard(board, "bench-results")  # leaderboard.md / .json / .html

    organism = bench.obtain(bench.Induction(), seed=0)   # a verified organism, from the cache
    organism.circuit.circuit                              # {'head.0.z[h..]', 'head.1.z[h..]'}

What a run runs is a ``Suite``: ``default_suite()`` builds the built-in one when called, so importing this package
registers nothing and imports no organism or method. A new method joins a suite with one declaration (see
``register_method``); new organisms subclass ``Organism`` and join with ``register_organism``, a new family's
scorers with ``register_scorer``. Built-in families: circuits, features, frequencies, descriptions, trojans
(trojaned CNNs and their clean twins), attribution (signal-block CNNs and their moved-block twins) and compiled
(RASP programs compiled by tracr, with the ``tracr`` extra).

The organisms live in ``mechscope.organisms``; their names are re-exported here, loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._harness import FULL_SEEDS, QUICK_SEEDS, BenchFailure, Leaderboard, Row, default_seeds, derive_seed, run_bench
from ._registry import (
    PLUGINS,
    MethodSpec,
    RunContext,
    Suite,
    register_method,
    register_organism,
    register_scorer,
)
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
    from ..organisms import (
        FAMILIES,
        MISSING_TRACR,
        TRACR_ORGANISMS,
        BlockImages,
        BlocksConfig,
        Built,
        BuiltBlocks,
        BuiltCompiled,
        BuiltFeatures,
        BuiltInduction,
        BuiltModAdd,
        BuiltNumeric,
        BuiltTMS,
        BuiltTrojan,
        CircuitTruth,
        CompiledTransformer,
        Edge,
        FeatureConfig,
        Induction,
        InductionConfig,
        ModAddConfig,
        ModularAddition,
        NumericConfig,
        NumericFunction,
        NumericFunctions,
        Organism,
        OrganismChecksumError,
        OrganismVerificationError,
        SignalBlocks,
        SyntheticFeatures,
        TMSConfig,
        ToyModelOfSuperposition,
        TracrConfig,
        TracrDyck,
        TracrFracPrevs,
        TracrHist,
        TracrReverse,
        TracrSort,
        TrojanBlend,
        TrojanConfig,
        TrojanNatural,
        TrojanPatch,
        block_images,
        obtain,
        organism_dir,
        read_card,
        tracr_available,
    )
    from ._vision_scorers import AttributionOutput, TrojanOutput

_ORGANISM_NAMES = (
    "FAMILIES", "BlockImages", "BlocksConfig", "Built", "BuiltBlocks", "BuiltFeatures", "BuiltInduction",
    "BuiltModAdd", "BuiltNumeric", "BuiltTMS", "BuiltTrojan", "CircuitTruth", "Edge", "FeatureConfig", "Induction",
    "InductionConfig", "ModAddConfig", "ModularAddition", "NumericConfig", "NumericFunction", "NumericFunctions",
    "Organism", "OrganismChecksumError", "OrganismVerificationError", "SignalBlocks", "SyntheticFeatures",
    "TMSConfig", "ToyModelOfSuperposition", "TrojanBlend", "TrojanConfig", "TrojanNatural", "TrojanPatch",
    "block_images", "obtain", "organism_dir", "read_card", "MISSING_TRACR", "TRACR_ORGANISMS", "BuiltCompiled",
    "CompiledTransformer", "TracrConfig", "TracrDyck", "TracrFracPrevs", "TracrHist", "TracrReverse", "TracrSort",
    "tracr_available",
)  # fmt: skip
_LAZY = {name: "mechscope.organisms" for name in _ORGANISM_NAMES} | {
    "AttributionOutput": "mechscope.bench._vision_scorers",
    "TrojanOutput": "mechscope.bench._vision_scorers",
}  # fmt: skip
"""Names re-exported on first use (PEP 562): the organisms and the adapters import nothing until asked for."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FAMILIES",
    "FULL_SEEDS",
    "MISSING_TRACR",
    "PLUGINS",
    "QUICK_SEEDS",
    "TRACR_ORGANISMS",
    "AttributionOutput",
    "BenchFailure",
    "BlockImages",
    "BlocksConfig",
    "Built",
    "BuiltBlocks",
    "BuiltCompiled",
    "BuiltFeatures",
    "BuiltInduction",
    "BuiltModAdd",
    "BuiltNumeric",
    "BuiltTMS",
    "BuiltTrojan",
    "CircuitScores",
    "CircuitTruth",
    "CompiledTransformer",
    "DictionaryOutput",
    "Edge",
    "FeatureConfig",
    "Induction",
    "InductionConfig",
    "Leaderboard",
    "MethodSpec",
    "ModAddConfig",
    "ModularAddition",
    "NumericConfig",
    "NumericFunction",
    "NumericFunctions",
    "Organism",
    "OrganismChecksumError",
    "OrganismVerificationError",
    "Row",
    "RunContext",
    "Score",
    "SignalBlocks",
    "Suite",
    "SyntheticFeatures",
    "TMSConfig",
    "ToyModelOfSuperposition",
    "TracrConfig",
    "TracrDyck",
    "TracrFracPrevs",
    "TracrHist",
    "TracrReverse",
    "TracrSort",
    "TrojanBlend",
    "TrojanConfig",
    "TrojanNatural",
    "TrojanOutput",
    "TrojanPatch",
    "auroc",
    "block_images",
    "default_seeds",
    "default_suite",
    "derive_seed",
    "edge_auroc",
    "features_scores",
    "frequency_auroc",
    "interval_iou",
    "iou",
    "node_auroc",
    "obtain",
    "organism_dir",
    "random_dictionary",
    "read_card",
    "register_method",
    "register_organism",
    "register_scorer",
    "run_bench",
    "score",
    "tracr_available",
]
