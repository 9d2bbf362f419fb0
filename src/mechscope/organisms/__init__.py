"""Model organisms: models whose mechanism is known, built from a seed, verified, and cached with a checksum.

Every organism is obtained the same way::

    from mechscope import organisms

    built = organisms.obtain(organisms.Induction(), seed=0)   # seeded build + causal verification, then cached
    built.circuit                                              # the ground truth the bench scores against

Families: circuits (a planted induction circuit), modular addition, toy superposition and synthetic features,
FIND-style numeric functions, trojaned CNNs with clean twins, signal-block CNNs with moved-block twins, and the
small vision models of the attribution gallery (``Vision``; ``vision_organism(name)`` obtains one). The image
classifiers among them train with one loop (``train_classifier``). Method packages never import this package; the
bench, the demos and the docs do.
"""

from ._blocks import BlockImages, BlocksConfig, BuiltBlocks, SignalBlocks, block_images
from ._induction import BuiltInduction, Induction, InductionConfig
from ._modadd import BuiltModAdd, ModAddConfig, ModularAddition
from ._numeric import FAMILIES, BuiltNumeric, NumericConfig, NumericFunction, NumericFunctions
from ._organism import (
    Built,
    Organism,
    OrganismChecksumError,
    OrganismVerificationError,
    obtain,
    organism_dir,
    read_card,
)
from ._superposition import (
    BuiltFeatures,
    BuiltTMS,
    FeatureConfig,
    SyntheticFeatures,
    TMSConfig,
    ToyModelOfSuperposition,
)
from ._train import Schedule, train_classifier
from ._trojan import BuiltTrojan, TrojanBlend, TrojanConfig, TrojanNatural, TrojanPatch
from ._truth import CircuitTruth, Edge
from ._vision import SPECS, OrganismSpec, SmallCNN, SmallViT, Vision, VisionOrganism, vision_organism

__all__ = [
    "FAMILIES",
    "SPECS",
    "BlockImages",
    "BlocksConfig",
    "Built",
    "BuiltBlocks",
    "BuiltFeatures",
    "BuiltInduction",
    "BuiltModAdd",
    "BuiltNumeric",
    "BuiltTMS",
    "BuiltTrojan",
    "CircuitTruth",
    "Edge",
    "FeatureConfig",
    "Induction",
    "InductionConfig",
    "ModAddConfig",
    "ModularAddition",
    "NumericConfig",
    "NumericFunction",
    "NumericFunctions",
    "Organism",
    "OrganismChecksumError",
    "OrganismSpec",
    "OrganismVerificationError",
    "Schedule",
    "SignalBlocks",
    "SmallCNN",
    "SmallViT",
    "SyntheticFeatures",
    "TMSConfig",
    "ToyModelOfSuperposition",
    "TrojanBlend",
    "TrojanConfig",
    "TrojanNatural",
    "TrojanPatch",
    "Vision",
    "VisionOrganism",
    "block_images",
    "obtain",
    "organism_dir",
    "read_card",
    "train_classifier",
    "vision_organism",
]
