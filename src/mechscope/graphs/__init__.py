"""Attribution graphs: a prompt's computation as direct effects between transcoder features, errors and tokens.

Replace each MLP by a per-layer transcoder, freeze the prompt's attention patterns and norm scales, and the
residual stream becomes linear in what token embeddings, active features and error nodes write into it; the graph's
edges are those direct effects, computed in batched backward passes (Ameisen et al. 2025, "Circuit Tracing";
Lindsey et al. 2025, "On the Biology of a Large Language Model"; Dunefsky et al. 2024, "Transcoders Find
Interpretable LLM Feature Circuits"). ``attribute`` builds a graph, ``AttributionGraph.prune`` keeps what matters
for the logits, ``verify`` checks it against real interventions. See ``docs/graphs.md``.
"""

from mechscope.graphs._attribute import GraphConfig, attribute
from mechscope.graphs._clt import CLTConfig, CLTTrainConfig, CrossLayerTranscoder, load_clt, save_clt, train_clt
from mechscope.graphs._coders import relu_mlp_transcoders
from mechscope.graphs._graph import AttributionGraph, GraphNode, GraphStats, NodeKind
from mechscope.graphs._registry import METHODS
from mechscope.graphs._replacement import ReplacementModel, Trace, load_transcoders
from mechscope.graphs._verify import GraphVerification, InterventionCheck, propagate, verify

__all__ = [
    "METHODS",
    "AttributionGraph",
    "CLTConfig",
    "CLTTrainConfig",
    "CrossLayerTranscoder",
    "GraphConfig",
    "GraphNode",
    "GraphStats",
    "GraphVerification",
    "InterventionCheck",
    "NodeKind",
    "ReplacementModel",
    "Trace",
    "attribute",
    "load_clt",
    "load_transcoders",
    "propagate",
    "relu_mlp_transcoders",
    "save_clt",
    "train_clt",
    "verify",
]
