"""Circuits: activation patching, attribution patching (with a self-check), direct logit attribution.

Example::

    import mechscope as ms
    from mechscope.circuits import activation_patching, attribution_patching, direct_logit_attribution
    from mechscope.data.tasks import ioi

    model = ms.load("smollm2-135m")
    task = ioi(model.tokenizer, n=8)
    heads = activation_patching(model, task, "head.z")  # [layer head], 1 = clean, 0 = corrupt
    est = attribution_patching(model, task, ["head.z"], verify=16)  # same grids, one backward; checked
    dla = direct_logit_attribution(model, task)  # per head and MLP, sums to the logit diff
"""

from mechscope.circuits._attribution import AttributionResult, attribution_patching
from mechscope.circuits._dla import DLAResult, FrozenNorm, direct_logit_attribution
from mechscope.circuits._nodes import KINDS, Node
from mechscope.circuits._patching import activation_patching
from mechscope.circuits._plot import heatmap
from mechscope.circuits._result import PatchingResult
from mechscope.circuits._selfcheck import CheckedNode, SelfCheck, pearson, spearman, verify

__all__ = [
    "KINDS",
    "AttributionResult",
    "CheckedNode",
    "DLAResult",
    "FrozenNorm",
    "Node",
    "PatchingResult",
    "SelfCheck",
    "activation_patching",
    "attribution_patching",
    "direct_logit_attribution",
    "heatmap",
    "pearson",
    "spearman",
    "verify",
]
