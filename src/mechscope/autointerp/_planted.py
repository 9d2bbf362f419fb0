"""Planted features: latents whose meaning is known, to check the auto-interpretation pipeline end to end.

An *oracle dictionary* reads a store site ``token-facts`` that holds, for each token, its id, the previous token's id
and its position (three exact float32 columns), and its latents are known functions of the text: digits, Python
keywords, the token after ``def``, closing brackets, capitalised words, and a position-only rule. The store and
the feature database are built exactly as for a real dictionary (``build_feature_db``), so contexts, negatives,
explainers, scorers and jobs run on them unchanged; only the meaning of each latent is given rather than learnt.
A second set, ``FIND``, holds FIND-style synthetic neurons (concepts, a polyfunctional and a corrupted one, a graded
one) over the same site; ``FEATURE_SETS`` names both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from safetensors.torch import save
from torch import Tensor

from mechscope._cache import atomic_write_bytes
from mechscope.data.corpus import bos_id, load_corpus, token_contexts
from mechscope.store import ActivationStore, FeatureDB, FeatureDBConfig, Manifest, Provenance, Shard, build_feature_db

SITE = "token-facts"  # not "tokens": that key holds every shard's token ids


ERROR_WORDS = frozenset({"error", "errors", "exception", "exceptions", "raise", "raises", "raised", "fail", "fails",
                         "failed", "failure", "warning", "warnings"})  # fmt: skip
FILE_WORDS = frozenset({"file", "files", "filename", "filenames", "path", "paths", "directory", "directories",
                        "folder", "folders", "open", "read", "write"})  # fmt: skip

FACTS: dict[str, Callable[[str], float]] = {
    "digit": lambda x: float(x.isdigit()),
    "keyword": lambda x: float(x in keyword.kwlist),
    "def": lambda x: float(x == "def"),
    "closing": lambda x: float(all(c in ")]}" for c in x)),
    "capital": lambda x: float(re.fullmatch(r"[A-Z][a-z]+", x) is not None),
    "error": lambda x: float(x.lower() in ERROR_WORDS),
    "file": lambda x: float(x.lower() in FILE_WORDS),
    "file-word": lambda x: float(x.lower() == "file"),
    "constant": lambda x: float(x in ("True", "False", "None")),
    "long": lambda x: float(max(0, len(x) - 7) if x.isalpha() else 0),
}
"""Per-token facts the planted features read: each a function of the token's text, stripped of spaces (never
called on an empty one, which has every fact 0)."""


class Lexicon(NamedTuple):
    """Per-vocabulary-entry facts the planted features read (``FACTS``, each ``[d_vocab]``)."""

    facts: dict[str, Tensor]
    spread: Tensor
    """A deterministic activation level in [1, 1.8] per token, so the activation quantiles differ."""

    @classmethod
    def of(cls, texts: list[str]) -> Lexicon:
        """The facts of each decoded vocabulary entry."""
        s = [t.strip() for t in texts]
        facts = {name: torch.tensor([fn(x) if x else 0.0 for x in s]) for name, fn in FACTS.items()}
        return cls(facts, 1 + (torch.arange(len(texts)) % 5).float() / 5)


class Planted(NamedTuple):
    """One planted latent: its name, its true description, and its activation function."""

    name: str
    description: str
    fn: Callable[[Lexicon, Tensor, Tensor, Tensor], Tensor]
    """``fn(lexicon, ids, prev_ids, positions) -> activations`` (each ``[rows]``; ``prev_ids`` is -1 at position 0)."""


def _token(*facts: str, unless: str | None = None) -> Callable[[Lexicon, Tensor, Tensor, Tensor], Tensor]:
    """Fires on tokens with any of ``facts`` (and not ``unless``), at the token's level times its fact's value."""

    def fn(lex: Lexicon, ids: Tensor, prev: Tensor, pos: Tensor) -> Tensor:
        value = torch.stack([lex.facts[f][ids] for f in facts]).amax(0)
        if unless is not None:
            value = value * (lex.facts[unless][ids] == 0)
        return value * lex.spread[ids]

    return fn


PLANTED: tuple[Planted, ...] = (
    Planted("digits", "digits and numbers", _token("digit")),
    Planted("python-keywords", "Python keywords such as def, return, if, for, import and class", _token("keyword")),
    Planted(
        "after-def",
        "the name of a function, right after the keyword def",
        lambda lex, ids, prev, pos: lex.facts["def"][prev.clamp_min(0)] * (prev >= 0) * lex.spread[ids],
    ),
    Planted("closing-brackets", "closing brackets and parentheses", _token("closing")),
    Planted("capitalised", "capitalised words that start with an uppercase letter", _token("capital")),
    Planted(
        "position",
        "the very start of a text: its first three positions, whatever the words",
        lambda lex, ids, prev, pos: ((pos >= 1) & (pos <= 3)).float() * (4 - pos).float(),
    ),
)
"""The planted features, in latent order."""

FIND: tuple[Planted, ...] = (
    Planted("errors", "words about errors and exceptions", _token("error")),
    Planted("files", "words about files, paths and directories", _token("file")),
    Planted("constants", "the Python constants True, False and None", _token("constant")),
    Planted("errors-or-digits", "words about errors and exceptions, and also digits", _token("error", "digit")),
    Planted("files-but-not-file", "words about files and paths, except the word file itself",
            _token("file", unless="file-word")),
    Planted("long-words", "long words: the longer the word, the stronger it fires", _token("long")),
)  # fmt: skip
"""FIND-style latents (Schwettmann et al. 2023, "FIND: A Function Description Benchmark", §3.2, synthetic neurons):
two *monofunctional* ones (a concept: error words; file words), a lexical one (Python constants), a
*polyfunctional* one (two unrelated concepts), a *corrupted* one (a concept except a sub-part, which a good
description must name) and a graded one (activation grows with word length, as FIND's numeric functions grade
their input)."""

RANDOM_DESCRIPTIONS = (
    "words about cooking and recipes",
    "names of European cities",
    "expressions of sadness or grief",
    "past tense verbs in a story",
    "mentions of animals and pets",
    "legal terms in contracts",
)
"""Descriptions that fit none of the planted features (the random-explanation baseline)."""

FEATURE_SETS: dict[str, tuple[Planted, ...]] = {"planted": PLANTED, "find": FIND}
"""The known-meaning latent sets, by name."""


def feature_set(names: list[str] | tuple[str, ...] | None) -> tuple[Planted, ...] | None:
    """The set whose latent names are ``names`` (a feature database's ``dictionary.features``), else None."""
    return next((s for s in FEATURE_SETS.values() if list(names or ()) == [p.name for p in s]), None)


@dataclass(frozen=True)
class OracleConfig:
    """The oracle dictionary's shape, as the feature database records it."""

    site: str = SITE
    d_in: int = 3
    d_sae: int = len(PLANTED)
    features: tuple[str, ...] = tuple(p.name for p in PLANTED)


class OracleDictionary:
    """A dictionary whose latents are known features (``planted``), computed from the ``token-facts`` site."""

    def __init__(self, vocab: list[str], planted: tuple[Planted, ...] = PLANTED) -> None:
        self.planted = planted
        self.cfg = OracleConfig(d_sae=len(planted), features=tuple(p.name for p in planted))
        self.lexicon = Lexicon.of(vocab)

    def encode(self, x: Float[Tensor, "rows 3"]) -> Float[Tensor, "rows d_sae"]:
        """Each planted feature's activation on each row ``(token id, previous id, position)``."""
        ids, prev, pos = x[:, 0].long(), x[:, 1].long(), x[:, 2].long()
        return torch.stack([p.fn(self.lexicon, ids, prev, pos) for p in self.planted], dim=1)


def vocab_texts(tokenizer: Any) -> list[str]:
    """Every vocabulary entry decoded on its own."""
    return list(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))


def planted_store(tokenizer: Any, out_dir: str | Path, *, n_contexts: int = 256, ctx_len: int = 64,
                  seed: int = 0) -> ActivationStore:  # fmt: skip
    """A one-shard store of the built-in corpus whose only site is ``token-facts`` (id, previous id, position)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus()
    ids = token_contexts(corpus, tokenizer, ctx_len, seed=seed)[:n_contexts]  # [n ctx_len]
    prev = torch.cat([torch.full((len(ids), 1), -1), ids[:, :-1]], dim=1)
    pos = torch.arange(ctx_len).expand_as(ids)
    site = torch.stack([ids, prev, pos], dim=-1).reshape(-1, 3).float()  # [n*ctx_len 3]; ids < 2**24 stay exact
    data = save({SITE: site, "tokens": ids.clone()}, metadata={"mechscope.activation_store": f"contexts 0:{len(ids)}"})
    atomic_write_bytes(out / "shard_00000.safetensors", data)
    provenance = Provenance(
        model="planted", weights_sha256="none", model_dtype=None, sites={SITE: 3}, corpus=corpus.name,
        corpus_sha256=corpus.sha256, ctx_len=ctx_len, seed=seed, dtype="float32", shard_contexts=len(ids),
        bos_id=bos_id(tokenizer),
    )  # fmt: skip
    shard = Shard("shard_00000.safetensors", 0, len(ids), hashlib.sha256(data).hexdigest(), len(data))
    manifest = Manifest(provenance, {"planted": True}, len(ids), (shard,))
    atomic_write_bytes(out / "manifest.json", manifest.to_json().encode())
    return ActivationStore(out)


def planted_db(
    tokenizer: Any, out_dir: str | Path, *, n_contexts: int = 256, ctx_len: int = 64, seed: int = 0,
    config: FeatureDBConfig = FeatureDBConfig(top_k=20, window=16, before=10),  # noqa: B008 (frozen)
    planted: tuple[Planted, ...] = PLANTED,
) -> tuple[FeatureDB, ActivationStore, OracleDictionary]:  # fmt: skip
    """The planted store, the oracle dictionary of ``planted`` and their feature database (``out_dir/features.db``).

    ``planted`` is ``PLANTED`` (the default) or ``FIND``.
    """
    out = Path(out_dir)
    store = planted_store(tokenizer, out / "store", n_contexts=n_contexts, ctx_len=ctx_len, seed=seed)
    oracle = OracleDictionary(vocab_texts(tokenizer), planted)
    db = build_feature_db(store, oracle, out / "features.db", dataclasses.replace(config, site=SITE),
                          tokenizer=tokenizer, progress=False)  # fmt: skip
    return db, store, oracle
