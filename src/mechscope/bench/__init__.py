"""The bench: model organisms whose mechanism is known, scorers, and a runner that scores every method on them.

Example::

    from mechscope import bench

    board = bench.run_bench(quick=True, seeds=(0,))   # builds (once, cached) and verifies every organism
    print(board.to_markdown())
    board.write("bench-results")                      # leaderboard.md / .json / .html

    organism = bench.obtain(bench.Induction(), seed=0)   # a verified organism, from the cache
    organism.circuit.circuit                              # {'head.0.z[h..]', 'head.1.z[h..]'}

New methods join with one declaration (see ``register_method``); new organisms subclass ``Organism`` and are added
with ``register_organism``, with a new family's scorers added by ``register_scorer``. Built-in families: circuits,
features, frequencies, descriptions, trojans (trojaned CNNs and their clean twins), attribution (signal-block
CNNs and their moved-block twins) and compiled (RASP programs compiled by tracr, with the ``tracr`` extra).
"""

from mechscope.bench import _tracr  # noqa: F401 - registers the compiled family's scorers and methods
from mechscope.bench._harness import FULL_SEEDS, QUICK_SEEDS, Leaderboard, Row, main, run_bench
from mechscope.bench._registry import (
    METHODS,
    ORGANISMS,
    UNAVAILABLE,
    MethodSpec,
    RunContext,
    methods_for,
    register_method,
    register_organism,
    register_scorer,
)
from mechscope.bench._scorers import (
    SCORERS,
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
    score,
)
from mechscope.bench._vision_scorers import AttributionOutput, TrojanOutput
from mechscope.organisms._blocks import BlockImages, BlocksConfig, BuiltBlocks, SignalBlocks, block_images
from mechscope.organisms._induction import BuiltInduction, Induction, InductionConfig
from mechscope.organisms._modadd import BuiltModAdd, ModAddConfig, ModularAddition
from mechscope.organisms._numeric import FAMILIES, BuiltNumeric, NumericConfig, NumericFunction, NumericFunctions
from mechscope.organisms._organism import (
    Built,
    Organism,
    OrganismChecksumError,
    OrganismVerificationError,
    obtain,
    organism_dir,
    read_card,
)
from mechscope.organisms._superposition import (
    BuiltFeatures,
    BuiltTMS,
    FeatureConfig,
    SyntheticFeatures,
    TMSConfig,
    ToyModelOfSuperposition,
)
from mechscope.organisms._tracr import (
    MISSING_TRACR,
    TRACR_ORGANISMS,
    BuiltCompiled,
    TracrConfig,
    TracrDyck,
    TracrFracPrevs,
    TracrHist,
    TracrReverse,
    TracrSort,
    tracr_available,
)
from mechscope.organisms._tracr_model import CompiledTransformer
from mechscope.organisms._trojan import BuiltTrojan, TrojanBlend, TrojanConfig, TrojanNatural, TrojanPatch
from mechscope.organisms._truth import CircuitTruth, Edge

for _organism in (
    Induction(), ModularAddition(), ToyModelOfSuperposition(), SyntheticFeatures(), NumericFunctions(),
    TrojanPatch(), TrojanBlend(), TrojanNatural(), SignalBlocks(),
):  # fmt: skip
    register_organism(_organism)
for _organism in TRACR_ORGANISMS:  # compiled RASP programs: built only with the tracr extra installed
    if tracr_available():
        register_organism(_organism)
    else:
        UNAVAILABLE[_organism.name] = MISSING_TRACR

__all__ = [
    "FAMILIES",
    "FULL_SEEDS",
    "METHODS",
    "MISSING_TRACR",
    "ORGANISMS",
    "QUICK_SEEDS",
    "SCORERS",
    "TRACR_ORGANISMS",
    "UNAVAILABLE",
    "AttributionOutput",
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
    "edge_auroc",
    "features_scores",
    "frequency_auroc",
    "interval_iou",
    "iou",
    "main",
    "methods_for",
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
