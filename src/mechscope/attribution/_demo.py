"""Demo sections for the HTML report: an attribution gallery with quality metrics, and token attribution."""

from __future__ import annotations

import functools
import html
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._cache import atomic_write_bytes
from ..core._model import Model
from ._cam import eigen_cam, grad_cam, grad_cam_pp, layer_cam, score_cam
from ._gradients import input_x_gradient, integrated_gradients, occlusion, saliency, smoothgrad
from ._lrp import lrp
from ._metrics import deletion_insertion, edge_detector, localisation, randomisation_check
from ._render import gallery, img_tag
from ._result import Attribution
from ._tokens import token_attribution

PROMPT = "The Eiffel Tower is in the city of"


def image_methods(cam_site: str) -> dict[str, Callable[..., Attribution]]:
    """Every image method by name, with the settings the demo and the CLI use (the CAMs at ``cam_site``)."""
    return {
        "saliency": saliency,
        "input_x_gradient": input_x_gradient,
        "integrated_gradients": integrated_gradients,
        "smoothgrad": functools.partial(smoothgrad, samples=16),
        "occlusion": occlusion,
        "lrp": lrp,
        "grad_cam": functools.partial(grad_cam, at=cam_site),
        "grad_cam_pp": functools.partial(grad_cam_pp, at=cam_site),
        "score_cam": functools.partial(score_cam, at=cam_site),
        "layer_cam": functools.partial(layer_cam, at=cam_site),
        "eigen_cam": lambda m, x, _y: eigen_cam(m, x, at=cam_site),
        "edge_detector": edge_detector,
    }


def image_section(out_dir: Path, n: int = 32, shown: int = 4) -> tuple[str, str]:
    """Gallery of every method on the shapes CNN, with deletion/insertion AUC, localisation and randomisation."""
    from ..organisms import vision_organism  # demos may use organisms; the method package itself never does

    org = vision_organism("shapes-cnn")
    data = org.test[:n]
    x, y = data.images, data.labels
    methods = image_methods(org.cam_site)
    maps, rows = {}, []
    for name, method in methods.items():
        start = time.process_time()
        a = method(org.model, x, y)
        seconds = time.process_time() - start
        auc = deletion_insertion(org.model, x, y, a, steps=12).auc()
        loc = localisation(a, data.masks)
        maps[name] = a
        rows.append((name, seconds, auc, loc, a))
    sanity = {name: randomisation_check(org.model, x[:8], y[:8], methods[name]).final()
              for name in ("saliency", "integrated_gradients", "grad_cam", "edge_detector")}  # fmt: skip
    png = gallery(x[:shown], [maps[k] for k in methods], row_labels=[data.classes[int(c)] for c in y[:shown]])
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
            f"<tr><td>{name}</td><td>{seconds:.2f}</td><td>{auc['deletion']:.3f} ({auc['deletion_chance']:.3f})</td>"
            f"<td>{auc['insertion']:.3f} ({auc['insertion_chance']:.3f})</td><td>{loc['mass_in_mask']:.2f}</td>"
            f"<td>{gap_s}</td><td>{rand}</td></tr>"
        )
    return (f"<table class='mechscope-attribution'>{head}{''.join(lines)}</table>"
            f"<p>Chance mass in shape (shape area): {chance:.2f}.</p>")  # fmt: skip


def token_section(model: Model, out_dir: Path, prompt: str = PROMPT, max_new_tokens: int = 3,
                  steps: int = 32) -> tuple[str, str]:  # fmt: skip
    """Which prompt tokens drive each generated token (Integrated Gradients on the embeddings)."""
    tok = token_attribution(model, prompt, max_new_tokens=max_new_tokens, steps=steps)
    fig = tok.heatmap()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    atomic_write_bytes(out_dir / "token_attribution.png", buf.getvalue())
    tok.save_html(out_dir / "token_attribution.html")
    gap = tok.completeness_gap.abs() / tok.output_change.abs().clamp_min(1e-12) if tok.completeness_gap is not None \
        else None  # fmt: skip
    gaps = ", ".join(f"{float(g):.3f}" for g in gap) if gap is not None else "n/a"
    body = (
        f"<p>{html.escape(model.name)}, prompt {html.escape(repr(prompt))}: Integrated Gradients "
        f"({tok.params.get('steps')} adaptive steps from the zero embedding, the first position kept) of each "
        "generated token's logit, "
        f"summed over the embedding. Red pushes the token up, blue down; each line is scaled to its largest "
        f"score. Relative completeness gap per token: {gaps}.</p>"
        + tok.to_html()
        + img_tag(buf.getvalue(), "token attribution heatmap", max_width="100%")
    )
    return "Token attribution on SmolLM2", body


def demo_sections(model: Model, out_dir: str | Path) -> list[tuple[str, str]]:
    """(title, self-contained HTML fragment) for the report: image attribution gallery and token attribution.

    ``model`` is the language model for the token section (the built-in SmolLM2); the image section uses the
    built-in shapes CNN (trained in seconds the first time, then cached). PNGs are also written to ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [image_section(out), token_section(model, out)]
