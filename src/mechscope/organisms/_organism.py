"""Model organisms: seeded builds whose mechanism is known, checked at build time, cached with a checksum.

An ``Organism`` is a recipe (a frozen config plus a seeded build script). ``build(seed)`` trains or draws the
organism and returns a ``Built`` one, which holds its weights or data as tensors, its ground truth as plain data,
and ``verify()``: a causal check that the planted mechanism is really there, raising
``OrganismVerificationError`` when it is not. ``obtain(organism, seed)`` is the only way the bench gets an
organism: it loads the cached copy (re-checking its checksum) or builds, verifies and caches it, so a build whose
mechanism is absent never reaches a scorer.

Cache layout (outside git, ``mechscope._cache.cache_dir``)::

    organisms/<key>/seed<seed>/organism.safetensors   weights / data
    organisms/<key>/seed<seed>/card.json              seed, config, sha256 of the weights, verification numbers,
                                                      ground truth, versions

``key`` is the organism's name, suffixed with a hash of its config when the config is not the default one, so
variants never overwrite each other. The card also records which verification passed (``verification_id``: the
built class's ``verification_version`` and a hash of its ``verify`` source); a cached organism whose verification
has changed since is verified again on load (its card updated when it passes, ``OrganismVerificationError`` when
it does not), so a stricter check never lets an old cache through.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .._cache import atomic_dir, atomic_write_bytes, cache_dir, sha256_file

CARD = "card.json"
WEIGHTS = "organism.safetensors"
BUILD_THREADS = 2
"""torch intra-op threads every build runs with, whatever the caller set: a reduction split over another number of
threads rounds differently, so a build's weights (and every score read from them) would depend on who built it
first. Two is what ``mechscope bench`` pins (``bench.THREADS``) and what CI's machines have."""


class OrganismVerificationError(RuntimeError):
    """The planted mechanism is absent (or too weak): the organism must not be used, and is not cached."""


class OrganismChecksumError(RuntimeError):
    """A cached organism's weights do not match the checksum on its card."""


class Built(ABC):
    """A built organism: tensors, ground truth as data, and the causal check of its mechanism."""

    organism: str
    """Name of the organism recipe."""
    seed: int
    """Seed of the build."""
    verification: dict[str, float]
    """Numbers measured by ``verify()`` (filled in by ``obtain``; read from the card on a cached load)."""
    sha256: str = ""
    """sha256 of the cached weights file (filled in by ``obtain``)."""
    seconds: float = 0.0
    """Build time (filled in by ``obtain``; 0 when loaded from the cache)."""
    verification_version: ClassVar[int] = 1
    """Bump when ``verify`` changes through code it calls (its own source is hashed into ``verification_id``)."""

    @abstractmethod
    def tensors(self) -> dict[str, Tensor]:
        """Everything needed to rebuild this organism with ``Organism.load``: weights, data, truth tensors."""

    @abstractmethod
    def verify(self) -> dict[str, float]:
        """Check the planted mechanism causally; return the numbers, raise ``OrganismVerificationError`` if absent."""

    @property
    @abstractmethod
    def truth(self) -> dict[str, Any]:
        """The ground truth as JSON-serialisable data (true circuit nodes, frequencies, intervals...)."""


class Organism(ABC):
    """Recipe for a model organism: a frozen config and a seeded build script. Subclasses are dataclasses."""

    name: ClassVar[str]
    """Short unique name, e.g. ``"induction"``."""
    family: ClassVar[str]
    """Which scorers apply (``circuits``, ``features``, ``frequencies``, ``descriptions``...)."""
    quick_seeds: ClassVar[tuple[int, ...] | None] = None
    """Seeds of a quick run (None: the harness's default); organisms slow to build set fewer."""

    @abstractmethod
    def build(self, seed: int) -> Built:
        """Train or draw the organism from scratch, deterministically in ``seed`` (no verification here)."""

    @abstractmethod
    def load(self, seed: int, tensors: dict[str, Tensor]) -> Built:
        """Rebuild a ``Built`` organism from the tensors its ``tensors()`` returned."""

    def config(self) -> dict[str, Any]:
        """The recipe's settings as JSON-ready data."""
        return json.loads(json.dumps(dataclasses.asdict(self))) if dataclasses.is_dataclass(self) else {}

    @property
    def key(self) -> str:
        """Cache folder name: the name, plus a config hash when the config differs from the default."""
        return self.name if self.config() == type(self)().config() else f"{self.name}-{self.config_digest()}"

    def config_digest(self) -> str:
        """The first 10 hex digits of the sha256 of ``config()`` (sorted JSON)."""
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:10]


def require(organism: str, seed: int, numbers: Mapping[str, float], checks: Mapping[str, bool]) -> dict[str, float]:
    """Raise ``OrganismVerificationError`` naming every failed check; return ``numbers`` when all pass."""
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in numbers.items())
        raise OrganismVerificationError(
            f"organism {organism!r} seed {seed}: planted mechanism not verified; failed: {'; '.join(failed)} ({shown})"
        )
    return {k: float(v) for k, v in numbers.items()}


def organism_dir(organism: Organism, seed: int) -> Path:
    """Cache folder of one seed of ``organism``."""
    return cache_dir("organisms", organism.key, f"seed{seed}")


def with_retries(train: Callable[[Any], Built], cfg: Any, retries: int) -> Built:
    """``train(cfg)``, retried with twice the epochs while its verification fails, ``retries`` times at most.

    Training the same seed on another CPU takes another floating-point path (vector widths differ), so a build
    that clears its thresholds on one machine can miss one by a hair on the next. A longer schedule is the
    honest fix: deterministic on any one machine, and verification in ``obtain`` still decides. ``cfg`` must be
    a dataclass with an ``epochs`` field.
    """
    for attempt in range(retries + 1):
        built = train(cfg)
        if attempt == retries:
            break
        try:
            built.verify()
            break
        except OrganismVerificationError:
            cfg = dataclasses.replace(cfg, epochs=2 * cfg.epochs)
    return built


def obtain(organism: Organism, seed: int, *, rebuild: bool = False) -> Built:
    """The built, verified organism: from the cache when present (checksum re-checked), else built and cached.

    A cached copy whose weights fail the checksum raises ``OrganismChecksumError`` (pass ``rebuild=True`` or
    delete the folder named in the message). A build whose verification fails raises
    ``OrganismVerificationError`` and leaves nothing in the cache.
    """
    folder = organism_dir(organism, seed)
    if not rebuild and (folder / CARD).is_file():
        return load_cached(organism, seed, folder)
    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        built = organism.build(seed)
        built.seconds = time.perf_counter() - start
        built.verification = built.verify()
    finally:
        torch.set_num_threads(threads)
    tensors = {k: v.detach().cpu().contiguous() for k, v in built.tensors().items()}
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / WEIGHTS))
        built.sha256 = sha256_file(tmp / WEIGHTS)
        card = {
            "organism": organism.name,
            "family": organism.family,
            "seed": seed,
            "config": organism.config(),
            "sha256": built.sha256,
            "verification": built.verification,
            "verification_id": verification_id(built),
            "truth": built.truth,
            "build_seconds": round(built.seconds, 3),
            "build_threads": BUILD_THREADS,
            "versions": _versions(),
        }
        (tmp / CARD).write_text(json.dumps(card, indent=2))
    return built


def load_cached(organism: Organism, seed: int, folder: Path) -> Built:
    """Load one cached seed, checking its card's config and its weights' checksum."""
    card = read_card(folder)
    if card["config"] != organism.config() or card.get("build_threads", BUILD_THREADS) != BUILD_THREADS:
        return obtain(organism, seed, rebuild=True)  # a stale card: an older default config, or other build threads
    actual = sha256_file(folder / WEIGHTS)
    if actual != card["sha256"]:
        raise OrganismChecksumError(
            f"{folder / WEIGHTS}: sha256 {actual[:12]}... does not match its card ({card['sha256'][:12]}...). "
            f"The cache is corrupt: delete {folder} or call obtain(..., rebuild=True)."
        )
    built = organism.load(seed, load_file(str(folder / WEIGHTS)))
    built.verification, built.sha256 = dict(card["verification"]), actual
    if card.get("verification_id") != verification_id(built):  # the check changed since this copy was verified
        built.verification = built.verify()  # raises OrganismVerificationError when the cached copy fails it now
        card |= {"verification": built.verification, "verification_id": verification_id(built)}
        atomic_write_bytes(folder / CARD, json.dumps(card, indent=2).encode())
    return built


def verification_id(built: Built) -> str:
    """Which verification a built organism passes: its class's ``verification_version`` and ``verify`` source hash."""
    cls = type(built)
    source = inspect.getsource(cls.verify)
    return f"{cls.verification_version}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"


def read_card(folder: Path) -> dict[str, Any]:
    """The JSON card of a cached organism."""
    return json.loads((folder / CARD).read_text())


def _versions() -> dict[str, str]:
    from .. import __version__

    return {"mechscope": __version__, "torch": torch.__version__}
