"""Command line for circuits: ``mechscope patch`` and ``mechscope circuit``.

``patch`` runs activation or attribution patching over a task; ``circuit`` finds a circuit (EAP, EAP-IG or
node-level ACDC) and measures its faithfulness against random circuits of the same size.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .._cache import atomic_write_bytes
from ..core import DEFAULT_MODEL
from ._common import JsonOpt, open_model, user_errors
from ._common import err_console as _err
from ._common import out_console as _out

TASKS = ("ioi", "greater_than", "factual_recall", "gendered_pronoun", "subject_verb_agreement", "induction")


def build_task(name: str, tokenizer: Any, n: int, seed: int):
    """A task by name (see ``mechscope.data.tasks``) or from a JSONL file of clean/corrupt/answer/wrong."""
    from ..data import tasks

    if name.endswith(".jsonl"):
        return tasks.from_jsonl(name, tokenizer)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASKS)} or give a .jsonl file")
    return getattr(tasks, name)(tokenizer, n=n, seed=seed)


def patch(
    kind: Annotated[str, typer.Argument(help="resid_pre | resid_mid | resid_post | attn_out | mlp_out | head.z/q/k/v")],
    model: Annotated[str, typer.Option("--model", help="Model (see `mechscope sites`).")] = DEFAULT_MODEL,
    task: Annotated[str, typer.Option(help=f"{' | '.join(TASKS)} or a .jsonl file.")] = "ioi",
    n: Annotated[int, typer.Option(help="Prompt pairs.")] = 8,
    method: Annotated[str, typer.Option(help="activation (real patching) or attribution (gradient estimate).")] = (
        "activation"
    ),
    direction: Annotated[str, typer.Option(help="denoising or noising.")] = "denoising",
    by_pos: Annotated[bool | None, typer.Option("--by-pos/--all-pos", help="Separate positions or not.")] = None,
    verify: Annotated[int, typer.Option(help="Attribution: re-check this many nodes by real patching.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for the heatmap PNG and the result JSON.")] = Path("out/patch"),
    seed: int = 0,
    as_json: JsonOpt = False,
) -> None:
    """Patch every node of KIND for a task's clean/corrupt pairs; save a heatmap and the effects (1 = clean)."""
    from ..circuits import activation_patching, attribution_patching, heatmap

    with user_errors():
        if method not in ("activation", "attribution"):
            raise ValueError(f"--method must be 'activation' or 'attribution', got {method!r}")
        m = open_model(model)
        t = build_task(task, m.tokenizer, n, seed)
        if method == "activation":
            result = activation_patching(m, t, kind, direction=direction, by_pos=by_pos)  # type: ignore[arg-type]
            check = None
        else:
            est = attribution_patching(
                m,
                t,
                [kind],
                direction=direction,
                by_pos=by_pos,
                verify=verify,  # type: ignore[arg-type]
            )
            result, check = est.grids[kind], est.check
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{task.removesuffix('.jsonl').replace('/', '_')}_{kind}_{method}_{direction}"
    heatmap(result, out / f"{stem}.png")
    payload = {"result": result.to_dict(), "check": check.to_dict() if check is not None else None}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    if as_json:
        typer.echo(json.dumps(payload))
        return
    _show_top(result)
    if check is not None:
        _out().print(f"self-check on {check.n} nodes: Pearson {check.pearson:.3f}, MAE {check.mean_abs_error:.3f}")
    _err().print(f"saved {out / stem}.png and .json")


def _show_top(result, k: int = 10) -> None:
    effect = result.effect.flatten()
    nodes = result.nodes()
    order = effect.abs().argsort(descending=True)[:k]
    console = _out()
    head = f"[bold]{escape(result.kind)}[/] ({result.method} patching, {result.direction})"
    console.print(f"{head}: clean {result.clean_metric:.3f}, corrupt {result.corrupt_metric:.3f}; top |effect|:")
    for i in order.tolist():
        console.print(f"  {escape(nodes[i].label())}: {effect[i].item():+.3f}")


def circuit(
    model: Annotated[str, typer.Option("--model", help="Model (see `mechscope sites`).")] = DEFAULT_MODEL,
    task: Annotated[str, typer.Option(help=f"{' | '.join(TASKS)} or a .jsonl file.")] = "ioi",
    n: Annotated[int, typer.Option(help="Prompt pairs.")] = 16,
    method: Annotated[str, typer.Option(help="eap, eap-ig (edge scores) or acdc (nodes).")] = "eap-ig",
    steps: Annotated[int, typer.Option(help="EAP-IG integration steps.")] = 5,
    top: Annotated[int | None, typer.Option(help="Keep the top-N edges by |score| (default: 0.5 % of edges).")] = None,
    threshold: Annotated[float | None, typer.Option(help="Keep edges with |score| >= T instead of --top.")] = None,
    tau: Annotated[float, typer.Option(help="ACDC: removal threshold (KL).")] = 0.01,
    random: Annotated[int, typer.Option(help="Random circuits per size (the baseline).")] = 2,
    curve: Annotated[
        bool, typer.Option("--curve/--no-curve", help="EAP/EAP-IG: faithfulness curve over MIB's sizes.")
    ] = (True),
    out: Annotated[Path, typer.Option(help="Folder for the circuit (JSON, DOT, SVG, PNG) and the curve.")] = Path(
        "out/circuit"
    ),
    seed: int = 0,
    as_json: JsonOpt = False,
) -> None:
    """Find a circuit for a task (EAP, EAP-IG or node ACDC) and measure its faithfulness against random circuits."""
    import time

    from ..circuits import Circuit, draw_circuit, faithfulness, faithfulness_curve, write_circuit_files

    start = time.perf_counter()
    with user_errors():
        if method not in ("eap", "eap-ig", "acdc"):
            raise ValueError(f"--method must be 'eap', 'eap-ig' or 'acdc', got {method!r}")
        if top is not None and threshold is not None:
            raise ValueError("give --top or --threshold, not both")
        if method == "acdc" and (top is not None or threshold is not None):
            raise ValueError("--top and --threshold pick edges from EAP/EAP-IG scores; ACDC uses --tau")
        m = open_model(model)
        t = build_task(task, m.tokenizer, n, seed)
        summary: dict[str, Any] = {"task": t.name, "n_prompts": len(t), "method": method, "model": m.provenance}
        chosen, scores, found, found_summary = _discover(m, t, method, steps, top, threshold, tau, seed, not as_json)
        summary |= found_summary
        randoms = [Circuit.random(chosen.graph, chosen.n_edges, seed=seed + i) for i in range(random)]
        faith = faithfulness(m, t, [chosen, *randoms], seed=seed, progress=not as_json)
        summary["circuit"] = {
            "n_edges": chosen.n_edges,
            "of_edges": chosen.graph.n_edges,
            "n_nodes": len(chosen.nodes()),
            "faithfulness": faith[0],
            "random_faithfulness": faith[1:],
        }
        curve_result = None
        if scores is not None and curve:
            curve_result = faithfulness_curve(m, t, scores, random=random, seed=seed, progress=not as_json)
            c = curve_result
            summary["curve"] = {"sizes": list(c.sizes), "faithfulness": list(c.faithfulness),
                                "random_mean": list(c.random_mean), "cpr": c.cpr, "cmd": c.cmd,
                                "random_cpr": c.random_cpr, "random_cmd": c.random_cmd}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    files = write_circuit_files(scores, chosen, out) if scores is not None else _node_circuit_files(found, chosen, out)
    draw_circuit(chosen, scores, title=f"{t.name}: {method} circuit, faithfulness {faith[0]:.2f}").savefig(
        out / "circuit.png", dpi=110
    )
    files["png"] = out / "circuit.png"
    if curve_result is not None:
        curve_result.plot(out / "faithfulness.png")
        files["curve"] = out / "faithfulness.png"
    summary["files"] = {k: str(v) for k, v in files.items()}
    summary["svg"] = "written" if "svg" in files else "skipped: graphviz `dot` is not on PATH"
    summary["seconds"] = time.perf_counter() - start
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _show_circuit(summary)


def _discover(
    m: Any,
    t: Any,
    method: str,
    steps: int,
    top: int | None,
    threshold: float | None,
    tau: float,
    seed: int,
    progress: bool,
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The circuit, the edge scores (EAP/EAP-IG) or the ACDC result, and their part of the summary."""
    from ..circuits import acdc, eap, eap_ig

    if method == "acdc":
        found = acdc(m, t, tau=tau, seed=seed, progress=progress)
        return found.circuit(), None, found, {"acdc": {"tau": tau, "kept": list(found.kept),
                                                       "final_kl": found.final_score}}  # fmt: skip
    run = eap if method == "eap" else functools.partial(eap_ig, steps=steps)
    scores = run(m, t, seed=seed, progress=progress)
    if threshold is not None:
        chosen = scores.threshold(threshold)
    else:
        chosen = scores.top(top if top is not None else max(1, int(0.005 * scores.graph.n_edges)))
    return chosen, scores, None, {"scores": {"steps": scores.steps, "completeness": scores.completeness,
                                             "top_edges": scores.top_edges(20), "seconds": scores.seconds}}  # fmt: skip


def _node_circuit_files(found: Any, chosen: Any, out: Path) -> dict[str, Path]:
    from ..circuits import render_dot

    atomic_write_bytes(out / "circuit.json", json.dumps({**chosen.to_dict(), "acdc": found.to_dict()}).encode())
    atomic_write_bytes(out / "circuit.dot", chosen.to_dot().encode())
    files = {"json": out / "circuit.json", "dot": out / "circuit.dot"}
    if (svg := render_dot(chosen.to_dot(), out / "circuit.svg")) is not None:
        files["svg"] = svg
    return files


def _show_circuit(s: dict[str, Any]) -> None:
    console, c = _out(), s["circuit"]
    rand = ", ".join(f"{x:.2f}" for x in c["random_faithfulness"]) or "none"
    console.print(
        f"[bold]{escape(s['method'])}[/] on {escape(s['task'])} ({s['n_prompts']} pairs): circuit of "
        f"{c['n_edges']} of {c['of_edges']} edges, {c['n_nodes']} nodes; faithfulness {c['faithfulness']:.3f} "
        f"(random circuits of the same size: {rand})"
    )
    if "scores" in s:
        console.print(f"completeness {s['scores']['completeness']:.2f}; top edges:")
        for name, score in s["scores"]["top_edges"][:10]:
            console.print(f"  {escape(name)}: {score:+.3f}")
    if "acdc" in s:
        console.print("kept: " + escape(", ".join(s["acdc"]["kept"])))
    if "curve" in s:
        k = s["curve"]
        console.print(f"curve: CPR {k['cpr']:.3f} (random {k['random_cpr']:.3f}), CMD {k['cmd']:.3f} "
                      f"(random {k['random_cmd']:.3f})")  # fmt: skip
    if s["svg"] != "written":
        _err().print(f"SVG {escape(s['svg'])}; the DOT file is there (render it with `dot -Tsvg`)")
    _err().print("saved " + escape(", ".join(s["files"].values())))


def register(app: typer.Typer) -> None:
    """Add the circuits commands to the main CLI."""
    app.command()(patch)
    app.command()(circuit)
