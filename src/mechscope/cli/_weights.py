"""Command line for weights, representation similarity and probes: ``weights``, ``similarity``, ``probe``.

Their methods and options come from ``mechscope.lenses.METHODS`` (the methods tagged ``weights``, ``similarity`` and
``probe``), through ``method_options``; each command prints a table, or the result's ``to_dict()`` with ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..core._registry import Registry
from ._common import DEFAULT_MODEL, JsonOpt, open_model, user_errors
from ._common import err_console as _err
from ._common import out_console as _out
from ._config import config_for, method_options

if TYPE_CHECKING:
    from ..lenses import CompositionScores, HeadSpectra, HeadTypeScores, SimilarityMatrix


def weights(
    model: Annotated[str, typer.Argument(help="Built-in name, Hugging Face id, local path, or tiny-FAMILY.")] = (
        DEFAULT_MODEL
    ),
    method: Annotated[str, typer.Option(help="What to read; its settings are under Method settings.")] = "weights",
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Read attention heads from the weights: OV/QK singular directions as tokens, composition, or head types."""
    from ..lenses import METHODS

    with user_errors():
        spec = METHODS[method]
        config = config_for(spec, settings or {}, option_owner=METHODS)
        m = open_model(model)
        result = spec(m, config=config)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    tables: dict[str, Callable[[Any, str], Table]] = {
        "weights": _spectra_table, "composition": _composition_table, "head-types": _types_table
    }  # fmt: skip
    if spec.name not in tables:  # a plug-in weights method: its JSON is its table
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    _out().print(tables[spec.name](result, m.name), soft_wrap=True)


def _spectra_table(result: HeadSpectra, model: str) -> Table:
    table = Table(title=f"{escape(model)}: OV and QK circuits (top singular direction of each, as tokens)",
                  title_justify="left")  # fmt: skip
    for col in ("head", "OV σ1..3", "OV writes", "OV reads", "QK σ1", "QK query", "QK key"):
        table.add_column(col)
    for i, (layer, head) in enumerate(result.heads):
        toks = {k: escape(" ".join(repr(t) for t in v[i][0][:3])) for k, v in result.tokens.items()}
        table.add_row(f"{layer}.{head}", " ".join(f"{float(s):.2f}" for s in result.ov_singular[i, :3]),
                      toks["ov_out"], toks["ov_in"], f"{float(result.qk_singular[i, 0]):.2f}", toks["qk_query"],
                      toks["qk_key"])  # fmt: skip
    return table


def _composition_table(result: CompositionScores, model: str) -> Table:
    table = Table(title=f"{escape(model)}: top composition scores (random baseline {result.baseline:.3f})",
                  title_justify="left")  # fmt: skip
    for col in ("mode", "writer", "reader", "score"):
        table.add_column(col)
    for mode in ("q", "k", "v"):
        for (la, ha), (lb, hb), score in result.top(mode, 5):
            table.add_row(mode.upper(), f"{la}.{ha}", f"{lb}.{hb}", f"{score:.3f}")
    return table


def _types_table(result: HeadTypeScores, model: str) -> Table:
    table = Table(title=f"{escape(model)}: head types on repeated random tokens (fraction of attention)",
                  title_justify="left")  # fmt: skip
    kinds = ("previous_token", "duplicate_token", "induction", "copy_suppression")
    for kind in kinds:
        table.add_column(kind.replace("_", "-"))
    tops = [result.top(kind, 5) for kind in kinds]  # type: ignore[arg-type]
    for rank in range(len(tops[0])):
        table.add_row(*(f"{top[rank][0][0]}.{top[rank][0][1]}  {top[rank][1]:.3f}" for top in tops))
    return table


def similarity(
    model: Annotated[str, typer.Argument(help="Built-in name, Hugging Face id, local path, or tiny-FAMILY.")] = (
        DEFAULT_MODEL
    ),
    other: Annotated[str | None, typer.Option(help="A second model, compared on the same tokens.")] = None,
    other_sites: Annotated[str | None, typer.Option(help="The second model's sites (default: --sites).")] = None,
    corpus: Annotated[str, typer.Option(help="Corpus the inputs are cut from (built-in, file or dataset).")] = (
        "python-docs"
    ),
    contexts: Annotated[int, typer.Option(help="Contexts of the corpus compared.")] = 8,
    ctx_len: Annotated[int, typer.Option(help="Tokens per context.")] = 64,
    out: Annotated[Path, typer.Option(help="Folder for the heatmap PNG.")] = Path("out/similarity"),
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Linear CKA (debiased) or SVCCA between every pair of sites, over the tokens of a corpus; heatmap PNG."""
    from ..data.corpus import load_corpus, token_contexts
    from ..lenses import METHODS, SimilarityConfig, site_similarity
    from ..report import similarity_heatmap

    with user_errors():
        config: SimilarityConfig = config_for(METHODS["similarity"], settings or {}, option_owner=METHODS)
        m = open_model(model)
        tokens = token_contexts(load_corpus(corpus), m.tokenizer, ctx_len)[:contexts]
        second = open_model(other) if other else None
        result = site_similarity(m, tokens, config, other=second, other_sites=other_sites)
    png = similarity_heatmap(result, out / f"{config.measure}.png")
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    _out().print(_matrix_table(result), soft_wrap=True)
    _err().print(f"saved {escape(str(png))}")


def _matrix_table(result: SimilarityMatrix) -> Table:
    table = Table(title=f"{result.measure} over {result.n} tokens", title_justify="left")
    table.add_column("")
    for col in result.cols:
        table.add_column(escape(col), justify="right")
    for name, row in zip(result.rows, result.values, strict=True):
        table.add_row(escape(name), *(f"{float(v):.2f}" for v in row))
    return table


def probe(
    data: Annotated[Path, typer.Argument(help='JSONL file, one {"text": ..., "label": int} per line.')],
    model: Annotated[str, typer.Option(help="Built-in name, Hugging Face id, local path, or tiny-FAMILY.")] = (
        DEFAULT_MODEL
    ),
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Cross-validated linear probe at a site for labelled texts, with a control task and selectivity."""
    from ..lenses import METHODS

    with user_errors():
        rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
        if not rows or any(not {"text", "label"} <= set(r) for r in rows):
            raise ValueError(f'{data}: every line must be a JSON object with "text" and "label"')
        spec = METHODS["probe"]
        config = config_for(spec, settings or {}, option_owner=METHODS)
        result = spec(open_model(model), [r["text"] for r in rows], [int(r["label"]) for r in rows], config=config)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    control = "—" if result.control_accuracy is None else f"{result.control_accuracy:.3f}"
    selectivity = "—" if result.selectivity is None else f"{result.selectivity:.3f}"
    _out().print(f"probe at {result.site} on {result.n} examples: accuracy {result.accuracy:.3f} "
                 f"(chance {result.chance:.3f}), control {control}, selectivity {selectivity}")  # fmt: skip


def steer(
    model: Annotated[str, typer.Argument(help="Built-in name, Hugging Face id, local path, or tiny-FAMILY.")] = (
        DEFAULT_MODEL
    ),
    layers: Annotated[str | None, typer.Option(help="Layers swept, comma-separated (default: every layer).")] = None,
    scales: Annotated[str, typer.Option(help="Multiples of each vector swept, comma-separated.")] = "1,2,4,8",
    max_damage: Annotated[float, typer.Option(help="KL (nats) the best setting may cost on unrelated text.")] = 0.1,
    out: Annotated[Path, typer.Option(help="Folder for the change-vs-damage PNG.")] = Path("out/steer"),
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """CAA steering vectors from a task's pairs at every layer, swept over scales: behaviour change vs damage (KL)."""
    from ..lenses import METHODS
    from ..report import steering_plot

    with user_errors():
        spec = METHODS["steer"]
        config = config_for(spec, settings or {}, option_owner=METHODS)
        try:
            config = dataclasses.replace(config, scales=tuple(float(x) for x in scales.split(",")),
                                         layers=tuple(int(x) for x in layers.split(",")) if layers else ())  # fmt: skip
        except ValueError as e:
            raise ValueError(f"--layers takes integers and --scales numbers, comma-separated ({e})") from None
        result = spec(open_model(model), config=config)
    png = steering_plot(result, out / f"{result.task}.png")
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    table = Table(title=f"steering {result.task}: logit difference {result.corrupt:.2f} (corrupt) -> "
                        f"{result.clean:.2f} (clean); change / KL per scale", title_justify="left")  # fmt: skip
    table.add_column("site")
    table.add_column("|vector|", justify="right")
    for scale in result.scales:
        table.add_column(f"x{scale:g}", justify="right")
    for site, norm, change, damage in zip(result.sites, result.norms, result.change, result.damage, strict=True):
        table.add_row(site, f"{float(norm):.1f}",
                      *(f"{float(c):+.2f} / {float(d):.3f}" for c, d in zip(change, damage, strict=True)))  # fmt: skip
    _out().print(table, soft_wrap=True)
    best = result.best(max_damage)
    _out().print(f"best within KL {max_damage:g}: " + ("none" if best is None else
                 f"{best[0]} x{best[1]:g}, change {best[2]:+.2f}"))  # fmt: skip
    _err().print(f"saved {escape(str(png))}")


COMMAND_TAGS = ("weights", "similarity", "probe", "steering")
"""Tags of the lenses family's methods that have a command of their own here (the rest belong to ``lens``)."""


def only(registry: Registry[Any, Any], tag: str | None = None, *, exclude: tuple[str, ...] = ()) -> Registry[Any, Any]:
    """The registry's methods tagged ``tag`` (all when None) and no tag in ``exclude``, as a registry of their own.

    So each command offers only its own methods' options. A view is taken when the command is registered.
    """
    view: Registry[Any, Any] = Registry(registry.family)
    for spec in registry.specs(tag=tag):
        if not spec.tags & set(exclude):
            view.add(spec)
    return view


def register(app: typer.Typer) -> None:
    """Add the weights, similarity, probe and steer commands (methods and options from the lenses registry)."""
    from ..lenses._registry import METHODS

    app.command(name="weights")(method_options(only(METHODS, "weights"))(weights))
    app.command(name="similarity")(method_options(only(METHODS, "similarity"), choice="")(similarity))
    app.command(name="probe", no_args_is_help=True)(method_options(only(METHODS, "probe"), choice="")(probe))
    app.command(name="steer")(method_options(only(METHODS, "steering"), choice="")(steer))
