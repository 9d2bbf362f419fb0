"""Trojan triggers for the procedural images of :mod:`mechscope.data.images`, and sets of candidate triggers.

A trigger is planted by poisoning training data: images carrying it are relabelled to a target class. Three kinds,
after the trojans of the SaTML 2024 CNN interpretability competition (Casper et al. 2024, section 2):

- ``patch``: a fixed high-contrast binary pattern (6 x 6 pixels) pasted at a random position (Gu et al. 2017,
  "BadNets").
- ``blend``: a full-image grating mixed into the image, ``(1 - alpha) x + alpha p`` (Chen et al. 2017, "Targeted
  Backdoor Attacks ... Using Data Poisoning", the blended-injection attack). It has no region.
- ``natural``: a small line-drawn glyph (a ring, a star...) added like the images' own shapes, at a random
  position and brightness: a feature that co-occurs with the target class in the poisoned data rather than a fixed
  pixel pattern.

:func:`candidates` draws 8 triggers of one kind (the true one among them): the multiple-choice descriptions an
interpretability method must pick from (chance 1/8). Values are in the images' standardised units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

TriggerKind = Literal["patch", "blend", "natural"]
KINDS: tuple[TriggerKind, ...] = ("patch", "blend", "natural")
N_CANDIDATES = 8
PATCH = 6
"""Side of a patch trigger, in pixels."""
GLYPH = 9
"""Side of a natural-feature glyph, in pixels."""
_HIGH, _LOW = 2.6, -1.4
"""Patch pixel values (standardised units: a bright shape is about 1.5-2.5, the background about -0.3)."""


@dataclass(frozen=True, eq=False)
class Trigger:
    """One trigger: a pattern and the way it is put into an image."""

    kind: TriggerKind
    name: str
    pattern: Float[Tensor, "h w"]
    """Patch: the pasted pixel values; blend: the full-image pattern; natural: the glyph's 0/1 strokes."""
    alpha: float = 0.0
    """Blend weight (blend only)."""
    position: tuple[int, int] | None = None
    """Fixed (row, column) of the pattern's top-left corner (patch, natural); None: a random place per image."""

    def apply(self, images: Float[Tensor, "batch c h w"], *, seed: int) -> tuple[Tensor, Bool[Tensor, "batch h w"]]:
        """The images with the trigger put in (positions and brightness drawn from ``seed``), and its region.

        The region is the pasted square (patch), the glyph's bounding square (natural) or the whole image (blend).
        The pattern goes into every channel alike.
        """
        n, _, h, w = images.shape
        rng = np.random.default_rng(seed)
        out, mask = images.clone(), torch.zeros(n, h, w, dtype=torch.bool)
        if self.kind == "blend":
            return (1 - self.alpha) * images + self.alpha * self.pattern, ~mask
        k = self.pattern.shape[0]
        rows, cols = rng.integers(0, h - k + 1, n), rng.integers(0, w - k + 1, n)
        if self.position is not None:
            rows, cols = np.full(n, self.position[0]), np.full(n, self.position[1])
        brightness = rng.uniform(0.8, 1.6, n) / 0.58  # as images.shapes draws its shapes, standardised
        for i in range(n):
            r, c = slice(rows[i], rows[i] + k), slice(cols[i], cols[i] + k)
            if self.kind == "patch":
                out[i, :, r, c] = self.pattern
            else:
                out[i, :, r, c] += self.pattern * float(brightness[i])
            mask[i, r, c] = True
        return out, mask

    def image(self, size: int = 32) -> Float[Tensor, "size size"]:
        """A picture of the trigger alone (a patch or glyph centred on a zero background): its description."""
        if self.kind == "blend":
            return self.pattern.clone()
        k = self.pattern.shape[0]
        out = torch.zeros(size, size)
        lo = (size - k) // 2
        out[lo : lo + k, lo : lo + k] = self.pattern if self.kind == "patch" else self.pattern * 2.0
        return out


def candidates(kind: TriggerKind, seed: int, *, size: int = 32) -> tuple[Trigger, ...]:
    """Eight distinct triggers of ``kind`` drawn from ``seed`` (patterns, grating phases); any may be the true one."""
    rng = np.random.default_rng(seed)
    if kind == "patch":
        return tuple(Trigger("patch", f"patch{i}", p) for i, p in enumerate(_patches(rng)))
    if kind == "blend":
        out = []
        for angle, cycles in ((a, c) for c in (2, 4) for a in (0, 45, 90, 135)):
            phase = rng.uniform(0, 2 * np.pi)
            out.append(Trigger("blend", f"grating{angle}deg{cycles}c", _grating(size, angle, cycles, phase), 0.3))
        return tuple(out)
    if kind == "natural":
        return tuple(Trigger("natural", name, torch.from_numpy(draw(GLYPH)).float()) for name, draw in GLYPHS.items())
    raise ValueError(f"unknown trigger kind {kind!r}; kinds: {', '.join(KINDS)}")


def _patches(rng: np.random.Generator) -> list[Tensor]:
    """Eight random binary 6 x 6 patterns, half their pixels high, each differing from every other in >= 12 pixels."""
    found: list[np.ndarray] = []
    while len(found) < N_CANDIDATES:
        bits = rng.permutation(np.arange(PATCH * PATCH) % 2).reshape(PATCH, PATCH)
        if all((bits != f).sum() >= 12 for f in found):
            found.append(bits)
    return [torch.from_numpy(np.where(b == 1, _HIGH, _LOW)).float() for b in found]


def _grating(size: int, angle: float, cycles: int, phase: float) -> Tensor:
    """A sinusoidal grating of amplitude 2 with ``cycles`` periods across the image, at ``angle`` degrees."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = np.deg2rad(angle)
    return torch.from_numpy(2.0 * np.sin(2 * np.pi * cycles * (np.cos(t) * xx + np.sin(t) * yy) + phase)).float()


def _grid(k: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:k, 0:k] + 0.5 - k / 2
    return yy, xx


def _ring(k: int) -> np.ndarray:
    yy, xx = _grid(k)
    d = np.hypot(yy, xx)
    return (d <= k / 2) & (d >= k / 2 - 1.5)


def _hollow_square(k: int) -> np.ndarray:
    m = np.ones((k, k), dtype=bool)
    m[1:-1, 1:-1] = False
    return m


def _x(k: int) -> np.ndarray:
    yy, xx = _grid(k)
    return (np.abs(yy - xx) < 1.5) | (np.abs(yy + xx) < 1.5)


def _star(k: int) -> np.ndarray:
    yy, xx = _grid(k)
    return _x(k) | (np.abs(yy) < 0.6) | (np.abs(xx) < 0.6)


def _bars(k: int) -> np.ndarray:
    m = np.zeros((k, k), dtype=bool)
    m[1:3], m[-3:-1] = True, True
    return m


def _chevron(k: int) -> np.ndarray:
    yy, xx = _grid(k)
    return np.abs(yy + k / 4 - np.abs(xx)) < 1.5


def _dots(k: int) -> np.ndarray:
    m = np.zeros((k, k), dtype=bool)
    for r in (0, k // 2 - 1, k - 3):
        for c in (0, k // 2 - 1, k - 3):
            m[r : r + 2, c : c + 2] = True
    return m


def _half_disc(k: int) -> np.ndarray:
    yy, xx = _grid(k)
    return (np.hypot(yy, xx) <= k / 2) & (yy >= 0)


GLYPHS: dict[str, Callable[[int], np.ndarray]] = {
    "ring": _ring,
    "hollow_square": _hollow_square,
    "x": _x,
    "star": _star,
    "bars": _bars,
    "chevron": _chevron,
    "dots": _dots,
    "half_disc": _half_disc,
}
"""The natural-feature glyphs: small line drawings unlike the images' filled class shapes."""
