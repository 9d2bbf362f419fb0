"""The ``mechscope`` command line: list a model's sites, predict next tokens, run the demo.

MODEL is the built-in ``smollm2-135m`` unless given; it may be a Hugging Face id or local directory, or
``tiny-FAMILY`` (``tiny-llama``, ``tiny-gpt2``, ``tiny-gpt-neox``, optionally ``-sSEED``) for a tiny random model.
Results go to stdout (tables, or JSON with ``--json``); status and errors go to stderr.

Start-up: this module imports neither torch nor any method family, so ``mechscope --help`` is quick. The commands
here import what they need when they run; the method families' commands live in their own modules (``_circuits``,
``_features``, ...), which are imported only when one of their commands runs or its own ``--help`` is asked.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ._common import DEFAULT_MODEL, JsonOpt, ModelArg, open_model, user_errors
from ._common import err_console as _err
from ._common import out_console as _out
from ._errors import set_debug, set_placement
from ._lazy import LazyGroup

app = typer.Typer(
    name="mechscope",
    help="A microscope for neural networks: name a model's internals, run it, read its residual stream.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="On an error, show the full traceback instead of one line.")
    ] = False,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Allow downloads from the Hugging Face Hub. Default: offline — built-in, local and already "
            "cached models open; an unknown name fails at once.",
        ),
    ] = False,
    device: Annotated[
        str | None, typer.Option("--device", help="Where to run models: cpu (default), cuda, cuda:1, mps.")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="Model weights' dtype: float32 (default), bfloat16, float16.")
    ] = None,
    device_map: Annotated[
        str | None,
        typer.Option("--device-map", help="Spread a large model over devices with accelerate: 'auto'."),
    ] = None,
) -> None:
    """A microscope for neural networks: name a model's internals, run it, read its residual stream.

    Exit statuses: 0 success, 1 bad input or a failed check, 2 usage, 3 not found, 4 corrupt or mismatched file,
    5 non-finite numbers, 6 out of disk/memory, 70 internal error, 130 interrupted (docs/cli.md).
    """
    set_debug(debug)
    set_placement(device, dtype, device_map)
    # Read by huggingface_hub when transformers is first imported, which the commands do after this runs.
    os.environ["HF_HUB_OFFLINE"] = "0" if online else os.environ.get("HF_HUB_OFFLINE", "1")


@app.command()
def sites(
    model: ModelArg = DEFAULT_MODEL,
    pattern: Annotated[str, typer.Argument(help="Site name or glob, e.g. 'resid_post.*' or 'head.3.*'.")] = "*",
    as_json: JsonOpt = False,
) -> None:
    """List a model's sites: name, shape and meaning."""
    with user_errors():
        if any(ch in model for ch in "*?["):  # no model name has glob characters: the user meant a PATTERN
            raise ValueError(f"MODEL comes before PATTERN: mechscope sites {DEFAULT_MODEL} {model!r}")
        m = open_model(model)
        rows = m.sites(pattern)
    if as_json:
        typer.echo(json.dumps([row._asdict() for row in rows], indent=2))
        return
    console = _out()
    console.print(f"[bold]{escape(m.name)}[/]: {len(rows)} sites matching {escape(repr(pattern))}", soft_wrap=True)
    table = Table()
    for column, style in (("name", "bold cyan"), ("shape", ""), ("meaning", "dim")):
        table.add_column(column, style=style)
    for row in rows:
        table.add_row(*(escape(x) for x in row))
    console.print(table)


@app.command(no_args_is_help=True)
def run(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] PROMPT", help="Optional model, then the prompt.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many next tokens to show.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Show the most probable next tokens after PROMPT."""
    if len(args) > 2:
        msg = f"expected [MODEL] PROMPT, got {len(args)} arguments (quote the prompt)"
        _err().print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)
        raise typer.Exit(2)
    model, prompt = (DEFAULT_MODEL, args[0]) if len(args) == 1 else args
    with user_errors():
        m = open_model(model)
        from ..demo import predictions_table, top_predictions

        predictions = top_predictions(m, prompt, top_k)
    if as_json:
        payload = {"prompt": prompt, "provenance": m.provenance, "top": [p.__dict__ for p in predictions]}
        typer.echo(json.dumps(payload, indent=2))
        return
    console = _out()
    console.print(f"[bold]{escape(m.name)}[/]: next token after {escape(repr(prompt))}", soft_wrap=True)
    console.print(predictions_table(predictions, title=None))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for report.html, demo.json and the plots.")] = Path(
        "out/demo"
    ),
    model: Annotated[str, typer.Option("--model", help="Model to run (see MODEL above).")] = DEFAULT_MODEL,
    prompts: Annotated[int, typer.Option(help="IOI prompt pairs.")] = 8,
    patch_prompts: Annotated[int, typer.Option(help="Pairs for real per-head patching (0: all).")] = 4,
    steps: Annotated[
        int | None,
        typer.Option(help="EAP-IG steps to start from, doubled while completeness is over 0.1 from 1 (default 10)."),
    ] = None,
    steps_rule: Annotated[
        bool, typer.Option(help="Double EAP-IG's steps until completeness is within 0.1 of 1 (no: exactly --steps).")
    ] = True,
    random: Annotated[int, typer.Option(help="Random circuits per size.")] = 2,
    faithful_at: Annotated[
        float, typer.Option(help="Draw the smallest circuit on the curve with at least this faithfulness.")
    ] = 0.8,
    vision: Annotated[
        bool, typer.Option(help="Add the attribution gallery, token attribution, a feature visualisation, a prototype.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """IOI report on the built-in model: logit lens, heads by DLA and patching, EAP-IG circuit vs random (HTML)."""
    import dataclasses

    from ..circuits._analysis import AnalysisConfig
    from ..demo import IOI_ANSWER, DemoConfig, run_demo, show_demo

    with user_errors():
        analysis = AnalysisConfig(patch_prompts=patch_prompts, random=random, faithful_at=faithful_at)
        if steps is not None:
            analysis = dataclasses.replace(analysis, ig_steps=steps, max_ig_steps=max(steps, analysis.max_ig_steps))
        if not steps_rule:
            analysis = dataclasses.replace(analysis, completeness_tolerance=None)
        config = DemoConfig(prompts, analysis=analysis)
        m = open_model(model)
        m.to_single_token(IOI_ANSWER)  # a model whose tokenizer splits the answer fails before anything is written
        extra: list[tuple[str, str]] = []
        if vision:
            from ..report._attribution import attribution_sections
            from ..report._visualize import visualize_sections

            with _steps("vision") as step:
                step("attribution gallery, token attribution, feature visualisation, prototypes")
                extra = [*attribution_sections(m, out / "attribution"), *visualize_sections(out / "visualize")]
        with _steps("IOI analysis") as step:
            result = run_demo(m, out, config=config, sections=extra, on_step=step)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    show_demo(result, _out())


@contextmanager
def _steps(what: str) -> Iterator[Callable[[str], None]]:
    """Report the steps of a long job: a status line on a terminal, plain timestamped log lines otherwise."""
    console, start = _err(), time.monotonic()
    if console.is_terminal:
        with console.status(f"{what}…") as status:
            yield lambda name: status.update(f"{what}: {name.replace('_', ' ')}… ({time.monotonic() - start:.0f} s)")
        return

    def line(name: str) -> None:
        console.print(f"mechscope: {what}: {name.replace('_', ' ')} (at {time.monotonic() - start:.0f} s)")

    yield line
    console.print(f"mechscope: {what}: done in {time.monotonic() - start:.0f} s")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick/--full", help="Small organisms and budgets (CI scale).")] = True,
    out: Annotated[Path, typer.Option("--out", help="Folder for leaderboard.md, .json and .html.")] = Path("out/bench"),
    keep_going: Annotated[
        bool,
        typer.Option(
            "--keep-going/--fail-fast",
            help="On a failed organism or method: finish and write the table, then exit 1 (default: stop at once).",
        ),
    ] = False,
    check: Annotated[
        Path | None,
        typer.Option(
            "--check",
            help="A committed leaderboard.json to reproduce: exit 1 when any row moves beyond its tolerance.",
        ),
    ] = None,
    tolerances: Annotated[
        Path | None,
        typer.Option(
            "--tolerances",
            help="Per-row tolerances measured across CPUs (default: leaderboard-tolerances.json beside --check).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score every method of the bench's suite on model organisms whose mechanism is known; write the leaderboard.

    Exits with status 1 when any organism fails its build-time verification or any method raises, and with
    --check when a row differs from the committed leaderboard by more than its tolerance.
    """
    from .._errors import CheckFailed
    from ..bench import BenchFailure, default_suite, load_tolerances, run_bench
    from ..report import leaderboard_markdown, write_leaderboard

    reference = table = None
    if check is not None:
        with user_errors():
            reference = json.loads(check.read_text())
            table = load_tolerances(tolerances or check.with_name("leaderboard-tolerances.json"))

    try:
        board = run_bench(quick=quick, suite=default_suite(), keep_going=keep_going)
    except BenchFailure as err:
        raise CheckFailed(str(err), hint="--keep-going finishes the table and lists every failure") from None
    with user_errors():
        write_leaderboard(board, out)
    payload: dict = {"out": str(out), "seconds": board.seconds, "leaderboard": board.to_dict()}
    if not as_json:
        typer.echo(leaderboard_markdown(board))
        typer.echo(f"\nleaderboard written to {out}/leaderboard.{{md,json,html}} in {board.seconds:.0f} s")
    if board.errors:
        for line in board.errors:
            _err().print(f"[bold red]failed:[/] {escape(line)}", soft_wrap=True)
        raise CheckFailed(f"{len(board.errors)} organism(s) or method(s) failed: " + "; ".join(board.errors))
    if reference is not None and table is not None:
        payload["check"] = _check_reproduces(board.to_dict(), reference, table, check, as_json)
    if as_json:
        typer.echo(json.dumps(payload))


def _check_reproduces(measured: dict, reference: dict, table: dict, path: Path | None, quiet: bool) -> dict:
    """Compare the run with the committed leaderboard; ``CheckFailed`` (exit 1) when a row moved beyond tolerance."""
    from .._errors import CheckFailed
    from ..bench import compare

    with user_errors():
        result = compare(measured, reference, table)
    for line in result.lines():
        _err().print(f"[bold red]{escape(line)}[/]", soft_wrap=True)
    note = f"; {len(result.untabled)} not in the tolerance table" if result.untabled else ""
    if not result.ok:
        raise CheckFailed(
            f"the run does not reproduce {path} ({result.checked} rows compared{note}): " + "; ".join(result.lines()),
            hint="if the change is intended, regenerate the leaderboard and its tolerances (docs/bench.md)",
        )
    if not quiet:
        typer.echo(f"reproduces {path}: {result.checked} rows within their tolerances{note}")
    return {"reference": str(path), "checked": result.checked, "untabled": len(result.untabled), "ok": True}


if __name__ == "__main__":
    app()
