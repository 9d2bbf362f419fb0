"""Feature interventions: clamp, scale or zero a dictionary's latents inside the model, keeping the error term.

At the dictionary's site each activation ``x`` is encoded, ``z = encode(x)``, some latents are edited to ``z'``
and ``x`` is replaced by the reconstruction error plus the edited reconstruction::

    (x - decode(z)) + decode(z') = x + (z' - z) @ W_dec

so the dictionary's imperfection stays in the model and only the edit moves it (Templeton et al. 2024, "Scaling
Monosemanticity", feature steering; Marks et al. 2024, "Sparse Feature Circuits", §2, error terms). It is
computed in the second form, which is exactly ``x`` where ``z' = z``: an untouched latent leaves the model
bitwise unchanged.

Each intervention is an ``ms.Replace`` at the dictionary's site whose ``fn`` is a frozen, printable
``LatentEdit``; pass it to ``Model.intervene`` for runs and for generation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import einops
from jaxtyping import Float
from torch import Tensor

from mechscope.core import Replace
from mechscope.core._interventions import Index
from mechscope.features._dictionary import Dictionary


@dataclass(frozen=True, eq=False, repr=False)
class LatentEdit:
    """The ``fn`` of a feature intervention: set (``clamp``) or multiply (``scale``) some latents by ``value``."""

    dictionary: Dictionary
    """An autoencoder reading ``site``."""
    site: str
    """The site the intervention is applied at (named in errors)."""
    latents: tuple[int, ...]
    """Indices of the edited latents."""
    how: Literal["clamp", "scale"]
    """``clamp``: the latents become ``value`` at every selected position, fired or not; ``scale``: they are
    multiplied by ``value``."""
    value: float

    def __post_init__(self) -> None:
        d_sae = self.dictionary.cfg.d_sae
        if not self.latents or any(not 0 <= i < d_sae for i in self.latents):
            raise IndexError(f"latents {list(self.latents)} must be non-empty and in [0, d_sae={d_sae})")
        if self.how not in ("clamp", "scale"):
            raise ValueError(f"how must be 'clamp' or 'scale', got {self.how!r}")

    def __repr__(self) -> str:
        return f"{self.how}(latents={list(self.latents)}, value={self.value}, d_sae={self.dictionary.cfg.d_sae})"

    def __call__(self, act: Tensor) -> Tensor:
        d = self.dictionary
        rows = as_rows(act, d.cfg.d_in, self.site).to(d.W_dec)
        with eval_mode(d):
            z = d.encode(rows)[:, list(self.latents)]  # [n latents]
        edited = z.new_full(z.shape, self.value) if self.how == "clamp" else z * self.value
        w_dec = d.W_dec[list(self.latents)]
        delta = einops.einsum(edited - z, w_dec, "n latents, latents d_in -> n d_in")
        return act + delta.reshape(act.shape).to(act)


def clamp(
    dictionary: Dictionary, latents: int | Sequence[int], value: float, *, site: str | None = None, pos: Index = None
) -> Replace:
    """Set ``latents`` to ``value`` at ``site`` (default ``dictionary.cfg.site``), error term kept.

    ``pos`` selects positions as in every intervention (in generation: positions of each step's input).
    """
    return _edit(dictionary, latents, "clamp", value, site, pos)


def scale(
    dictionary: Dictionary, latents: int | Sequence[int], factor: float, *, site: str | None = None, pos: Index = None
) -> Replace:
    """Multiply ``latents`` by ``factor`` at ``site`` (default ``dictionary.cfg.site``), error term kept."""
    return _edit(dictionary, latents, "scale", factor, site, pos)


def zero(
    dictionary: Dictionary, latents: int | Sequence[int], *, site: str | None = None, pos: Index = None
) -> Replace:
    """Set ``latents`` to zero at ``site`` (default ``dictionary.cfg.site``), error term kept: ablate a feature."""
    return _edit(dictionary, latents, "clamp", 0.0, site, pos)


def _edit(
    dictionary: Dictionary,
    latents: int | Sequence[int],
    how: Literal["clamp", "scale"],
    value: float,
    site: str | None,
    pos: Index,
) -> Replace:
    if dictionary.cfg.is_transcoder:
        raise TypeError(
            f"feature interventions need an autoencoder; this transcoder reads {dictionary.cfg.site!r} and writes "
            f"{dictionary.cfg.target_site!r}, which one Replace at one site cannot express"
        )
    indices = (latents,) if isinstance(latents, int) else tuple(int(i) for i in latents)
    site = site_of(dictionary, site)
    return Replace(site, fn=LatentEdit(dictionary, site, indices, how, float(value)), pos=pos)


def site_of(dictionary: Dictionary, site: str | None) -> str:
    """``site``, else the site recorded in the dictionary's config, else a clear error."""
    site = site or dictionary.cfg.site
    if site is None:
        raise ValueError("the dictionary's config names no site: pass site=")
    return site


def as_rows(act: Tensor, width: int, site: str) -> Float[Tensor, "n width"]:
    """A site's ``[batch pos ...]`` activations as rows of ``width`` (trailing axes flattened, as in the store)."""
    if act.shape[-1] == width or (act.ndim > 2 and math.prod(act.shape[2:]) == width):
        return act.reshape(-1, width)
    raise ValueError(
        f"the dictionary reads {width}-wide activations but site {site!r} has shape {list(act.shape)}: "
        "use a dictionary trained on this site"
    )


@contextmanager
def eval_mode(dictionary: Dictionary) -> Iterator[None]:
    """Run the dictionary in eval mode (BatchTopK: its fixed threshold), restoring its mode after."""
    was_training = dictionary.training
    dictionary.eval()
    try:
        yield
    finally:
        dictionary.train(was_training)
