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
    curve = faithfulness_curve(model, task, scores)  # top-n circuits vs random, MIB's CPR and CMD
    found = acdc(model, task, tau=0.01)  # node-level ACDC
    study = analyse(model, task)  # all of the above on one task, as the demo's report shows it
"""

from mechscope.circuits._acdc import ACDCResult, ACDCStep, acdc
from mechscope.circuits._attribution import AttributionResult, attribution_patching
from mechscope.circuits._dla import DLAResult, FrozenNorm, direct_logit_attribution
from mechscope.circuits._draw import draw_circuit, render_dot
from mechscope.circuits._eap import CheckedEdge, EdgeCheck, eap, eap_ig, patch_edges, verify_edges
from mechscope.circuits._faithfulness import (
    SIZES,
    FaithfulnessCurve,
    area_from_one,
    area_under,
    circuit_metrics,
    faithfulness,
    faithfulness_curve,
)
from mechscope.circuits._graph import Circuit, EdgeScores, Graph, Receiver, Sender
from mechscope.circuits._ids import ComponentNameError, EdgeId, NodeId
from mechscope.circuits._nodes import KINDS, Node
from mechscope.circuits._patching import activation_patching
from mechscope.circuits._path import PathPatchingResult, path_patching
from mechscope.circuits._plot import heatmap
from mechscope.circuits._report import AnalysisConfig, CircuitAnalysis, analyse, report_sections, write_circuit_files
from mechscope.circuits._result import PatchingResult
from mechscope.circuits._selfcheck import CheckedNode, SelfCheck, pearson, spearman, verify

__all__ = [
    "KINDS",
    "SIZES",
    "ACDCResult",
    "ACDCStep",
    "AnalysisConfig",
    "AttributionResult",
    "CheckedEdge",
    "CheckedNode",
    "Circuit",
    "CircuitAnalysis",
    "ComponentNameError",
    "DLAResult",
    "EdgeCheck",
    "EdgeId",
    "EdgeScores",
    "FaithfulnessCurve",
    "FrozenNorm",
    "Graph",
    "Node",
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
    "circuit_metrics",
    "direct_logit_attribution",
    "draw_circuit",
    "eap",
    "eap_ig",
    "faithfulness",
    "faithfulness_curve",
    "heatmap",
    "patch_edges",
    "path_patching",
    "pearson",
    "render_dot",
    "report_sections",
    "spearman",
    "verify",
    "verify_edges",
    "write_circuit_files",
]
