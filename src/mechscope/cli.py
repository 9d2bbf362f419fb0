"""The ``mechscope`` command line: list a model's sites, predict next tokens, run the demo.

MODEL is the built-in ``smollm2-135m`` unless given; it may be a Hugging Face id or local directory, or
``tiny-FAMILY`` (``tiny-llama``, ``tiny-gpt2``, ``tiny-gpt-neox``, optionally ``-sSEED``) for a tiny random model.
Results go to stdout (tables, or JSON with ``--json``); status and errors go to stderr.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .hooks._sites import UnknownSiteError
from .models import DEFAULT_MODEL, TINY_CONFIGS, Model

app = typer.Typer(
    name="mechscope",
    help="A microscope for neural networks: name a model's internals, run it, read its residual stream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_TINY = re.compile(r"tiny-(?P<family>[a-z0-9_-]+?)(?:-s(?P<seed>\d+))?")

# Errors whose message is the whole story for a CLI user (the core words them to say what to do instead).
_USER_ERRORS = (UnknownSiteError, ValueError, FileNotFoundError, TypeError)

ModelArg = Annotated[str, typer.Argument(help="Built-in name, Hugging Face id, local path, or tiny-FAMILY.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _out() -> Console:
    # Built per call, not at import, so the console writes to whatever sys.stdout is now (tests capture it).
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the core's user-facing errors into one red line and exit status 1, without a traceback."""
    try:
        yield
    except _USER_ERRORS as err:
        _err().print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(1) from None


def open_model(name: str) -> Model:
    """Open MODEL as the CLI understands it: ``tiny-FAMILY[-sSEED]`` or anything ``ms.load`` accepts."""
    import mechscope as ms

    if (m := _TINY.fullmatch(name)) and (family := m["family"].replace("-", "_")) in TINY_CONFIGS:
        return ms.tiny(family, seed=int(m["seed"] or 0))
    if name.startswith("tiny-"):
        raise ValueError(f"unknown tiny model {name!r}; choose from " + ", ".join(f"tiny-{f}" for f in TINY_CONFIGS))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own status line says what is loading
    with _err().status(f"Loading {escape(name)}…"), redirect_stdout(sys.stderr):  # keep stdout for results only
        return ms.load(name)


@app.command()
def sites(
    model: ModelArg = DEFAULT_MODEL,
    pattern: Annotated[str, typer.Argument(help="Site name or glob, e.g. 'resid_post.*' or 'head.3.*'.")] = "*",
    as_json: JsonOpt = False,
) -> None:
    """List a model's sites: name, shape and meaning."""
    with _user_errors():
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
    from .demo import predictions_table, top_predictions

    if len(args) > 2:
        msg = f"expected [MODEL] PROMPT, got {len(args)} arguments (quote the prompt)"
        _err().print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)
        raise typer.Exit(2)
    model, prompt = (DEFAULT_MODEL, args[0]) if len(args) == 1 else args
    with _user_errors():
        m = open_model(model)
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
    out: Annotated[Path, typer.Option("--out", help="Folder for logit_lens.png and demo.json.")] = Path("out/demo"),
    model: Annotated[str, typer.Option("--model", help="Model to run (see MODEL above).")] = DEFAULT_MODEL,
) -> None:
    """IOI on the built-in model: next-token predictions and the logit lens for ' Mary', saved as PNG + JSON."""
    from .demo import run_demo, show_demo

    with _user_errors():
        m = open_model(model)
        with _err().status("Running the model and its logit lens…"):
            result = run_demo(m, out)
    show_demo(result, _out())


if __name__ == "__main__":
    app()
