"""Command line for attribution graphs: ``mechscope graph [MODEL] PROMPT --transcoders DIR``.

The options of ``GraphConfig`` come from ``mechscope.graphs.METHODS`` (``method_options``). ``--transcoders`` is a
folder with one saved transcoder per layer, ``DIR/layer_0/``, ``DIR/layer_1/``, ... (``features.save_dictionary``
writes one; SAELens and sparsify folders load too). The command writes into ``--out``: ``graph.json`` (the full
graph, ``AttributionGraph.to_json``), ``graph-pruned.json``, ``graph-viewer.json`` (the pruned graph in the format
circuit-tracer's and Neuronpedia's viewers read) and ``graph.html`` (the pruned graph drawn); it prints the scores,
the logits and the most influential features, or with ``--json`` a summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .._cache import atomic_write_bytes
from ._common import DEFAULT_MODEL, JsonOpt, open_model, user_errors
from ._common import err_console as _err
from ._common import out_console as _out
from ._config import config_for, method_options


def graph(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] PROMPT", help="Optional model, then the prompt.")],
    transcoders: Annotated[
        Path, typer.Option(help="Folder of per-layer transcoders: DIR/layer_0/, DIR/layer_1/, ... (one per layer).")
    ],
    target: Annotated[
        str | None, typer.Option(help="Attribute this one output token (mind the leading space: ' Paris').")
    ] = None,
    verify: Annotated[int, typer.Option(help="Check the graph by ablating its N most influential features.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for graph.json, graph-viewer.json and graph.html.")] = Path(
        "out/graph"
    ),
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Build the attribution graph of PROMPT from per-layer transcoders; prune, score, save JSON and HTML."""
    from ..graphs import METHODS, ReplacementModel, attribute, load_transcoders
    from ..graphs import verify as verify_graph
    from ..report import write_graph_report

    with user_errors():
        if len(args) > 2:
            raise ValueError(f"expected [MODEL] PROMPT, got {len(args)} arguments (quote the prompt)")
        if verify < 0:
            raise ValueError(f"--verify takes a number of features (0: no check), got {verify}")
        model_name, prompt = (DEFAULT_MODEL, args[0]) if len(args) == 1 else args
        spec = METHODS["attribution-graph"]
        config = config_for(spec, settings or {}, option_owner=METHODS)
        tcs = load_transcoders(transcoders)
        model = open_model(model_name)
        rm = ReplacementModel(model, tcs)
        full = attribute(rm, prompt, config=config, target=target)
        pruned = full.prune()
        check = verify_graph(rm, full, n=verify) if verify else None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "graph.json", full.to_json().encode())
    atomic_write_bytes(out / "graph-pruned.json", pruned.to_json().encode())
    viewer = pruned.to_graph_json(slug=out.name or "graph")
    atomic_write_bytes(out / "graph-viewer.json", json.dumps(viewer).encode())
    page = write_graph_report(pruned, out / "graph.html", check)
    summary = {
        "prompt": full.prompt,
        "nodes": len(full.nodes),
        "pruned_nodes": len(pruned.nodes),
        "replacement_score": full.replacement_score(),
        "completeness_score": full.completeness_score(),
        "logits": [{"token": n.token, "probability": n.probability} for n in full.nodes if n.kind == "logit"],
        "stats": full.to_dict()["stats"],
        "verification": check.to_dict() if check is not None else None,
        "files": [str(out / f) for f in ("graph.json", "graph-pruned.json", "graph-viewer.json", "graph.html")],
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _out().print(_table(pruned, full), soft_wrap=True)
    line = f"replacement score {summary['replacement_score']:.3f}, completeness {summary['completeness_score']:.3f}"
    if check is not None:
        line += f"; verification (predicted vs real): Pearson {check.correlation}, slope {check.slope}"
    _out().print(line)
    _err().print(f"saved {escape(str(page))} and the graph JSON files in {escape(str(out))}")


def _table(pruned: Any, full: Any) -> Table:
    """The logits and the most influential features of the pruned graph."""
    inf = pruned.node_influence()
    table = Table(title=f"{escape(repr(full.prompt))}: {len(full.nodes)} nodes, {len(pruned.nodes)} after pruning",
                  title_justify="left")  # fmt: skip
    for col in ("node", "token", "value", "influence"):
        table.add_column(col)
    order = sorted(range(len(pruned.nodes)), key=lambda i: -float(inf[i]))
    logits = [i for i, n in enumerate(pruned.nodes) if n.kind == "logit"]
    features = [i for i in order if pruned.nodes[i].kind == "feature"][:15]
    for i in logits + features:
        n = pruned.nodes[i]
        value = f"p={n.probability:.3f}" if n.kind == "logit" else f"a={n.activation:.3g}"
        table.add_row(escape(n.id), escape(repr(n.token)), value, f"{float(inf[i]):.3f}")
    return table


def register(app: typer.Typer) -> None:
    """Add the graph command to the main CLI (its options come from the graphs registry)."""
    from ..graphs._registry import METHODS

    app.command(name="graph", no_args_is_help=True)(method_options(METHODS)(graph))
