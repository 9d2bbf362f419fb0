"""Trojan and backdoor auditing for any image classifier: reverse-engineer a trigger per class, name the outliers.

Example::

    from mechscope import trojans

    result = trojans.audit(model, clean_images, method="neural_cleanse", steps=300, folder="out/audit")
    result.suspects  # classes whose trigger is anomalously small (MAD anomaly index > 2)
    result.triggers[result.ranking[0]].attack_success  # on held-out clean images
    trojans.save_triggers(result, "out/audit")  # PNG per class

Methods (:data:`METHODS`): ``neural_cleanse`` (mask + pattern, Wang et al. 2019) and ``blend`` (an additive
whole-image pattern, for blended or frequency triggers).
"""

from ._audit import anomaly_index, audit, check_images
from ._cleanse import attack_success, blend, neural_cleanse, search
from ._png import save_triggers
from ._registry import METHODS, BlendConfig, NeuralCleanseConfig, SearchConfig
from ._result import ReversedTrigger, TrojanAudit

__all__ = [
    "METHODS",
    "BlendConfig",
    "NeuralCleanseConfig",
    "ReversedTrigger",
    "SearchConfig",
    "TrojanAudit",
    "anomaly_index",
    "attack_success",
    "audit",
    "blend",
    "check_images",
    "neural_cleanse",
    "save_triggers",
    "search",
]
