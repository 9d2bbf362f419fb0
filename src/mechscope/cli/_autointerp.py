"""Command line for auto-interpretation: ``mechscope explain DB`` and ``mechscope score DB``.

Both are resumable jobs whose rows go into the feature database; the explainers' and scorers' settings are
options made from their declared configs. The chat model is the built-in SmolLM2 unless ``--url`` names an
OpenAI-compatible server. Results show in ``mechscope features show``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from ._common import JsonOpt, user_errors
from ._common import err_console as _err
from ._common import out_console as _out
from ._config import config_for, configs_for, method_choice, method_options

if TYPE_CHECKING:
    ExplainerOpt = str
    ScoredOpt = str
else:
    from ..autointerp import EXPLAINERS

    ExplainerOpt = Annotated[method_choice(EXPLAINERS), typer.Option(help="Explainer (its settings: below).")]
    ScoredOpt = Annotated[method_choice(EXPLAINERS), typer.Option("--explainer", help="Whose explanations to score.")]

DbArg = Annotated[Path, typer.Argument(help="Feature database (SQLite) built by `mechscope features build`.")]
LatentsOpt = Annotated[str | None, typer.Option(help="Latents: '0-99,120,7' (default: every latent that ever fired).")]
UrlOpt = Annotated[
    str | None,
    typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (default: the built-in SmolLM2)."),
]
LlmModelOpt = Annotated[str, typer.Option("--llm-model", help="The `model` field sent to --url.")]
ConcurrencyOpt = Annotated[int, typer.Option(help="Requests in flight at once to --url.")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds per request to --url.")]
RetriesOpt = Annotated[int, typer.Option(help="Tries per request to --url (exponential backoff).")]


@dataclass(frozen=True)
class ChatOptions:
    """The chat model's options, declared once for ``explain`` and ``score`` (``with_chat_options``)."""

    url: UrlOpt = None
    llm_model: LlmModelOpt = "default"
    concurrency: ConcurrencyOpt = 4
    timeout: TimeoutOpt = 60.0
    retries: RetriesOpt = 3

    def chat(self, needed: bool) -> Any:
        """``HTTPChat`` when ``--url`` is given, else the built-in ``LocalChat`` if a method ``needed`` one."""
        from ..autointerp import HTTPChat, LocalChat

        if self.url is not None:
            return HTTPChat(self.url, self.llm_model, concurrency=self.concurrency, timeout=self.timeout,
                            retries=self.retries)  # fmt: skip
        return LocalChat() if needed else None


def with_chat_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` (which takes ``chat: ChatOptions``) as typer sees it: ``ChatOptions``' fields as its options."""
    hints = typing.get_type_hints(command, include_extras=True)
    fields = typing.get_type_hints(ChatOptions, include_extras=True)
    params: list[inspect.Parameter] = []
    for p in inspect.signature(command).parameters.values():
        if p.name == "chat":
            params += [inspect.Parameter(f.name, p.kind, default=f.default, annotation=fields[f.name])
                       for f in dataclasses.fields(ChatOptions)]  # fmt: skip
        else:
            params.append(p.replace(annotation=hints.get(p.name, p.annotation)))

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        chat = ChatOptions(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(ChatOptions)})
        return command(chat=chat, **kwargs)

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


def parse_latents(text: str | None) -> list[int] | None:
    """``'0-3,7'`` -> ``[0, 1, 2, 3, 7]``; None stays None."""
    if text is None:
        return None
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        except ValueError:
            raise ValueError(f"--latents takes numbers and ranges such as '0-99,120', got {part!r}") from None
    return out


@with_chat_options
def explain(
    database: DbArg,
    explainer: ExplainerOpt = "top-tokens",
    latents: LatentsOpt = None,
    chat: ChatOptions = ChatOptions(),
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Explain every latent of a feature database in words (resumable; rows stored in the database)."""
    from ..autointerp import EXPLAINERS
    from ..autointerp import explain as run

    with user_errors():
        spec = EXPLAINERS[explainer]
        config = config_for(spec, settings or {}, option_owner=EXPLAINERS)
        llm = chat.chat("llm" in spec.tags)
        summary = run(database, spec, config=config, latents=parse_latents(latents), llm=llm)
    _report({"explainer": spec.name, **summary.to_dict()}, as_json)


@with_chat_options
def score(
    database: DbArg,
    scorer: Annotated[
        list[str],
        typer.Option(help="Scorer (repeat for several): detection, fuzzing, embedding, simulation, llm-simulation."),
    ],
    explainer: ScoredOpt = "top-tokens",
    run_id: Annotated[
        str | None, typer.Option("--run", help="Which run of the explainer (default: its fullest).")
    ] = None,
    latents: LatentsOpt = None,
    store: Annotated[
        Path | None, typer.Option(help="Activation store (default: the one the database was built from).")
    ] = None,
    dictionary: Annotated[
        Path | None,
        typer.Option(help="Dictionary folder (for non-activating contexts; a planted database needs none)."),
    ] = None,
    n_windows: Annotated[int, typer.Option(help="Random store windows encoded for non-activating contexts.")] = 256,
    model: Annotated[
        str | None,
        typer.Option(help="Model the output scorer steers (default: the one the activation store was harvested from)."),
    ] = None,
    steer_strength: Annotated[
        float, typer.Option(help="Output scorer: multiple of the latent's decoder row added at its site.")
    ] = 8.0,
    chat: ChatOptions = ChatOptions(),
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Score an explainer's stored explanations (with chance level and a shuffled-explanation baseline)."""
    from ..autointerp import SCORERS
    from ..autointerp import score as run

    with user_errors():
        specs = [SCORERS[s] for s in scorer]
        configs = configs_for(specs, settings or {}, option_owner=SCORERS)
        steer = None
        if steered := [s.name for s in specs if "intervention" in s.tags]:
            steer = _steerer(database, store, dictionary, model, steer_strength, steered)
        llm = chat.chat(any("llm" in s.tags for s in specs))
        needs_pool = any("intervention" not in s.tags for s in specs)
        pool = _pool(database, store, dictionary, n_windows) if needs_pool else None
        out: dict[str, Any] = {}
        for spec, config in zip(specs, configs, strict=True):
            tokens = _context_tokens(database, store) if getattr(config, "pooled_contexts", False) else None
            summary = run(database, spec, explainer=explainer, run=run_id, config=config,
                          latents=parse_latents(latents), llm=llm, pool=pool, steer=steer,
                          context_tokens=tokens)  # fmt: skip
            out[spec.name] = {**summary.to_dict(), **_means(database, explainer, summary.run, spec.name)}
    _report(out, as_json)


def _steerer(database: Path, store_dir: Path | None, dictionary: Path | None, model: str | None, strength: float,
             scorers: list[str]) -> Any:  # fmt: skip
    """A ``DictionarySteerer`` on the model (``--model``, else the store's) and the dictionary of ``--dictionary``."""
    from ..autointerp import DictionarySteerer
    from ..store import ActivationStore, FeatureDB
    from ._common import open_model

    if dictionary is None:
        raise ValueError(f"{', '.join(scorers)} steers the model along each latent's decoder row: give --dictionary "
                         "(the one the database was built from; a planted oracle has no decoder)")  # fmt: skip
    from ..features import load_dictionary

    with FeatureDB(database) as db:
        name = model or ActivationStore(store_dir or db.meta["store"]).provenance.model
    return DictionarySteerer(open_model(name), load_dictionary(dictionary), strength=strength)


def _context_tokens(database: Path, store_dir: Path | None) -> Any:
    """The store contexts' tokens, for the embedding scorer's ``--pooled-contexts``."""
    from ..autointerp import store_context_tokens
    from ..store import ActivationStore, FeatureDB

    with FeatureDB(database) as db:
        return store_context_tokens(ActivationStore(store_dir or db.meta["store"]), database)


def _pool(database: Path, store_dir: Path | None, dictionary: Path | None, n_windows: int) -> Any:
    from ..autointerp import NegativePool, OracleDictionary
    from ..autointerp._planted import feature_set
    from ..store import ActivationStore, FeatureDB

    with FeatureDB(database) as db:
        store = ActivationStore(store_dir or db.meta["store"])
        if dictionary is not None:
            from ..features import load_dictionary

            d: Any = load_dictionary(dictionary)
        elif (planted := feature_set(db.meta["dictionary"].get("features"))) is not None:
            d = OracleDictionary(_vocab(db), planted)
        else:
            raise ValueError("scoring needs non-activating contexts: give --dictionary (the one the database was "
                             "built from)")  # fmt: skip
        return NegativePool.build(store, d, db, n_windows=n_windows)


def _vocab(db: Any) -> list[str]:
    import sqlite3

    con = sqlite3.connect(f"{Path(db.path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [t for _, t in con.execute("SELECT token_id, text FROM vocab ORDER BY token_id")]
    finally:
        con.close()


def _means(database: Path, explainer: str, run: str, scorer: str) -> dict[str, Any]:
    from ..autointerp import Records

    with Records(database) as records:
        rows = [r for r in records.scores(explainer=explainer, run=run, scorer=scorer) if r.value is not None]
    if not rows:
        return {"latents_scored": 0}
    mean = sum(r.value or 0.0 for r in rows) / len(rows)
    shuffled = sum(r.shuffled or 0.0 for r in rows) / len(rows)
    return {"latents_scored": len(rows), "mean": mean, "mean_shuffled": shuffled, "chance": rows[0].chance}


def show_lines(database: Path, latent: int) -> list[str]:
    """The stored explanations and scores of one latent, one line each (for ``features show``)."""
    from ..autointerp import read_explanations, read_scores

    lines = []
    scores = read_scores(database, latent)
    for e in read_explanations(database, latent):
        text = e.text if e.text is not None else f"(failed: {e.error})"
        lines.append(f"explanation [{e.explainer} {e.run}]: {text}" + (f"  ({e.note})" if e.note else ""))
        for s in scores:
            if (s.explainer, s.run) == (e.explainer, e.run):
                value = "failed" if s.value is None else f"{s.value:.3f} (shuffled {s.shuffled:.3f}, chance {s.chance})"
                lines.append(f"  {s.scorer}: {value}")
    return lines


def _report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        for key, value in summary.items():
            _out().print(f"[bold]{escape(str(key))}[/]: {escape(str(value))}", soft_wrap=True)
    _err().print("[green]done[/]")


def register(app: typer.Typer) -> None:
    """Add ``explain`` and ``score`` to the main CLI."""
    from ..autointerp import EXPLAINERS, SCORERS

    app.command(name="explain", no_args_is_help=True)(method_options(EXPLAINERS, choice="explainer")(explain))
    app.command(name="score", no_args_is_help=True)(method_options(SCORERS, choice="scorer")(score))
