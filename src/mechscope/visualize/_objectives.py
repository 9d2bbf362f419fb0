"""Objectives: the scalar per image that feature visualisation maximises and exemplars rank by.

An objective reads one or more sites' activations (captured with their autograd graph) and returns one value per
image. The units are a site's *channel* (a conv channel's mean over positions, or its value at one position), a
*direction* in the site's channel space, or a *latent* of a sparse dictionary applied at the site. Objectives
compose: ``Channel("conv3", 5) - 0.5 * Channel("conv3", 7)``.

The channel axis is axis 1 of a 4-d ``[batch channel h w]`` map and the last axis otherwise (``[batch pos d]``
tokens, ``[batch d]`` vectors); the site name ``logits`` means the model's output when no module has that name.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from jaxtyping import Float
from torch import Tensor

LOGITS = "logits"
"""Pseudo-site: the model's output (used when the model has no module of that name)."""


class DictionaryShape(Protocol):
    """The widths of a sparse dictionary (``features.DictionaryConfig`` has them)."""

    @property
    def d_in(self) -> int: ...

    @property
    def d_sae(self) -> int: ...


class SparseDictionary(Protocol):
    """What a ``Latent`` objective needs of a dictionary: its widths and its encoder before the activation rule.

    ``features.Dictionary`` is one; visualize depends on this interface, not on the features package.
    """

    @property
    def cfg(self) -> DictionaryShape: ...

    def pre_activations(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]: ...


class Objective(ABC):
    """One value per image, computed from captured site activations; higher is what the optimiser seeks."""

    @property
    @abstractmethod
    def sites(self) -> tuple[str, ...]:
        """Sites this objective reads."""

    @abstractmethod
    def __call__(self, acts: dict[str, Tensor]) -> Float[Tensor, " batch"]:
        """Objective values from ``acts`` (site name -> activation with a leading batch axis)."""

    def check(self, acts: dict[str, Tensor]) -> None:  # noqa: B027  (optional: by default there is nothing to check)
        """Raise a clear error if the units do not exist in these activations (default: nothing to check)."""

    def per_position(self, acts: dict[str, Tensor]) -> Float[Tensor, "batch positions"] | None:
        """Values at every position of the site's grid (their mean is the objective); None when not defined."""
        return None

    def __add__(self, other: Objective) -> Objective:
        return Sum(((1.0, self), (1.0, other)))

    def __sub__(self, other: Objective) -> Objective:
        return Sum(((1.0, self), (-1.0, other)))

    def __mul__(self, weight: float) -> Objective:
        return Sum(((float(weight), self),))

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return Sum(((-1.0, self),))


def channel_axis(act: Tensor) -> int:
    """Axis of the units: 1 for ``[batch channel h w]`` maps, the last axis otherwise."""
    return 1 if act.ndim == 4 else act.ndim - 1


def shape_text(act: Tensor) -> str:
    """``[batch 32 16 16]``: an activation's shape as error messages show it."""
    return "[batch " + " ".join(str(s) for s in act.shape[1:]) + "]"


def _channels_last(act: Tensor) -> Float[Tensor, "batch positions channel"]:
    """``[batch positions channel]`` view of any site (positions = h*w, pos, or 1)."""
    x = act.movedim(channel_axis(act), -1)
    return x.reshape(x.shape[0], -1, x.shape[-1])


@dataclass(frozen=True)
class Channel(Objective):
    """A channel (conv channel, neuron, logit) of a site: its mean over positions, or its value at ``at``.

    ``at`` is ``(y, x)`` on a ``[batch channel h w]`` map, or ``(pos,)`` on ``[batch pos d]`` tokens.
    """

    site: str
    index: int
    at: tuple[int, ...] | None = None

    @property
    def sites(self) -> tuple[str, ...]:
        return (self.site,)

    def __call__(self, acts: dict[str, Tensor]) -> Float[Tensor, " batch"]:
        if self.at is not None:
            act = acts[self.site]
            return act.select(channel_axis(act), self.index)[(slice(None), *self.at)]  # type: ignore[index]
        return self.per_position(acts).mean(-1)

    def per_position(self, acts: dict[str, Tensor]) -> Float[Tensor, "batch positions"]:
        act = acts[self.site]
        x = act.select(channel_axis(act), self.index)  # [batch *positions]
        return x.reshape(x.shape[0], -1)

    def check(self, acts: dict[str, Tensor]) -> None:
        act = acts[self.site]
        axis = channel_axis(act)
        n = act.shape[axis]
        if not 0 <= self.index < n:
            raise ValueError(f"unit {self}: site {self.site!r} has shape {shape_text(act)}, so its channel (axis "
                             f"{axis}) runs 0..{n - 1}; try {self.site}:{n - 1}")  # fmt: skip
        if self.at is None:
            return
        grid = [s for i, s in enumerate(act.shape) if i not in (0, axis)]
        if len(self.at) != len(grid) or any(not 0 <= p < s for p, s in zip(self.at, grid, strict=False)):
            where = " x ".join(str(s) for s in grid) or "no positions"
            raise ValueError(f"unit {self}: site {self.site!r} has shape {shape_text(act)}; a position needs "
                             f"{len(grid)} coordinate(s) inside {where}")  # fmt: skip

    def __str__(self) -> str:
        at = "@" + ",".join(map(str, self.at)) if self.at is not None else ""
        return f"{self.site}:{self.index}{at}"


@dataclass(frozen=True, eq=False)
class Direction(Objective):
    """Projection of a site's channel vector on ``vector`` (normalised), averaged over positions."""

    site: str
    vector: Float[Tensor, " channel"]

    @property
    def sites(self) -> tuple[str, ...]:
        return (self.site,)

    def __call__(self, acts: dict[str, Tensor]) -> Float[Tensor, " batch"]:
        return self.per_position(acts).mean(-1)

    def per_position(self, acts: dict[str, Tensor]) -> Float[Tensor, "batch positions"]:
        x = _channels_last(acts[self.site])
        return x @ (self.vector.to(x) / self.vector.norm().clamp_min(1e-12))

    def check(self, acts: dict[str, Tensor]) -> None:
        act = acts[self.site]
        n = act.shape[channel_axis(act)]
        if self.vector.shape != (n,):
            raise ValueError(f"direction on site {self.site!r} of shape {shape_text(act)} needs a vector of "
                             f"{n} entries, got shape {list(self.vector.shape)}")  # fmt: skip

    def __str__(self) -> str:
        return f"{self.site}:direction"


@dataclass(frozen=True, eq=False)
class Latent(Objective):
    """Latent ``index`` of a sparse dictionary applied at every position of ``site``, averaged over positions.

    The optimiser follows the latent's pre-activation (a TopK or JumpReLU latent that is off has no gradient);
    exemplars rank by the same value.
    """

    site: str
    dictionary: SparseDictionary
    index: int

    @property
    def sites(self) -> tuple[str, ...]:
        return (self.site,)

    def __call__(self, acts: dict[str, Tensor]) -> Float[Tensor, " batch"]:
        return self.per_position(acts).mean(-1)

    def per_position(self, acts: dict[str, Tensor]) -> Float[Tensor, "batch positions"]:
        x = _channels_last(acts[self.site])  # [batch positions channel]
        pre = self.dictionary.pre_activations(x.reshape(-1, x.shape[-1]))[:, self.index]
        return pre.reshape(x.shape[0], -1)

    def check(self, acts: dict[str, Tensor]) -> None:
        act = acts[self.site]
        n, cfg = act.shape[channel_axis(act)], self.dictionary.cfg
        if cfg.d_in != n:
            raise ValueError(f"dictionary reads {cfg.d_in} channels but site {self.site!r} has shape "
                             f"{shape_text(act)} ({n} channels): apply it at the site it was trained on")  # fmt: skip
        if not 0 <= self.index < cfg.d_sae:
            raise ValueError(f"latent {self.index} out of range: the dictionary has {cfg.d_sae} latents")

    def __str__(self) -> str:
        return f"{self.site}:latent{self.index}"


@dataclass(frozen=True, eq=False)
class Sum(Objective):
    """Weighted sum of objectives (what ``+``, ``-`` and ``*`` build)."""

    terms: tuple[tuple[float, Objective], ...] = field(default=())

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for _, t in self.terms for s in t.sites))

    def __call__(self, acts: dict[str, Tensor]) -> Float[Tensor, " batch"]:
        return sum(w * t(acts) for w, t in self.terms)  # type: ignore[return-value]

    def check(self, acts: dict[str, Tensor]) -> None:
        for _, t in self.terms:
            t.check(acts)

    def __str__(self) -> str:
        return " + ".join(f"{w:g}*{t}" for w, t in self.terms)


_SPEC = re.compile(r"(?P<site>[^:@]+):(?P<index>-?\d+)(?:@(?P<at>-?\d+(?:,-?\d+)*))?")


def parse_unit(spec: str | Objective) -> Objective:
    """``"conv3:5"`` (channel 5's mean), ``"conv3:5@4,7"`` (channel 5 at y=4, x=7), ``"head:2"`` (a logit)."""
    if not isinstance(spec, str):
        return spec
    m = _SPEC.fullmatch(spec.strip())
    if m is None:
        raise ValueError(f"cannot read unit {spec!r}: write SITE:CHANNEL or SITE:CHANNEL@Y,X (e.g. 'conv3:5', "
                         f"'conv3:5@4,7', 'logits:2')")  # fmt: skip
    at = tuple(int(p) for p in m["at"].split(",")) if m["at"] else None
    return Channel(m["site"], int(m["index"]), at)


def as_objective(unit: str | Objective | Sequence[str]) -> Objective:
    """An objective from a spec string, an objective, or several specs (summed)."""
    if isinstance(unit, str) or not isinstance(unit, Sequence):
        return parse_unit(unit)
    parts = [parse_unit(u) for u in unit]
    return parts[0] if len(parts) == 1 else Sum(tuple((1.0, p) for p in parts))


def check_finite(values: Tensor, objective: Objective) -> None:
    """Fail loudly when an objective produced NaN or inf (a diverged optimisation or a broken model)."""
    if not torch.isfinite(values).all():
        raise FloatingPointError(f"objective {objective} is not finite: {values.tolist()}")
