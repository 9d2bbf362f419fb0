"""Dataset exemplars: the real images (and image patches) on which a unit fires most.

For a unit on a spatial site, ``reduce="max"`` ranks images by the unit's largest value over positions and keeps
that position; the patch is the position's receptive field, found by gradients rather than by reading layer
hyperparameters, so it works for any architecture: the input pixels whose gradient with respect to the site's
activations at that position is non-zero on any of a few random probe images (random probes switch different ReLUs
and max-pool winners on, so their union approaches the full receptive field; for attention models the field is
the whole image, and so is the patch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ..core import Model
from ._capture import capture
from ._objectives import Objective, as_objective, channel_axis

Box = tuple[int, int, int, int]
"""``(y0, x0, y1, x1)`` in input pixels, ends exclusive."""


@dataclass(frozen=True, eq=False)
class Exemplars:
    """The ``k`` dataset images on which a unit is highest, best first, with the unit's statistics over the set."""

    unit: str
    indices: Int[Tensor, " k"]
    """Positions in the dataset."""
    values: Float[Tensor, " k"]
    positions: list[tuple[int, ...] | None]
    """Grid position of the maximum on the site (``reduce="max"``), else None."""
    boxes: list[Box]
    """Receptive field of each position (the whole image when there is no position)."""
    images: Float[Tensor, "k c h w"]
    """The exemplar inputs, on the model's scale."""
    all_values: Float[Tensor, " n"]
    """The ranking value of every dataset image."""
    reduce: str

    def patches(self) -> list[Tensor]:
        """Receptive-field crops ``[c h' w']`` of the exemplar images."""
        return [img[:, y0:y1, x0:x1] for img, (y0, x0, y1, x1) in zip(self.images, self.boxes, strict=True)]

    def stats(self) -> dict[str, float]:
        """Mean, standard deviation and maximum of the unit over the dataset."""
        v = self.all_values
        return {"mean": float(v.mean()), "std": float(v.std()), "max": float(v.max()), "n": int(v.numel())}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"unit": self.unit, "reduce": self.reduce, "indices": self.indices.tolist(),
                "values": [round(v, 6) for v in self.values.tolist()], "positions": self.positions,
                "boxes": self.boxes, "dataset": self.stats()}  # fmt: skip


def exemplars(
    model: Model,
    unit: str | Objective,
    images: Float[Tensor, "n c h w"],
    *,
    k: int = 9,
    reduce: Literal["max", "mean"] = "max",
    batch_size: int = 128,
    progress: bool = False,
) -> Exemplars:
    """Top-``k`` images of ``images`` for ``unit``: by its maximum over the site's positions, or by its mean."""
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    objective = as_objective(unit)
    if len(images) == 0:
        raise ValueError("exemplars need at least one image")
    values, argmax, grid = _scan(model, objective, images, reduce, batch_size, progress)
    k = min(k, len(images))
    top = torch.topk(values, k, sorted=True)
    positions: list[tuple[int, ...] | None] = [None] * k
    boxes: list[Box] = [(0, 0, images.shape[-2], images.shape[-1])] * k
    if argmax is not None and grid:
        positions = [tuple(int(c) for c in torch.unravel_index(argmax[i], grid)) for i in top.indices]
        boxes = receptive_fields(
            model, objective.sites[0], [p for p in positions if p is not None], tuple(images.shape[1:])
        )
    return Exemplars(str(objective), top.indices, top.values, positions, boxes, images[top.indices], values, reduce)


@torch.no_grad()
def _scan(model: Model, objective: Objective, images: Tensor, reduce: str, batch_size: int,
          progress: bool) -> tuple[Tensor, Tensor | None, tuple[int, ...]]:  # fmt: skip
    values, argmax = [], []
    grid: tuple[int, ...] = ()
    chunks = images.split(batch_size)
    for i, chunk in enumerate(tqdm(chunks, desc=f"exemplars {objective}", disable=not progress, leave=False)):
        acts = capture(model, chunk, objective.sites)
        if i == 0:
            objective.check(acts)
        per_pos = objective.per_position(acts) if reduce == "max" else None
        if per_pos is None:
            values.append(objective(acts))
            continue
        best = per_pos.max(-1)
        values.append(best.values)
        argmax.append(best.indices)
        act = acts[objective.sites[0]]
        grid = tuple(s for d, s in enumerate(act.shape) if d not in (0, channel_axis(act)))
    return torch.cat(values).cpu(), (torch.cat(argmax).cpu() if argmax else None), grid


def receptive_fields(model: Model, site: str, positions: list[tuple[int, ...]], shape: tuple[int, ...],
                     probes: int = 8, seed: int = 0) -> list[Box]:  # fmt: skip
    """Bounding box of the input pixels that influence ``site`` at each position (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(positions) * probes, *shape, generator=gen).to(model.device).requires_grad_(True)
    with torch.enable_grad():
        act = capture(model, x, [site])[site]
        axis = channel_axis(act)
        total = act.new_zeros(())
        for i, pos in enumerate(positions):
            rows = act[i * probes : (i + 1) * probes].movedim(axis, 1)  # [probes channel *grid]
            total = total + rows[(slice(None), slice(None), *pos)].sum()  # type: ignore[index]
        (grad,) = torch.autograd.grad(total, x)
    hit = grad.abs().sum(1).reshape(len(positions), probes, *shape[1:]).amax(1) > 0  # [k h w]
    boxes = []
    for mask in hit:
        ys, xs = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        if ys.numel() == 0:  # a dead position: no pixel reaches it on any probe; show the whole image
            boxes.append((0, 0, shape[-2], shape[-1]))
        else:
            boxes.append((int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1))
    return boxes
