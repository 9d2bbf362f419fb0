"""Targets: the scalar (one per example) that an attribution explains.

A target is any callable from a :class:`~mechscope.RunResult` to a ``[batch]`` tensor, with an optional ``sites``
attribute naming the sites it reads from ``result.cache`` (those are captured with their autograd graph). The
values here cover the usual cases: a class or token logit, a logit difference, units of a site (a neuron, a
channel, a direction such as an SAE latent's encoder row) and a vector's norm (a head's output). An ``int``, a
list of ints or an integer tensor means :class:`Logit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from ..core._model import Model, RunResult

Index = int | Sequence[int] | Tensor


@runtime_checkable
class Target(Protocol):
    """A scalar per example, computed from a run."""

    def __call__(self, result: RunResult) -> Float[Tensor, " batch"]: ...


def _per_example(index: Index, n: int, device: torch.device) -> Tensor:
    """``index`` as a ``[n]`` long tensor; a per-example index of ``b`` entries is tiled to ``n = k * b`` rows."""
    t = torch.as_tensor(index, dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 1:
        return t.expand(n)
    if n % t.numel():
        raise ValueError(f"target index has {t.numel()} entries, which does not divide the {n} rows of the run")
    return t.repeat(n // t.numel())  # runs stack repeated copies of the batch block after block


def _prediction_logits(result: RunResult) -> Tensor:
    """``[rows classes]``: the logits of a classifier, or a language model's next-token logits."""
    logits = result.logits
    if logits is None:
        raise ValueError("this target needs the model's output logits")
    if logits.ndim == 2:
        return logits
    if logits.ndim == 3:
        return result.final_logits()
    raise ValueError(f"cannot pick a class from logits of shape {list(logits.shape)}: pass a callable target")


def _fmt(index: Index) -> str:
    if isinstance(index, Tensor):
        return str(index.tolist()) if index.numel() <= 8 else f"Tensor{list(index.shape)}"
    return repr(index)


@dataclass(frozen=True, eq=False)
class Logit:
    """The logit of class (or next token) ``index``: one int for every example, or one per example."""

    index: Index
    sites: tuple[str, ...] = ()

    def __call__(self, result: RunResult) -> Float[Tensor, " batch"]:
        logits = _prediction_logits(result)
        idx = _per_example(self.index, logits.shape[0], logits.device)
        return logits.gather(1, idx[:, None])[:, 0]

    def __repr__(self) -> str:
        return f"Logit({_fmt(self.index)})"


@dataclass(frozen=True, eq=False)
class LogitDiff:
    """``logit[a] - logit[b]``, e.g. correct minus incorrect answer token."""

    a: Index
    b: Index
    sites: tuple[str, ...] = ()

    def __call__(self, result: RunResult) -> Float[Tensor, " batch"]:
        return Logit(self.a)(result) - Logit(self.b)(result)

    def __repr__(self) -> str:
        return f"LogitDiff({_fmt(self.a)}, {_fmt(self.b)})"


@dataclass(frozen=True, eq=False)
class Unit:
    """Mean activation of ``units`` of a site (a neuron, a conv channel), or its projection on ``direction``.

    ``pos`` picks one position of a ``[batch pos ...]`` site first (default: every position, averaged).
    """

    site: str
    units: Index | None = None
    direction: Tensor | None = None
    """A vector over the units axis; the target is ``act . direction`` (averaged over the other axes)."""
    pos: int | None = None
    axis: int | None = None
    """Units axis. None: the last axis of sites with named axes (``mlp.3.post``...); for module sites, axis 1 of
    a 4-d ``[batch channel h w]`` map and the last axis otherwise (as interventions' ``units=`` read them)."""

    def __post_init__(self) -> None:
        if self.units is not None and self.direction is not None:
            raise ValueError("Unit takes units= or direction=, not both")

    @property
    def sites(self) -> tuple[str, ...]:
        return (self.site,)

    def bind(self, model: Model) -> Unit:
        """The same target with its units axis fixed from the site's named axes (when it has them)."""
        if self.axis is None and model.resolve(self.site)[0].axes:
            return dataclasses.replace(self, axis=-1)
        return self

    def __call__(self, result: RunResult) -> Float[Tensor, " batch"]:
        act = result.cache[self.site]
        axis = self.axis if self.axis is not None else (1 if act.ndim == 4 else -1)
        if self.pos is not None:
            if act.ndim < 3 or axis == 1:
                raise ValueError(f"{self!r}: site of shape {list(act.shape)} has no pos axis to pick from")
            act, axis = act[:, self.pos], axis - 1 if axis > 1 else axis
        act = act.movedim(axis, -1)  # [rows ... units]
        if self.direction is not None:
            act = (act @ self.direction.to(act)).unsqueeze(-1)
        elif self.units is not None:
            act = act[..., torch.as_tensor(self.units, device=act.device).reshape(-1)]
        return act.reshape(act.shape[0], -1).mean(-1)

    def __repr__(self) -> str:
        extra = f", units={_fmt(self.units)}" if self.units is not None else ""
        extra += ", direction=Tensor" if self.direction is not None else ""
        extra += f", pos={self.pos}" if self.pos is not None else ""
        return f"Unit({self.site!r}{extra})"


@dataclass(frozen=True, eq=False)
class Norm:
    """L2 norm of a site's last axis: ``Norm("head.3.z", head=2)`` is head 2's output norm at the last position.

    ``pos`` picks one position of a ``[batch pos ...]`` site (None: every position, averaged); ``head`` picks one
    head of a per-head ``[batch pos head d_head]`` site.
    """

    site: str
    pos: int | None = -1
    head: int | None = None

    @property
    def sites(self) -> tuple[str, ...]:
        return (self.site,)

    def __call__(self, result: RunResult) -> Float[Tensor, " batch"]:
        act = result.cache[self.site]
        if self.pos is not None:
            act = act[:, self.pos]
        if self.head is not None:
            act = act[..., self.head, :]
        return act.norm(dim=-1).reshape(act.shape[0], -1).mean(-1)

    def __repr__(self) -> str:
        extra = f", head={self.head}" if self.head is not None else ""
        return f"Norm({self.site!r}, pos={self.pos}{extra})"


@dataclass(frozen=True, eq=False)
class _Callable:
    fn: Callable[[RunResult], Tensor]
    sites: tuple[str, ...] = ()

    def __call__(self, result: RunResult) -> Tensor:
        return self.fn(result)

    def __repr__(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


def as_target(target: Any, model: Model) -> Any:
    """A target value for ``target``: ints and integer tensors become :class:`Logit`, callables pass through."""
    if isinstance(target, Unit):
        return target.bind(model)
    if isinstance(target, Logit | LogitDiff | Norm | _Callable):
        return target
    if isinstance(target, int) or (isinstance(target, Tensor) and not target.is_floating_point()):
        return Logit(target)
    if isinstance(target, Sequence) and not isinstance(target, str) and all(isinstance(t, int) for t in target):
        return Logit(list(target))
    if callable(target):
        return _Callable(target, tuple(getattr(target, "sites", ())))
    raise TypeError(
        f"target must be a class index, a list or tensor of indices, Logit/LogitDiff/Unit, or a callable on the "
        f"RunResult returning one value per example; got {type(target).__name__}"
    )
