"""Command line for lenses: ``mechscope lens [MODEL] PROMPT --method logit-lens``.

The ``--method`` choices and the method options come from ``mechscope.lenses.METHODS`` (``method_options``); the
command prints the top tokens of every layer's lens at the position read, as a table or as the result's
``to_dict()`` with ``--json``, and ``mechscope.report`` draws the heatmap PNG into ``--out``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ._common import DEFAULT_MODEL, JsonOpt, open_model, user_errors
from ._common import err_console as _err
from ._common import out_console as _out
from ._config import config_for, method_options

if TYPE_CHECKING:
    from ..lenses import LogitLensResult


def lens(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] PROMPT", help="Optional model, then the prompt.")],
    method: Annotated[str, typer.Option(help="Lens; its settings are under Method settings.")] = "logit-lens",
    out: Annotated[Path, typer.Option(help="Folder for the heatmap PNG.")] = Path("out/lens"),
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Every layer's top next tokens after PROMPT, read through a lens (table or JSON), and their heatmap PNG."""
    from ..lenses import METHODS
    from ..report import logit_lens_heatmap

    with user_errors():
        if len(args) > 2:
            raise ValueError(f"expected [MODEL] PROMPT, got {len(args)} arguments (quote the prompt)")
        model, prompt = (DEFAULT_MODEL, args[0]) if len(args) == 1 else args
        spec = METHODS[method]
        config = config_for(spec, settings or {}, option_owner=METHODS)
        m = open_model(model)
        result = spec(m, prompt, config=config)
    png = logit_lens_heatmap(result, out / f"{spec.name.replace('-', '_')}.png")
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    _out().print(_lens_table(result, m.name, prompt), soft_wrap=True)
    _err().print(f"saved {escape(str(png))}")


def _lens_table(result: LogitLensResult, model: str, prompt: str) -> Table:
    """The top tokens of every layer at the position read, with the tracked answer's probability and rank."""
    answer = escape(repr(result.answer_tokens[0]))
    table = Table(title=f"{escape(model)}: logit lens after {escape(repr(prompt))} "
                        f"(position {int(result.positions[0])})", title_justify="left")  # fmt: skip
    table.add_column("layer", justify="right")
    for rank in range(result.top_ids.shape[-1]):
        table.add_column(f"top {rank + 1}")
    table.add_column(f"P({answer})", justify="right")
    table.add_column("rank", justify="right")
    for i, layer in enumerate(result.layers):
        tops = [Text(f"{tok!r} {float(p):.3f}") for tok, p in zip(result.top_tokens[0][i], result.top_probs[0, i],
                                                                    strict=True)]  # fmt: skip
        p = float(result.answer_probs[0, i])
        table.add_row(str(layer), *tops, f"{p:.2e}" if p < 1e-3 else f"{p:.3f}", str(int(result.answer_ranks[0, i])))
    return table


def register(app: typer.Typer) -> None:
    """Add the lenses command to the main CLI (its methods and options come from the lenses registry)."""
    from ..lenses._registry import METHODS
    from ._weights import COMMAND_TAGS, only

    # The family also declares weight, similarity and probe methods (their own commands, in cli/_weights.py).
    app.command(name="lens", no_args_is_help=True)(method_options(only(METHODS, exclude=COMMAND_TAGS))(lens))
