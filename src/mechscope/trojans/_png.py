"""Reconstructed triggers as pictures: the trigger alone, and stamped onto an example clean image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._cache import atomic_write_bytes
from ..data.images import png_bytes, to_rgb
from ._result import ReversedTrigger, TrojanAudit


def trigger_picture(trigger: ReversedTrigger) -> np.ndarray:
    """``[h w 3]`` uint8: the pattern times the mask, min-max scaled (a blend: its pattern)."""
    image = trigger.pattern * trigger.mask
    return to_rgb(image)


def save_triggers(result: TrojanAudit, folder: str | Path, example: Tensor | None = None,
                  scale: int = 4) -> list[Path]:  # fmt: skip
    """Write ``trigger_class<c>.png`` per class, ``stamped_class<c>.png`` on ``example`` and ``audit.json``.

    Returns the paths written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in result.triggers:
        path = folder / f"trigger_class{t.target}.png"
        atomic_write_bytes(path, png_bytes(trigger_picture(t), scale=scale))
        paths.append(path)
        if example is not None:
            stamped = folder / f"stamped_class{t.target}.png"
            with torch.no_grad():
                atomic_write_bytes(stamped, png_bytes(to_rgb(t.apply(example[None])[0]), scale=scale))
            paths.append(stamped)
    summary = folder / "audit.json"

    atomic_write_bytes(summary, json.dumps(result.to_dict(), indent=2).encode())
    return [*paths, summary]
