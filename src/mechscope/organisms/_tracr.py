"""Compiled transformers: RASP programs compiled by tracr into weights, converted to plain torch modules.

tracr (Lindner et al. 2023, "Tracr: Compiled Transformers as a Laboratory for Interpretability") compiles a RASP
program (Weiss et al. 2021, "Thinking Like Transformers") into a transformer whose every head and MLP implements
one known operation of the program, each reading and writing its own labelled subspace of the residual stream.
That gives interpretability an exact ground truth: which heads and MLPs implement the program (the blocks the
compiler emitted; every other block of the assembled model has all-zero weights) and which edges carry its
information (an emitted sender writes a residual dimension that an emitted receiver reads: tracr gives each value
of the program its own dimensions, so a shared dimension is a data-flow edge of the program).

The compiled haiku parameters are copied into ``CompiledTransformer`` (``_tracr_model``), a small torch module
(token + position embeddings, per layer an attention with one module per head and an MLP, no layer norm, additive
residual, linear unembedding). The organism's ``model`` has the uniform sites (``resid_pre.L``, ``head.L.q`` ...)
and every head (``blocks.0.attn.heads.1``) and MLP (``blocks.0.mlp``) as a site; its ``residual`` adapter is the
residual-model contract, so the library's circuit methods run on it with ``task()`` (every input of one length,
scored at the last position by ``program_output``). Nodes and edges of the ground truth are graph ids (``a1.h0``,
``m0``, ``a0.h0->a1.h0<k>``). tracr and jax are needed to *build* an organism (``pip install -e .[tracr]``); a
cached one loads with torch alone.

Verification (every input of length 1 to ``max_seq_len``, or a seeded sample when there are more than
``max_inputs``): the torch model reproduces the RASP program's output at every position, its logits equal the jax
model's to ``max_logit_error``, the emitted blocks are exactly the ones with nonzero weights, zero-ablating any
emitted block changes some output, and zero-ablating every other block at once changes none.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from ..circuits._contrast import EVERY_POSITION
from ..circuits._ids import NodeId
from ..core._interventions import Ablate, Intervention
from ..core._model import Model
from ..data._task import Task
from ._organism import Built, Organism, require
from ._tracr_model import CompiledResidual, CompiledTransformer, Dims, compiled_model, node_of, site_of
from ._truth import CircuitTruth

BOS = "BOS"
"""The compiler's beginning-of-sequence token (tracr prepends it to every input)."""


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
    layout: int = 2
    """Version of what a build stores beside the weights (2: the residual labels and every head's compiled
    selector). A cached organism records its config, so bumping this rebuilds caches made before."""


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
    """A compiled program: ``model`` (uniform sites, module paths), ``residual`` (the contract), ``task()``."""

    def __init__(self, organism: str, seed: int, cfg: TracrConfig, module: CompiledTransformer,
                 probe: dict[str, Tensor], meta: dict[str, Any]) -> None:  # fmt: skip
        self.organism, self.seed, self.cfg = organism, seed, cfg
        self.module = module.eval().requires_grad_(False)
        self.model: Model = compiled_model(self.module, name=f"organism-{organism}")
        self.residual = CompiledResidual(self.model)
        """The residual-model contract: pass it (or ``model``) to ``circuits.eap``, ``acdc``, ``faithfulness``..."""
        self.probe, self.meta = probe, meta
        self.verification = {}

    @property
    def numerical(self) -> bool:
        """Whether the program's output is a number (else a category: the argmax of the logits)."""
        return bool(self.meta["numerical"])

    @property
    def circuit(self) -> CircuitTruth:
        """Every head and MLP (``a1.h0``, ``m0``) and edge (``input->a1.h0<k>``); the emitted ones are true."""
        t = self.meta["truth"]
        nodes = tuple(node_of(site).format() for site in t["nodes"])  # the build records module paths
        circuit = frozenset(node_of(site).format() for site in t["circuit"])
        return CircuitTruth(nodes, circuit, tuple(t["edges"]), frozenset(t["circuit_edges"]))

    @property
    def selectors(self) -> dict[str, dict[str, Any]]:
        """Every emitted head's compiled selector (and value map) in the residual basis, by head site.

        Per head site (``blocks.1.attn.heads.0``): ``query`` / ``key``, the residual dimensions of the one-hot
        directions of the selector's query and key values (``residual_labels`` names them); ``selector[i][j]``,
        whether query value ``i`` attends to key value ``j``; ``predicate``; ``ov`` for a head that aggregates a
        categorical value (else None): ``input`` and ``output`` value dimensions and ``map[i]``, the output index
        that attended value ``i`` is written as.
        """
        return dict(self.meta["truth"]["selectors"])

    @property
    def residual_labels(self) -> list[str]:
        """The compiler's name of every residual dimension (``tokens:3``, ``indices:0``, ``one``...)."""
        return list(self.meta["residual_labels"])

    def site(self, node: str) -> str:
        """The module path of a head or MLP node: ``a1.h0`` -> ``blocks.1.attn.heads.0``."""
        return site_of(NodeId.parse(node))

    def task(self, length: int | None = None) -> Task:
        """Every verification input of one ``length`` (default: the longest) as a task for circuit methods.

        Clean and corrupt prompts are both the inputs, so ``ablation="mean"`` gives mean ablation over them (the
        ``patch`` ablation would change nothing). ``answers`` is ``[batch pos]``: the program's output at every
        position (its token id; numerical programs: the value in units of ``1 / TARGET_SCALE``, as answers are
        integers), scored at every position by ``program_output`` (the task's readout is ``EVERY_POSITION``);
        ``wrongs`` repeats it (the metric reads no wrong answer).
        """
        groups = {tokens.shape[1] - 1: (tokens, expected) for tokens, expected in self.groups()}
        n = max(groups) if length is None else length
        if n not in groups:
            raise ValueError(f"{self.organism}: no inputs of length {n} (lengths: {sorted(groups)})")
        tokens, expected = groups[n]
        answers = (expected * TARGET_SCALE).round().long() if self.numerical else expected.long()  # [batch pos]
        meta = {"numerical": self.numerical, "length": n, "readout": EVERY_POSITION}
        return Task(f"{self.organism}-len{n}", tokens, tokens.clone(), answers, answers.clone(), meta)

    def tasks(self) -> list[Task]:
        """``task(n)`` for every input length, shortest first."""
        return [self.task(tokens.shape[1] - 1) for tokens, _ in self.groups()]

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
        circuit = set(self.meta["truth"]["circuit"])  # module paths
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


TARGET_SCALE = 2**20
"""A numerical program's task stores its target output ``y`` as the integer ``round(y * TARGET_SCALE)``."""


def program_output(logits: Float[Tensor, "batch pos d_out"], task: Task) -> Float[Tensor, " batch"]:
    """The metric of a compiled program's task (``BuiltCompiled.task``): per input, summed over positions.

    BOS is left out. Categorical programs: the log-probability of the program's output. Numerical programs: minus
    the squared error of the output (the output itself would be blind to mean ablation: a linear read-out keeps
    its mean). Both are highest on the intact model and fall as the computation is ablated.
    """
    answers = task.answers.to(logits.device)[:, 1:]  # [batch pos]
    out = logits[:, 1:]
    if task.metadata["numerical"]:
        return -(out[..., 0] - answers.to(out.dtype) / TARGET_SCALE).square().sum(-1)
    return out.log_softmax(-1).gather(-1, answers[..., None])[..., 0].sum(-1)


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
