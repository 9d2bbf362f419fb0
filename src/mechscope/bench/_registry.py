"""What the bench runs: registered organisms, methods and scorers.

A method joins the bench with one declaration on a function ``(organism, ctx) -> output``::

    @register_method(family="circuits", applies_to=("induction",))
    def my_method(organism, ctx):
        return {"head.0.z[h1]": 0.9, ...}  # node label -> score

It is run on every seed of every organism of its ``family`` (or only those named in ``applies_to``), and its
output is scored by the family's scorers (``_scorers.SCORERS``). ``ctx`` carries the seed for any randomness,
whether the run is ``quick``, and a scratch folder. Baselines (``baseline=True``: random, oracle) are methods too;
the leaderboard shows them beside every other method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..organisms._organism import Built, Organism
from ._scorers import SCORERS, Score


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


Method = Callable[[Built, RunContext], Any]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method."""

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


METHODS: dict[str, MethodSpec] = {}
"""Registered methods by name (names are unique within a family: ``family/name``)."""
ORGANISMS: dict[str, Organism] = {}
"""Registered organism recipes by name."""
PROVIDERS: list[Callable[[], list[MethodSpec]]] = []
"""A method family's adapter: lists the family's declared methods as bench methods each time it is called (so a
method declared after the bench was imported is run too); see ``bench/_circuits.py``."""
UNAVAILABLE: dict[str, str] = {}
"""Organisms that cannot be built here (an optional extra is missing), by name -> what to install; runs list them
as skipped."""


def register_method(
    *, family: str, applies_to: Sequence[str] | None = None, name: str | None = None, baseline: bool = False
) -> Callable[[Method], Method]:
    """Register ``fn(organism, ctx) -> output`` as a method of ``family`` (see the module docstring)."""
    if family not in SCORERS:
        raise ValueError(f"unknown family {family!r}; families with scorers: {', '.join(SCORERS)}")

    def add(fn: Method) -> Method:
        method = name or fn.__name__
        doc = (fn.__doc__ or "").strip().splitlines()
        spec = MethodSpec(method, family, fn, tuple(applies_to) if applies_to is not None else None, baseline,
                          doc[0] if doc else "")  # fmt: skip
        METHODS[f"{family}/{method}"] = spec
        return fn

    return add


def register_organism(organism: Organism) -> Organism:
    """Add an organism recipe to the bench (replacing one of the same name)."""
    if organism.family not in SCORERS:
        raise ValueError(f"organism {organism.name!r} has family {organism.family!r}, which has no scorers")
    ORGANISMS[organism.name] = organism
    return organism


def register_scorer(family: str, scorer: Callable[[Any, Built, str], Score | list[Score] | None]) -> None:
    """Add a scorer for ``family`` (a new family starts here, e.g. ``trojans``)."""
    SCORERS[family] = (*SCORERS.get(family, ()), scorer)


def register_provider(provider: Callable[[], list[MethodSpec]]) -> Callable[[], list[MethodSpec]]:
    """Add a method family's adapter (see ``PROVIDERS``)."""
    PROVIDERS.append(provider)
    return provider


def methods_for(organism: Organism) -> list[MethodSpec]:
    """Registered and provided methods that run on ``organism``: methods under test first, then baselines."""
    provided = [m for provider in PROVIDERS for m in provider()]
    found = [m for m in [*METHODS.values(), *provided] if m.applies(organism)]
    return sorted(found, key=lambda m: (m.baseline, m.name))
