"""The bench runner: every registered method on every organism it applies to, over seeds, into a leaderboard.

``run_bench`` obtains each organism seed (built, verified and cached on first use), runs each applicable method in
a scratch folder, scores its output with the family's scorers, attaches the baseline methods' scores to every
score of the same organism, seed and metric, and aggregates mean and spread over seeds. A method that raises is
recorded as an error of the leaderboard, not a crash of the bench; so is an organism seed whose build fails
verification (it is never scored). The ``Leaderboard`` is data (``to_dict`` / ``from_dict``); ``mechscope.report``
renders it as markdown and HTML.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._registry import RunContext, Suite
from ._scorers import Score

if TYPE_CHECKING:
    from ..organisms._organism import Organism

QUICK_SEEDS = (0, 1, 2)
THREADS = 2
"""torch threads a bench run pins by default (CI's machines have two cores)."""


class BenchFailure(RuntimeError):
    """An organism failed its verification or a method raised, in a run that does not keep going."""


FULL_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Row:
    """One line of the leaderboard: a method's score on one organism and metric, over seeds."""

    organism: str
    metric: str
    method: str
    baseline: bool
    mean: float
    std: float
    """Sample standard deviation over seeds (0 with one seed)."""
    n: int
    """Seeds scored."""
    chance: float
    """Mean chance level over seeds."""
    higher_is_better: bool
    baselines: dict[str, float]
    """Mean score of each baseline method on the same organism and metric."""
    seconds: float
    """Mean wall time of the method per seed."""
    spread: float = 0.0
    """Mean over seeds of each score's own spread (CPR/CMD: over random orders of tied scores); 0 when none."""
    chance_spread: float = 0.0
    """Mean over seeds of the chance level's spread (CPR/CMD: over random circuits); 0 when exact."""


@dataclass(frozen=True)
class Leaderboard:
    """Every score of a bench run, the organisms' verification numbers, and any method errors."""

    scores: tuple[Score, ...]
    organisms: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Organism -> seed (as a string) -> verification numbers."""
    errors: tuple[str, ...] = ()
    """``organism/seed/method: message`` for each method that raised."""
    quick: bool = True
    seconds: float = 0.0
    """Wall time of the run."""
    skipped: tuple[str, ...] = ()
    """``organism: why`` for each organism that cannot be built here (``UNAVAILABLE``)."""
    run: dict[str, Any] = field(default_factory=dict)
    """How the run was made: machine, CPU kernel path, torch threads, package versions, seeds per organism."""

    def rows(self) -> list[Row]:
        """Scores aggregated over seeds, per organism, metric and method (methods under test first)."""
        groups: dict[tuple[str, str, str], list[Score]] = defaultdict(list)
        for s in self.scores:
            groups[s.organism, s.metric, s.method].append(s)
        baseline_names = {name for s in self.scores for name in s.baselines}
        rows = []
        for (organism, metric, method), group in groups.items():
            values = [s.value for s in group]
            names = sorted({name for s in group for name in s.baselines})
            rows.append(Row(
                organism, metric, method, method in baseline_names, statistics.fmean(values),
                statistics.stdev(values) if len(values) > 1 else 0.0, len(values),
                statistics.fmean(s.chance for s in group), group[0].higher_is_better,
                {b: statistics.fmean(s.baselines[b] for s in group if b in s.baselines) for b in names},
                statistics.fmean(s.seconds for s in group), statistics.fmean(s.spread for s in group),
                statistics.fmean(s.chance_spread for s in group),
            ))  # fmt: skip
        return sorted(rows, key=lambda r: (r.organism, r.metric, r.baseline, -r.mean if r.higher_is_better else r.mean))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: aggregated rows, every per-seed score, organisms, errors."""
        return {
            "quick": self.quick,
            "seconds": round(self.seconds, 2),
            "rows": [r.__dict__ for r in self.rows()],
            "scores": [s.to_dict() for s in self.scores],
            "organisms": self.organisms,
            "errors": list(self.errors),
            "skipped": list(self.skipped),
            "run": self.run,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Leaderboard:
        """The leaderboard ``to_dict`` wrote (rows are recomputed from the scores)."""
        return cls(tuple(Score.from_dict(s) for s in data["scores"]), dict(data.get("organisms", {})),
                   tuple(data.get("errors", ())), bool(data.get("quick", True)), float(data.get("seconds", 0.0)),
                   tuple(data.get("skipped", ())), dict(data.get("run", {})))  # fmt: skip


def run_bench(
    quick: bool = True,
    seeds: Sequence[int] | None = None,
    *,
    organisms: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    progress: bool = True,
    suite: Suite | None = None,
    keep_going: bool = True,
    threads: int | None = THREADS,
) -> Leaderboard:
    """Run every method of ``suite`` (default ``default_suite()``) on every organism it applies to, for each seed.

    ``seeds`` defaults to 0-2 (``quick``; an organism's own ``quick_seeds`` where it sets them) or 0-4.
    ``organisms`` and ``methods`` restrict the run by name (method names as declared, e.g. ``oracle`` or
    ``topk_sae``). ``mechscope.report.write_leaderboard`` writes the result as markdown, JSON and HTML.
    With ``keep_going=False`` the first organism that fails its verification or method that raises stops the run
    with ``BenchFailure``; otherwise failures are recorded in ``Leaderboard.errors`` and the run goes on.
    ``threads`` pins torch's intra-op threads for the run (restored afterwards; None keeps the current setting):
    reductions split over another number of threads round differently, so a pinned count keeps scores comparable
    between machines. The leaderboard records it with the machine, versions and seeds (``Leaderboard.run``).
    """
    from ._suite import default_suite

    suite = (suite or default_suite()).check()
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(suite, quick, seeds, organisms, methods, progress, keep_going)
    finally:
        torch.set_num_threads(before)


def _run(
    suite: Suite,
    quick: bool,
    seeds: Sequence[int] | None,
    organisms: Sequence[str] | None,
    methods: Sequence[str] | None,
    progress: bool,
    keep_going: bool,
) -> Leaderboard:
    from tqdm.auto import tqdm

    from ..organisms._organism import OrganismVerificationError, obtain

    start = time.perf_counter()
    names = list(organisms) if organisms is not None else [*suite.organisms, *suite.unavailable]
    skipped = tuple(f"{n}: {suite.unavailable[n]}" for n in names if n in suite.unavailable)
    chosen = [suite.organisms[n] for n in names if n not in suite.unavailable]
    scores: list[Score] = []
    errors: list[str] = []
    verified: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    jobs = [(o, s) for o in chosen for s in (seeds if seeds is not None else default_seeds(o, quick))]
    for organism, seed in tqdm(jobs, desc="bench", disable=not progress):
        try:
            built = obtain(organism, seed)
        except OrganismVerificationError as err:  # never score an organism whose mechanism is absent
            errors.append(f"{organism.name}/seed{seed}: {err}")
            if not keep_going:
                raise BenchFailure(f"organism failed its verification: {errors[-1]}") from err
            continue
        verified[organism.name][str(seed)] = built.verification
        got, failed = _run_methods(suite, organism, built, seed, quick, methods)
        scores += got
        errors += failed
        if failed and not keep_going:
            raise BenchFailure(f"method failed: {failed[0]}")
    run = {**run_info(), "seeds": {o.name: sorted({s for p, s in jobs if p is o}) for o in chosen}}
    return Leaderboard(tuple(_with_baselines(scores, suite.baselines())), dict(verified), tuple(errors), quick,
                       time.perf_counter() - start, skipped, run)  # fmt: skip


def run_info() -> dict[str, Any]:
    """The machine and software a bench run used (recorded in its leaderboard)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from .._machine import machine

    found = {}
    for package in ("mechscope", "torch", "transformers", "numpy", "captum", "tracr-pypi", "jax"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return {
        "machine": machine(threads=False),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": found,
    }


def default_seeds(organism: Organism, quick: bool) -> tuple[int, ...]:
    """The seeds a run uses for ``organism`` when none are given."""
    if not quick:
        return FULL_SEEDS
    return organism.quick_seeds if organism.quick_seeds is not None else QUICK_SEEDS


def _run_methods(
    suite: Suite, organism: Organism, built: Any, seed: int, quick: bool, only: Sequence[str] | None
) -> tuple[list[Score], list[str]]:
    scores, errors = [], []
    for spec in suite.methods_for(organism):
        if only is not None and spec.name not in only:
            continue
        with tempfile.TemporaryDirectory(prefix="mechscope-bench-") as tmp:
            start = time.perf_counter()
            try:
                ctx = RunContext(seed=derive_seed(spec.name, seed), quick=quick, workdir=Path(tmp))
                output = spec.fn(built, ctx)
                seconds = time.perf_counter() - start
                got = suite.score(organism.family, output, built, spec.name)
            except Exception as err:  # one broken method must not hide every other result
                last = traceback.format_exception_only(err)[-1].strip()
                errors.append(f"{organism.name}/seed{seed}/{spec.name}: {last}")
                continue
        scores += [replace(s, seconds=seconds) for s in got]
    return scores, errors


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts``: a method's random stream never replays the one that built its organism."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def _with_baselines(scores: list[Score], baselines: set[str]) -> list[Score]:
    """Attach to every score the baseline methods' values on the same organism, seed and metric.

    They join any baseline its scorer measured itself, such as the clean twin's.
    """
    ref: dict[tuple[str, int, str], dict[str, float]] = defaultdict(dict)
    for s in scores:
        if s.method in baselines:
            ref[s.organism, s.seed, s.metric][s.method] = s.value
    return [replace(s, baselines={**s.baselines, **ref[s.organism, s.seed, s.metric]}) for s in scores]
