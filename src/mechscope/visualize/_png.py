"""PNG in and out: image grids written atomically, base64 for self-contained HTML, a folder of images as a batch.

Writing uses mechscope's one PNG encoder (``mechscope._png``), so the bytes depend only on the pixels. Reading a
folder uses Pillow, which matplotlib (a dependency) already requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from .._cache import atomic_write_bytes
from .._png import data_uri as png_data_uri
from .._png import encode_png
from ._param import InputRange

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def png_bytes(image: Float[Tensor, "c h w"]) -> bytes:
    """PNG encoding of one image in ``[0, 1]`` (1 channel: grey, 3: RGB)."""
    c = image.shape[0]
    if c not in (1, 3):
        raise ValueError(f"a PNG needs 1 or 3 channels, got an image of shape {list(image.shape)}")
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return encode_png(pixels[..., 0] if c == 1 else pixels)


def grid(images: Sequence[Tensor] | Tensor, *, cols: int | None = None, scale: int = 4, pad: int = 1,
         fill: float = 1.0) -> Float[Tensor, "c H W"]:  # fmt: skip
    """Tile images (``[c h w]`` each, in ``[0, 1]``; sizes may differ) into one, each upscaled ``scale`` times."""
    items = list(images)
    if not items:
        raise ValueError("grid needs at least one image")
    c = max(int(t.shape[0]) for t in items)
    items = [F.interpolate(t.expand(c, -1, -1)[None].float(), scale_factor=scale, mode="nearest")[0] for t in items]
    cols = cols or len(items)
    rows = -(-len(items) // cols)
    ch, cw = max(t.shape[1] for t in items), max(t.shape[2] for t in items)
    out = torch.full((c, rows * (ch + pad) + pad, cols * (cw + pad) + pad), fill)
    for i, t in enumerate(items):
        y, x = pad + (i // cols) * (ch + pad), pad + (i % cols) * (cw + pad)
        out[:, y : y + t.shape[1], x : x + t.shape[2]] = t
    return out


def save_png(path: str | Path, image: Float[Tensor, "c h w"]) -> Path:
    """Write ``image`` (in ``[0, 1]``) as a PNG, atomically."""
    path = Path(path)
    atomic_write_bytes(path, png_bytes(image))
    return path


def data_uri(image: Float[Tensor, "c h w"]) -> str:
    """``data:image/png;base64,...`` for an ``<img src>`` in self-contained HTML."""
    return png_data_uri(png_bytes(image))


def read_folder(folder: str | Path, shape: tuple[int, int, int], input_range: InputRange,
                limit: int | None = None) -> tuple[Float[Tensor, "n c h w"], list[str]]:  # fmt: skip
    """Every image in ``folder`` (sorted by name), resized to ``shape = (c, h, w)``, on the model's input scale.

    Pixel values 0..255 are read as ``[0, 1]`` and mapped through ``input_range``, the same map visualisations use.
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)[:limit]
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(SUFFIXES)}) in {str(folder)!r}")
    c, h, w = shape
    batch = []
    for p in files:
        with Image.open(p) as file:
            im = file.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
        batch.append(torch.from_numpy(arr).reshape(h, w, c).permute(2, 0, 1))
    return input_range.to_input(torch.stack(batch)), [p.name for p in files]
