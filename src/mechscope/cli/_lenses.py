"""Command line for lenses: ``mechscope lens [MODEL] PROMPT`` and ``mechscope train-lens [MODEL] --out DIR``.

``--tuned DIR`` reads through a tuned lens; ``train-lens`` trains one (resumable) and scores it on held-out text.

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

from ..core._registry import field_docs
from ..lenses._tuned_train import TrainLensConfig
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
        if (settings or {}).get("tuned") and method == "logit-lens":
            method = "tuned-lens"  # --tuned DIR names the lens: no need for --method tuned-lens as well
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
    name = result.lens.replace("_", " ")
    table = Table(title=f"{escape(model)}: {name} after {escape(repr(prompt))} "
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


_T = TrainLensConfig
_DOCS = field_docs(_T)


def train_lens(
    model: Annotated[str, typer.Argument(help="Model (built-in name, HF id, path, or tiny-FAMILY).")] = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option(help="Lens folder (checkpoints; resumed if present).")] = Path("out/tuned_lens"),
    steps: Annotated[int, typer.Option(help=_DOCS["steps"])] = _T.steps,
    batch: Annotated[int, typer.Option(help=_DOCS["batch"])] = _T.batch,
    ctx_len: Annotated[int, typer.Option(help=_DOCS["ctx_len"])] = _T.ctx_len,
    lr: Annotated[float, typer.Option(help=_DOCS["lr"])] = _T.lr,
    corpus: Annotated[str, typer.Option(help=_DOCS["corpus"])] = _T.corpus,
    held_out: Annotated[int, typer.Option(help=_DOCS["held_out"])] = _T.held_out,
    seed: Annotated[int, typer.Option(help=_DOCS["seed"])] = _T.seed,
    checkpoint_every: Annotated[int, typer.Option(help=_DOCS["checkpoint_every"])] = _T.checkpoint_every,
    precision: Annotated[str, typer.Option(help=_DOCS["precision"])] = _T.precision,
    export: Annotated[Path | None, typer.Option(help="Also write the tuned-lens package's layout here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a tuned lens (resumable), then score it against the logit lens on held-out text (table/JSON + PNG)."""
    from ..lenses import evaluate_tuned_lens, export_tuned_lens, train_tuned_lens
    from ..report import plot_lens_evaluation

    with user_errors():
        config = TrainLensConfig(steps=steps, batch=batch, ctx_len=ctx_len, lr=lr, corpus=corpus, precision=precision,
                                 held_out=held_out, seed=seed, checkpoint_every=checkpoint_every)  # fmt: skip
        m = open_model(model)
        lens = train_tuned_lens(m, out, config, progress=not as_json)
        if export is not None:
            export_tuned_lens(lens, export)
        result = evaluate_tuned_lens(m, lens)
    png = plot_lens_evaluation(result, out / "evaluation.png")
    (out / "evaluation.json").write_text(json.dumps(result.to_dict(), indent=2))
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    table = Table(title=f"{escape(m.name)}: held-out KL from the final distribution ({result.tokens:,} tokens)",
                  title_justify="left")  # fmt: skip
    for col in ("site", "KL tuned", "KL logit", "ppl tuned", "ppl logit"):
        table.add_column(col, justify="right")
    for i, site in enumerate(result.sites):
        table.add_row(site, f"{result.kl_tuned[i]:.3f}", f"{result.kl_logit[i]:.3f}", f"{result.ppl_tuned[i]:.1f}",
                      f"{result.ppl_logit[i]:.1f}")  # fmt: skip
    _out().print(table, soft_wrap=True)
    _err().print(f"model perplexity {result.ppl_model:.2f}; saved {escape(str(out))} and {escape(str(png))}")


def register(app: typer.Typer) -> None:
    """Add the lenses command to the main CLI (its methods and options come from the lenses registry)."""
    from ..lenses._registry import METHODS
    from ._weights import COMMAND_TAGS, only

    # The family also declares weight, similarity and probe methods (their own commands, in cli/_weights.py).
    app.command(name="lens", no_args_is_help=True)(method_options(only(METHODS, exclude=COMMAND_TAGS))(lens))
    app.command(name="train-lens")(train_lens)
