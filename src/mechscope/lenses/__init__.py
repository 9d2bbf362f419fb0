"""Lenses: read intermediate residual streams as next-token predictions.

Example::

    import mechscope as ms
    from mechscope.lenses import METHODS, logit_lens, logit_lens_grid

    model = ms.load("smollm2-135m")
    lens = logit_lens(model, "When Mary and John went to the store, John gave a drink to", " Mary")
    lens.answer_probs  # [batch layer]: P(" Mary") read from every layer's resid_post
    METHODS["logit-lens"](model, "The capital of France is", top_k=10)  # the same method, by its declared name
    logit_lens_grid(model, "The capital of France is").top_tokens  # [layer][pos][k]: every position at once
    lens = train_tuned_lens(model, "out/tuned", TrainLensConfig(steps=100))  # Belrose et al. 2023; resumable
    tuned_lens(model, lens, "The capital of France is")  # the same result, read through the trained translators

Beside the lenses, the family reads weights (``head_spectra``: SVD of every head's OV and QK circuit read as tokens;
``composition_scores``; ``neuron_vocab``; ``head_type_scores``), compares representations (``linear_cka``, ``svcca``,
``site_similarity``), trains linear probes with a control task (``probe``, ``train_probe``) and steers with CAA vectors
(``steering_vector``, ``steer_sweep``); see docs/weights.md.

Pictures of these results are drawn by ``mechscope.report`` (``plot_logit_lens``, ``logit_lens_heatmap``).
"""

# The logit lens first: registries list methods in declaration order, and it leads the family.
from mechscope.lenses.logit_lens import LogitLensConfig, LogitLensResult, logit_lens

# isort: split
from mechscope.lenses._grid import LensGrid, logit_lens_grid, tuned_lens_grid
from mechscope.lenses._heads import (
    HEAD_TYPES,
    CompositionConfig,
    CompositionScores,
    HeadTypesConfig,
    HeadTypeScores,
    composition_score,
    composition_scores,
    detection_patterns,
    head_type_scores,
    repeated_tokens,
)
from mechscope.lenses._probes import ProbeConfig, ProbeResult, control_labels, probe, train_probe
from mechscope.lenses._registry import METHODS
from mechscope.lenses._similarity import (
    SimilarityConfig,
    SimilarityMatrix,
    linear_cka,
    similarity,
    site_activations,
    site_similarity,
    svcca,
)
from mechscope.lenses._steering import SteerConfig, SteeringSweep, SteeringVector, steer_sweep, steering_vector
from mechscope.lenses._tuned import (
    TunedLens,
    TunedLensConfig,
    export_tuned_lens,
    load_tuned_lens,
    save_tuned_lens,
    tuned_lens,
)
from mechscope.lenses._tuned_train import LensEvaluation, TrainLensConfig, evaluate_tuned_lens, train_tuned_lens
from mechscope.lenses._weights import (
    HeadSpectra,
    HeadWeights,
    NeuronVocab,
    OVTokens,
    WeightsConfig,
    embedding,
    head_spectra,
    head_weights,
    neuron_vocab,
    norm_gain,
    norm_matrix,
    ov_tokens,
    unembedding,
)

__all__ = [
    "HEAD_TYPES",
    "METHODS",
    "CompositionConfig",
    "CompositionScores",
    "HeadSpectra",
    "HeadTypeScores",
    "HeadTypesConfig",
    "HeadWeights",
    "LensEvaluation",
    "LensGrid",
    "LogitLensConfig",
    "LogitLensResult",
    "NeuronVocab",
    "OVTokens",
    "ProbeConfig",
    "ProbeResult",
    "SimilarityConfig",
    "SimilarityMatrix",
    "SteerConfig",
    "SteeringSweep",
    "SteeringVector",
    "TrainLensConfig",
    "TunedLens",
    "TunedLensConfig",
    "WeightsConfig",
    "composition_score",
    "composition_scores",
    "control_labels",
    "detection_patterns",
    "embedding",
    "evaluate_tuned_lens",
    "export_tuned_lens",
    "head_spectra",
    "head_type_scores",
    "head_weights",
    "linear_cka",
    "load_tuned_lens",
    "logit_lens",
    "logit_lens_grid",
    "neuron_vocab",
    "norm_gain",
    "norm_matrix",
    "ov_tokens",
    "probe",
    "repeated_tokens",
    "save_tuned_lens",
    "similarity",
    "site_activations",
    "site_similarity",
    "steer_sweep",
    "steering_vector",
    "svcca",
    "train_probe",
    "train_tuned_lens",
    "tuned_lens",
    "tuned_lens_grid",
    "unembedding",
]
