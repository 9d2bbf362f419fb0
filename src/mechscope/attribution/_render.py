"""Pictures of attributions: a gallery (images by methods) and per-image overlays, as PNG bytes or files."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from .._png import data_uri
from ..data.images import overlay, to_rgb, write_png
from ._result import Attribution


def gallery(images: Float[Tensor, "batch c h w"], maps: Sequence[Attribution], *,
            row_labels: Sequence[str] | None = None, dpi: int = 110) -> bytes:  # fmt: skip
    """PNG of a grid: one row per image, the input then one overlay per attribution (titled by method)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n, cols = images.shape[0], len(maps) + 1
    heats = [a.heatmap() for a in maps]  # [batch h w] each
    fig, axes = plt.subplots(n, cols, figsize=(1.15 * cols, 1.2 * n + 0.3), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(to_rgb(images[i]))
        axes[i, 0].set_ylabel(row_labels[i] if row_labels else "", fontsize=7)
        for j, heat in enumerate(heats, start=1):
            axes[i, j].imshow(overlay(images[i], heat[i]))
    for j, title in enumerate(["input", *(a.method.replace("_", " ") for a in maps)]):
        axes[0, j].set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def save_overlays(images: Float[Tensor, "batch c h w"], attribution: Attribution, out_dir: str | Path, *,
                  names: Sequence[str] | None = None, scale: int = 4) -> list[Path]:  # fmt: skip
    """One PNG per image, ``<name>.<method>.png``: the attribution over the image, each pixel ``scale`` x ``scale``."""
    out = Path(out_dir)
    heat = attribution.heatmap()
    names = names or [f"image{i:03d}" for i in range(images.shape[0])]
    return [write_png(out / f"{name}.{attribution.method}.png", overlay(images[i], heat[i]), scale=scale)
            for i, name in enumerate(names)]  # fmt: skip


def img_tag(png: bytes, alt: str, **style: Any) -> str:
    """A self-contained ``<img>`` (the PNG embedded as base64)."""
    css = ";".join(f"{k.replace('_', '-')}:{v}" for k, v in style.items())
    return f"<img alt='{alt}' style='{css}' src='{data_uri(png)}'>"
