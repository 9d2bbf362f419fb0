"""What a bench run runs: a ``Suite`` of organisms, methods and scorers, built explicitly and lazily.

``default_suite()`` builds the built-in suite when it is called (``import mechscope.bench`` registers nothing and
imports no organism or method). A method joins a suite with one declaration on a function
``(organism, ctx) -> output``::

    suite = bench.default_suite()

    @bench.register_method(family="circuits", applies_to=("induction",), suite=suite)
    def my_method(organism, ctx):
        return CircuitScores({"head.0.z[h1]": 0.9, ...})  # node label -> score

    board = bench.run_bench(suite=suite)

Declared without ``suite=``, it joins ``PLUGINS``, which every ``default_suite()`` includes (so a plug-in package's
methods also run under ``mechscope bench``). A method runs on every seed of every organism of its ``family`` (or
only those named in ``applies_to``), and its output is scored by the family's scorers. ``ctx`` carries the seed
for any randomness, whether the run is ``quick``, and a scratch folder. Baselines (``baseline=True``: random,
oracle) are methods too; the leaderboard shows them beside every other method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..organisms._organism import Organism
    from ..organisms._protocols import BuiltOrganism
    from ._scorers import Score


@dataclass(frozen=True)
class RunContext:
    """What a method may use besides the organism."""

    seed: int
    """Seed for the method's own randomness, derived from its name and the organism's seed (so a random method
    never replays the random stream that built the organism)."""
    quick: bool
    """Small budgets (CI); methods with a training budget should scale it down."""
    workdir: Path
    """An empty scratch folder for this run, deleted afterwards."""


Method = Callable[[Any, RunContext], Any]
"""``(built organism, ctx) -> output``. Methods type their organism with their family's protocol
(``mechscope.organisms.CircuitsOrganism``, ``FeaturesOrganism``, …), so the suite, which holds every family's
methods, takes any."""
Scorer = Callable[[Any, Any, str], "Score | list[Score] | None"]
"""``(output, built organism, method name) -> score(s)``; None where the output has nothing this scorer reads."""


@dataclass(frozen=True)
class MethodSpec:
    """A method of a suite."""

    name: str
    family: str
    fn: Method
    applies_to: tuple[str, ...] | None
    """Organism names it runs on; None: every organism of its family."""
    baseline: bool
    """A reference point (random, oracle) rather than a method under test."""
    description: str

    def applies(self, organism: Organism) -> bool:
        """Whether this method runs on ``organism``."""
        if organism.family != self.family:
            return False
        return self.applies_to is None or organism.name in self.applies_to


@dataclass
class Suite:
    """Organisms, the methods run on them and the scorers of each organism family."""

    organisms: dict[str, Organism] = field(default_factory=dict)
    """Organism recipes by name."""
    methods: dict[str, MethodSpec] = field(default_factory=dict)
    """Methods by ``family/name`` (names are unique within a family)."""
    scorers: dict[str, tuple[Scorer, ...]] = field(default_factory=dict)
    """Scorers of each organism family."""
    unavailable: dict[str, str] = field(default_factory=dict)
    """Organisms that cannot be built here (an optional extra is missing), by name -> what to install; runs list
    them as skipped."""

    def add_method(self, fn: Method, *, family: str, applies_to: Sequence[str] | None = None,
                   name: str | None = None, baseline: bool = False) -> MethodSpec:  # fmt: skip
        """Add ``fn(organism, ctx) -> output`` as a method of ``family`` (replacing one of the same name)."""
        doc = (fn.__doc__ or "").strip().splitlines()
        spec = MethodSpec(name or fn.__name__, family, fn, tuple(applies_to) if applies_to is not None else None,
                          baseline, doc[0] if doc else "")  # fmt: skip
        self.methods[f"{family}/{spec.name}"] = spec
        return spec

    def add(self, spec: MethodSpec) -> MethodSpec:
        """Add a method spec as it is (a family adapter's; replacing one of the same family and name)."""
        self.methods[f"{spec.family}/{spec.name}"] = spec
        return spec

    def add_organism(self, organism: Organism) -> Organism:
        """Add an organism recipe (replacing one of the same name)."""
        self.organisms[organism.name] = organism
        self.unavailable.pop(organism.name, None)
        return organism

    def add_scorer(self, family: str, scorer: Scorer) -> None:
        """Add a scorer for ``family`` (a new family starts here)."""
        self.scorers[family] = (*self.scorers.get(family, ()), scorer)

    def include(self, other: Suite) -> Suite:
        """Add everything of ``other`` to this suite (its entries win); returns this suite."""
        for family, scorers in other.scorers.items():
            for scorer in scorers:
                self.add_scorer(family, scorer)
        for organism in other.organisms.values():
            self.add_organism(organism)
        self.methods |= other.methods
        self.unavailable |= {k: v for k, v in other.unavailable.items() if k not in self.organisms}
        return self

    def check(self) -> Suite:
        """Raise ``ValueError`` for a method or organism of a family that has no scorers; returns this suite."""
        for kind, family, name in [*(("method", m.family, m.name) for m in self.methods.values()),
                                   *(("organism", o.family, o.name) for o in self.organisms.values())]:  # fmt: skip
            if family not in self.scorers:
                raise ValueError(f"{kind} {name!r} has family {family!r}, which has no scorers; families with "
                                 f"scorers: {', '.join(self.scorers)}")  # fmt: skip
        return self

    def methods_for(self, organism: Organism) -> list[MethodSpec]:
        """Methods that run on ``organism``: methods under test first, then baselines."""
        found = [m for m in self.methods.values() if m.applies(organism)]
        return sorted(found, key=lambda m: (m.baseline, m.name))

    def baselines(self) -> set[str]:
        """Names of the baseline methods."""
        return {m.name for m in self.methods.values() if m.baseline}

    def score(self, family: str, output: Any, organism: BuiltOrganism, method: str) -> list[Score]:
        """Every applicable score of ``output`` for an organism of ``family``."""
        if family not in self.scorers:
            raise KeyError(f"no scorers for organism family {family!r}; known: {', '.join(self.scorers)}")
        scores: list[Score] = []
        for scorer in self.scorers[family]:
            got = scorer(output, organism, method)
            scores += got if isinstance(got, list) else [got] if got is not None else []
        return scores


PLUGINS = Suite()
"""Methods, organisms and scorers declared without a suite: every ``default_suite()`` includes them. Empty unless a
plug-in declares something; the built-ins are never here."""


def register_method(*, family: str, applies_to: Sequence[str] | None = None, name: str | None = None,
                    baseline: bool = False, suite: Suite | None = None) -> Callable[[Method], Method]:  # fmt: skip
    """Decorator: add ``fn(organism, ctx) -> output`` to ``suite`` (default ``PLUGINS``) as a method of ``family``."""

    def add(fn: Method) -> Method:
        (PLUGINS if suite is None else suite).add_method(fn, family=family, applies_to=applies_to, name=name,
                                                         baseline=baseline)  # fmt: skip
        return fn

    return add


def register_organism(organism: Organism, *, suite: Suite | None = None) -> Organism:
    """Add an organism recipe to ``suite`` (default ``PLUGINS``), replacing one of the same name."""
    return (PLUGINS if suite is None else suite).add_organism(organism)


def register_scorer(family: str, scorer: Scorer, *, suite: Suite | None = None) -> None:
    """Add a scorer for ``family`` to ``suite`` (default ``PLUGINS``)."""
    (PLUGINS if suite is None else suite).add_scorer(family, scorer)
