"""Numeric-function organism: functions with known formulas and one local corruption each (FIND-style).

FIND (Schwettmann et al. 2023, "FIND: A Function Description Benchmark for Evaluating Interpretability Methods",
section 3.1) tests automated interpretability agents on black-box functions whose ground truth is known,
including functions corrupted on a sub-interval of their domain, which a good description must mention. This
organism draws one function of each family in ``FAMILIES`` with seeded parameters, and corrupts it on a seeded
interval (a constant shift, or a constant value). Methods get black-box access (``NumericFunction.__call__``);
the truth is the formula, the parameters and the corrupted interval, which the ``descriptions`` scorer compares
a method's predicted interval with (interval IoU; descriptions of the formula can be scored later from the same
truth).

Verification: on a dense grid, each function equals its clean formula everywhere outside the interval and
differs from it everywhere inside.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ._organism import Built, Organism, require

Formula = Callable[[Tensor, list[float]], Tensor]

FAMILIES: dict[str, tuple[str, Formula]] = {
    "linear": ("{0:g} * x + {1:g}", lambda x, q: q[0] * x + q[1]),
    "quadratic": ("{0:g} * (x - {1:g})**2", lambda x, q: q[0] * (x - q[1]) ** 2),
    "cubic": ("{0:g} * x**3 / 100 + {1:g} * x", lambda x, q: q[0] * x**3 / 100 + q[1] * x),
    "abs": ("{0:g} * |x - {1:g}|", lambda x, q: q[0] * (x - q[1]).abs()),
    "sine": ("{0:g} * sin({1:g} * x)", lambda x, q: q[0] * torch.sin(q[1] * x)),
    "relu": ("{0:g} * max(0, x - {1:g})", lambda x, q: q[0] * (x - q[1]).clamp(min=0)),
    "exp": ("{0:g} * exp(x / {1:g})", lambda x, q: q[0] * torch.exp(x / q[1])),
    "tanh": ("{0:g} * tanh(x / {1:g})", lambda x, q: q[0] * torch.tanh(x / q[1])),
}
"""Function families: a formula template and its implementation over parameters ``q``."""

_PARAM_RANGES: dict[str, list[tuple[float, float]]] = {
    "linear": [(0.5, 3.0), (-5.0, 5.0)],
    "quadratic": [(0.1, 1.0), (-4.0, 4.0)],
    "cubic": [(0.5, 2.0), (-2.0, 2.0)],
    "abs": [(0.5, 3.0), (-5.0, 5.0)],
    "sine": [(1.0, 5.0), (0.5, 2.0)],
    "relu": [(0.5, 3.0), (-5.0, 5.0)],
    "exp": [(0.5, 2.0), (4.0, 8.0)],
    "tanh": [(1.0, 5.0), (1.0, 4.0)],
}


@dataclass(frozen=True)
class NumericConfig:
    """Domain, corruption sizes and verification grid of the numeric-function organism."""

    domain: tuple[float, float] = (-10.0, 10.0)
    """Inputs are drawn from this interval."""
    width: tuple[float, float] = (2.0, 5.0)
    """Width of the corrupted interval, drawn uniformly from this range."""
    min_change: float = 1.0
    """Inside the interval a function must differ from its formula by at least this."""
    grid: int = 2001
    """Points of the verification grid over the domain."""


@dataclass(frozen=True)
class NumericFunction:
    """One black-box function: a formula from ``FAMILIES`` with parameters, corrupted on ``interval``."""

    name: str
    family: str
    params: tuple[float, ...]
    interval: tuple[float, float]
    """The corrupted interval ``[lo, hi]``."""
    corruption: Literal["shift", "constant"]
    """``shift``: the formula plus ``amount``; ``constant``: the value ``amount``."""
    amount: float

    @property
    def formula(self) -> str:
        """The clean formula as text."""
        return FAMILIES[self.family][0].format(*self.params)

    def clean(self, x: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
        """The formula without the corruption."""
        return FAMILIES[self.family][1](x, list(self.params))

    def __call__(self, x: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
        """Evaluate the (corrupted) function."""
        y = self.clean(x)
        inside = (x >= self.interval[0]) & (x <= self.interval[1])
        bad = y + self.amount if self.corruption == "shift" else torch.full_like(y, self.amount)
        return torch.where(inside, bad, y)

    def to_dict(self) -> dict[str, Any]:
        """JSON ground truth."""
        return {"name": self.name, "family": self.family, "formula": self.formula, "params": list(self.params),
                "interval": list(self.interval), "corruption": self.corruption, "amount": self.amount}  # fmt: skip


@dataclass(frozen=True)
class NumericFunctions(Organism):
    """A seeded set of corrupted numeric functions, one per family (see the module docstring)."""

    name: ClassVar[str] = "numeric_functions"
    family: ClassVar[str] = "descriptions"
    cfg: NumericConfig = NumericConfig()

    def build(self, seed: int) -> BuiltNumeric:
        gen = torch.Generator().manual_seed(seed)

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=gen))

        lo, hi = self.cfg.domain
        functions = []
        for family in FAMILIES:
            params = tuple(round(uniform(a, b), 3) for a, b in _PARAM_RANGES[family])
            width = uniform(*self.cfg.width)
            start = uniform(lo + 0.5, hi - 0.5 - width)
            kind: Literal["shift", "constant"] = "shift" if torch.rand((), generator=gen) < 0.5 else "constant"
            f = NumericFunction(family, family, params, (round(start, 3), round(start + width, 3)), kind, 0.0)
            functions.append(_with_amount(f, self.cfg, uniform))
        return BuiltNumeric(self.cfg, seed, tuple(functions))

    def load(self, seed: int, tensors: dict[str, Tensor]) -> BuiltNumeric:
        spec = tensors["spec"]  # [function 6]: params (2), interval (2), corruption (0 shift / 1 constant), amount
        functions = tuple(
            NumericFunction(family, family, tuple(round(v, 3) for v in row[:2].tolist()),
                            (round(float(row[2]), 3), round(float(row[3]), 3)),
                            "shift" if row[4] == 0 else "constant", float(row[5]))
            for family, row in zip(FAMILIES, spec.double(), strict=True)
        )  # fmt: skip
        return BuiltNumeric(self.cfg, seed, functions)


def _with_amount(f: NumericFunction, cfg: NumericConfig, uniform: Callable[[float, float], float]) -> NumericFunction:
    """Pick a corruption amount that moves every point of the interval by at least ``2 * min_change``."""
    x = torch.linspace(*f.interval, 200)
    y = f.clean(x)
    spread = float(y.max() - y.min())
    size = max(2 * cfg.min_change, 0.5 * spread) * (1 + uniform(0.0, 1.0))
    sign = 1.0 if uniform(0.0, 1.0) < 0.5 else -1.0
    amount = sign * size if f.corruption == "shift" else float(y.mean()) + sign * (spread / 2 + size)
    return NumericFunction(f.name, f.family, f.params, f.interval, f.corruption, round(amount, 3))


class BuiltNumeric(Built):
    """The organism's ``functions``; each is a black box with a known formula and corrupted interval."""

    organism = "numeric_functions"

    def __init__(self, cfg: NumericConfig, seed: int, functions: tuple[NumericFunction, ...]) -> None:
        self.cfg, self.seed, self.functions = cfg, seed, functions
        self.verification = {}

    @property
    def domain(self) -> tuple[float, float]:
        """Where the functions are defined."""
        return self.cfg.domain

    @property
    def truth(self) -> dict[str, Any]:
        return {"domain": list(self.cfg.domain), "functions": [f.to_dict() for f in self.functions]}

    def tensors(self) -> dict[str, Tensor]:
        rows = [[*f.params, *f.interval, 0.0 if f.corruption == "shift" else 1.0, f.amount] for f in self.functions]
        return {"spec": torch.tensor(rows, dtype=torch.float64)}

    def verify(self) -> dict[str, float]:
        x = torch.linspace(*self.cfg.domain, self.cfg.grid, dtype=torch.float64)
        outside_err, inside_gap = 0.0, math.inf
        for f in self.functions:
            inside = (x >= f.interval[0]) & (x <= f.interval[1])
            diff = (f(x) - f.clean(x)).abs()
            outside_err = max(outside_err, float(diff[~inside].max()))
            inside_gap = min(inside_gap, float(diff[inside].min()) if inside.any() else 0.0)
        n = {"max_error_outside": outside_err, "min_change_inside": inside_gap, "n_functions": len(self.functions)}
        checks = {
            "functions equal their formulas outside the corrupted interval": outside_err < 1e-9,
            f"corruption moves every point inside by >= {self.cfg.min_change}": inside_gap >= self.cfg.min_change,
        }
        return require(self.organism, self.seed, n, checks)
