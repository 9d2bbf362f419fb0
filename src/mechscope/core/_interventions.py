"""Interventions are values: small frozen records of *what* to change at a site, applied by ``Model.intervene``.

Each intervention addresses a site (a name or glob) and optionally a region of it: ``pos`` (positions in the padded
batch), ``heads`` (head sites) and ``units`` (the last axis: neurons, channels or model dimensions). Selections
never drop an axis, so the selected region of a ``[batch pos head d_head]`` site with ``heads=[3]`` has shape
``[batch pos 1 d_head]``.

Values given to :class:`Patch` (and references to :class:`Ablate`) may be the full site tensor — the region is
taken from it, which is what patching a cached clean activation wants — or anything that broadcasts to the region.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

import torch
from torch import Tensor

Index = int | Sequence[int] | slice | Tensor | None


def _fmt_index(value: Index) -> str:
    if isinstance(value, Tensor):
        return f"Tensor{list(value.shape)}" if value.numel() > 8 else str(value.tolist())
    return repr(value)


def _fmt_tensor(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"Tensor{list(value.shape)}"
    if isinstance(value, list | tuple) and len(value) > 3:
        return f"<{len(value)} inputs>"
    return repr(value)


@dataclass(frozen=True, eq=False, repr=False)
class _Intervention:
    site: str
    pos: Index = field(default=None, kw_only=True)
    heads: Index = field(default=None, kw_only=True)
    units: Index = field(default=None, kw_only=True)

    def __repr__(self) -> str:
        shown = [repr(self.site)]
        for f in fields(self):
            value = getattr(self, f.name)
            is_default = f.default is not MISSING and not isinstance(value, Tensor) and value == f.default
            if f.name == "site" or is_default:
                continue
            text = _fmt_index(value) if f.name in ("pos", "heads", "units") else _fmt_tensor(value)
            shown.append(f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def selection(self) -> dict[str, Index]:
        """The region this intervention addresses, by axis role."""
        return {"pos": self.pos, "heads": self.heads, "units": self.units}


@dataclass(frozen=True, eq=False, repr=False)
class Patch(_Intervention):
    """Set the selected region to ``value``: the full site tensor, anything broadcasting to the region, a number."""

    value: Tensor | float


@dataclass(frozen=True, eq=False, repr=False)
class Ablate(_Intervention):
    """Remove the selected region's information.

    ``how``: ``"zero"``; ``"mean"`` over a reference batch (per position when ``over="batch"``, over batch and
    positions when ``over="batch_pos"``; padding is excluded); ``"resample"``: each example takes the activation of
    a random reference example (``seed``). ``reference`` is either inputs (prompts or token ids, run through the
    model once when the intervention is entered) or activations at the site.
    """

    how: Literal["zero", "mean", "resample"] = "zero"
    reference: Any = None
    over: Literal["batch", "batch_pos"] = "batch"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.how not in ("zero", "mean", "resample"):
            raise ValueError(f"Ablate how={self.how!r}: use 'zero', 'mean' or 'resample'")
        if self.how != "zero" and self.reference is None:
            raise ValueError(f"Ablate({self.site!r}, {self.how!r}) needs reference= (inputs or activations)")


@dataclass(frozen=True, eq=False, repr=False)
class Add(_Intervention):
    """Add ``scale * vector`` to the selected region (steering; ``vector`` may be a number)."""

    vector: Tensor | float
    scale: float = 1.0


@dataclass(frozen=True, eq=False, repr=False)
class Replace(_Intervention):
    """Replace the selected region by ``fn(region)``; ``fn`` must return a tensor of the region's shape."""

    fn: Callable[[Tensor], Tensor]


Intervention = Patch | Ablate | Add | Replace


# --- selection -------------------------------------------------------------------------------------------------


Region = tuple[Tensor | slice, ...]
"""An index selecting a region with outer-product semantics (see ``region_index``)."""


def region_index(act: Tensor, axes: tuple[str, ...], sel: dict[str, Index], site: str) -> Region | None:
    """An index selecting the region (``act[idx]``, ``out[idx] = new``); None when nothing is selected.

    The region is the outer product of each axis's selection (like ``np.ix_``), whatever combination of
    positions, heads and units is chosen, and keeps axis order. When at most one axis is selected by anything but a
    contiguous run, the index is basic (slices, and at most one 1-D tensor): reading a region is then a view or one
    ``index_select``, and writing it a strided copy. Otherwise every axis gets an index tensor shaped to broadcast
    along its own axis only.
    """
    if all(v is None for v in sel.values()):
        return None
    roles = _axis_roles(act, axes, site)
    picked: dict[int, Tensor] = {}
    for role, value in sel.items():
        if value is None:
            continue
        if role not in roles:
            raise ValueError(f"site {site!r} {_shape_str(act, axes)} has no {role!r} axis to select")
        picked[roles[role]] = _as_index(value, act.shape[roles[role]], role, site)
    basic: list[Tensor | slice] = [slice(None)] * act.ndim
    for axis, t in picked.items():
        basic[axis] = _as_slice(t)
    if sum(isinstance(k, Tensor) for k in basic) <= 1:
        return tuple(basic)
    idx = [picked.get(a, torch.arange(n)).to(act.device) for a, n in enumerate(act.shape)]
    return tuple(t.view([-1 if i == a else 1 for i in range(act.ndim)]) for a, t in enumerate(idx))


def _as_slice(t: Tensor) -> Tensor | slice:
    """``t`` as a slice when it is a contiguous ascending run of indices, else itself."""
    if t.numel() and bool((t.diff() == 1).all()):
        first = int(t[0])
        return slice(first, first + t.numel())
    return t


def region_shape(shape: torch.Size, idx: Region) -> torch.Size:
    """The shape of ``act[idx]`` for an ``act`` of ``shape``, without indexing."""
    if all(isinstance(k, slice) or k.ndim == 1 for k in idx) and sum(isinstance(k, Tensor) for k in idx) <= 1:
        return torch.Size(
            len(range(*k.indices(n))) if isinstance(k, slice) else k.numel() for k, n in zip(idx, shape, strict=True)
        )
    return torch.broadcast_shapes(*(k.shape for k in idx if isinstance(k, Tensor)))


def _axis_roles(act: Tensor, axes: tuple[str, ...], site: str) -> dict[str, int]:
    if axes:
        roles = {"pos": axes.index("pos")} if "pos" in axes else {}
        if "head" in axes:
            roles["heads"] = axes.index("head")
        roles["units"] = act.ndim - 1
        return roles
    # A module site of unknown layout: channels are axis 1 of image-like tensors, else the last axis.
    if act.ndim == 4:
        return {"units": 1}
    return {"pos": 1, "units": act.ndim - 1} if act.ndim == 3 else {"units": act.ndim - 1}


def _as_index(value: Index, size: int, role: str, site: str) -> Tensor:
    if isinstance(value, slice):
        return torch.arange(size)[value]
    t = torch.as_tensor(value, dtype=torch.long).reshape(-1)
    if t.numel() and (t.max() >= size or t.min() < -size):
        raise IndexError(f"{role}={_fmt_index(value)} is out of range for site {site!r} (size {size})")
    return t % size


def _shape_str(act: Tensor, axes: tuple[str, ...]) -> str:
    if axes and len(axes) == act.ndim:
        return "[" + " ".join(f"{a}={n}" for a, n in zip(axes, act.shape, strict=True)) + "]"
    return str(list(act.shape))


def fit_value(value: Tensor | float, act: Tensor, idx: Region | None, what: str, axes: tuple[str, ...]) -> Tensor:
    """Return ``value`` as the region's tensor: take the region of a full-shape value, else broadcast it."""
    value = torch.as_tensor(value).to(dtype=act.dtype, device=act.device)
    shape = act.shape if idx is None else region_shape(act.shape, idx)
    if value.shape == act.shape:
        return value if idx is None else value[idx]
    try:
        if torch.broadcast_shapes(value.shape, shape) == shape:
            return value.expand(shape)
    except RuntimeError:
        pass
    raise ValueError(
        f"{what}: value has shape {list(value.shape)} but the site is {_shape_str(act, axes)}"
        f" and the selected region is {list(shape)}. Pass the full site tensor or one that broadcasts"
        " to the region."
    )
