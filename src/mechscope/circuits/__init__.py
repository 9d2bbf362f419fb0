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

    scores = eap_ig(model, task)  # every edge of the graph (embeddings, heads' q/k/v, MLPs, logits)
    curve = faithfulness_curve(model, task, scores)  # top-n circuits by |score| vs random circuits
    mib = mib_curves(model, task, scores.graph, scores.gain, "eap-ig")  # MIB's CPR (signed) and CMD (|score|)
    found = acdc(model, task, tau=0.01)  # node-level ACDC
    study = analyse(model, task)  # all of the above on one task, as the demo's report shows it

    run = find_circuit(model, task, FindConfig("eap-ig", EAPIGConfig(steps=10), top=200))  # circuit vs random
    METHODS.names()  # ['eap', 'eap-ig', 'acdc']: every circuit method, declared once with its config

Pictures and files of these results are drawn by ``mechscope.report`` (``heatmap``, ``draw_circuit``, …).
"""

from mechscope.circuits._acdc import ACDCResult, ACDCStep, acdc
from mechscope.circuits._analysis import (
    AnalysisConfig,
    CircuitAnalysis,
    IGTry,
    analyse,
    eap_ig_until_complete,
    pick_size,
)
from mechscope.circuits._attribution import AttributionResult, attribution_patching
from mechscope.circuits._dla import DLAResult, FrozenNorm, direct_logit_attribution
from mechscope.circuits._eap import CheckedEdge, EdgeCheck, eap, eap_ig, patch_edges, verify_edges
from mechscope.circuits._faithfulness import (
    SIZES,
    TIE_ORDERS,
    FaithfulnessCurve,
    MIBCurves,
    area_from_one,
    area_under,
    circuit_metrics,
    faithfulness,
    faithfulness_curve,
    mib_curves,
    ranking_curves,
    tie_orders,
    usable_sizes,
)
from mechscope.circuits._find import (
    CircuitRun,
    FindConfig,
    NodeCircuit,
    choose_circuit,
    curve_from_dict,
    edge_ranking,
    find_circuit,
    ranking_curve,
    run_method,
)
from mechscope.circuits._graph import Circuit, EdgeScores, Graph, Receiver, Sender
from mechscope.circuits._ids import ComponentNameError, EdgeId, NodeId
from mechscope.circuits._methods import (
    ACDCConfig,
    ActivationConfig,
    AttributionConfig,
    DLAConfig,
    EAPConfig,
    EAPIGConfig,
)
from mechscope.circuits._nodes import KINDS, Node
from mechscope.circuits._patching import activation_patching
from mechscope.circuits._path import PathPatchingResult, path_patching
from mechscope.circuits._registry import METHODS, NODE_METHODS
from mechscope.circuits._result import PatchingResult
from mechscope.circuits._selfcheck import CheckedNode, SelfCheck, pearson, spearman, verify

__all__ = [
    "KINDS",
    "METHODS",
    "NODE_METHODS",
    "SIZES",
    "TIE_ORDERS",
    "ACDCConfig",
    "ACDCResult",
    "ACDCStep",
    "ActivationConfig",
    "AnalysisConfig",
    "AttributionConfig",
    "AttributionResult",
    "CheckedEdge",
    "CheckedNode",
    "Circuit",
    "CircuitAnalysis",
    "CircuitRun",
    "ComponentNameError",
    "DLAConfig",
    "DLAResult",
    "EAPConfig",
    "EAPIGConfig",
    "EdgeCheck",
    "EdgeId",
    "EdgeScores",
    "FaithfulnessCurve",
    "FindConfig",
    "FrozenNorm",
    "Graph",
    "IGTry",
    "MIBCurves",
    "Node",
    "NodeCircuit",
    "NodeId",
    "PatchingResult",
    "PathPatchingResult",
    "Receiver",
    "SelfCheck",
    "Sender",
    "acdc",
    "activation_patching",
    "analyse",
    "area_from_one",
    "area_under",
    "attribution_patching",
    "choose_circuit",
    "circuit_metrics",
    "curve_from_dict",
    "direct_logit_attribution",
    "eap",
    "eap_ig",
    "eap_ig_until_complete",
    "edge_ranking",
    "faithfulness",
    "faithfulness_curve",
    "find_circuit",
    "mib_curves",
    "patch_edges",
    "path_patching",
    "pearson",
    "pick_size",
    "ranking_curve",
    "ranking_curves",
    "run_method",
    "spearman",
    "tie_orders",
    "usable_sizes",
    "verify",
    "verify_edges",
]
