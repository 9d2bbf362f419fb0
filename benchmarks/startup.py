"""Start-up cost: ``import mechscope`` and ``mechscope --help``, before and after a change.

Two source trees are compared: ``before`` (a commit, checked out into a temporary git worktree) and ``after`` (this
working tree). Every measurement is a fresh interpreter (``sys.executable`` with ``PYTHONPATH=<tree>/src``):

- ``python``: wall time of ``python -c pass``, the floor every command pays;
- ``torch+transformers``: inside one process, the time of ``import torch, transformers``;
- ``import mechscope (beyond torch+transformers)``: in the same process, the time of ``import mechscope`` after
  those two, i.e. what mechscope itself adds;
- ``first use: mechscope.Model``: the same for ``import mechscope; mechscope.Model`` (what opening a model needs);
- ``import mechscope.X (beyond torch+transformers)``: with ``--families``, the same for each method family;
- ``import mechscope (process)``: wall time of ``python -c "import mechscope"``;
- ``mechscope --help``: wall time of the command line's top-level help (the entry point ``mechscope.cli:app``);
- ``mechscope circuit --help``: the same for one method family's command.

Rounds alternate the trees (before, after, before, ...) so that other processes' load spreads over both; the
figures are medians over rounds. Each metric also comes as CPU seconds (``[CPU]``: the child's user + system time,
which other processes' load changes much less than wall time), and each row records the spread (min, max) and the
mean number of cores that other processes kept busy meanwhile (from ``/proc/stat`` less this benchmark's
children). One more run per tree with ``python -X importtime`` lists the modules that cost most, and which heavy
dependencies ``import mechscope`` pulled in.

Run: ``.venv/bin/python benchmarks/startup.py --before 018c84e [--rounds 9] [--families]``; writes
``benchmarks/results/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mechscope._machine import machine

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers.modeling_utils", "captum", "matplotlib", "jax", "scipy", "sklearn", "sqlite3")
FAMILIES = ("circuits", "features", "attribution", "visualize", "lenses", "store", "bench")
GOALS = {"import mechscope (beyond torch+transformers)": 0.3, "mechscope --help": 1.5}

# Runs in the child: times ``import torch, transformers``, then the statement ``target``.
_INCREMENT = """
import sys, time, json
t0, c0 = time.perf_counter(), time.process_time()
import torch, transformers
t1, c1 = time.perf_counter(), time.process_time()
{target}
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps([t1 - t0, t2 - t1, c1 - c0, c2 - c1]))
"""
_HELP = "import sys; sys.argv[0] = 'mechscope'; from mechscope.cli import app; app()"


def _busy_cpu() -> float:
    """Busy CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _env(src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return env


def run(src: Path, args: list[str]) -> tuple[float, float, float, str]:
    """Wall and CPU seconds of one child process, the other processes' mean busy cores meanwhile, its stdout."""
    busy0, own0, t0 = _busy_cpu(), _children_cpu(), time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=_env(src), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed in {src}:\n{done.stderr[-2000:]}")
    cpu = _children_cpu() - own0
    others = max(0.0, (_busy_cpu() - busy0) - cpu) / wall
    return wall, cpu, others, done.stdout


def one_round(src: Path, families: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Every measurement once for one tree: metric name -> (seconds, other processes' busy cores).

    Each metric comes twice: wall seconds, and CPU seconds (``... [CPU]``), which other processes' load on a shared
    machine changes much less.
    """
    out: dict[str, tuple[float, float]] = {}

    def process(metric: str, args: list[str]) -> None:
        wall, cpu, others, _ = run(src, args)
        out[metric], out[f"{metric} [CPU]"] = (wall, others), (cpu, others)

    def increment(metric: str, target: str) -> None:
        _, _, others, stdout = run(src, ["-c", _INCREMENT.format(target=target)])
        base, wall, base_cpu, cpu = json.loads(stdout)
        if target == "import mechscope":
            out["torch+transformers"], out["torch+transformers [CPU]"] = (base, others), (base_cpu, others)
        out[metric], out[f"{metric} [CPU]"] = (wall, others), (cpu, others)

    process("python", ["-c", "pass"])
    increment("import mechscope (beyond torch+transformers)", "import mechscope")
    increment("first use: mechscope.Model (beyond torch+transformers)", "import mechscope; mechscope.Model")
    process("import mechscope (process)", ["-c", "import mechscope"])
    process("mechscope --help", ["-c", _HELP, "--help"])
    process("mechscope circuit --help", ["-c", _HELP, "circuit", "--help"])
    for family in families:
        increment(f"import mechscope.{family} (beyond torch+transformers)", f"import mechscope.{family}")
    return out


def importtime(src: Path) -> dict:
    """The costliest modules of ``import mechscope`` (``-X importtime``) and the heavy dependencies it loaded."""
    probe = f"import mechscope, sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe], env=_env(src), capture_output=True, text=True, check=True
    )
    entries = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        entries.append(
            {"module": name.strip(), "self_ms": int(self_us) / 1e3, "cumulative_ms": int(cumulative_us) / 1e3}
        )
    own = [e for e in entries if e["module"].startswith("mechscope")]
    return {
        "heavy_modules_loaded": json.loads(done.stdout),
        "modules_imported": len(entries),
        "top_cumulative_mechscope": sorted(own, key=lambda e: -e["cumulative_ms"])[:12],
        "top_self": sorted(entries, key=lambda e: -e["self_ms"])[:12],
    }


def summarise(samples: dict[str, dict[str, list[tuple[float, float]]]]) -> tuple[list[dict], dict[str, float]]:
    rows, medians = [], {}
    for tree, metrics in samples.items():
        for metric, values in metrics.items():
            seconds = [s for s, _ in values]
            medians[tree, metric] = statistics.median(seconds)
            unit = "CPU s" if metric.endswith("[CPU]") else "s"
            rows.append({"name": tree, "metric": metric, "value": medians[tree, metric], "unit": unit})
            rows.append({"name": tree, "metric": f"{metric} min", "value": min(seconds), "unit": "s"})
            rows.append({"name": tree, "metric": f"{metric} max", "value": max(seconds), "unit": "s"})
            others = statistics.mean(o for _, o in values)
            rows.append({"name": tree, "metric": f"{metric} other processes", "value": others, "unit": "busy cores"})
    ratios = {
        f"after/before [{metric}]": medians["after", metric] / medians["before", metric]
        for (tree, metric) in medians
        if tree == "after" and ("before", metric) in medians and medians["before", metric] > 0
    }
    return rows, ratios


def table(samples: dict, rows: list[dict], ratios: dict[str, float]) -> str:
    value = {(r["name"], r["metric"]): r["value"] for r in rows}
    metrics = list(dict.fromkeys(m for per_tree in samples.values() for m in per_tree))
    lines = [f"{'metric':62} {'before (median, min-max)':>26} {'after (median, min-max)':>26} {'after/before':>12}"]
    for metric in metrics:
        cells = []
        for tree in ("before", "after"):
            if (tree, metric) in value:
                med, lo, hi = (value[tree, metric + s] for s in ("", " min", " max"))
                cells.append(f"{med:7.3f} s ({lo:.2f}-{hi:.2f})")
            else:
                cells.append("-")
        ratio = ratios.get(f"after/before [{metric}]")
        lines.append(f"{metric:62} {cells[0]:>26} {cells[1]:>26} {'' if ratio is None else f'{ratio:.3f}':>12}")
    for metric, goal in GOALS.items():
        got = value.get(("after", metric))
        if got is not None:
            lines.append(f"goal: {metric} <= {goal} s: {'met' if got <= goal else 'NOT met'} ({got:.3f} s)")
    return "\n".join(lines)


def checkout(commit: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), commit], check=True,
                   capture_output=True)  # fmt: skip
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="018c84e", help="Commit to compare against (checked out temporarily).")
    parser.add_argument("--before-src", type=Path, help="Use this existing source folder as 'before' instead.")
    parser.add_argument("--rounds", type=int, default=9, help="Alternating rounds (medians over them).")
    parser.add_argument("--families", action="store_true", help="Add a row per method family's import (slow).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/startup.json")
    args = parser.parse_args()
    families = FAMILIES if args.families else ()
    with tempfile.TemporaryDirectory(prefix="mechscope-before-") as tmp:
        before_label = str(args.before_src) if args.before_src else args.before
        before = args.before_src or checkout(args.before, Path(tmp) / "tree") / "src"
        trees = {"before": before, "after": ROOT / "src"}
        try:
            samples: dict[str, dict[str, list[tuple[float, float]]]] = {tree: {} for tree in trees}
            for src in trees.values():  # warm-up: the OS file cache, .pyc files
                one_round(src, ())
            for i in range(args.rounds):
                for tree, src in trees.items() if i % 2 == 0 else reversed(trees.items()):
                    for metric, value in one_round(src, families).items():
                        samples[tree].setdefault(metric, []).append(value)
                print(f"round {i + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            profiles = {tree: importtime(src) for tree, src in trees.items()}
        finally:
            if not args.before_src:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before.parent)],
                               check=False, capture_output=True)  # fmt: skip
    rows, ratios = summarise(samples)
    print(table(samples, rows, ratios))
    for tree, profile in profiles.items():
        print(f"\n{tree}: heavy modules after `import mechscope`: {profile['heavy_modules_loaded'] or 'none'}")
        for e in profile["top_cumulative_mechscope"][:6]:
            print(f"  {e['module']:45} self {e['self_ms']:8.1f} ms  cumulative {e['cumulative_ms']:8.1f} ms")
    result = {
        "benchmark": "startup: import mechscope and mechscope --help (fresh interpreters, wall seconds)",
        "machine": machine(threads=False),
        "rows": rows,
        "ratios": ratios,
        "config": {"before": before_label, "after": "working tree", "rounds": args.rounds, "python": sys.version},
        "importtime": profiles,
        "notes": [
            "medians over alternating rounds; 'min'/'max' rows give the spread and 'other processes' rows the mean "
            "number of cores other processes kept busy during the measurement (the machine is shared)",
            "'[CPU]' rows are the child process's user+system CPU seconds (less sensitive to other processes)",
            "'beyond torch+transformers' is measured inside one process: import torch and transformers first, "
            "then time the target statement (an import, or a first attribute access)",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
