"""Mutation check of the scorers and metrics: every deliberate bug below must make the test suite fail.

A test that cannot fail is a defect. Each mutation replaces one exact piece of source (it must occur exactly once,
so a refactor that moves the code fails this check loudly until the list is updated), runs the tests that guard
it, and restores the file whatever happens. A mutation the tests survive fails CI with its name.

Run: ``.venv/bin/python .ci/mutations.py`` (from the repository root; about a minute).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "mechscope"
GUARDS = ["tests/test_scorer_definitions.py"]


@dataclass(frozen=True)
class Mutation:
    """One deliberate bug: replace ``old`` by ``new`` in ``file`` (under src/mechscope); ``tests`` must fail."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...] = tuple(GUARDS)


MUTATIONS = [
    Mutation("CMD without |.|", "circuits/_faithfulness.py",
             "[abs(1.0 - v) for v in values]", "[(1.0 - v) for v in values]"),
    Mutation("CPR as a left Riemann sum", "circuits/_faithfulness.py",
             "(x2 - x1) * (y1 + y2) / 2", "(x2 - x1) * y1"),
    Mutation("CMD of the mean tie-order curve, not the mean of the orders' CMDs", "circuits/_faithfulness.py",
             "return statistics.fmean(area_from_one(self.sizes, row) for row in self._rows)",
             "return area_from_one(self.sizes, self.faithfulness)"),
    Mutation("CPR ranked by |score| (MIB ranks it by signed score)", "circuits/_faithfulness.py",
             '"signed": tie_orders(gain, ties, seed)', '"signed": tie_orders(gain.abs(), ties, seed)'),
    Mutation("CMD ranked by signed score (MIB ranks it by |score|)", "circuits/_faithfulness.py",
             '"absolute": tie_orders(magnitude, ties, seed)', '"absolute": tie_orders(gain, ties, seed)'),
    Mutation("noising scores' gain not negated", "circuits/_graph.py",
             'return self.scores if self.direction == "denoising" else -self.scores', "return self.scores"),
    Mutation("chance CMD from the mean random curve", "circuits/_faithfulness.py",
             "return statistics.fmean(area_from_one(self.sizes, r) for r in self.random) if self.random else",
             "return area_from_one(self.sizes, self.random_mean) if self.random else"),
    Mutation("sizes holding no edge kept", "circuits/_faithfulness.py",
             "if n >= 1 and (not counts or n > counts[-1]):", "if n >= 0 and (not counts or n > counts[-1]):"),
    Mutation("ties broken by edge index", "circuits/_faithfulness.py",
             "perm = torch.randperm(len(key), generator=gen)", "perm = torch.arange(len(key))"),
    Mutation("full-truth row scored against the seen truth", "bench/_scorers.py",
             '"edge_auroc_full", _edge_auroc(output.edges, truth.full())',
             '"edge_auroc_full", _edge_auroc(output.edges, truth)'),
    Mutation("AUROC labels flipped", "bench/_scorers.py",
             "greater = (s[y][:, None] > s[~y][None, :])", "greater = (s[y][:, None] < s[~y][None, :])"),
    Mutation("AUROC ties count as wins", "bench/_scorers.py",
             "(greater + 0.5 * ties)", "(greater + ties)"),
    Mutation("trigger pick: a tie counts as a hit", "bench/_vision_scorers.py",
             "return float(top[answer]) / int(top.sum())", "return float(top[answer])"),
    Mutation("trojan detection: a tie counts as a win", "bench/_vision_scorers.py",
             "1.0 if mine > twin else 0.5 if mine == twin else 0.0", "1.0 if mine >= twin else 0.0"),
    Mutation("randomisation check mutates the caller's model", "attribution/_metrics.py",
             "twin = copy.deepcopy(model)", "twin = model"),
    Mutation("reproduction check: every row passes", "bench/_reproduce.py",
             "return abs(measured - reference) > tolerance + 1e-12", "return False",
             ("tests/test_reproduce.py",)),
    Mutation("reproduction check: rows missing from the run pass", "bench/_reproduce.py",
             "return not (self.drifts or self.missing or self.extra)", "return not (self.drifts or self.extra)",
             ("tests/test_reproduce.py",)),
    Mutation("autointerp judge: plain accuracy instead of balanced", "autointerp/_scorers.py",
             "return sum(rates) / len(rates), {", "return (hits[0] + hits[1]) / len(items), {",
             ("tests/test_autointerp.py::test_judge_scorers_compute_balanced_accuracy_with_chance_and_shuffled_baseline",)),
    Mutation("autointerp AUROC: ties count as wins", "autointerp/_scorers.py",
             "return float((greater + 0.5 * ties) /", "return float((greater + ties) /",
             ("tests/test_autointerp.py::test_auroc_and_pearson_match_their_definitions",)),
    Mutation("autointerp shuffled baseline: a latent keeps its own explanation", "autointerp/_jobs.py",
             "texts[order[(j + 1) % len(order)]]", "texts[order[j]]",
             ("tests/test_autointerp.py::test_judge_scorers_compute_balanced_accuracy_with_chance_and_shuffled_baseline",)),
    Mutation("autointerp resume: finished latents explained again", "autointerp/_jobs.py",
             "finished = set(records.texts(spec.name, run))", "finished = set()",
             ("tests/test_autointerp.py::test_killed_explain_job_resumes_without_recomputing",)),
    Mutation("steering effect of a direction taken without its sign", "bench/_concepts.py",
             '"steer_planted", planted / ref.full', '"steer_planted", abs(planted) / ref.full',
             ("tests/test_planted_concept.py",)),
    Mutation("steer_other chance from the signed mean of the random draws", "bench/_concepts.py",
             "sum(abs(x) for x in draws) / len(draws) / full", "abs(sum(draws)) / len(draws) / full",
             ("tests/test_planted_concept.py",)),
    Mutation("random-direction |cos| chance with the Gamma ratio inverted", "bench/_concepts.py",
             "math.lgamma(d / 2) - math.lgamma((d + 1) / 2)", "math.lgamma((d + 1) / 2) - math.lgamma(d / 2)",
             ("tests/test_planted_concept.py",)),
]  # fmt: skip


def run(m: Mutation) -> tuple[bool, float]:
    """Apply ``m``, run its guards, restore; True when the tests failed (the mutation was caught)."""
    path = SRC / m.file
    source = path.read_text()
    if source.count(m.old) != 1:
        raise SystemExit(f"mutation {m.name!r}: {m.old!r} occurs {source.count(m.old)} times in {path} (expected "
                         "once); update .ci/mutations.py to follow the code")  # fmt: skip
    start = time.perf_counter()
    try:
        path.write_text(source.replace(m.old, m.new))
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *m.tests]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        path.write_text(source)
    return done.returncode != 0, time.perf_counter() - start


def main() -> int:
    """Run every mutation; exit status 1 if any survives or the guards fail on the real code."""
    # Every guard set must pass on the real code first: a test that fails anyway would "catch" every mutation.
    for tests in dict.fromkeys(m.tests for m in MUTATIONS):
        clean = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT)
        if clean.returncode != 0:
            print(f"the guard tests {' '.join(tests)} fail on the unmutated code")
            return 1
    survived = []
    for m in MUTATIONS:
        caught, seconds = run(m)
        print(f"{'caught ' if caught else 'SURVIVED'}  {m.name}  ({m.file}, {seconds:.1f} s)", flush=True)
        if not caught:
            survived.append(m.name)
    print(f"mutations: {len(MUTATIONS) - len(survived)} caught, {len(survived)} survived")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
