"""Procedural image data with known ground truth: shapes on noisy backgrounds, and signal-block images.

Nothing is downloaded. Every image is drawn from a seed, so a dataset is reproduced exactly by its arguments.

- :func:`shapes`: one filled shape (circle, square, triangle, cross) per image, at a random position, size,
  rotation and brightness, on a noisy background with a random brightness ramp. ``masks`` marks the shape's
  pixels.
- :func:`signal_blocks`: the image is a 2 x 2 grid of blocks; one random block holds a class shape and the
  other three hold the same class-independent "null" patch (a hollow diamond), in the spirit of BlockMNIST
  (Shah, Jain & Netrapalli 2021, "Do Input Gradients Highlight Discriminative Features?", section 3). Only the
  signal block carries the class, so ``masks`` (that block) is where a faithful attribution must put its mass.

Image files (PNG, JPEG) read into tensors, and attribution maps drawn over images and written as PNG, are here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .._png import encode_png

SHAPES = ("circle", "square", "triangle", "cross")
"""Class names of :func:`shapes` and :func:`signal_blocks`, in label order."""


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled batch of images with the region that carries each image's class."""

    images: Float[Tensor, "batch 1 h w"]
    """Grey images, roughly zero-mean and unit-variance."""
    labels: Int[Tensor, " batch"]
    masks: Bool[Tensor, "batch h w"]
    """Pixels that carry the class: the shape (``shapes``) or the signal block (``signal_blocks``)."""
    classes: tuple[str, ...]
    name: str
    seed: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, idx: slice | Tensor) -> ImageSet:
        return ImageSet(self.images[idx], self.labels[idx], self.masks[idx], self.classes, self.name, self.seed)


def shapes(n: int, *, size: int = 32, seed: int = 0, noise: float = 0.35) -> ImageSet:
    """``n`` images of one filled shape each, classes balanced, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(SHAPES)
    rng.shuffle(labels)
    radius = rng.uniform(0.17, 0.3, n) * size
    margin = radius * 1.05
    centre = rng.uniform(margin[:, None], size - margin[:, None], (n, 2))
    masks = _draw(labels, centre, radius, rng.uniform(0, 2 * np.pi, n), size)
    images = _background(n, size, noise, rng) + masks * rng.uniform(0.8, 1.6, (n, 1, 1))
    return _finish(images, labels, masks, "shapes", seed)


def signal_blocks(n: int, *, size: int = 32, seed: int = 0, noise: float = 0.3) -> ImageSet:
    """``n`` images of 2 x 2 blocks: a class shape in one random block, a null patch in each of the others."""
    if size % 2:
        raise ValueError(f"signal_blocks needs an even size, got {size}")
    rng = np.random.default_rng(seed)
    half = size // 2
    labels = np.arange(n) % len(SHAPES)
    rng.shuffle(labels)
    block = rng.integers(0, 4, n)
    radius = rng.uniform(0.26, 0.36, n) * half
    jitter = rng.uniform(-0.12, 0.12, (n, 2)) * half
    shape = _draw(labels, half / 2 + jitter, radius, rng.uniform(0, 2 * np.pi, n), half)
    null = _hollow_diamond(half)
    brightness = rng.uniform(0.8, 1.6, (n, 1, 1))
    images = _background(n, size, noise, rng)
    masks = np.zeros((n, size, size), dtype=bool)
    for b in range(4):
        rows, cols = slice((b // 2) * half, (b // 2 + 1) * half), slice((b % 2) * half, (b % 2 + 1) * half)
        here = block == b
        patch = np.where(here[:, None, None], shape, null[None])  # [n half half]
        images[:, rows, cols] += patch * brightness
        masks[here, rows, cols] = True
    return _finish(images, labels, masks, "signal_blocks", seed)


def _finish(images: np.ndarray, labels: np.ndarray, masks: np.ndarray, name: str, seed: int) -> ImageSet:
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)  # [n 1 h w]
    x = (x - 0.17) / 0.58  # roughly standardised over these generators
    return ImageSet(x, torch.from_numpy(labels).long(), torch.from_numpy(masks.astype(bool)), SHAPES, name, seed)


def _background(n: int, size: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian pixel noise plus a random linear brightness ramp: ``[n size size]``."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    tilt = rng.normal(0, 0.25, (n, 2))
    ramp = tilt[:, 0, None, None] * yy + tilt[:, 1, None, None] * xx
    return rng.normal(0, noise, (n, size, size)) + ramp


def _draw(labels: np.ndarray, centre: np.ndarray, radius: np.ndarray, angle: np.ndarray, size: int) -> np.ndarray:
    """Filled shapes, one per row: ``[n size size]`` of 0/1, vectorised over the batch."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dy = yy[None] - centre[:, 0, None, None]
    dx = xx[None] - centre[:, 1, None, None]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated coordinates
    r = radius[:, None, None]
    circle = dx**2 + dy**2 <= r**2
    square = (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    # Equilateral triangle: inside three half-planes at distance 0.6 r from the centre.
    tri = np.ones_like(circle)
    for k in range(3):
        a = 2 * np.pi * k / 3
        tri &= np.cos(a) * u + np.sin(a) * v <= 0.6 * r
    arm = r / 3
    cross = ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(v) <= r) & (np.abs(u) <= arm))
    stack = np.stack([circle, square, tri, cross])  # [class n size size]
    return stack[labels, np.arange(len(labels))].astype(np.float64)


def _hollow_diamond(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5 - size / 2
    d = np.abs(yy) + np.abs(xx)
    return ((d <= 0.32 * size) & (d >= 0.2 * size)).astype(np.float64)


# --- image files and overlays ------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MEAN, STD = 0.17, 0.58
"""The generators' standardisation: images are ``(raw - MEAN) / STD``."""
PIXEL_LO, PIXEL_HI = -1.25, 2.75
"""Raw values that 8-bit pixels 0 and 255 stand for, so generated images survive a PNG round trip (0.03% of the
shapes' raw values lie outside and are clipped)."""


def image_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image files named directly, or every image in a folder (sorted by name); missing paths raise."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"no such image file or folder: {item}")
    return files


def read_images(files: Sequence[Path], *, size: int, channels: int = 1) -> Float[Tensor, "batch c size size"]:
    """Images as ``[batch channels size size]`` in [0, 1]: converted to grey (1) or RGB (3), resized bilinearly."""
    from PIL import Image

    out = []
    for f in files:
        try:
            with Image.open(f) as opened:
                im = opened.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
                out.append(np.asarray(im, dtype=np.float32) / 255.0)
        except OSError as e:
            raise ValueError(f"cannot read image {f}: {e}") from None
    arr = np.stack(out)  # [b h w] or [b h w 3]
    x = torch.from_numpy(arr)
    return x[:, None] if channels == 1 else x.permute(0, 3, 1, 2)


def standardise(pixels: Tensor) -> Tensor:
    """File pixels in [0, 1] on the generators' (and organisms') scale; the inverse of :func:`to_pixels`."""
    return (PIXEL_LO + pixels * (PIXEL_HI - PIXEL_LO) - MEAN) / STD


def to_pixels(images: Tensor) -> Tensor:
    """Generated (standardised) images as pixels in [0, 1], for PNG files that :func:`standardise` reads back."""
    return ((images * STD + MEAN - PIXEL_LO) / (PIXEL_HI - PIXEL_LO)).clamp(0, 1)


def to_rgb(image: Float[Tensor, "c h w"], *, minmax: bool = True) -> np.ndarray:
    """``[h w 3]`` uint8 of an image: min-max scaled (any value range), or as is (values in [0, 1])."""
    x = image.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12) if minmax else x.clamp(0, 1)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def overlay(image: Float[Tensor, "c h w"], heat: Float[Tensor, "h w"], *, alpha: float = 0.55,
            cmap: str = "inferno") -> np.ndarray:  # fmt: skip
    """``[h w 3]`` uint8: the grey image under a colour map of ``heat`` (``|heat|`` if it has negative values).

    ``heat`` is resized to the image's size if needed, then scaled to [0, 1] by its maximum.
    """
    import matplotlib

    h = heat.detach().float().cpu()
    if h.shape != image.shape[-2:]:
        h = torch.nn.functional.interpolate(h[None, None], size=image.shape[-2:], mode="bilinear")[0, 0]
    h = h.abs() if (h < 0).any() else h
    level = (h / h.max().clamp_min(1e-12)).numpy()
    colour = matplotlib.colormaps[cmap](level)[..., :3]  # [h w 3] in [0, 1]
    grey = to_rgb(image).mean(-1, keepdims=True) / 255.0
    mixed = ((1 - alpha) * grey + alpha * colour).clip(0, 1)
    return (mixed * 255).round().astype(np.uint8)


def png_bytes(rgb: np.ndarray, *, scale: int = 1) -> bytes:
    """PNG bytes of a ``[h w 3]`` (or ``[h w]``) uint8 array, each pixel repeated ``scale`` times per side."""
    if scale > 1:
        rgb = rgb.repeat(scale, 0).repeat(scale, 1)
    return encode_png(rgb)


def write_png(path: str | Path, rgb: np.ndarray, *, scale: int = 1) -> Path:
    """Write a ``[h w 3]`` uint8 array as a PNG, atomically (a reader never sees half a file)."""
    from .._cache import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, png_bytes(rgb, scale=scale))
    return path
