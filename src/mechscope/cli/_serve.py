"""Command line: ``mechscope serve [RUN_DIR ...] [--model NAME] [--host] [--port]``, the local explorer app.

The model is loaded once, before the server starts; the app (``mechscope.ui``) runs its model work on one worker.
Bound to 127.0.0.1 unless ``--host`` says otherwise; any other host gets a fresh access token, printed once in
the URL to open.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ._common import DEFAULT_MODEL, JsonOpt, open_model, user_errors
from ._common import err_console as _err


def serve(
    run_dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="RUN_DIR",
            help="Folders (or files) the app may read: circuit runs, "
            "leaderboards, feature databases. Nothing outside them is readable.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[str, typer.Option("--model", help="Model for the prompt lab (see `mechscope sites`).")] = (
        DEFAULT_MODEL
    ),
    host: Annotated[str, typer.Option(help="Interface to listen on; other than loopback needs the printed token.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_tokens: Annotated[int, typer.Option(help="Longest prompt accepted, in tokens.")] = 128,
    features: Annotated[
        list[Path] | None, typer.Option("--features", help="A feature database to browse (repeatable).")
    ] = None,
    dictionary: Annotated[
        Path | None, typer.Option(help="The dictionary behind the feature pages' *try it* and *steer*.")
    ] = None,
    transcoders: Annotated[
        Path | None,
        typer.Option(
            help="Transcoders for the attribution-graph view: layer_0/, layer_1/, ... or a cross-layer one "
            "(as `mechscope graph --transcoders` takes)."
        ),
    ] = None,
    tuned_lens: Annotated[
        Path | None,
        typer.Option(
            "--tuned-lens",
            help="A tuned lens for the model (`mechscope train-lens --out DIR`, or a tuned-lens package folder): "
            "the prompt lab shows its grid beside the logit lens.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the explorer, a local web app: prompt lab, attention, logit lens, circuits, graphs, bench, features."""
    try:
        import uvicorn

        from ..ui import Explorer, Roots, create_app, is_loopback, new_token
    except ImportError as err:
        _err().print(
            f"[bold red]error:[/] the explorer needs its extra: pip install 'mechscope[serve]' ({escape(str(err))})"
        )
        raise typer.Exit(1) from None
    with user_errors():
        if not 0 < port < 65536:
            raise ValueError(f"--port must be 1..65535, got {port}")
        if max_tokens < 1:
            raise ValueError(f"--max-tokens must be at least 1, got {max_tokens}")
        roots = Roots([*(run_dirs or []), *(features or [])])
        token = None if is_loopback(host) else new_token()
        m = open_model(model)
        loaded = None
        if dictionary is not None:
            from ..features import load_dictionary

            loaded = load_dictionary(dictionary)
            if loaded.cfg.site is None:
                raise ValueError(f"the dictionary in {dictionary} names no site: save it with its site set")
            m.resolve(str(loaded.cfg.site))  # a dictionary of another model's site is an error now, not per request
        coders = None
        if transcoders is not None:
            from ..graphs import ReplacementModel, load_transcoders

            coders = load_transcoders(transcoders)
            ReplacementModel(m, coders)  # a missing layer or a misfit is an error now, not per request
        lens = None
        if tuned_lens is not None:
            from ..lenses import load_tuned_lens

            lens = load_tuned_lens(tuned_lens)
            lens.check(m, f"the tuned lens in {tuned_lens}")  # another model's lens is an error now, not per request
    explorer = Explorer(m, roots, host=host, port=port, token=token, max_tokens=max_tokens, dictionary=loaded,
                        transcoders=coders, tuned_lens=lens)  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
    if token is not None:
        url += f"?token={token}"
        _err().print(
            "[bold]listening beyond this machine:[/] every request needs the token in this URL "
            "(shown once; restart for a new one)"
        )
    if as_json:  # one line a script can read before the server starts answering
        typer.echo(json.dumps({"url": url, "host": host, "port": port, "token": token}))
    else:
        typer.echo(f"mechscope explorer: {url}")
    uvicorn.run(create_app(explorer), host=host, port=port, log_level="warning", server_header=False)


def register(app: typer.Typer) -> None:
    """Add the serve command to the main CLI."""
    app.command(name="serve")(serve)
