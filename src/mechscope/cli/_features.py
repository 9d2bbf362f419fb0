"""Command line for the features path: harvest -> dict train -> dict eval -> features build -> features show."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from ..core import DEFAULT_MODEL
from ..core._registry import field_docs
from ..features._kinds import KINDS, train_config
from ..features._train import TrainConfig
from ._common import JsonOpt, open_model, user_errors
from ._common import err_console as _err
from ._common import out_console as _out
from ._config import config_for, method_choice, method_options

ModelOpt = Annotated[str, typer.Option("--model", help="Model (built-in name, HF id, path, or tiny-FAMILY).")]
dict_app = typer.Typer(help="Train and evaluate sparse dictionaries on an activation store.", no_args_is_help=True)
features_app = typer.Typer(help="Build and browse a feature database.", no_args_is_help=True)


class _Epochs:
    """Re-iterable stream of full store batches, epoch after epoch (each epoch reshuffled by its index).

    Each epoch's short last batch is left out, so every step sees ``batch_size`` rows and splits evenly over
    torchrun's processes.
    """

    def __init__(self, store, site: str, batch_size: int) -> None:
        self.store, self.site, self.batch_size = store, site, batch_size

    def __iter__(self) -> Iterator:
        epoch = 0
        while True:
            full = 0
            for batch in self.store.batches(self.site, self.batch_size, shuffle=True, seed=epoch):
                if len(batch) == self.batch_size:
                    full += 1
                    yield batch
            if not full:
                raise ValueError(f"the store holds fewer rows of {self.site!r} than one batch of {self.batch_size}")
            epoch += 1


def harvest(
    out: Annotated[Path, typer.Argument(help="Store folder (resumed if it exists).")],
    sites: Annotated[list[str], typer.Option("--site", "-s", help="Site name or glob; repeat for several.")],
    model: ModelOpt = DEFAULT_MODEL,
    corpus: Annotated[str, typer.Option(help="python-docs, a .txt/.jsonl file, or a HF dataset.")] = "python-docs",
    ctx_len: int = 128,
    batch_size: int = 16,
    max_tokens: Annotated[int | None, typer.Option(help="Stop after this many tokens.")] = None,
    dtype: str = "float32",
    seed: int = 0,
    as_json: JsonOpt = False,
) -> None:
    """Harvest activations at SITES over a corpus into a sharded, resumable safetensors store."""
    from ..store import HarvestConfig
    from ..store import harvest as run_harvest

    with user_errors():
        m = open_model(model)
        config = HarvestConfig(tuple(sites), corpus, ctx_len, batch_size, dtype=dtype, max_tokens=max_tokens, seed=seed)
        store = run_harvest(m, config, out)
    summary = {"store": str(out), "tokens": store.manifest.n_tokens, **dataclasses.asdict(store.provenance)}
    _report(summary, as_json)


if TYPE_CHECKING:
    KindOpt = str
else:  # typer shows and checks the declared kinds as choices
    KindOpt = Annotated[method_choice(KINDS), typer.Option(help="Dictionary kind (its settings: below).")]
ExpansionOpt = Annotated[int, typer.Option(help="Latents per input dimension (d_sae = expansion * d_in).")]
_T = TrainConfig
LrOpt = Annotated[float, typer.Option(help=field_docs(_T)["lr"])]
BatchOpt = Annotated[int, typer.Option(help=field_docs(_T)["batch_size"])]
TokensOpt = Annotated[int, typer.Option(help=field_docs(_T)["n_tokens"])]
SeedOpt = Annotated[int, typer.Option(help=field_docs(_T)["seed"])]
CheckpointOpt = Annotated[float, typer.Option("--checkpoint-minutes", help=field_docs(_T)["checkpoint_minutes"])]


@dict_app.command("train")
@method_options(KINDS)
def dict_train(
    store_dir: Annotated[Path, typer.Argument(help="Activation store folder.")],
    out: Annotated[Path, typer.Argument(help="Run folder (checkpoints; resumed if present).")],
    site: Annotated[str | None, typer.Option(help="Store site (default: its only site).")] = None,
    kind: KindOpt = "topk",
    expansion: ExpansionOpt = 16,
    lr: LrOpt = _T.lr,
    batch_size: BatchOpt = _T.batch_size,
    n_tokens: TokensOpt = _T.n_tokens,
    seed: SeedOpt = _T.seed,
    checkpoint_minutes: CheckpointOpt = _T.checkpoint_minutes,
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Train a sparse dictionary on a store's activations (checkpointed, resumable).

    Runs unchanged under ``torchrun --nproc_per_node N -m mechscope.cli dict train ...`` (data-parallel; rank 0
    reports).
    """
    from ..store import ActivationStore

    with user_errors():
        store = ActivationStore(store_dir)
        site = site or _only_site(store)
        data = _Epochs(store, site, batch_size)
        config = _config(kind, settings, store.width(site), expansion, site, lr, batch_size, n_tokens, seed)
        config = dataclasses.replace(config, checkpoint_minutes=checkpoint_minutes)
        p = store.provenance
        provenance = {"model": p.model, "weights_sha256": p.weights_sha256, "corpus_sha256": p.corpus_sha256,
                      "ctx_len": p.ctx_len, "site": site, "store_path": str(store.path.resolve())}  # fmt: skip
        _train(data, config, out, as_json, provenance)


@dict_app.command("train-live")
@method_options(KINDS)
def dict_train_live(
    out: Annotated[Path, typer.Argument(help="Run folder (checkpoints; resumed if present).")],
    site: Annotated[str, typer.Option("--site", "-s", help="The one site to read, e.g. resid_post.15.")],
    model: ModelOpt = DEFAULT_MODEL,
    corpus: Annotated[str, typer.Option(help="python-docs, a .txt/.jsonl file, or a HF dataset.")] = "python-docs",
    ctx_len: int = 128,
    kind: KindOpt = "topk",
    expansion: ExpansionOpt = 16,
    lr: LrOpt = _T.lr,
    batch_size: BatchOpt = _T.batch_size,
    n_tokens: TokensOpt = _T.n_tokens,
    seed: SeedOpt = _T.seed,
    checkpoint_minutes: CheckpointOpt = _T.checkpoint_minutes,
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Train a sparse dictionary on activations computed as it trains (no store on disk; resumable).

    Each batch comes from the model's forward passes over the corpus (stopping after SITE), shuffled in a buffer;
    a resumed run recomputes the batches it skips. For many epochs over one corpus, harvest a store instead.
    """
    from ..store import LiveActivations

    with user_errors():
        spec = KINDS[kind]  # an unknown kind fails before the model loads
        config_for(spec, settings or {}, option_owner=KINDS)
        m = open_model(model)
        data = LiveActivations(m, site, batch_size, corpus=corpus, ctx_len=ctx_len, seed=seed)
        d_in = m.resolve(site)[0].sizes[-1] or int(
            m.run(data.contexts[:1, :2], cache=data.site).cache[data.site].shape[-1]
        )
        config = _config(kind, settings, d_in, expansion, data.site, lr, batch_size, n_tokens, seed)
        config = dataclasses.replace(config, checkpoint_minutes=checkpoint_minutes)
        provenance = {**m.provenance, "corpus": corpus, "ctx_len": ctx_len, "site": data.site}
        _train(data, config, out, as_json, provenance)


def _config(kind: str, settings: dict[str, Any] | None, d_in: int, expansion: int, site: str, lr: float,
            batch_size: int, n_tokens: int, seed: int) -> TrainConfig:  # fmt: skip
    """The run's config: the kind's settings from the command line, the rest at ``TrainConfig``'s defaults."""
    spec = KINDS[kind]
    own = config_for(spec, settings or {}, option_owner=KINDS)
    return train_config(kind, d_in, d_in * expansion, own, site=site, lr=lr, batch_size=batch_size,
                        n_tokens=n_tokens, seed=seed)  # fmt: skip


def _train(data, config: TrainConfig, out: Path, as_json: bool, provenance: dict) -> None:
    """Train one dictionary on ``data`` and report (rank 0 only under torchrun)."""
    from ..features import train

    result = train(config, data, out, provenance=provenance)
    last = result.history[-1]._asdict() if result.history else {}
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every process trains; one reports
        from ..report import dictionary_section, write_report

        page = write_report(out / "report.html", f"Dictionary {out.name}", [dictionary_section(result)])
        summary = {"run": str(out), "steps": result.steps, "tokens": result.tokens, "last": last, "report": str(page)}
        _report(summary, as_json)


@dict_app.command("eval")
def dict_eval(
    dictionary: Annotated[Path, typer.Argument(help="Dictionary folder (mechscope, SAELens or sparsify layout).")],
    store_dir: Annotated[Path, typer.Argument(help="Activation store folder.")],
    site: Annotated[str | None, typer.Option(help="Store site (default: the dictionary's or the only one).")] = None,
    n_tokens: int = 65_536,
    model: Annotated[
        str | None, typer.Option("--model", help="Also splice into this model: CE loss recovered and KL.")
    ] = None,
    splice_contexts: Annotated[int, typer.Option(help="Store contexts used for the splice metrics.")] = 32,
    as_json: JsonOpt = False,
) -> None:
    """Reconstruction metrics on stored activations (MSE, FVU, L0, dead, dense); with --model, CE recovered + KL."""
    import torch

    from ..features import check_provenance, evaluate, load_dictionary
    from ..store import ActivationStore

    with user_errors():
        store, d = ActivationStore(store_dir), load_dictionary(dictionary)
        p = store.provenance
        check_provenance(dictionary, model={"model": p.model, "weights_sha256": p.weights_sha256}, site=site)
        site = site or d.cfg.site or _only_site(store)
        if store.width(site) != d.cfg.d_in:
            raise ValueError(
                f"dictionary {dictionary} reads d_in={d.cfg.d_in} (site {d.cfg.site!r}) but store site {site!r} is "
                f"{store.width(site)} wide"
            )
        rows, seen = [], 0
        for batch in store.batches(site, 4096, shuffle=True, seed=12345):
            rows.append(batch)
            seen += len(batch)
            if seen >= n_tokens:
                break
        with torch.no_grad():
            metrics = evaluate(d, torch.cat(rows)[:n_tokens])
        summary = {"dictionary": str(dictionary), "site": site, "tokens": min(seen, n_tokens), **metrics._asdict()}
        if model is not None:
            from ..features import splice_eval

            m = open_model(model)
            store.check(m)
            check_provenance(dictionary, model=m.provenance)
            tokens = store.tokens()[:splice_contexts]
            summary["splice"] = splice_eval(m, d, site, tokens, progress=True)._asdict()
    _report(summary, as_json)


@features_app.command("build")
def features_build(
    store_dir: Annotated[Path, typer.Argument(help="Activation store folder.")],
    dictionary: Annotated[Path, typer.Argument(help="Dictionary folder.")],
    out: Annotated[Path, typer.Argument(help="SQLite file to write.")],
    model: ModelOpt = DEFAULT_MODEL,
    top_k: int = 20,
    as_json: JsonOpt = False,
) -> None:
    """Build the feature database (frequencies, histograms, top contexts, quantile samples, logit effects)."""
    from ..features import check_provenance, load_dictionary
    from ..store import ActivationStore, FeatureDBConfig, build_feature_db

    with user_errors():
        m, store = open_model(model), ActivationStore(store_dir)
        store.check(m)
        check_provenance(dictionary, model=m.provenance)
        w_u = m.module.get_output_embeddings().weight.T  # type: ignore[operator]
        config = FeatureDBConfig(top_k=top_k)
        build_feature_db(store, load_dictionary(dictionary), out, config, W_U=w_u, tokenizer=m.tokenizer)
    _report({"database": str(out)}, as_json)


@features_app.command("show")
def features_show(
    database: Annotated[Path, typer.Argument(help="Feature database (SQLite).")],
    latent: Annotated[int, typer.Argument(help="Latent index.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one latent: frequency, histogram, top contexts, quantile samples, logit effects, explanations and scores."""
    from ..store import FeatureDB
    from ._autointerp import show_lines

    with user_errors():
        card = FeatureDB(database).latent(latent)
        words = show_lines(database, latent)
    if as_json:
        from ..autointerp import read_explanations, read_scores

        explained = {"explanations": [e.to_dict() for e in read_explanations(database, latent)],
                     "scores": [s.to_dict() for s in read_scores(database, latent)]}  # fmt: skip
        typer.echo(json.dumps({**card.to_dict(), **explained}, indent=2))
    else:
        _out().print(escape("\n".join([card.to_text(), *words])), soft_wrap=True)


def _only_site(store) -> str:
    sites = list(store.provenance.sites)
    if len(sites) != 1:
        raise ValueError(f"the store holds several sites {sites}: choose one with --site")
    return sites[0]


def _report(summary: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        for key, value in summary.items():
            _out().print(f"[bold]{escape(str(key))}[/]: {escape(str(value))}", soft_wrap=True)
    _err().print("[green]done[/]")


def register(app: typer.Typer) -> None:
    """Add the features commands to the main CLI."""
    app.command()(harvest)
    app.add_typer(dict_app, name="dict")
    app.add_typer(features_app, name="features")
