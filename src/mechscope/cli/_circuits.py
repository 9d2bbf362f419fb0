"""Command line for circuits: ``mechscope patch`` and ``mechscope circuit``.

``patch`` runs activation or attribution patching over a task; ``circuit`` finds a circuit (EAP, EAP-IG,
node-level ACDC or any other method declared in ``mechscope.circuits.METHODS``) with ``find_circuit`` and measures
its faithfulness against random circuits of the same size. Both read their ``--method`` choices and method options
from the circuits registries (``method_options``); ``mechscope.report`` writes their files and pictures.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..circuits._find import FindConfig
from ..core import DEFAULT_MODEL
from ..core._registry import field_docs
from ._common import JsonOpt, open_model, user_errors
from ._common import err_console as _err
from ._common import out_console as _out
from ._config import config_for, method_options

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
    ),  # choices: the methods of NODE_METHODS tagged "patching"
    out: Annotated[Path, typer.Option(help="Folder for the heatmap PNG and the result JSON.")] = Path("out/patch"),
    seed: int = 0,
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Patch every node of KIND for a task's clean/corrupt pairs; save a heatmap and the effects (1 = clean)."""
    from ..circuits import NODE_METHODS, PatchingResult, run_method
    from ..report import heatmap

    with user_errors():
        spec = NODE_METHODS[method]
        config = _with_seed(config_for(spec, {**(settings or {}), "kind": kind}, option_owner=NODE_METHODS), seed)
        m = open_model(model)
        t = build_task(task, m.tokenizer, n, seed)
        found = run_method(spec, m, t, config, progress=not as_json)
        result = found if isinstance(found, PatchingResult) else found[kind]
        check = getattr(found, "check", None)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{task.removesuffix('.jsonl').replace('/', '_')}_{kind}_{method}_{config.direction}"
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


def _with_seed(config: Any, seed: int) -> Any:
    """``config`` with the command's ``--seed`` where the method has a seed (one seed for task, method, baselines)."""
    has_seed = any(f.name == "seed" for f in dataclasses.fields(config))
    return dataclasses.replace(config, seed=seed) if has_seed else config


def _show_top(result, k: int = 10) -> None:
    effect = result.effect.flatten()
    nodes = result.nodes()
    order = effect.abs().argsort(descending=True)[:k]
    console = _out()
    head = f"[bold]{escape(result.kind)}[/] ({result.method} patching, {result.direction})"
    console.print(f"{head}: clean {result.clean_metric:.3f}, corrupt {result.corrupt_metric:.3f}; top |effect|:")
    for i in order.tolist():
        console.print(f"  {escape(nodes[i].label())}: {effect[i].item():+.3f}")


def _find_help(name: str) -> str:
    """An option's help: the ``FindConfig`` field's docstring, with its default."""
    default = getattr(FindConfig, name)
    return escape(f"{field_docs(FindConfig)[name]} [default: {default!r}]")


def circuit(
    model: Annotated[str, typer.Option("--model", help="Model (see `mechscope sites`).")] = DEFAULT_MODEL,
    task: Annotated[str, typer.Option(help=f"{' | '.join(TASKS)} or a .jsonl file.")] = "ioi",
    n: Annotated[int, typer.Option(help="Prompt pairs.")] = 16,
    method: Annotated[str, typer.Option(help="Circuit method; its settings are under Method settings.")] = (
        FindConfig.method
    ),
    top: Annotated[int | None, typer.Option(help=_find_help("top"), show_default=False)] = None,
    threshold: Annotated[float | None, typer.Option(help=_find_help("threshold"), show_default=False)] = None,
    random: Annotated[int | None, typer.Option(help=_find_help("random"), show_default=False)] = None,
    curve: Annotated[
        bool | None, typer.Option("--curve/--no-curve", help=_find_help("curve"), show_default=False)
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the circuit (JSON, DOT, SVG, PNG) and the curve.")] = Path(
        "out/circuit"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the task, the random circuits and the method.")] = 0,
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Find a circuit for a task (EAP, EAP-IG, ACDC, …) and measure its faithfulness against random circuits."""
    from ..circuits import METHODS, find_circuit
    from ..report import write_run_files

    with user_errors():
        spec = METHODS[method]
        given: dict[str, Any] = {"top": top, "threshold": threshold, "random": random, "curve": curve}
        config = FindConfig(spec.name, _with_seed(config_for(spec, settings or {}, option_owner=METHODS), seed),
                            seed=seed, **{k: v for k, v in given.items() if v is not None})  # fmt: skip
        if "edges" not in spec.tags and (top is not None or threshold is not None):
            raise ValueError(f"--top and --threshold pick edges from edge scores; {spec.name} finds its own circuit")
        m = open_model(model)
        t = build_task(task, m.tokenizer, n, seed)
        run = find_circuit(m, t, config, progress=not as_json)
    files = write_run_files(run, out)
    summary = {**run.to_dict(), "files": {k: str(v) for k, v in files.items()},
               "svg": "written" if "svg" in files else "skipped: graphviz `dot` is not on PATH"}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _show_circuit(summary)


def _show_circuit(s: dict[str, Any]) -> None:
    console, c = _out(), s["circuit"]
    rand = ", ".join(f"{x:.2f}" for x in c["random_faithfulness"]) or "none"
    console.print(
        f"[bold]{escape(s['method'])}[/] on {escape(s['task'])} ({s['n_prompts']} pairs): circuit of "
        f"{c['n_edges']} of {c['of_edges']} edges, {c['n_nodes']} nodes; faithfulness {c['faithfulness']:.3f} "
        f"(random circuits of the same size: {rand})"
    )
    found = s["scores"]
    if "completeness" in found:
        console.print(f"completeness {found['completeness']:.2f}; top edges:")
        for name, score in found["top_edges"][:10]:
            console.print(f"  {escape(name)}: {score:+.3f}")
    if "kept" in found:
        console.print("kept: " + escape(", ".join(found["kept"])))
    if (k := s["curve"]) is not None:
        console.print(f"curve: CPR {k['cpr']:.3f} (random {k['random_cpr']:.3f}), CMD {k['cmd']:.3f} "
                      f"(random {k['random_cmd']:.3f})")  # fmt: skip
    if s["svg"] != "written":
        _err().print(f"SVG {escape(s['svg'])}; the DOT file is there (render it with `dot -Tsvg`)")
    _err().print("saved " + escape(", ".join(s["files"].values())))


def register(app: typer.Typer) -> None:
    """Add the circuits commands to the main CLI (their methods and options come from the circuits registries)."""
    from ..circuits._registry import METHODS, NODE_METHODS

    app.command(name="patch")(method_options(NODE_METHODS, skip=("kind", "seed"), tag="patching")(patch))
    app.command(name="circuit")(method_options(METHODS, skip=("seed",))(circuit))
