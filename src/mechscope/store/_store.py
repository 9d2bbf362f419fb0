"""The activation store on disk: a folder of safetensors shards and the manifest that vouches for them.

Layout of a store folder::

    manifest.json            provenance, harvest config, and the list of complete shards with checksums
    shard_00000.safetensors  one tensor per site, [tokens d] (context-major: row = context * ctx_len + pos),
                             and "tokens", the ids [contexts ctx_len]
    shard_00001.safetensors  ...

Shard ``i`` holds contexts ``[start, stop)`` of the harvest's context sequence. A shard exists for readers
only once the manifest lists it; the manifest is rewritten (atomically) after each shard is complete, so a
store is always a consistent prefix of its harvest. Reads stream one or two shards at a time.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from torch import Tensor

from mechscope._cache import sha256_file
from mechscope._errors import IntegrityError, MismatchError

FORMAT = "mechscope.activation_store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENS = "tokens"  # the key of the token ids in every shard
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ProvenanceError(MismatchError):
    """A store, dictionary or model does not come from what it is being combined with."""


@dataclass(frozen=True)
class Provenance:
    """Where a store's activations come from; two harvests with equal provenance write identical shards."""

    model: str
    """Model id (``Model.name``)."""
    weights_sha256: str
    """sha256 of the model's weights."""
    model_dtype: str | None
    """dtype the model ran in."""
    sites: dict[str, int]
    """Each harvested site and its width ``d`` (trailing axes flattened: ``head.L.z`` is ``head * d_head``)."""
    corpus: str
    """Corpus name (informational: corpora are compared by hash)."""
    corpus_sha256: str
    """Hash of the corpus text (``Corpus.sha256``)."""
    ctx_len: int
    """Tokens per context, BOS included."""
    seed: int
    """Seed of the context order."""
    dtype: str
    """Storage dtype of the activations: ``float32``, ``bfloat16`` or ``float16``."""
    shard_contexts: int
    """Contexts per full shard."""
    bos_id: int
    """Token id at position 0 of every context."""

    def differences(self, other: Provenance) -> list[str]:
        """Fields (the corpus name excepted) on which two provenances disagree."""
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        return [k for k in a if k != "corpus" and a[k] != b[k]]


@dataclass(frozen=True)
class Shard:
    """One complete shard file."""

    file: str
    """File name inside the store folder."""
    start: int
    """First context it holds."""
    stop: int
    """One past the last context it holds."""
    sha256: str
    """Checksum of the file's bytes."""
    n_bytes: int
    """File size."""


@dataclass(frozen=True)
class Manifest:
    """Contents of ``manifest.json``."""

    provenance: Provenance
    """What the activations were computed from."""
    config: dict[str, Any]
    """The ``HarvestConfig`` that wrote the store, as a dict."""
    planned_contexts: int
    """Contexts the last harvest call aimed for; the store is complete when its shards reach it."""
    shards: tuple[Shard, ...]
    """Complete shards, in context order."""

    @property
    def n_contexts(self) -> int:
        """Contexts stored."""
        return self.shards[-1].stop if self.shards else 0

    @property
    def n_tokens(self) -> int:
        """Tokens stored (per site), BOS positions included."""
        return self.n_contexts * self.provenance.ctx_len

    @property
    def complete(self) -> bool:
        """Whether the last harvest finished."""
        return self.n_contexts >= self.planned_contexts

    def to_json(self) -> str:
        """The manifest file's text."""
        head = {"format": FORMAT, "format_version": FORMAT_VERSION, "n_tokens": self.n_tokens}
        body = {**head, **dataclasses.asdict(self)}
        return json.dumps(body, indent=2)

    @classmethod
    def from_json(cls, text: str, where: Path) -> Manifest:
        """Parse a manifest file's text (``where`` names it in errors)."""
        raw = json.loads(text)
        if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{where} is not a version-{FORMAT_VERSION} {FORMAT} manifest")
        shards = tuple(Shard(**s) for s in raw["shards"])
        return cls(Provenance(**raw["provenance"]), raw["config"], raw["planned_contexts"], shards)


class ShardData(NamedTuple):
    """One shard's token ids and one site's activations."""

    start: int
    """Index of the shard's first context in the store."""
    tokens: Int[Tensor, "n_ctx ctx_len"]
    acts: Float[Tensor, "n_ctx_x_ctx_len d"]
    """Activations in storage dtype, row ``c * ctx_len + p`` for context ``c``, position ``p``."""


class ActivationStore:
    """Read side of a harvested store: manifest, token ids, shard-by-shard and shuffled batch streams."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        file = self.path / MANIFEST
        if not file.is_file():
            raise FileNotFoundError(f"{self.path} is not an activation store: no {MANIFEST}")
        self.manifest = Manifest.from_json(file.read_text(), file)
        self._verified: set[str] = set()

    def __repr__(self) -> str:
        p, m = self.provenance, self.manifest
        state = "" if m.complete else f", incomplete: {m.n_contexts}/{m.planned_contexts} contexts"
        return f"ActivationStore({str(self.path)!r}, {p.model}, {list(p.sites)}, {m.n_tokens:,} tokens{state})"

    @property
    def provenance(self) -> Provenance:
        """What the activations were computed from."""
        return self.manifest.provenance

    def width(self, site: str) -> int:
        """Width ``d`` of a stored site; KeyError naming the stored sites otherwise."""
        if site not in self.provenance.sites:
            raise KeyError(f"site {site!r} is not in the store at {self.path}; it holds {list(self.provenance.sites)}")
        return self.provenance.sites[site]

    def tokens(self) -> Int[Tensor, "n_ctx ctx_len"]:
        """Token ids of every stored context, in store order."""
        parts = [self._read(s, TOKENS) for s in self.manifest.shards]
        return torch.cat(parts) if parts else torch.empty(0, self.provenance.ctx_len, dtype=torch.long)

    def shards(self, site: str) -> Iterator[ShardData]:
        """Each shard's tokens and ``site`` activations, in context order, one shard in memory at a time."""
        self.width(site)
        for shard in self.manifest.shards:
            yield ShardData(shard.start, self._read(shard, TOKENS), self._read(shard, site))

    def batches(
        self, site: str, batch_size: int, *, shuffle: bool = True, seed: int = 0, skip_bos: bool = True
    ) -> Iterator[Float[Tensor, "batch d"]]:
        """One epoch of float32 ``[batch d]`` rows of ``site``, the last batch possibly smaller.

        Every stored token comes once per epoch (position 0 of each context is left out with ``skip_bos``).

        Shuffled, shards are visited in an order set by ``seed`` two at a time and the rows of each pair are
        permuted together, so at most two shards of one site are in memory. For several epochs chain calls with
        different seeds. The stream is a pure function of the arguments, as ``features.train`` requires to
        resume.
        """
        d = self.width(site)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        gen = torch.Generator().manual_seed(seed)
        shards = list(self.manifest.shards)
        order = torch.randperm(len(shards), generator=gen).tolist() if shuffle else range(len(shards))
        carry = torch.empty(0, d)
        for k in range(0, len(shards), 2):
            sources = [carry, *(self._read(shards[i], site) for i in order[k : k + 2])]
            rows = self._rows(sources, skip_bos)
            if shuffle:
                rows = rows[torch.randperm(len(rows), generator=gen)]
            n_full = len(rows) // batch_size * batch_size
            for i in range(0, n_full, batch_size):
                yield _gather(sources, rows[i : i + batch_size])
            carry = _gather(sources, rows[n_full:])
            del sources  # free the pair before the next one is read
        if len(carry):
            yield carry

    def check(self, model: Any) -> None:
        """Raise ``ProvenanceError`` unless ``model`` is the model the store was harvested from."""
        stored, given = self.provenance, model.provenance
        if (stored.model, stored.weights_sha256) != (given["model"], given["weights_sha256"]):
            raise ProvenanceError(
                f"the store at {self.path} was harvested from model {stored.model!r} "
                f"(weights sha256 {stored.weights_sha256[:16]}...), "
                f"not {given['model']!r} (weights sha256 {given['weights_sha256'][:16]}...)"
            )

    def verify(self) -> None:
        """Recompute every shard's checksum; ``IntegrityError`` (a ValueError) naming the first that does not match."""
        for shard in self.manifest.shards:
            self._check_shard(shard)

    def _check_shard(self, shard: Shard) -> None:
        """Hash ``shard`` once per store object (every read goes through here first): corrupt files never load."""
        if shard.file in self._verified:
            return
        file = self.path / shard.file
        fix = "rerun `mechscope harvest` with the same arguments: it quarantines the bad shard and harvests it again"
        try:
            got = sha256_file(file)
        except FileNotFoundError:
            raise IntegrityError(f"{file} is missing: the store's manifest lists it", hint=fix) from None
        if got != shard.sha256:
            raise IntegrityError(
                f"{file} is corrupt: sha256 {got[:16]}..., the manifest says {shard.sha256[:16]}...", hint=fix
            )
        self._verified.add(shard.file)

    def _read(self, shard: Shard, key: str) -> Tensor:
        self._check_shard(shard)
        with safe_open(self.path / shard.file, framework="pt") as f:
            return f.get_tensor(key)

    def _rows(self, sources: list[Tensor], skip_bos: bool) -> Int[Tensor, " n"]:
        """Indices into the concatenation of ``sources`` (carry first, then shards) of the rows to yield."""
        n_carry, ctx_len = len(sources[0]), self.provenance.ctx_len
        rows = torch.arange(sum(len(s) for s in sources))
        if not skip_bos:
            return rows
        return rows[(rows < n_carry) | ((rows - n_carry) % ctx_len != 0)]  # shard sizes are whole contexts


def _gather(sources: list[Tensor], rows: Int[Tensor, " n"]) -> Float[Tensor, "n d"]:
    """Rows of the concatenation of ``sources``, as float32, without building the concatenation."""
    bounds = torch.tensor([0, *itertools.accumulate(len(s) for s in sources)])
    which = torch.searchsorted(bounds, rows, right=True) - 1
    out = torch.empty(len(rows), sources[0].shape[1], dtype=torch.float32)
    for k, source in enumerate(sources):
        mask = which == k
        if mask.any():
            out[mask] = source[rows[mask] - bounds[k]].float()
    return out
