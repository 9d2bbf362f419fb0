"""How far each leaderboard row moves across CPUs: the tolerance table behind CI's reproduction check.

Organisms are trained from a seed, and one seed takes a different floating-point path on a different CPU, so a
score can move. This script measures by how much: it runs ``mechscope bench --quick`` once per kernel path that
PyTorch and MKL can be forced onto on one machine (``native``, ``avx2``: ``ATEN_CPU_CAPABILITY=avx2
MKL_ENABLE_INSTRUCTIONS=AVX2``, ``nosimd``: ``default`` / ``SSE4_2``), each from its own organism cache (so each
path trains its own organisms), and writes for every row (organism, metric, method, baseline) the largest
difference between any two paths of its score and of its chance level.

The tolerance CI allows a row (``mechscope bench --check``) is ``max(FLOOR, MARGIN * largest difference)``,
rounded up to 0.01: rows that did not move keep the floor, which leaves room for CPUs of other vendors; rows that
flipped (a 0/1 pick) get a tolerance of 1, which the table states, so a reader sees which rows CI cannot check.

Run: ``.venv/bin/python benchmarks/bench_tolerance.py [--paths native avx2 nosimd] [--reuse]``; writes the raw
boards to ``~/.cache/mechscope-tolerance/<path>/board/leaderboard.json`` and the table to
``docs/leaderboard-tolerances.json``. ``--reuse`` keeps each path's organism cache (only the methods rerun: what
to do after a scorer changes); without it each path starts from an empty cache, as a new machine would.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mechscope._machine import machine
from mechscope.bench import row_key

FLOOR = 0.03
"""Tolerance of a row that moved less than FLOOR / MARGIN on every path (room for other vendors' kernels)."""
MARGIN = 1.5
"""Tolerance as a multiple of the largest difference measured between paths."""

PATHS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "nosimd": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
ROOT = Path.home() / ".cache" / "mechscope-tolerance"
OUT = Path(__file__).resolve().parents[1] / "docs" / "leaderboard-tolerances.json"


def run_path(name: str, *, reuse: bool) -> dict:
    """Run the quick bench on one kernel path from that path's own cache; return its leaderboard JSON."""
    cache = ROOT / name / "cache"
    if not reuse and cache.exists():
        shutil.rmtree(cache)
    board = ROOT / name / "board"
    env = {**os.environ, **PATHS[name], "MECHSCOPE_CACHE": str(cache)}
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "mechscope.cli", "bench", "--quick", "--keep-going", "--out", str(board)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    print(f"{name}: exit {done.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"the bench failed on path {name}; nothing written")
    return json.loads((board / "leaderboard.json").read_text())


def spread(values: list[float]) -> float:
    """Largest difference between two finite values (inf when one path gave nan and another did not)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) != len(values):
        return 0.0 if not finite else math.inf
    return max(finite) - min(finite)


def tolerance(moved: float) -> float:
    return 1.0 if not math.isfinite(moved) else min(1.0, math.ceil(max(FLOOR, MARGIN * moved) * 100 - 1e-9) / 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--reuse", action="store_true", help="keep each path's organism cache")
    args = parser.parse_args()
    boards = {name: run_path(name, reuse=args.reuse) for name in args.paths}
    keys: dict[str, dict[str, dict]] = {}
    for name, board in boards.items():
        for row in board["rows"]:
            keys.setdefault(row_key(row), {})[name] = row
    rows = {}
    for key, per_path in sorted(keys.items()):
        if len(per_path) != len(boards):
            raise SystemExit(f"row {key} only on paths {sorted(per_path)}: the suites differ between paths")
        means = [per_path[p]["mean"] for p in boards]
        chances = [per_path[p]["chance"] for p in boards]
        moved, moved_chance = spread(means), spread(chances)
        rows[key] = {
            "values": {p: per_path[p]["mean"] for p in boards},
            "moved": moved if math.isfinite(moved) else "nan on some paths",
            "tolerance": tolerance(moved),
            "chance_moved": moved_chance if math.isfinite(moved_chance) else "nan on some paths",
            "chance_tolerance": tolerance(moved_chance),
        }
    table = {
        "benchmark": "bench_tolerance",
        "machine": machine(threads=False),
        "paths": {p: PATHS[p] for p in boards},
        "rule": f"tolerance = max({FLOOR}, {MARGIN} x largest difference between paths), rounded up to 0.01, at most 1",
        "floor": FLOOR,
        "margin": MARGIN,
        "rows": rows,
    }
    OUT.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    n_moved = sum(1 for r in rows.values() if r["tolerance"] > FLOOR)
    n_free = sum(1 for r in rows.values() if r["tolerance"] >= 1.0)
    print(
        f"{len(rows)} rows: {len(rows) - n_moved} within the floor {FLOOR}, {n_moved} wider, {n_free} unchecked (1.0)"
    )
    print(f"written to {OUT}")
    print("\n| row | " + " | ".join(boards) + " | tolerance |\n| --- |" + " --- |" * (len(boards) + 1))
    for key, row in rows.items():
        if row["tolerance"] > FLOOR:
            values = " | ".join(f"{row['values'][p]:.2f}" for p in boards)
            print(f"| `{key}` | {values} | {row['tolerance']:.2f} |")


if __name__ == "__main__":
    main()
