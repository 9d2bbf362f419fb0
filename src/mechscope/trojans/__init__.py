"""Trojan and backdoor auditing for any image classifier: reverse-engineer a trigger per class, name the outliers.

Example::

    from mechscope import trojans

    result = trojans.audit(model, clean_images, method="neural_cleanse", steps=300, folder="out/audit")
    result.suspects  # classes whose trigger is anomalously small (MAD anomaly index > 2)
    result.triggers[result.ranking[0]].attack_success  # on held-out clean images
    trojans.save_triggers(result, "out/audit")  # PNG per class

Methods (:data:`METHODS`): ``neural_cleanse`` (mask + pattern, Wang et al. 2019) and ``blend`` (one blend weight
for the whole image, for blended or frequency triggers); the feature-synthesis methods ``class_visualisation``,
``prototype`` and ``trigger_synthesis`` (Casper et al. 2023). With ``candidates=`` the audit scores candidate
trigger pictures against each class's trigger (:func:`similarity`, kind-, channel- and size-agnostic).
"""

from ._audit import anomaly_index, audit, check_images
from ._cleanse import attack_success, blend, neural_cleanse, search
from ._png import save_triggers
from ._registry import (
    METHODS,
    BlendConfig,
    ClassVisualisationConfig,
    NeuralCleanseConfig,
    PrototypeConfig,
    SearchConfig,
    TriggerSynthesisConfig,
)
from ._result import ReversedTrigger, TrojanAudit
from ._similarity import compare_triggers, rank_candidates, similarity
from ._synthesis import class_visualisation, prototype, trigger_synthesis

__all__ = [
    "METHODS",
    "BlendConfig",
    "ClassVisualisationConfig",
    "NeuralCleanseConfig",
    "PrototypeConfig",
    "ReversedTrigger",
    "SearchConfig",
    "TriggerSynthesisConfig",
    "TrojanAudit",
    "anomaly_index",
    "attack_success",
    "audit",
    "blend",
    "check_images",
    "class_visualisation",
    "compare_triggers",
    "neural_cleanse",
    "prototype",
    "rank_candidates",
    "save_triggers",
    "search",
    "similarity",
    "trigger_synthesis",
]
