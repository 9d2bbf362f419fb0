"""Model organisms: models whose mechanism is known, built from a seed, verified, and cached with a checksum.

Every organism is obtained the same way::

    from mechscope import organisms

    built = organisms.obtain(organisms.Induction(), seed=0)   # seeded build + causal verification, then cached
    built.circuit                                              # the ground truth the bench scores against

Families: circuits (a planted induction circuit), graphs (a transformer whose MLP neurons are the true features),
representations (a transformer that computes a planted linear concept and reads it out as one behaviour),
compiled RASP programs (tracr; built with the ``tracr`` extra), modular addition, toy superposition and synthetic
features, FIND-style numeric functions, planted and FIND-style text latents with known descriptions
(auto-interpretation), trojaned CNNs with clean twins, signal-block CNNs with moved-block twins, and the small vision
models of the attribution gallery (``Vision``; ``vision_organism(name)`` obtains one). The image
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
    verification_id,
)
from ._planted_concept import BuiltPlantedConcept, PlantedConcept, PlantedConceptConfig
from ._planted_graph import BuiltPlantedGraph, PlantedEdge, PlantedGraph, PlantedGraphConfig, TrueGraph
from ._planted_text import (
    MISSING_EMBEDDER,
    BuiltKnownText,
    FindText,
    PlantedText,
    TextConfig,
    embedder_available,
)
from ._protocols import (
    AttributionOrganism,
    AutointerpOrganism,
    BuiltOrganism,
    CircuitsOrganism,
    CompiledOrganism,
    DescriptionsOrganism,
    FeaturesOrganism,
    FrequenciesOrganism,
    GraphsOrganism,
    RepresentationsOrganism,
    TrojanOrganism,
)
from ._superposition import (
    BuiltFeatures,
    BuiltTMS,
    FeatureConfig,
    SyntheticFeatures,
    TMSConfig,
    ToyModelOfSuperposition,
)
from ._tracr import (
    MISSING_TRACR,
    TRACR_ORGANISMS,
    BuiltCompiled,
    TracrConfig,
    TracrDyck,
    TracrFracPrevs,
    TracrHist,
    TracrReverse,
    TracrSort,
    program_output,
    tracr_available,
)
from ._tracr_model import TRACR_FAMILY, CompiledResidual, CompiledTransformer, compiled_model
from ._train import Schedule, train_classifier
from ._trojan import BuiltTrojan, TrojanBlend, TrojanConfig, TrojanNatural, TrojanPatch
from ._trojan_rgb import BuiltColourTrojan, ColourTrojanConfig, TrojanRGB, TrojanTwo
from ._truth import CircuitTruth, Edge
from ._vision import SPECS, OrganismSpec, SmallCNN, SmallViT, Vision, VisionOrganism, vision_organism

__all__ = [
    "FAMILIES",
    "MISSING_EMBEDDER",
    "MISSING_TRACR",
    "SPECS",
    "TRACR_FAMILY",
    "TRACR_ORGANISMS",
    "AttributionOrganism",
    "AutointerpOrganism",
    "BlockImages",
    "BlocksConfig",
    "Built",
    "BuiltBlocks",
    "BuiltColourTrojan",
    "BuiltCompiled",
    "BuiltFeatures",
    "BuiltInduction",
    "BuiltKnownText",
    "BuiltModAdd",
    "BuiltNumeric",
    "BuiltOrganism",
    "BuiltPlantedConcept",
    "BuiltPlantedGraph",
    "BuiltTMS",
    "BuiltTrojan",
    "CircuitTruth",
    "CircuitsOrganism",
    "ColourTrojanConfig",
    "CompiledOrganism",
    "CompiledResidual",
    "CompiledTransformer",
    "DescriptionsOrganism",
    "Edge",
    "FeatureConfig",
    "FeaturesOrganism",
    "FindText",
    "FrequenciesOrganism",
    "GraphsOrganism",
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
    "PlantedConcept",
    "PlantedConceptConfig",
    "PlantedEdge",
    "PlantedGraph",
    "PlantedGraphConfig",
    "PlantedText",
    "RepresentationsOrganism",
    "Schedule",
    "SignalBlocks",
    "SmallCNN",
    "SmallViT",
    "SyntheticFeatures",
    "TMSConfig",
    "TextConfig",
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
    "TrojanOrganism",
    "TrojanPatch",
    "TrojanRGB",
    "TrojanTwo",
    "TrueGraph",
    "Vision",
    "VisionOrganism",
    "block_images",
    "compiled_model",
    "embedder_available",
    "obtain",
    "organism_dir",
    "program_output",
    "read_card",
    "tracr_available",
    "train_classifier",
    "verification_id",
    "vision_organism",
]
