"""Does a bench run reproduce a committed leaderboard? Each row within the tolerance measured across CPUs.

A leaderboard row is a method's mean score (and its chance level) on one organism and metric. A new run on another
machine trains its organisms afresh, and floating-point paths differ between CPUs, so rows move a little; how much
each row moves was measured by ``benchmarks/bench_tolerance.py`` (one machine, three kernel paths), which writes
the tolerance table ``docs/leaderboard-tolerances.json``. ``compare`` lists every row outside its tolerance, every
row of the reference the run lacks and every row the run adds (a new method or organism: regenerate the reference).
``mechscope bench --check docs/leaderboard.json`` runs it and exits 1 on any finding; CI does so on every push.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TOLERANCE = 0.03
"""Tolerance of a row the tolerance table does not list (the table's floor)."""


def row_key(row: Mapping[str, Any] | Any) -> str:
    """``organism/metric/method``: what names a leaderboard row (a ``Row`` or its JSON form)."""
    get = row.get if isinstance(row, Mapping) else lambda k: getattr(row, k)
    return f"{get('organism')}/{get('metric')}/{get('method')}"


@dataclass(frozen=True)
class Drift:
    """One number of one row outside its tolerance."""

    key: str
    quantity: str
    """``score`` (the row's mean over seeds) or ``chance``."""
    reference: float
    measured: float
    tolerance: float

    def __str__(self) -> str:
        delta = self.measured - self.reference
        return (f"{self.key} {self.quantity}: {self.reference:.4g} committed, {self.measured:.4g} now "
                f"({delta:+.4g}; tolerance {self.tolerance:g})")  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    """What differs between a run and the reference leaderboard."""

    drifts: tuple[Drift, ...] = ()
    missing: tuple[str, ...] = ()
    """Rows of the reference the run does not have."""
    extra: tuple[str, ...] = ()
    """Rows of the run the reference does not have."""
    checked: int = 0
    """Rows compared."""
    untabled: tuple[str, ...] = ()
    """Rows compared with ``DEFAULT_TOLERANCE`` because the tolerance table does not list them."""

    @property
    def ok(self) -> bool:
        return not (self.drifts or self.missing or self.extra)

    def lines(self) -> list[str]:
        """One line per finding, for a terminal or a CI log."""
        out = [f"moved: {d}" for d in self.drifts]
        out += [f"missing: {k} (in the reference, not in this run)" for k in self.missing]
        out += [f"new: {k} (not in the reference: regenerate it if the row is meant)" for k in self.extra]
        return out


def load_tolerances(path: str | Path) -> dict[str, dict[str, Any]]:
    """The ``rows`` of a tolerance table written by ``benchmarks/bench_tolerance.py``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no tolerance table at {path}: run benchmarks/bench_tolerance.py") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON ({err}): regenerate it with benchmarks/bench_tolerance.py") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), dict):
        raise ValueError(f"{path} has no 'rows' table: regenerate it with benchmarks/bench_tolerance.py")
    return data["rows"]


def _differs(reference: float, measured: float, tolerance: float) -> bool:
    if math.isnan(reference) or math.isnan(measured):
        return math.isnan(reference) != math.isnan(measured)
    return abs(measured - reference) > tolerance + 1e-12


def compare(
    measured: Mapping[str, Any], reference: Mapping[str, Any], tolerances: Mapping[str, Mapping[str, Any]]
) -> Comparison:
    """Compare two leaderboards' JSON forms row by row (score and chance), each row within its tolerance.

    ``tolerances`` maps a row key (``row_key``) to ``{"tolerance": t, "chance_tolerance": c}``; rows it lacks use
    ``DEFAULT_TOLERANCE``. Runs of different scale (``--quick`` vs ``--full``) cannot be compared: ValueError.
    """
    if bool(measured.get("quick", True)) != bool(reference.get("quick", True)):
        scale = {True: "--quick", False: "--full"}
        raise ValueError(f"this run is {scale[bool(measured.get('quick', True))]} but the reference is "
                         f"{scale[bool(reference.get('quick', True))]}: compare runs of the same scale")  # fmt: skip
    ours = {row_key(r): r for r in measured["rows"]}
    theirs = {row_key(r): r for r in reference["rows"]}
    drifts, untabled = [], []
    for key in sorted(ours.keys() & theirs.keys()):
        table = tolerances.get(key)
        if table is None:
            untabled.append(key)
            table = {}
        for quantity, field_name, tol_name in (
            ("score", "mean", "tolerance"),
            ("chance", "chance", "chance_tolerance"),
        ):
            tol = float(table.get(tol_name, DEFAULT_TOLERANCE))
            ref, now = float(theirs[key][field_name]), float(ours[key][field_name])
            if _differs(ref, now, tol):
                drifts.append(Drift(key, quantity, ref, now, tol))
    return Comparison(
        drifts=tuple(drifts),
        missing=tuple(sorted(theirs.keys() - ours.keys())),
        extra=tuple(sorted(ours.keys() - theirs.keys())),
        checked=len(ours.keys() & theirs.keys()),
        untabled=tuple(untabled),
    )
