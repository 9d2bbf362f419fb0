"""``circuits.py --suite sweeps``: patching sweeps before / after "fewer passes" / plain-PyTorch floor.

See the docstring of ``circuits.py``. The parent (``suite``) extracts the ``before`` revision's ``src/`` with
``git archive``, then runs one worker process per (repeat, sweep, contender), interleaved, and writes
``results/circuit_sweeps.json``. A worker (``worker``) loads SmolLM2-135M, times one plain forward of the prompts
(the unit) and one sweep, and writes its CPU seconds and its numbers (to compare the contenders' results).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from io import BytesIO
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SWEEPS = ("heads", "resid", "acdc", "faithfulness")
FLOORLESS = ("faithfulness",)
TL_SWEEPS = ("heads", "resid")
CONTENDERS = ("before", "after", "floor", "tl")
TOLERANCE = 1e-4
"""Largest absolute difference allowed between contenders' numbers (TransformerLens runs eager attention: ~1e-5)."""
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
"""TransformerLens runs in the peer venv built by ``benchmarks/setup_peers.sh``."""


def _cpu(fn: Any) -> tuple[float, Any]:
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


def _busy() -> tuple[float, float, float]:
    """Wall seconds, busy CPU seconds of the whole machine, CPU seconds of this process."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    own = os.times()
    return time.monotonic(), (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def worker() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=SWEEPS, required=True)
    p.add_argument("--impl", choices=("mechscope", "floor", "tl"), required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    import mechscope as ms
    from mechscope.data._task import tokenize_task
    from mechscope.data.tasks import ioi

    model = ms.load("smollm2-135m")
    task = ioi(model.tokenizer, n=args.n, seed=0)
    toks = tokenize_task(task, model.tokenizer)
    mask = toks.attention_mask

    def forward() -> None:
        with torch.no_grad():
            model.module(input_ids=toks.corrupt, attention_mask=mask, use_cache=False)

    forward()
    unit = statistics.median(_cpu(forward)[0] for _ in range(3))
    before = _busy()
    seconds, result, patches = _sweep(args.worker, args.impl, model, task, toks)
    after = _busy()
    other = max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / max(after[0] - before[0], 1e-9)
    versions = {k: version(k) for k in ("torch", "transformers", "transformer-lens") if _installed(k)}
    args.out.write_text(json.dumps({"cpu_s": seconds, "fwd_cpu_s": unit, "patches": patches, "result": result,
                                    "mechscope": str(Path(ms.__file__).parent), "versions": versions,
                                    "other_busy_cores": round(other, 2)}))  # fmt: skip


def _installed(package: str) -> bool:
    try:
        version(package)
    except PackageNotFoundError:
        return False
    return True


def _sweep(name: str, impl: str, model: Any, task: Any, toks: Any) -> tuple[float, Any, int]:
    """CPU seconds of one sweep, its numbers (JSON-able) and its number of patched passes-worth of nodes."""
    if impl == "tl":
        import _tl

        tl = _tl.bridge(model.module, model.tokenizer)  # not timed, like loading the model
        tl_args = (tl, toks.clean, toks.corrupt, toks.attention_mask, task.answers.reshape(-1), task.wrongs.reshape(-1))
        if name not in TL_SWEEPS:
            raise ValueError(f"no TransformerLens loop for {name}")
        fn = _tl.head_patching if name == "heads" else _tl.resid_patching
        t, out = _cpu(lambda: fn(*tl_args))
        return t, out.tolist(), out.numel()
    if impl == "floor":
        import _floor

        hf, args = model.module, (toks.clean, toks.corrupt, toks.attention_mask)
        answers, wrongs = task.answers.reshape(-1), task.wrongs.reshape(-1)
        if name == "heads":
            t, out = _cpu(lambda: _floor.head_patching(hf, *args, answers, wrongs))
            return t, out.tolist(), out.numel()
        if name == "resid":
            t, out = _cpu(lambda: _floor.resid_patching(hf, *args, answers, wrongs))
            return t, out.tolist(), out.numel()
        if name == "acdc":
            t, trace = _cpu(lambda: _floor.acdc(hf, *args, tau=0.01))
            return t, [list(s) for s in trace], len(trace) + 1
        raise ValueError(f"no floor for {name}")
    from mechscope.circuits import acdc, activation_patching, eap, faithfulness_curve

    if name in ("heads", "resid"):
        kind = "head.z" if name == "heads" else "resid_pre"
        t, r = _cpu(lambda: activation_patching(model, task, kind, progress=False))
        return t, r.scores.tolist(), r.scores.numel()
    if name == "acdc":
        t, a = _cpu(lambda: acdc(model, task, tau=0.01, progress=False))
        return t, [[s.node, s.after, s.removed] for s in a.steps], len(a.steps) + 1
    scores = eap(model, task, progress=False)  # not timed: the curve's input
    t, curve = _cpu(lambda: faithfulness_curve(model, task, scores, progress=False))
    return t, {"faithfulness": list(curve.faithfulness), "random": [list(r) for r in curve.random]}, 2 + 4 * 10


def _extract(rev: str, into: Path) -> Path:
    """``src/`` of git revision ``rev`` under ``into`` (for PYTHONPATH)."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _diff(a: Any, b: Any) -> float:
    """Largest absolute difference between two results (matrices, traces or curves); inf when shapes differ."""
    if isinstance(a, dict):
        return max(_diff(a[k], b[k]) for k in a)
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return float("inf")
        return max((_diff(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, bool | str):
        return 0.0 if a == b else float("inf")
    return abs(float(a) - float(b))


def suite() -> None:
    from mechscope._machine import machine

    p = argparse.ArgumentParser(description="patching sweeps: before / after / floor")
    p.add_argument("--suite", choices=("sweeps",), required=True)
    p.add_argument("--sweeps", nargs="*", choices=SWEEPS, default=list(SWEEPS))
    p.add_argument("--before", default="caf581e", help="git revision measured as 'before'")
    p.add_argument("--after", default="worktree", help="'worktree' (this checkout's src) or a git revision")
    p.add_argument("--n", type=int, default=16, help="IOI pairs for per-head patching")
    p.add_argument("--n-small", type=int, default=8, help="IOI pairs for residual patching, ACDC and faithfulness")
    p.add_argument(
        "--who",
        nargs="*",
        choices=CONTENDERS,
        default=list(CONTENDERS),
        help="contenders to run (tl: TransformerLens 4 in .venv-bench, per-head and residual only)",
    )
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--workdir", type=Path, help="keep worker outputs here; outputs already there are reused")
    p.add_argument("--merge", type=Path, help="an earlier result JSON whose other sweeps are carried over")
    p.add_argument("--out", type=Path, default=HERE / "results" / "circuit_sweeps.json")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="sweeps-"))
    tmp.mkdir(parents=True, exist_ok=True)
    if "tl" in args.who and not BENCH_PYTHON.exists():
        raise SystemExit(f"{BENCH_PYTHON} is missing: run `bash benchmarks/setup_peers.sh` first (or leave out tl)")
    paths = {"before": _extract(args.before, tmp / "before") if "before" in args.who else ROOT / "src"}
    paths["after"] = ROOT / "src" if args.after == "worktree" else _extract(args.after, tmp / "after")
    after_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for sweep in args.sweeps:
            n = args.n if sweep == "heads" else args.n_small
            for who in args.who:
                if (who == "floor" and sweep in FLOORLESS) or (who == "tl" and sweep not in TL_SWEEPS):
                    continue
                out = tmp / f"{sweep}-{who}-{repeat}.json"
                if out.exists():  # a worker of an earlier, interrupted invocation with the same settings
                    runs.setdefault((sweep, who), []).append(json.loads(out.read_text()))
                    continue
                env = {**os.environ, "PYTHONPATH": str(paths["before" if who == "before" else "after"])}
                impl = who if who in ("floor", "tl") else "mechscope"
                python = str(BENCH_PYTHON) if who == "tl" else sys.executable
                cmd = [python, str(HERE / "circuits.py"), "--worker", sweep, "--impl", impl, "--n", str(n),
                       "--out", str(out)]  # fmt: skip
                print(f"[{repeat}] {sweep} {who} ({n} pairs)...", flush=True)
                subprocess.run(cmd, check=True, env=env, cwd=HERE)
                record = json.loads(out.read_text())
                runs.setdefault((sweep, who), []).append(record)
                print(f"    {record['cpu_s']:.1f} CPU s (forward {record['fwd_cpu_s']:.3f})", flush=True)
    _write(args, runs, after_rev, machine())


def _contenders(key: str) -> tuple[str, set[str]]:
    """The sweep and contenders a row, detail, ratio or goal key names (``heads/tl``, ``heads: tl/after >= 2``)."""
    if ": " in key:
        sweep, rest = key.split(": ", 1)
        return sweep, set(rest.split(" ")[0].split("/"))
    sweep, who = key.split("/")
    return sweep, {who}


def _merge(result: dict[str, Any], old: dict[str, Any], source: str) -> None:
    """Carry over ``old``'s rows, ratios and details of (sweep, contender)s this invocation did not run.

    A ratio is carried when a contender it names was not re-run: it stays a ratio of one run (the earlier one).
    """
    fresh = {r["name"] for r in result["rows"]}

    def carried(key: str) -> bool:
        sweep, who = _contenders(key)
        return any(f"{sweep}/{w}" not in fresh for w in who)

    kept = sorted({r["name"] for r in old["rows"] if carried(r["name"])})
    if not kept:
        return
    result["rows"] += [r for r in old["rows"] if r["name"] in kept]
    for field in ("ratios", "details"):
        result[field].update({k: v for k, v in old[field].items() if carried(k) and k not in result[field]})
    result["settings"]["carried_over"] = {"rows": kept, "from": source, "machine": old["machine"],
                                          "settings": old["settings"]}  # fmt: skip


def _goals(ratios: dict[str, float]) -> dict[str, bool]:
    """Issue 13's goals, for the ratios at hand."""
    goals = {}
    for sweep, speedup in (("heads", 2.0), ("acdc", 1.6)):
        if f"{sweep}: before/after" in ratios:
            goals[f"{sweep}: before/after >= {speedup:g}"] = ratios[f"{sweep}: before/after"] >= speedup
        if f"{sweep}: floor/after" in ratios:
            goals[f"{sweep}: after/floor <= 1.1"] = 1 / ratios[f"{sweep}: floor/after"] <= 1.1
    if "heads: tl/after" in ratios:
        goals["heads: tl/after >= 2"] = ratios["heads: tl/after"] >= 2
    return goals


def _write(args: Any, runs: dict[tuple[str, str], list[dict[str, Any]]], after_rev: str, where: str) -> None:
    rows, ratios, details = [], {}, {}
    median: dict[tuple[str, str], float] = {}
    for (sweep, who), records in runs.items():
        n = args.n if sweep == "heads" else args.n_small
        t = statistics.median(r["cpu_s"] for r in records)
        unit = statistics.median(r["fwd_cpu_s"] for r in records)
        patches = records[0]["patches"]
        median[(sweep, who)] = t
        rows.append({"name": f"{sweep}/{who}", "metric": f"CPU time, {n} IOI pairs", "value": t, "unit": "CPU s"})
        rows.append({"name": f"{sweep}/{who}", "metric": "forward-pass equivalents per patch",
                     "value": t / (patches * unit), "unit": "forward passes"})  # fmt: skip
        details[f"{sweep}/{who}"] = {"runs_cpu_s": [r["cpu_s"] for r in records], "fwd_cpu_s": unit,
                                     "patches": patches, "pairs": n,
                                     "other_busy_cores": [r.get("other_busy_cores") for r in records],
                                     "versions": records[0].get("versions")}  # fmt: skip
    for sweep in args.sweeps:
        if (sweep, "after") not in runs:
            continue
        after = runs[(sweep, "after")][0]["result"]
        for who in ("before", "floor", "tl"):
            if (sweep, who) in runs:
                ratios[f"{sweep}: {who}/after"] = median[(sweep, who)] / median[(sweep, "after")]
                diff = max(_diff(after, r["result"]) for r in runs[(sweep, who)])
                details[f"{sweep}/{who}"]["max_abs_diff_to_after"] = diff
                if diff > TOLERANCE:  # the contenders did not do the same work: their times are not comparable
                    raise SystemExit(f"{sweep}: {who}'s results differ from mechscope's by {diff:.3g} (> {TOLERANCE})")
    result = {
        "benchmark": "circuits, patching sweeps: mechscope before vs after 'fewer passes' vs a plain-PyTorch floor "
        "vs TransformerLens 4 (SmolLM2-135M IOI, CPU time, one thread)",
        "machine": where,
        "rows": rows,
        "ratios": ratios,
        "goal": {},
        "settings": {
            "before": args.before,
            "after": args.after if args.after != "worktree" else f"{after_rev}+tree",
            "n": args.n,
            "n_small": args.n_small,
            "repeats": args.repeats,
            "threads": 1,
            "clock": "cpu",
            "contenders": args.who,
            "transformerlens": "TransformerLens 4 in .venv-bench, its own process (versions in details)"
            if "tl" in args.who
            else "not run in this invocation",
            "shared_machine": "other engineers' jobs shared the 2 cores: CPU time of one torch thread is counted, "
            "contenders alternate within each repeat, details' other_busy_cores is the load beside each run",
        },
        "details": details,
        "versions": {k: version(k) for k in ("torch", "transformers")},
    }
    if args.merge is not None:
        _merge(result, json.loads(args.merge.read_text()), str(args.merge))
    result["goal"] = _goals(result["ratios"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, args.out)
    print(json.dumps({"rows": rows, "ratios": result["ratios"], "goal": result["goal"]}, indent=2))
