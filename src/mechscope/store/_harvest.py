"""Harvest: run a model over a corpus and write the activations of some sites into a store, resumably.

The harvest's contexts are a pure function of (corpus, tokenizer, ``ctx_len``, ``seed``), and shard ``i``
always holds contexts ``[i * shard_contexts, (i + 1) * shard_contexts)``, computed in the same batches. So
a harvest that is killed and started again recomputes only the shards its manifest does not list yet, and
ends with the same bytes as one that never stopped. Each shard is written to a temporary file and renamed
into place (``atomic_write_bytes``) before the manifest, itself replaced atomically, lists it. Shards are
serialised, hashed and written in a background thread (``_Writer``) while the model computes the next one.

The forward pass of each batch stops after the deepest requested site (``Model.run(..., logits=False)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import queue
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from safetensors.torch import save
from torch import Tensor
from tqdm.auto import tqdm

from mechscope._cache import atomic_write_bytes, sha256_file
from mechscope.data.corpus import bos_id, load_corpus, token_contexts
from mechscope.store._store import (
    DTYPES,
    MANIFEST,
    TOKENS,
    ActivationStore,
    Manifest,
    Provenance,
    ProvenanceError,
    Shard,
)

# Files a store folder may hold: its manifest, shards, and the temporary files of interrupted writes.
QUARANTINE = "quarantine"
"""Sub-folder of a store where harvest moves shards that fail their checksum."""

_STORE_FILE = re.compile(
    r"^(manifest\.json|quarantine|shard_\d{5}\.safetensors|\.(manifest\.json|shard_\d{5}\.safetensors)\..+)$"
)


@dataclass(frozen=True)
class HarvestConfig:
    """What to harvest: which sites, over which corpus, cut and stored how."""

    sites: tuple[str, ...]
    """Site names or glob patterns (``("resid_post.6",)``, ``("resid_post.*",)``); each needs ``[batch pos
    ...]`` axes."""
    corpus: str = "python-docs"
    """Corpus for ``load_corpus``: ``python-docs``, a ``.txt`` / ``.jsonl`` path, or a Hugging Face name."""
    ctx_len: int = 128
    """Tokens per context, the BOS token at position 0 included."""
    batch_size: int = 32
    """Contexts per forward pass. May change when resuming (it can change the last bits of float results)."""
    shard_size: int = 65_536
    """Tokens per shard, rounded down to whole contexts; two shards of one site bound a reader's memory."""
    dtype: str = "float32"
    """Storage dtype of activations: ``float32``, ``bfloat16`` or ``float16``."""
    max_tokens: int | None = None
    """Harvest the first ``max_tokens // ctx_len`` contexts only (None: the whole corpus). May grow when
    resuming, to extend a store."""
    seed: int = 0
    """Seed of the order of contexts."""

    def __post_init__(self) -> None:
        if isinstance(self.sites, str) or not self.sites:
            raise ValueError(f"sites must be a non-empty tuple of site names, got {self.sites!r}")
        if self.ctx_len < 2 or self.batch_size < 1:
            raise ValueError(f"need ctx_len >= 2 and batch_size >= 1, got {self.ctx_len} and {self.batch_size}")
        if self.shard_size < self.ctx_len:
            raise ValueError(f"shard_size ({self.shard_size} tokens) must hold one context of {self.ctx_len}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.max_tokens is not None and self.max_tokens < self.ctx_len:
            raise ValueError(f"max_tokens ({self.max_tokens}) must hold one context of {self.ctx_len}")

    @property
    def shard_contexts(self) -> int:
        """Contexts per full shard."""
        return self.shard_size // self.ctx_len


def harvest(model: Any, config: HarvestConfig, out_dir: str | Path, *, progress: bool = True) -> ActivationStore:
    """Harvest ``config.sites`` of ``model`` into the store at ``out_dir``, resuming it if one is there.

    A store there from another model, site set, corpus, context length, dtype, seed or shard size raises
    ``ProvenanceError`` showing both provenances.
    """
    out_dir = Path(out_dir)
    names = [s.name for s in model.resolve(list(config.sites))]
    if TOKENS in names:
        raise ValueError(f"a site named {TOKENS!r} would clash with the token ids in each shard")
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and config.ctx_len > n_ctx:
        raise ValueError(
            f"--ctx-len {config.ctx_len} is longer than {model.name}'s {n_ctx} positions; use at most {n_ctx}"
        )
    corpus = load_corpus(config.corpus)
    contexts = token_contexts(corpus, model.tokenizer, config.ctx_len, seed=config.seed)
    if config.max_tokens is not None:
        contexts = contexts[: config.max_tokens // config.ctx_len]
    provenance = Provenance(
        model=model.name,
        weights_sha256=model.provenance["weights_sha256"],
        model_dtype=model.provenance["dtype"],
        sites=_widths(model, names, contexts),
        corpus=corpus.name,
        corpus_sha256=corpus.sha256,
        ctx_len=config.ctx_len,
        seed=config.seed,
        dtype=config.dtype,
        shard_contexts=config.shard_contexts,
        bos_id=bos_id(model.tokenizer),
    )
    manifest = _open(out_dir, provenance, config, len(contexts))
    plan = _plan(len(contexts), config.shard_contexts)
    total = max(manifest.n_tokens, len(contexts) * config.ctx_len)
    bar = tqdm(
        total=total, initial=manifest.n_tokens, unit="tok", unit_scale=True, desc="harvest", disable=not progress
    )
    with bar, _Writer(out_dir, manifest) as writer:
        for index in range(len(manifest.shards), len(plan)):
            start, stop = plan[index]
            tensors = _harvest_shard(model, provenance.sites, contexts[start:stop], config, bar.update)
            writer.put(index, start, stop, tensors)
    return ActivationStore(out_dir)


class _Writer:
    """Commits shards (``_commit``) in a background thread, in order, while the next shard is computed.

    The queue holds one shard, so at most three are in memory (one filling, one queued, one being written).
    A failed write is raised by the next ``put`` or on exit; leaving the ``with`` block, also by an exception,
    waits until every queued shard is committed, so nothing already computed is lost to an interrupt.
    """

    def __init__(self, out_dir: Path, manifest: Manifest) -> None:
        self.out_dir, self.manifest = out_dir, manifest
        self.queue: queue.Queue[tuple[int, int, int, dict[str, Tensor]] | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="mechscope-harvest-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def put(self, index: int, start: int, stop: int, tensors: dict[str, Tensor]) -> None:
        """Queue shard ``index`` (contexts ``[start, stop)``) for writing; blocks while one is queued."""
        self._raise()
        self.queue.put((index, start, stop, tensors))

    def __exit__(self, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:  # after a failure, drain the queue without writing past the gap
                try:
                    self.manifest = _commit(self.out_dir, self.manifest, *item)
                except BaseException as e:  # re-raised in the harvesting thread
                    self.error = e


def _widths(model: Any, names: list[str], contexts: Tensor) -> dict[str, int]:
    """Width of each site, from a forward pass over two tokens; rejects sites without ``[batch pos]`` axes."""
    for site in model.resolve(names):
        if site.axes[:2] != ("batch", "pos"):
            raise ValueError(f"site {site.name!r} has axes {site.axes}; a store holds per-token sites [batch pos ...]")
    cache = model.run(contexts[:1, :2], cache=names, logits=False).cache
    return {name: math.prod(cache[name].shape[2:]) for name in names}


def _plan(n_contexts: int, per_shard: int) -> list[tuple[int, int]]:
    """Context range ``[start, stop)`` of each shard."""
    return [(s, min(s + per_shard, n_contexts)) for s in range(0, n_contexts, per_shard)]


def _open(out_dir: Path, provenance: Provenance, config: HarvestConfig, n_contexts: int) -> Manifest:
    """The manifest to continue from: the existing one's shards that fit the plan, or a fresh one."""
    if out_dir.exists():
        strangers = sorted(p.name for p in out_dir.iterdir() if not _STORE_FILE.match(p.name))
        if strangers:
            raise FileExistsError(f"{out_dir} holds files that are not part of an activation store: {strangers[:5]}")
    old = ActivationStore(out_dir).manifest if (out_dir / MANIFEST).is_file() else None
    if old is not None and (differ := old.provenance.differences(provenance)):
        raise ProvenanceError(
            f"{out_dir} holds a store from another harvest (differs in {differ}):\n"
            f"  stored:    {_show(old.provenance)}\n  requested: {_show(provenance)}\n"
            "harvest into a fresh folder, or delete this one"
        )
    intact = _intact(out_dir, old.shards) if old else []
    if old is not None and len(intact) == len(old.shards) and old.n_contexts >= n_contexts:
        return old  # already holds at least what is asked for: leave it as it is
    plan = _plan(n_contexts, config.shard_contexts)
    kept = list(
        itertools.takewhile(lambda pair: (pair[0].start, pair[0].stop) == pair[1], zip(intact, plan, strict=False))
    )
    manifest = Manifest(provenance, _config_dict(config), n_contexts, tuple(s for s, _ in kept))
    _clean(out_dir, {s.file for s in manifest.shards})
    atomic_write_bytes(out_dir / MANIFEST, manifest.to_json().encode())
    return manifest


def _intact(out_dir: Path, shards: tuple[Shard, ...]) -> list[Shard]:
    """The listed shards up to the first missing or corrupt one (size, then sha256 against the manifest).

    A corrupt shard is moved to ``quarantine/`` (never deleted: it may be evidence) and a warning names it; it and
    every shard after it are harvested again.
    """
    ok: list[Shard] = []
    for shard in shards:
        file = out_dir / shard.file
        if not file.is_file():
            break
        if file.stat().st_size != shard.n_bytes or sha256_file(file) != shard.sha256:
            (out_dir / QUARANTINE).mkdir(exist_ok=True)
            moved = out_dir / QUARANTINE / f"{shard.file}.{time.strftime('%Y%m%dT%H%M%S')}"
            file.rename(moved)
            warnings.warn(
                f"{file} does not match its checksum in the manifest: moved to {moved}; harvesting it again",
                stacklevel=3,
            )
            break
        ok.append(shard)
    return ok


def _show(p: Provenance) -> str:
    return " ".join(f"{k}={v}" for k, v in dataclasses.asdict(p).items())


def _config_dict(config: HarvestConfig) -> dict[str, Any]:
    return {**dataclasses.asdict(config), "sites": list(config.sites)}


def _clean(out_dir: Path, keep: set[str]) -> None:
    """Delete shards the manifest does not list and temporary files left by an interrupted write."""
    for path in out_dir.glob("*shard_*.safetensors*"):
        if path.name not in keep:
            path.unlink()
    for path in out_dir.glob(f".{MANIFEST}.*"):
        path.unlink()


def _harvest_shard(
    model: Any,
    widths: dict[str, int],
    contexts: Int[Tensor, "n ctx_len"],
    config: HarvestConfig,
    advance: Callable[[int], object] = lambda n: None,
) -> dict[str, Tensor]:
    """Activations of every site over ``contexts`` (as ``[n * ctx_len d]`` in storage dtype) and the ids."""
    n, ctx_len = contexts.shape
    out = {name: torch.empty(n * ctx_len, d, dtype=DTYPES[config.dtype]) for name, d in widths.items()}
    device = next(model.module.parameters()).device
    for b in range(0, n, config.batch_size):
        batch = contexts[b : b + config.batch_size]
        cache = model.run(batch.to(device), cache=list(widths), logits=False).cache
        rows = slice(b * ctx_len, (b + len(batch)) * ctx_len)
        for name, acts in out.items():
            acts[rows] = cache[name].reshape(len(batch) * ctx_len, -1)  # [batch pos ...] -> [batch*pos d]
        advance(len(batch) * ctx_len)  # the bar moves by batch, not by shard
    return {**out, TOKENS: contexts.clone()}


def _commit(
    out_dir: Path, manifest: Manifest, index: int, start: int, stop: int, tensors: dict[str, Tensor]
) -> Manifest:
    """Write shard ``index`` atomically, then the manifest that lists it."""
    name = f"shard_{index:05d}.safetensors"
    # One metadata key: safetensors writes several in no fixed order, and shards must be byte-reproducible.
    data = save(tensors, metadata={"mechscope.activation_store": f"contexts {start}:{stop}"})
    atomic_write_bytes(out_dir / name, data)
    shard = Shard(name, start, stop, hashlib.sha256(data).hexdigest(), len(data))
    manifest = dataclasses.replace(manifest, shards=(*manifest.shards, shard))
    atomic_write_bytes(out_dir / MANIFEST, manifest.to_json().encode())
    return manifest
