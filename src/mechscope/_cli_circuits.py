"""Command line for circuits: ``mechscope patch`` (activation or attribution patching over a task)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ._cli_common import JsonOpt, open_model, user_errors
from ._cli_common import err_console as _err
from ._cli_common import out_console as _out
from .models import DEFAULT_MODEL

TASKS = ("ioi", "greater_than", "factual_recall", "gendered_pronoun", "subject_verb_agreement", "induction")


def build_task(name: str, tokenizer: Any, n: int, seed: int):
    """A task by name (see ``mechscope.data.tasks``) or from a JSONL file of clean/corrupt/answer/wrong."""
    from .data import tasks

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
    from .circuits import activation_patching, attribution_patching, heatmap

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


def register(app: typer.Typer) -> None:
    """Add the circuits commands to the main CLI."""
    app.command()(patch)
