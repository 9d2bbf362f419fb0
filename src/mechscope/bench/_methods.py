"""The methods the bench scores today, and the random and oracle baselines of every family.

Circuits: every method declared in ``mechscope.circuits`` runs through the family's adapter (``_circuits.py``);
the random and oracle baselines are here. Features: every declared dictionary kind trains through the family's
adapter (``_features.py``); the random and oracle dictionaries are here.
Frequencies: the Fourier spectrum of the model's logits over its inputs (behaviour only, no weights).
Descriptions: a jump detector that brackets the two largest discontinuities of the sampled function.
Weights (``mechscope.lenses``, no circuit search): composition scores and head-type scores score the circuits
family's head pairs; the Fourier spectrum of the unembedding scores the modular-addition frequencies.
"""

from __future__ import annotations

import torch

from ..circuits._ids import EdgeId, NodeId
from ..circuits._nodes import Node
from ..lenses._heads import composition_scores, head_type_scores
from ..organisms._modadd import all_pairs, fourier_basis
from ..organisms._protocols import CircuitsOrganism, DescriptionsOrganism, FeaturesOrganism, FrequenciesOrganism
from ._features import SAE_EXPANSION, SAE_K
from ._registry import RunContext
from ._scorers import CircuitScores, DictionaryOutput, random_dictionary, random_interval

# --- circuits ----------------------------------------------------------------------------------------------------


def random_circuit(organism: CircuitsOrganism, ctx: RunContext) -> CircuitScores:
    """Uniform random score for every candidate node and edge."""
    gen = torch.Generator().manual_seed(ctx.seed)
    truth = organism.circuit
    nodes = dict(zip(truth.nodes, torch.rand(len(truth.nodes), generator=gen).tolist(), strict=True))
    edges = dict(zip(truth.edges, torch.rand(len(truth.edges), generator=gen).tolist(), strict=True))
    return CircuitScores(nodes, edges)


def oracle_circuit(organism: CircuitsOrganism, ctx: RunContext) -> CircuitScores:
    """Reads the ground truth: 1 for circuit nodes and edges, 0 for the rest."""
    truth = organism.circuit
    return CircuitScores({n: float(n in truth.circuit) for n in truth.nodes},
                         {e: float(e in truth.circuit_edges) for e in truth.edges})  # fmt: skip


def composition(organism: CircuitsOrganism, ctx: RunContext) -> CircuitScores:
    """Q/K/V composition scores of every head pair, from the weights (Elhage et al. 2021); per head its largest."""
    comp = composition_scores(organism.model)
    layers, heads = comp.q.shape[:2]
    edges: dict[str, float] = {}
    for mode in ("q", "k", "v"):
        for src in range(layers):
            for dst in range(src + 1, layers):
                for a in range(heads):
                    for b in range(heads):
                        edges[_head_edge(src, a, dst, b, mode)] = float(comp[mode][src, a, dst, b])
    best = torch.stack([comp[m] for m in ("q", "k", "v")]).amax(0)  # [layer head layer2 head2]: best mode
    per_head = torch.maximum(best.amax((2, 3)), best.amax((0, 1)))  # as writer or as reader
    nodes = {Node("head.z", layer, h).label(): float(per_head[layer, h]) for layer in range(layers)
             for h in range(heads)}  # fmt: skip
    return CircuitScores(nodes, edges)


def head_types(organism: CircuitsOrganism, ctx: RunContext) -> CircuitScores:
    """Head-type scores on repeated random tokens, per head and per head pair.

    Per head its previous-token or induction score, whichever is larger; per head pair the textbook K-composition
    of induction (Olsson et al. 2022): the writer's previous-token score times the reader's induction score, on the
    reader's keys (0 on queries and values).
    """
    types = head_type_scores(organism.model)  # seeded tokens: deterministic
    prev, ind = types.previous_token, types.induction  # [layer head]
    layers, heads = prev.shape
    edges = {_head_edge(src, a, dst, b, mode): float(prev[src, a] * ind[dst, b]) if mode == "k" else 0.0
             for mode in ("q", "k", "v") for src in range(layers) for dst in range(src + 1, layers)
             for a in range(heads) for b in range(heads)}  # fmt: skip
    nodes = {Node("head.z", layer, h).label(): float(max(prev[layer, h], ind[layer, h]))
             for layer in range(layers) for h in range(heads)}  # fmt: skip
    return CircuitScores(nodes, edges)


def _head_edge(src: int, a: int, dst: int, b: int, part: str) -> str:
    return EdgeId(NodeId.head(src, a), NodeId.head(dst, b), part).format()  # type: ignore[arg-type]


# --- features ----------------------------------------------------------------------------------------------------


def random_dictionary_method(organism: FeaturesOrganism, ctx: RunContext) -> DictionaryOutput:
    """Random unit decoder rows, each row of data firing ``SAE_K`` random latents."""
    d = organism.data.x.shape[1]
    return random_dictionary(SAE_EXPANSION * d, organism.data, SAE_K, seed=ctx.seed)


def oracle_dictionary(organism: FeaturesOrganism, ctx: RunContext) -> DictionaryOutput:
    """Reads the ground truth: decoder = true directions, latents = true coefficients."""
    return DictionaryOutput(organism.data.features, organism.data.coefficients)


# --- frequencies -------------------------------------------------------------------------------------------------


def logit_fourier(organism: FrequenciesOrganism, ctx: RunContext) -> dict[int, float]:
    """Power of the logits' Fourier transform along the first input, summed over everything else (behaviour only)."""
    p = organism.p
    pairs, _ = all_pairs(p)
    with torch.no_grad():
        out = organism.model.run(pairs).logits
    if out is None:
        raise ValueError(f"{organism.organism}'s model returned no logits")
    logits = out.reshape(p, p * p)  # [a (b c)]
    coeffs = fourier_basis(p)[:, 1:].T @ logits  # [2*freq (b c)]: cos/sin pairs per frequency
    power = coeffs.pow(2).sum(-1).unflatten(0, (-1, 2)).sum(-1)
    return dict(zip(organism.frequencies, power.tolist(), strict=True))


def unembed_fourier(organism: FrequenciesOrganism, ctx: RunContext) -> dict[int, float]:
    """Power of the unembedding's Fourier transform over the output tokens, per frequency (weights only).

    The key frequencies are defined at build time from the *embedding* and verified by ablating them; the
    unembedding is other weights, which the mechanism also writes in those frequencies (Nanda et al. 2023,
    section 4.1: ``W_L`` is sparse in the Fourier basis).
    """
    p = organism.p
    weight = getattr(organism.model.module.get_submodule("unembed"), "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.shape[0] != p:
        raise ValueError(f"{organism.organism}'s unembed is no [p d] linear layer (p = {p})")
    w_u = weight.detach()  # [p d_mlp]: one row per output token
    coeffs = fourier_basis(p)[:, 1:].T @ w_u  # [2*freq d_mlp]: cos/sin pairs per frequency
    power = coeffs.pow(2).sum(-1).unflatten(0, (-1, 2)).sum(-1)
    return dict(zip(organism.frequencies, power.tolist(), strict=True))


def random_frequencies(organism: FrequenciesOrganism, ctx: RunContext) -> dict[int, float]:
    """Uniform random score per frequency."""
    gen = torch.Generator().manual_seed(ctx.seed)
    return dict(zip(organism.frequencies, torch.rand(len(organism.frequencies), generator=gen).tolist(), strict=True))


def oracle_frequencies(organism: FrequenciesOrganism, ctx: RunContext) -> dict[int, float]:
    """Reads the ground truth: 1 for key frequencies."""
    return {k: float(k in organism.key_frequencies) for k in organism.frequencies}


# --- descriptions ------------------------------------------------------------------------------------------------


def jump_detector(organism: DescriptionsOrganism, ctx: RunContext) -> dict[str, tuple[float, float]]:
    """Bracket the two largest jumps of each function sampled on a grid (black-box access only)."""
    lo, hi = organism.domain
    x = torch.linspace(lo, hi, 2001, dtype=torch.float64)
    out = {}
    for f in organism.functions:
        jumps = f(x).diff().abs()
        first = int(jumps.argmax())
        jumps[max(0, first - 5) : first + 6] = -1  # the second jump must be elsewhere
        second = int(jumps.argmax())
        lo, hi = sorted((first, second))
        out[f.name] = (float(x[lo + 1]), float(x[hi]))
    return out


def random_descriptions(organism: DescriptionsOrganism, ctx: RunContext) -> dict[str, tuple[float, float]]:
    """A uniformly random interval per function."""
    gen = torch.Generator().manual_seed(ctx.seed)
    return {f.name: random_interval(organism.domain, gen) for f in organism.functions}


def oracle_descriptions(organism: DescriptionsOrganism, ctx: RunContext) -> dict[str, tuple[float, float]]:
    """Reads the ground truth: each function's corrupted interval."""
    return {f.name: f.interval for f in organism.functions}
