"""A folder of images as a batch on a model's input scale (exemplars from the user's own images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ._param import InputRange

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


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
