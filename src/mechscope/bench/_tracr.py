"""Compiled transformers: RASP programs compiled by tracr into weights, converted to plain torch modules.

tracr (Lindner et al. 2023, "Tracr: Compiled Transformers as a Laboratory for Interpretability") compiles a RASP
program (Weiss et al. 2021, "Thinking Like Transformers") into a transformer whose every head and MLP implements
one known operation of the program, each reading and writing its own labelled subspace of the residual stream.
That gives interpretability an exact ground truth: which heads and MLPs implement the program (the blocks the
compiler emitted; every other block of the assembled model has all-zero weights) and which edges carry its
information (an emitted sender writes a residual dimension that an emitted receiver reads: tracr gives each value
of the program its own dimensions, so a shared dimension is a data-flow edge of the program).

The compiled haiku parameters are copied into ``CompiledTransformer``, a small torch module (token + position
embeddings, per layer an attention with one module per head and an MLP, no layer norm, additive residual, linear
unembedding), so ``mechscope.wrap`` exposes every head (``blocks.0.attn.heads.1``) and MLP (``blocks.0.mlp``) as a
site. tracr and jax are needed to *build* an organism (``pip install -e .[tracr]``); a cached one loads with torch
alone.

Verification (every input of length 1 to ``max_seq_len``, or a seeded sample when there are more than
``max_inputs``): the torch model reproduces the RASP program's output at every position, its logits equal the jax
model's to ``max_logit_error``, the emitted blocks are exactly the ones with nonzero weights, zero-ablating any
emitted block changes some output, and zero-ablating every other block at once changes none.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import torch
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..core._interventions import Ablate, Intervention, Patch
from ..core._load import wrap
from ..core._model import Model
from ..organisms._organism import Built, Organism, require
from ..organisms._truth import CircuitTruth
from ._registry import RunContext
from ._scorers import CircuitScores, Score, edge_auroc, node_auroc

BOS = "BOS"
"""The compiler's beginning-of-sequence token (tracr prepends it to every input)."""


# --- the torch model ----------------------------------------------------------------------------------------------


class Head(nn.Module):
    """One attention head; its output is its contribution to the residual stream."""

    def __init__(self, d_model: int, d_head: int) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d_model, d_head) for _ in range(3))
        self.o = nn.Linear(d_head, d_model, bias=False)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        scores = einsum(self.q(x), self.k(x), "batch q d, batch k d -> batch q k") / math.sqrt(self.q.out_features)
        return self.o(scores.softmax(-1) @ self.v(x))  # tracr compiles non-causal models: no mask


class Attention(nn.Module):
    """Heads in parallel, plus the output bias of the fused projection they came from."""

    def __init__(self, d_model: int, n_heads: int, d_head: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(Head(d_model, d_head) for _ in range(n_heads))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return sum((head(x) for head in self.heads), self.bias)


class MLP(nn.Module):
    """ReLU MLP."""

    def __init__(self, d_model: int, d_mlp: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(d_model, d_mlp), nn.Linear(d_mlp, d_model)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return self.down(torch.relu(self.up(x)))


class Block(nn.Module):
    """Attention then MLP, each added to the residual stream (tracr models have no layer norm)."""

    def __init__(self, d_model: int, n_heads: int, d_head: int, d_mlp: int) -> None:
        super().__init__()
        self.attn, self.mlp = Attention(d_model, n_heads, d_head), MLP(d_model, d_mlp)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        x = x + self.attn(x)
        return x + self.mlp(x)


@dataclass(frozen=True)
class Dims:
    """Sizes of a compiled transformer."""

    n_tokens: int
    n_pos: int
    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_out: int
    """Output classes (categorical programs) or 1 (numerical programs)."""


class CompiledTransformer(nn.Module):
    """A tracr model in torch: ``[batch pos]`` token ids (BOS first) -> ``[batch pos d_out]`` logits."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        self.token_embed = nn.Embedding(dims.n_tokens, dims.d_model)
        self.pos_embed = nn.Embedding(dims.n_pos, dims.d_model)
        self.blocks = nn.ModuleList(Block(dims.d_model, dims.n_heads, dims.d_head, dims.d_mlp)
                                    for _ in range(dims.n_layers))  # fmt: skip
        self.unembed = nn.Linear(dims.d_model, dims.d_out, bias=False)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_out"]:
        x = self.token_embed(tokens) + self.pos_embed(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.unembed(x)

    def components(self) -> dict[str, nn.Module]:
        """Site name -> module of every head and MLP, in forward order."""
        out: dict[str, nn.Module] = {}
        for i, block in enumerate(cast(list[Block], list(self.blocks))):
            out |= {f"blocks.{i}.attn.heads.{h}": head for h, head in enumerate(block.attn.heads)}
            out[f"blocks.{i}.mlp"] = block.mlp
        return out


def edge_node(site: str) -> str:
    """MIB-style node name of a component site: ``blocks.1.attn.heads.0`` -> ``a1.h0``, ``blocks.2.mlp`` -> ``m2``."""
    parts = site.split(".")
    return f"a{parts[1]}.h{parts[4]}" if parts[2] == "attn" else f"m{parts[1]}"


# --- programs -----------------------------------------------------------------------------------------------------


def _programs() -> dict[str, Callable[[int], Any]]:
    """RASP programs from tracr's own library (``tracr.compiler.lib``), by name; the argument is max_seq_len."""
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return {
        "reverse": lambda n: lib.make_reverse(rasp.tokens),
        "sort": lambda n: lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=n, min_key=1),
        "hist": lambda n: lib.make_hist(),
        "frac_prevs": lambda n: lib.make_frac_prevs(rasp.tokens == 1),
        "dyck": lambda n: lib.make_shuffle_dyck(["()"]),
    }


def tracr_available() -> bool:
    """Whether the ``tracr`` extra is installed (found without importing it: jax is slow to import)."""
    return all(importlib.util.find_spec(name) is not None for name in ("tracr", "jax", "haiku"))


MISSING_TRACR = "needs tracr and jax to build: pip install -e .[tracr]"


@dataclass(frozen=True)
class TracrConfig:
    """Which RASP program to compile, on what inputs, and what its verification demands."""

    program: str = "reverse"
    """Name of a program of ``tracr.compiler.lib`` (``reverse``, ``sort``, ``hist``, ``frac_prevs``, ``dyck``)."""
    vocab: tuple[int | str, ...] = (1, 2, 3, 4)
    """Input tokens."""
    max_seq_len: int = 5
    """Longest input (without BOS)."""
    max_inputs: int = 2048
    """Verification uses every input of length 1 to ``max_seq_len`` when there are at most this many, else a
    seeded sample of this many."""
    max_logit_error: float = 1e-5
    """Largest allowed |torch logit - jax logit|."""
    tolerance: float = 0.01
    """A numerical output counts as right within this distance of the program's value."""


class _Compiled(Organism):
    """A RASP program compiled by tracr (see the module docstring). Subclasses name the program."""

    family: ClassVar[str] = "compiled"
    quick_seeds: ClassVar[tuple[int, ...] | None] = ()
    """Compiling takes 7-16 s per program on a loaded core, so quick runs leave these out."""
    cfg: TracrConfig

    def build(self, seed: int) -> BuiltCompiled:
        from ._tracr_compile import compile_program

        # The compiled weights do not depend on the seed; only a sampled probe does (when there are too many inputs).
        compiled = compile_program(self.cfg, seed if n_inputs(self.cfg) > self.cfg.max_inputs else 0)
        module = CompiledTransformer(compiled["dims"])
        module.load_state_dict(compiled["state"])
        return BuiltCompiled(self.name, seed, self.cfg, module, compiled["probe"], compiled["meta"])

    def load(self, seed: int, tensors: dict[str, Tensor]) -> BuiltCompiled:
        meta = json.loads(bytes(tensors.pop("meta").tolist()).decode())
        probe = {k.removeprefix("probe."): tensors.pop(k) for k in list(tensors) if k.startswith("probe.")}
        module = CompiledTransformer(Dims(**meta["dims"]))
        module.load_state_dict(tensors)
        return BuiltCompiled(self.name, seed, self.cfg, module, probe, meta)


@dataclass(frozen=True)
class TracrReverse(_Compiled):
    """``reverse`` (``lib.make_reverse``): length by selector width, then an aggregate at ``length - i - 1``."""

    name: ClassVar[str] = "tracr_reverse"
    quick_seeds: ClassVar[tuple[int, ...] | None] = (0,)
    """Quick runs, with the extra installed, keep this one compiled organism (3 of its 8 components are unused)."""
    cfg: TracrConfig = TracrConfig("reverse")


@dataclass(frozen=True)
class TracrSort(_Compiled):
    """``sort`` (``lib.make_sort``): keys made unique by position, target position by selector width, aggregate."""

    name: ClassVar[str] = "tracr_sort"
    cfg: TracrConfig = TracrConfig("sort")


@dataclass(frozen=True)
class TracrHist(_Compiled):
    """``hist`` (``lib.make_hist``): how often each token occurs, by the selector width of token equality."""

    name: ClassVar[str] = "tracr_hist"
    cfg: TracrConfig = TracrConfig("hist")


@dataclass(frozen=True)
class TracrFracPrevs(_Compiled):
    """``frac_prevs`` (``lib.make_frac_prevs``): share of tokens up to each position that are 1 (numerical)."""

    name: ClassVar[str] = "tracr_frac_prevs"
    cfg: TracrConfig = TracrConfig("frac_prevs")


@dataclass(frozen=True)
class TracrDyck(_Compiled):
    """``dyck`` (``lib.make_shuffle_dyck(["()"])``): whether the parentheses are balanced, at every position."""

    name: ClassVar[str] = "tracr_dyck"
    cfg: TracrConfig = TracrConfig("dyck", vocab=("(", ")"), max_seq_len=6)


TRACR_ORGANISMS: tuple[_Compiled, ...] = (TracrReverse(), TracrSort(), TracrHist(), TracrFracPrevs(), TracrDyck())


# --- the built organism -------------------------------------------------------------------------------------------


class BuiltCompiled(Built):
    """A compiled program: ``model`` (the wrapped torch module), its verification inputs, and ``circuit``."""

    def __init__(self, organism: str, seed: int, cfg: TracrConfig, module: CompiledTransformer,
                 probe: dict[str, Tensor], meta: dict[str, Any]) -> None:  # fmt: skip
        self.organism, self.seed, self.cfg = organism, seed, cfg
        self.module = module.eval().requires_grad_(False)
        self.model: Model = wrap(self.module, name=f"organism-{organism}")
        self.probe, self.meta = probe, meta
        self.verification = {}

    @property
    def numerical(self) -> bool:
        """Whether the program's output is a number (else a category: the argmax of the logits)."""
        return bool(self.meta["numerical"])

    @property
    def circuit(self) -> CircuitTruth:
        """Every head and MLP site (nodes) and edge (``a0.h0->m1``, ``input->a1.h0<k>``); the emitted ones are true."""
        t = self.meta["truth"]
        return CircuitTruth(tuple(t["nodes"]), frozenset(t["circuit"]), tuple(t["edges"]),
                            frozenset(t["circuit_edges"]))  # fmt: skip

    @property
    def truth(self) -> dict[str, Any]:
        return self.meta["truth"]

    def tensors(self) -> dict[str, Tensor]:
        meta = torch.tensor(list(json.dumps(self.meta).encode()), dtype=torch.uint8)
        return {**self.module.state_dict(), **{f"probe.{k}": v for k, v in self.probe.items()}, "meta": meta}

    def accuracy(self, ablate: Callable[[Tensor], Sequence[Intervention]] | None = None) -> float:
        """Share of (input, position) outputs equal to the program's, under ``ablate(tokens)`` interventions."""
        right = total = 0
        for tokens, expected in self.groups():
            with torch.no_grad(), self.model.intervene(*(ablate(tokens) if ablate else ())):
                logits = self.model.run(tokens).logits
            assert logits is not None
            ok = _correct(logits[:, 1:], expected[:, 1:], self.numerical, self.cfg.tolerance)
            right, total = right + int(ok.sum()), total + ok.numel()
        return right / total

    def groups(self) -> list[tuple[Tensor, Tensor]]:
        """Verification inputs grouped by length (tracr models have no padding mask): ``(tokens, expected)``."""
        lengths = self.probe["lengths"]
        return [(self.probe["tokens"][lengths == n, : n + 1], self.probe["expected"][lengths == n, : n + 1])
                for n in sorted(set(lengths.tolist()))]  # fmt: skip

    def logit_error(self) -> float:
        """Largest |torch logit - jax logit| over the verification inputs (jax logits stored at build time)."""
        worst = 0.0
        lengths = self.probe["lengths"]
        for n in sorted(set(lengths.tolist())):
            rows = lengths == n
            with torch.no_grad():
                logits = self.module(self.probe["tokens"][rows, : n + 1])
            worst = max(worst, float((logits - self.probe["jax_logits"][rows, : n + 1]).abs().max()))
        return worst

    def verify(self) -> dict[str, float]:
        circuit = self.circuit.circuit
        parts = self.module.components()
        nonzero = {site for site, mod in parts.items() if any(p.abs().sum() > 0 for p in mod.parameters())}
        zeroed = {site: self.accuracy(_fixed([Ablate(site)])) for site in sorted(circuit)}
        others = _fixed([Ablate(site) for site in parts if site not in circuit])
        n = {
            "accuracy": self.accuracy(),
            "max_logit_error": self.logit_error(),
            "inputs": float(len(self.probe["lengths"])),
            "emitted_components": float(len(circuit)),
            "max_accuracy_one_emitted_ablated": max(zeroed.values(), default=0.0),
            "accuracy_others_ablated": self.accuracy(others),
        }
        c = self.cfg
        checks = {
            "torch model reproduces the RASP program on every input": n["accuracy"] == 1.0,
            f"torch logits within {c.max_logit_error} of tracr's": n["max_logit_error"] <= c.max_logit_error,
            "emitted components are exactly the nonzero ones": nonzero == set(circuit),
            "zero-ablating any emitted component changes an output": n["max_accuracy_one_emitted_ablated"] < 1.0,
            "zero-ablating every other component changes nothing": n["accuracy_others_ablated"] == 1.0,
        }  # fmt: skip
        return require(self.organism, self.seed, n, checks)


def _fixed(interventions: list[Intervention]) -> Callable[[Tensor], list[Intervention]]:
    """The same interventions whatever the inputs (zero ablations need no reference)."""
    return lambda tokens: interventions


def _correct(logits: Tensor, expected: Tensor, numerical: bool, tolerance: float) -> Tensor:
    """``[batch pos]`` whether each output matches the program's (categorical: argmax == expected id)."""
    if numerical:
        return (logits[..., 0] - expected).abs() <= tolerance
    return logits.argmax(-1) == expected.long()


def n_inputs(cfg: TracrConfig) -> int:
    """How many inputs of length 1 to ``max_seq_len`` there are."""
    return sum(len(cfg.vocab) ** n for n in range(1, cfg.max_seq_len + 1))


def all_inputs(vocab: Sequence[Any], max_len: int, limit: int, seed: int) -> list[tuple[Any, ...]]:
    """Every sequence over ``vocab`` of length 1 to ``max_len`` if there are at most ``limit``, else a sample."""
    total = sum(len(vocab) ** n for n in range(1, max_len + 1))
    if total <= limit:
        return [x for n in range(1, max_len + 1) for x in itertools.product(vocab, repeat=n)]
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (limit,), generator=gen).tolist()
    return [tuple(vocab[i] for i in torch.randint(len(vocab), (n,), generator=gen).tolist()) for n in lengths]


# --- scorers and methods ------------------------------------------------------------------------------------------


NUMERICALLY_ZERO = 1e-6
"""Node scores below this fraction of a method's largest count as zero (ties) when ranked: the unused blocks of a
compiled model output exact zeros, and a gradient estimate of 1e-12 on a block that matters should not outrank
them by rounding (it would tell a user nothing)."""


def _node_auroc(output: CircuitScores, organism: Any, method: str) -> Score | None:
    """Node AUROC (``_scorers.node_auroc``) with numerically-zero scores tied at zero.

    None when every candidate is in the circuit (``hist``: nothing to rank).
    """
    truth = organism.circuit
    if not set(truth.nodes) - truth.circuit:
        return None
    top = max((abs(v) for v in output.nodes.values()), default=0.0)
    nodes = {n: v if abs(v) > NUMERICALLY_ZERO * top else 0.0 for n, v in output.nodes.items()}
    return node_auroc(CircuitScores(nodes, output.edges), organism, method)


def _edge_auroc(output: CircuitScores, organism: Any, method: str) -> Score | None:
    """Edge AUROC (``_scorers.edge_auroc``) with numerically-zero scores tied at zero, as for nodes."""
    if output.edges is None:
        return None
    top = max((abs(v) for v in output.edges.values()), default=0.0)
    edges = {e: v if abs(v) > NUMERICALLY_ZERO * top else 0.0 for e, v in output.edges.items()}
    return edge_auroc(CircuitScores(output.nodes, edges), organism, method)


def _ablation_scores(organism: BuiltCompiled, how: Literal["zero", "mean"]) -> CircuitScores:
    """Node score = accuracy lost when the component is ablated (mean: over the batch and positions of each length)."""
    nodes = {}
    for site in organism.circuit.nodes:

        def ablate(tokens: Tensor, site: str = site) -> list[Intervention]:
            return [Ablate(site, how=how, reference=tokens, over="batch_pos") if how == "mean" else Ablate(site)]

        nodes[site] = 1.0 - organism.accuracy(ablate)
    return CircuitScores(nodes)


def zero_ablation(organism: Any, ctx: RunContext) -> CircuitScores:
    """Accuracy lost when each head or MLP output is set to zero (``ms.Ablate``)."""
    return _ablation_scores(organism, "zero")


def mean_ablation(organism: Any, ctx: RunContext) -> CircuitScores:
    """Accuracy lost when each head or MLP output is replaced by its mean over inputs and positions."""
    return _ablation_scores(organism, "mean")


def _log_prob(organism: BuiltCompiled, expected: Tensor) -> Callable[[Any], Tensor]:
    """The metric the gradient methods differentiate.

    Summed log-probability of the program's outputs (the output itself for numerical programs), BOS left out.
    """

    def metric(r: Any) -> Tensor:
        out = r.logits[:, 1:]
        if organism.numerical:
            return out[..., 0].sum()
        return out.log_softmax(-1).gather(-1, expected[:, 1:, None].long()).sum()

    return metric


def attribution_patching(organism: Any, ctx: RunContext) -> CircuitScores:
    """Attribution patching toward mean ablation: per input, |grad · (mean - activation)| summed over positions.

    The first-order estimate (Nanda 2023; Syed et al. 2023) of how much replacing a head's or MLP's output by its
    mean (over the inputs and positions of one length) moves the log-probability of the program's outputs (the
    output itself for numerical programs), from one forward and backward pass per input length.
    """
    sites = list(organism.circuit.nodes)
    totals, count = dict.fromkeys(sites, 0.0), 0
    for tokens, expected in organism.groups():
        run = organism.model.run(tokens, cache=sites, grad_at=sites, grad_of=_log_prob(organism, expected))
        for site in sites:
            act, grad = run.cache[site], run.grads[site]
            effect = ((act.mean(dim=(0, 1), keepdim=True) - act) * grad).flatten(1).sum(1)  # per input
            totals[site] += float(effect.abs().sum())
        count += len(tokens)
    return CircuitScores({site: total / count for site, total in totals.items()})


def _receivers(module: CompiledTransformer) -> dict[str, tuple[str, nn.Linear]]:
    """MIB receiver name -> (site of the linear map that reads the residual stream there, that map)."""
    out: dict[str, tuple[str, nn.Linear]] = {}
    for site, part in module.components().items():
        node = edge_node(site)
        if isinstance(part, Head):
            out |= {f"{node}<{p}>": (f"{site}.{p}", getattr(part, p)) for p in ("q", "k", "v")}
        else:
            out[node] = (f"{site}.up", cast(MLP, part).up)
    return out | {"logits": ("unembed", module.unembed)}


def edge_attribution_patching(organism: Any, ctx: RunContext) -> CircuitScores:
    """EAP toward mean ablation (Syed et al. 2023): per edge and input, |Δsender · ∂metric/∂receiver input|.

    ``Δsender`` is the sender's mean (over inputs and positions of one length) minus its output; the receiver's
    input gradient is the gradient at its linear map's output times the map's weight (q, k, v of a head, the
    MLP's first layer, the unembedding). A head's or MLP's node score sums its outgoing edges.
    """
    return _edge_scores(organism, steps=0)


IG_STEPS = 8
"""Integration steps of the compiled programs' EAP-IG."""


def edge_attribution_patching_ig(organism: Any, ctx: RunContext) -> CircuitScores:
    """EAP-IG toward mean ablation (Hanna et al. 2024): gradients averaged along a path of inputs.

    EAP with each receiver's gradient averaged over inputs on the straight line from the mean input (token +
    position embedding, averaged over inputs and positions of one length) to the real one, at the midpoints of
    ``IG_STEPS`` intervals. Where tracr's MLPs are flat at the real input (attribution patching's failure), the
    path can cross their thresholds.
    """
    return _edge_scores(organism, steps=IG_STEPS)


def _edge_scores(organism: Any, steps: int) -> CircuitScores:
    """Edge scores of EAP (``steps=0``: gradients at the real input) or EAP-IG (gradients averaged on the path)."""
    edges = list(organism.circuit.edges)
    module = cast(CompiledTransformer, organism.module)
    components = module.components()
    senders = {edge_node(site): site for site in components}
    receivers = _receivers(module)
    grad_sites = [site for site, _ in receivers.values()]
    totals, count = dict.fromkeys(edges, 0.0), 0
    for tokens, expected in organism.groups():
        metric = _log_prob(organism, expected)
        at_input = steps == 0  # plain EAP: the gradients of this run
        grad_at, grad_of = (grad_sites, metric) if at_input else (None, None)
        run = organism.model.run(tokens, cache=["token_embed", "pos_embed", *components], grad_at=grad_at,
                                 grad_of=grad_of)  # fmt: skip
        acts = {node: run.cache[site] for node, site in senders.items()}
        acts["input"] = run.cache["token_embed"] + run.cache["pos_embed"]  # [pos d] broadcasts over the batch
        delta = {node: act.mean(dim=(0, 1), keepdim=True) - act for node, act in acts.items()}
        if at_input:
            at = run.grads
        else:
            inputs, pos = acts["input"].expand_as(run.cache["token_embed"]), run.cache["pos_embed"]
            at = dict.fromkeys(grad_sites, 0.0)
            for k in range(steps):
                alpha = (k + 0.5) / steps
                point = inputs + (1 - alpha) * delta["input"]  # input + (1 - alpha)(mean - input)
                with organism.model.intervene(Patch("token_embed", point - pos)):
                    step = organism.model.run(tokens, grad_at=grad_sites, grad_of=metric)
                at = {site: at[site] + step.grads[site] / steps for site in grad_sites}
        grads = {name: at[site] @ linear.weight for name, (site, linear) in receivers.items()}
        for edge in edges:
            sender, receiver = edge.split("->")
            effect = (delta[sender] * grads[receiver]).flatten(1).sum(1)  # per input
            totals[edge] += float(effect.abs().sum())
        count += len(tokens)
    edge_scores = {edge: total / count for edge, total in totals.items()}
    nodes = {site: sum(v for e, v in edge_scores.items() if e.split("->")[0] == edge_node(site)) for site in components}
    return CircuitScores(nodes, edge_scores)


def random_components(organism: Any, ctx: RunContext) -> CircuitScores:
    """Uniform random score for every candidate node and edge."""
    gen = torch.Generator().manual_seed(ctx.seed)
    truth = organism.circuit
    nodes = torch.rand(len(truth.nodes), generator=gen).tolist()
    edges = torch.rand(len(truth.edges), generator=gen).tolist()
    return CircuitScores(dict(zip(truth.nodes, nodes, strict=True)), dict(zip(truth.edges, edges, strict=True)))


def oracle_components(organism: Any, ctx: RunContext) -> CircuitScores:
    """Reads the ground truth: 1 for the emitted components and the program's edges, 0 for the rest."""
    truth = organism.circuit
    return CircuitScores({n: float(n in truth.circuit) for n in truth.nodes},
                         {e: float(e in truth.circuit_edges) for e in truth.edges})  # fmt: skip
