"""Attribution in pictures and pages: gallery, overlays, token attribution (text and heatmap), demo sections.

The demo sections run every declared attribution method (``attribution.METHODS``) on the shapes CNN organism
and show each with its quality metrics, and token attribution on a language model.
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxtyping import Float
from torch import Tensor

from .._cache import atomic_write_bytes
from .._png import data_uri
from ..data.images import overlay, to_rgb, write_png

if TYPE_CHECKING:
    from ..attribution import Attribution, TokenAttribution
    from ..core import Model

PROMPT = "The Eiffel Tower is in the city of"


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
    return (f"<img alt='{html.escape(alt, quote=True)}' style='{css}' "
            f"src='{data_uri(png)}'>")  # fmt: skip


# --- token attribution -------------------------------------------------------------------------------------------


def token_html(tok: TokenAttribution) -> str:
    """Highlighted text: one line per new token, context tokens shaded red (positive) or blue (negative)."""
    lines = []
    for i, new in enumerate(tok.new_tokens):
        row = tok.scores[i, : tok.n_prompt + i]
        scale = float(row.abs().max()) or 1.0
        spans = [_span(t, float(v) / scale) for t, v in zip(tok.tokens, row.tolist(), strict=False)]
        lines.append(f'<div class="row">{"".join(spans)} <b>&rarr; {html.escape(new)}</b></div>')
    style = ("<style>.row{font-family:monospace;white-space:pre-wrap;margin:4px 0}"
             ".tok{border-radius:3px;padding:0 1px}</style>")  # fmt: skip
    return f"<div class='mechscope-tokens'>{style}{''.join(lines)}</div>"


def save_token_html(tok: TokenAttribution, path: str | Path) -> Path:
    """A self-contained HTML page of :func:`token_html`, written atomically."""
    path = Path(path)
    page = f"<!doctype html><meta charset='utf-8'><title>token attribution</title><body>{token_html(tok)}</body>"
    atomic_write_bytes(path, page.encode())
    return path


def token_heatmap(tok: TokenAttribution, path: str | Path | None = None) -> Any:
    """Matplotlib figure: new tokens (rows) by context tokens (columns); saved as PNG when ``path`` is given."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    scores = tok.scores.clone()
    scores = scores / scores.abs().amax(-1, keepdim=True).clamp_min(1e-12)  # each row scaled to [-1, 1]
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(tok.tokens)), max(2, 0.4 * len(tok.new_tokens) + 1)))
    ax.imshow(scores.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(tok.tokens)), [repr(t)[1:-1] for t in tok.tokens], rotation=90, fontsize=7)
    ax.set_yticks(range(len(tok.new_tokens)), [repr(t)[1:-1] for t in tok.new_tokens], fontsize=7)
    ax.set_xlabel("context token")
    ax.set_ylabel("new token")
    ax.set_title(f"{tok.method} (each row scaled to its max |score|)", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _span(token: str, value: float) -> str:
    alpha = min(1.0, abs(value))
    colour = f"rgba(220,40,40,{alpha:.2f})" if value >= 0 else f"rgba(40,90,220,{alpha:.2f})"
    return f'<span class="tok" style="background:{colour}" title="{value:+.3f}">{html.escape(token)}</span>'


# --- demo sections -----------------------------------------------------------------------------------------------

SANITY = ("saliency", "integrated_gradients", "grad_cam", "edge_detector")
"""Methods given the (slow) cascading randomisation check in the demo."""


def image_section(out_dir: Path, n: int = 32, shown: int = 4) -> tuple[str, str]:
    """Gallery of every declared method on the shapes CNN, with deletion/insertion AUC, localisation, randomisation."""
    import torch

    from ..attribution import METHODS, deletion_insertion, localisation, randomisation_check
    from ..organisms import vision_organism

    org = vision_organism("shapes-cnn")
    data = org.test[:n]
    x, y = data.images, data.labels
    specs = [s for s in METHODS.specs(tag="cnn")]
    configs = {s.name: s.make_config(**({"layer": org.cam_site} if "cam" in s.tags else {})) for s in specs}
    maps, rows = {}, []
    for spec in specs:
        start = time.process_time()
        a = spec(org.model, x, y, config=configs[spec.name])
        seconds = time.process_time() - start
        auc = deletion_insertion(org.model, x, y, a, steps=12).auc()
        loc = localisation(a, data.masks)
        maps[spec.name] = a
        rows.append((spec.name, seconds, auc, loc, a))

    def method(name: str):
        return lambda m, xs, ys: METHODS[name](m, xs, ys, config=configs[name])

    sanity = {name: randomisation_check(org.model, x[:8], y[:8], method(name)).final()
              for name in SANITY if name in maps}  # fmt: skip
    png = gallery(x[:shown], list(maps.values()), row_labels=[data.classes[int(c)] for c in y[:shown]])
    atomic_write_bytes(out_dir / "attribution_gallery.png", png)
    table = _metrics_table(rows, sanity, chance=localisation(torch.rand(data.masks.shape), data.masks)["chance"])
    body = (
        f"<p>{html.escape(org.name)} (small CNN, {org.accuracy:.1%} held-out accuracy on procedural shapes), "
        f"{n} held-out images, target = the true class. Overlays show |map| scaled per image.</p>"
        + img_tag(png, "attribution gallery", max_width="100%")
        + table
        + "<p>Deletion: the class probability as the most important pixels are set to 0 (lower is better); "
        "insertion: as they are restored into a blurred copy (higher is better); chance = a random order. "
        "Mass in shape: share of |map| on the shape's pixels. Randomisation (Adebayo et al. 2018): Spearman "
        "rank correlation of |map| with the original after every weight layer is re-initialised; a method that "
        "explains the model should drop towards 0, the edge detector stays at 1.</p>"
    )
    return "Input attribution on a small CNN", body


def _metrics_table(rows: list[Any], sanity: dict[str, dict[str, float]], chance: float) -> str:
    head = ("<tr><th>method</th><th>CPU s</th><th>deletion AUC (chance)</th><th>insertion AUC (chance)</th>"
            "<th>mass in shape</th><th>IG relative gap</th><th>randomisation Spearman</th></tr>")  # fmt: skip
    lines = []
    for name, seconds, auc, loc, a in rows:
        gap = a.relative_gap()
        gap_s = (
            f"{float(a.completeness_gap.abs().mean() / a.output_change.abs().mean()):.4f}" if gap is not None else ""
        )
        rand = f"{sanity[name]['spearman_abs']:.2f}" if name in sanity else ""
        lines.append(
            f"<tr><td>{html.escape(name)}</td><td>{seconds:.2f}</td>"
            f"<td>{auc['deletion']:.3f} ({auc['deletion_chance']:.3f})</td>"
            f"<td>{auc['insertion']:.3f} ({auc['insertion_chance']:.3f})</td><td>{loc['mass_in_mask']:.2f}</td>"
            f"<td>{gap_s}</td><td>{rand}</td></tr>"
        )
    return (f"<table class='mechscope-attribution'>{head}{''.join(lines)}</table>"
            f"<p>Chance mass in shape (shape area): {chance:.2f}.</p>")  # fmt: skip


def token_section(model: Model, out_dir: Path, prompt: str = PROMPT, max_new_tokens: int = 3,
                  steps: int = 32) -> tuple[str, str]:  # fmt: skip
    """Which prompt tokens drive each generated token (Integrated Gradients on the embeddings)."""
    from ..attribution import token_attribution

    tok = token_attribution(model, prompt, max_new_tokens=max_new_tokens, steps=steps)
    fig = token_heatmap(tok)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    atomic_write_bytes(out_dir / "token_attribution.png", buf.getvalue())
    save_token_html(tok, out_dir / "token_attribution.html")
    gaps = "n/a"
    if tok.completeness_gap is not None and tok.output_change is not None:
        gap = tok.completeness_gap.abs() / tok.output_change.abs().clamp_min(1e-12)
        gaps = ", ".join(f"{float(g):.3f}" for g in gap)
    body = (
        f"<p>{html.escape(model.name)}, prompt {html.escape(repr(prompt))}: Integrated Gradients "
        f"({tok.params.get('steps')} adaptive steps from the zero embedding, the first position kept) of each "
        "generated token's logit, "
        f"summed over the embedding. Red pushes the token up, blue down; each line is scaled to its largest "
        f"score. Relative completeness gap per token: {gaps}.</p>"
        + token_html(tok)
        + img_tag(buf.getvalue(), "token attribution heatmap", max_width="100%")
    )
    return "Token attribution on SmolLM2", body


def attribution_sections(model: Model, out_dir: str | Path) -> list[tuple[str, str]]:
    """(title, self-contained HTML fragment) for the report: image attribution gallery and token attribution.

    ``model`` is the language model for the token section (the built-in SmolLM2); the image section uses the
    built-in shapes CNN (trained in seconds the first time, then cached). PNGs are also written to ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [image_section(out), token_section(model, out)]
