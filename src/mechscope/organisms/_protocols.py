"""What a method (or scorer) may read from a built organism of each family: one small protocol per family.

The bench's methods and scorers are annotated with these instead of ``Any``, so a new organism of a family only has
to offer its family's members, and the type checker says which one it lacks. Every member is read-only. The
built-in organisms are checked against their family's protocol by the type checker (``_conforms`` at the bottom).

==============  =====================  ===========================================================================
family          protocol               members
==============  =====================  ===========================================================================
circuits        ``CircuitsOrganism``   ``model``, ``task`` (clean/corrupt prompts), ``circuit`` (``CircuitTruth``)
compiled        ``CompiledOrganism``   ``model``, ``residual`` (its residual-model adapter), ``circuit``,
                                       ``task(length)``, ``tasks()``, ``site(node)``, ``accuracy(ablate)``
features        ``FeaturesOrganism``   ``data`` (``SyntheticData``: activations and their true features)
frequencies     ``FrequenciesOrganism`` ``model``, ``p``, ``frequencies``, ``key_frequencies``
descriptions    ``DescriptionsOrganism`` ``domain``, ``functions`` (``NumericFunction`` black boxes)
trojans         ``TrojanOrganism``     ``model``, ``twin``, ``kind``, ``target``, ``answer``, ``candidates``,
                                       ``probe(n)``, ``inserted(i, n)``, ``targets``, ``clean(n)``
attribution     ``AttributionOrganism`` ``model``, ``twin``, ``probe(n)``, ``twin_probe(n)`` (``BlockImages``)
graphs          ``GraphsOrganism``     ``model``, ``output_ids``, ``transcoders()`` (the oracle), ``prompts(n, seed)``,
                                       ``graph_prompts(n, seed)``, ``true_graph(tokens)``
autointerp      ``AutointerpOrganism`` ``planted`` (latents with true descriptions), ``database(folder)``
representations ``RepresentationsOrganism`` ``model``, ``site``, ``direction`` (the planted concept), ``steer_norm``,
                                       ``prompts(n, seed)``, ``labelled(n, seed)``, ``pairs(n, seed)``,
                                       ``behaviours(tokens)``
==============  =====================  ===========================================================================

All of them are ``BuiltOrganism``: its recipe's name (``organism``) and the ``seed`` it was built from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor

from ..autointerp._contexts import NegativePool
from ..autointerp._planted import Planted
from ..core._interventions import Intervention
from ..core._model import Model
from ..data._task import Task
from ..data.triggers import Trigger
from ..features._dictionary import Dictionary
from ..features._synthetic import SyntheticData
from ._blocks import BlockImages
from ._numeric import NumericFunction
from ._planted_graph import TrueGraph
from ._tracr_model import CompiledResidual
from ._truth import CircuitTruth


class BuiltOrganism(Protocol):
    """Any built organism: the name of its recipe and its seed (every score records both)."""

    @property
    def organism(self) -> str:
        """Name of the organism recipe."""

    @property
    def seed(self) -> int:
        """Seed of the build."""


class CircuitsOrganism(BuiltOrganism, Protocol):
    """A model with a planted circuit, a task that exercises it, and the circuit as truth."""

    @property
    def model(self) -> Model:
        """The model (a mechscope ``Model`` with a ``ModelConfig``, so circuit methods can build its graph)."""

    @property
    def task(self) -> Task:
        """Clean/corrupt prompt pairs and the metric the circuit computes."""

    @property
    def circuit(self) -> CircuitTruth:
        """Candidate nodes and edges, and which of them are the circuit."""


class CompiledOrganism(BuiltOrganism, Protocol):
    """A compiled program: a model whose every component's role is known, and its residual-model adapter."""

    @property
    def model(self) -> Model:
        """The compiled model, wrapped."""

    @property
    def residual(self) -> CompiledResidual:
        """The residual-model contract of the compiled model (what the circuit methods run on)."""

    @property
    def circuit(self) -> CircuitTruth:
        """Candidate components and edges, and which of them the program uses."""

    def task(self, length: int | None = None) -> Task:
        """Clean/corrupt inputs of one length (default: the longest)."""

    def tasks(self) -> list[Task]:
        """One task per input length."""

    @property
    def selectors(self) -> dict[str, dict[str, Any]]:
        """Every emitted head's compiled selector and value map in the residual basis, by head site."""

    def site(self, node: str) -> str:
        """The model site of a candidate node."""

    def accuracy(self, ablate: Callable[[Tensor], Sequence[Intervention]] | None = None) -> float:
        """Share of probe inputs the model computes correctly, under the interventions ``ablate(tokens)``."""


class FeaturesOrganism(BuiltOrganism, Protocol):
    """Activations built from known sparse features."""

    @property
    def data(self) -> SyntheticData:
        """The activations ``x``, the true feature directions, their coefficients and firing mask."""


class FrequenciesOrganism(BuiltOrganism, Protocol):
    """A modular-arithmetic model whose key Fourier frequencies are known."""

    @property
    def model(self) -> Model:
        """The model; ``model.run(pairs)`` gives logits for every ``(a, b)`` pair."""

    @property
    def p(self) -> int:
        """The modulus."""

    @property
    def frequencies(self) -> list[int]:
        """Candidate frequencies."""

    @property
    def key_frequencies(self) -> list[int]:
        """The frequencies the model uses."""


class DescriptionsOrganism(BuiltOrganism, Protocol):
    """Black-box functions, each corrupted on a known interval."""

    @property
    def domain(self) -> tuple[float, float]:
        """Where the functions are defined."""

    @property
    def functions(self) -> Sequence[NumericFunction]:
        """The functions (callable on a tensor), each with its true corrupted ``interval``."""


class TrojanOrganism(BuiltOrganism, Protocol):
    """A trojaned classifier, its clean twin, and candidate triggers of which one is planted."""

    @property
    def model(self) -> Model:
        """The trojaned model."""

    @property
    def twin(self) -> Model:
        """The same recipe trained without the trojan."""

    @property
    def kind(self) -> str:
        """Trigger kind (``patch``, ``blend``, ``natural``)."""

    @property
    def target(self) -> int:
        """Class the trigger forces."""

    @property
    def answer(self) -> int:
        """Index of the planted trigger in ``candidates``."""

    @property
    def candidates(self) -> tuple[Trigger, ...]:
        """Candidate triggers a method chooses from."""

    def probe(self, n: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Triggered images, their trigger masks and the same images clean."""

    def inserted(self, index: int, n: int | None = None) -> tuple[Tensor, Tensor]:
        """Clean images with candidate ``index`` inserted, and its masks."""

    @property
    def targets(self) -> tuple[int, ...]:
        """Every class a planted trigger forces (``target`` first; several when several trojans are planted)."""

    def clean(self, n: int | None = None) -> Tensor:
        """Held-out clean images of every class (what an auditor holds), the first ``n``."""


class AttributionOrganism(BuiltOrganism, Protocol):
    """A classifier that reads a signal block, and a twin trained with the block moved."""

    @property
    def model(self) -> Model:
        """The classifier."""

    @property
    def twin(self) -> Model:
        """The moved-block twin."""

    def probe(self, n: int | None = None) -> BlockImages:
        """Probe images of the model, their labels and signal-block masks."""

    def twin_probe(self, n: int | None = None) -> BlockImages:
        """Probe images of the twin (block moved)."""


class GraphsOrganism(BuiltOrganism, Protocol):
    """A model whose MLPs are exactly sparse over known features, with the true feature graph of any prompt."""

    @property
    def model(self) -> Model:
        """The model."""

    @property
    def output_ids(self) -> list[int]:
        """The token ids the planted features write to (candidate logit nodes)."""

    def transcoders(self) -> Mapping[int, Dictionary]:
        """The oracle transcoders (``ln2.L -> mlp_out.L``), one per layer: with them the replacement is exact."""

    def prompts(self, n: int, seed: int) -> Tensor:
        """``n`` random prompts ``[n pos]`` from the organism's distribution (for training transcoders)."""

    def graph_prompts(self, n: int, seed: int) -> Tensor:
        """``n`` prompts ``[n pos]`` whose last position exercises the planted graph."""

    def true_graph(self, tokens: Tensor) -> TrueGraph:
        """The active features and planted edges of one prompt."""


class AutointerpOrganism(BuiltOrganism, Protocol):
    """A feature database whose latents' meanings are known (planted or FIND-style latents on a corpus sample)."""

    @property
    def planted(self) -> tuple[Planted, ...]:
        """The latents in order: name, true description, activation function."""

    def database(self, folder: Path) -> tuple[Path, NegativePool]:
        """A fresh copy of the feature database in ``folder`` and its negative pool."""


class RepresentationsOrganism(BuiltOrganism, Protocol):
    """A model that computes a known linear concept at a site and reads it out as one behaviour and not another."""

    @property
    def model(self) -> Model:
        """The model."""

    @property
    def site(self) -> str:
        """Where the concept direction lives."""

    @property
    def direction(self) -> Tensor:
        """The planted concept direction at ``site`` (unit norm)."""

    @property
    def steer_norm(self) -> float:
        """Norm of the vector a steering check adds at ``site``."""

    def prompts(self, n: int, seed: int) -> Tensor:
        """``n`` random prompts ``[n pos]``."""

    def labelled(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``n`` random prompts and their concept labels (0/1)."""

    def pairs(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``n`` contrastive pairs: positive-concept prompts and negative-concept prompts."""

    def behaviours(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Per prompt, the planted behaviour and the other one (under whatever interventions are active)."""


if TYPE_CHECKING:  # the type checker verifies that every built-in organism offers its family's members
    from ._blocks import BuiltBlocks
    from ._induction import BuiltInduction
    from ._modadd import BuiltModAdd
    from ._numeric import BuiltNumeric
    from ._planted_concept import BuiltPlantedConcept
    from ._planted_graph import BuiltPlantedGraph
    from ._planted_text import BuiltKnownText
    from ._superposition import BuiltFeatures, BuiltTMS
    from ._tracr import BuiltCompiled
    from ._trojan import BuiltTrojan

    def _conforms(
        a: BuiltInduction, b: BuiltCompiled, c: BuiltFeatures, d: BuiltTMS, e: BuiltModAdd, f: BuiltNumeric,
        g: BuiltTrojan, h: BuiltBlocks, i: BuiltPlantedGraph, j: BuiltKnownText, k: BuiltPlantedConcept,
    ) -> tuple[CircuitsOrganism, CompiledOrganism, FeaturesOrganism, FeaturesOrganism, FrequenciesOrganism,
               DescriptionsOrganism, TrojanOrganism, AttributionOrganism, GraphsOrganism,
               AutointerpOrganism, RepresentationsOrganism]:  # fmt: skip
        return a, b, c, d, e, f, g, h, i, j, k
