"""Sparse dictionaries (SAEs, transcoders): training, metrics, ground truth, I/O, splicing, feature interventions.

Dictionary kinds are declared in one registry, ``KINDS`` (see ``_kinds``).
"""

from mechscope.features._dictionary import (
    BatchTopKDictionary,
    Dictionary,
    DictionaryConfig,
    DictionaryOutput,
    JumpReLUDictionary,
    ReLUDictionary,
    TopKDictionary,
    build_dictionary,
    geometric_median,
)
from mechscope.features._intervene import LatentEdit, clamp, scale, zero
from mechscope.features._io import (
    check_provenance,
    export_saelens,
    export_sparsify,
    load_dictionary,
    read_provenance,
    save_dictionary,
)
from mechscope.features._kinds import (
    KINDS,
    BatchTopKConfig,
    JumpReLUConfig,
    ReLUConfig,
    TopKConfig,
    train_config,
)
from mechscope.features._metrics import (
    AbsorptionScores,
    ReconstructionMetrics,
    RecoveryMetrics,
    absorption,
    cosine_matrix,
    evaluate,
    firing_f1,
    firing_rates,
    fvu,
    l0,
    match_latents,
    mmcs,
    mse,
    recovery,
)
from mechscope.features._sparse import SparseLatents
from mechscope.features._splice import SpliceMetrics, splice, splice_eval
from mechscope.features._synthetic import SyntheticConfig, SyntheticData, make_synthetic
from mechscope.features._train import NonFiniteLossError, TrainConfig, TrainLog, TrainResult, train

__all__ = [
    "KINDS",
    "AbsorptionScores",
    "BatchTopKConfig",
    "BatchTopKDictionary",
    "Dictionary",
    "DictionaryConfig",
    "DictionaryOutput",
    "JumpReLUConfig",
    "JumpReLUDictionary",
    "LatentEdit",
    "NonFiniteLossError",
    "ReLUConfig",
    "ReLUDictionary",
    "ReconstructionMetrics",
    "RecoveryMetrics",
    "SparseLatents",
    "SpliceMetrics",
    "SyntheticConfig",
    "SyntheticData",
    "TopKConfig",
    "TopKDictionary",
    "TrainConfig",
    "TrainLog",
    "TrainResult",
    "absorption",
    "build_dictionary",
    "check_provenance",
    "clamp",
    "cosine_matrix",
    "evaluate",
    "export_saelens",
    "export_sparsify",
    "firing_f1",
    "firing_rates",
    "fvu",
    "geometric_median",
    "l0",
    "load_dictionary",
    "make_synthetic",
    "match_latents",
    "mmcs",
    "mse",
    "read_provenance",
    "recovery",
    "save_dictionary",
    "scale",
    "splice",
    "splice_eval",
    "train",
    "train_config",
    "zero",
]
