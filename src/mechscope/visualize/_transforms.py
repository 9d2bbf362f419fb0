"""Transformation robustness: random jitter, scale and rotation of the image before every optimisation step.

Olah et al. 2017, section "Transformation robustness"; Mordvintsev et al. 2015, "Inceptionism". An image that
still drives the unit after being shifted, scaled and rotated a little cannot rely on pixel-exact high-frequency
patterns, so the optimiser finds structures instead. Each image of the batch gets its
own transform, drawn from a seeded generator; all three are one affine resampling (``grid_sample``, reflected at
the border so no constant frame is introduced).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class Transforms:
    """Ranges of the random transforms applied at each optimisation step."""

    jitter: float = 2.0
    """Largest shift in pixels, each axis."""
    scale: tuple[float, float] = (0.9, 1.1)
    """Range of the zoom factor."""
    rotate: float = 10.0
    """Largest rotation in degrees, either way."""

    def __post_init__(self) -> None:
        if self.jitter < 0 or self.rotate < 0 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"transform ranges must be non-negative with 0 < scale[0] <= scale[1]: {self}")

    @property
    def identity(self) -> bool:
        return self.jitter == 0 and self.rotate == 0 and self.scale == (1.0, 1.0)

    def __call__(self, x: Float[Tensor, "n c h w"], generator: torch.Generator) -> Float[Tensor, "n c h w"]:
        """``x`` shifted, scaled and rotated, independently per image."""
        if self.identity:
            return x
        n, _, h, w = x.shape
        u = torch.rand(n, 4, generator=generator)  # angle, scale, shift y, shift x
        angle = math.radians(self.rotate) * (2 * u[:, 0] - 1)
        zoom = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 1]
        ty = self.jitter * (2 * u[:, 2] - 1) * 2 / h  # pixels -> normalised coordinates
        tx = self.jitter * (2 * u[:, 3] - 1) * 2 / w
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # the grid samples the inverse map
        theta = torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)  # [n 2 3]
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
