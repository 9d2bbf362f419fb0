"""Feature visualisations in pages: the demo sections (the PNG helpers are in ``_png``).

The demo sections (a feature visualisation with its exemplars, and class prototypes) run on the ``shapes-cnn``
vision organism (trained in seconds, cached) in about 20 s on one CPU thread.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import torch

from .._cache import atomic_write_bytes
from ..visualize import (
    InputRange,
    PrototypeResult,
    VisualizeConfig,
    class_paths,
    exemplars,
    path_sites,
    prototype,
    visualize,
)
from ..visualize._prototype import KINDS
from ._png import data_uri, grid, save_png

# --- demo sections -----------------------------------------------------------------------------------------------


HEADER = [
    "class",
    "measure",
    "prototype",
    "act. max",
    "real (class)",
    "real (other classes)",
    "p(prototype)",
    "p(act. max)",
]
FIT_SEED = 123
"""Seed of the real images whose class statistics the path regulariser matches (not the held-out test set)."""


def _img(image: torch.Tensor, alt: str) -> str:
    return f"<img alt='{escape(alt)}' src='{data_uri(image)}' style='image-rendering:pixelated'>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else escape(str(v))

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def feature_section(org: Any, out: Path, *, steps: int = 128, seed: int = 0) -> tuple[str, str, dict[str, Any]]:
    """Diverse Fourier visualisations of the channel the classifier weighs most for 'circle', with exemplars."""
    model, images = org.model, org.test.images
    shape, rng = tuple(images.shape[1:]), InputRange.of(images)
    channel = int(model.module.head.weight[0].argmax())
    unit = f"features:{channel}"
    cfg = VisualizeConfig(steps=steps, n=3, diversity=1.0, seed=seed, progress=False)
    vis = visualize(model, unit, shape, input_range=rng, config=cfg)
    pixel = visualize(
        model,
        unit,
        shape,
        input_range=rng,
        config=VisualizeConfig(param="pixel", steps=steps, seed=seed, progress=False),
    )
    top = exemplars(model, unit, images, k=8, reduce="mean")
    patches = exemplars(model, unit, images, k=8, reduce="max")
    stats = top.stats()
    save_png(out / "feature_vis.png", grid([*vis.images, *pixel.images], scale=4))
    save_png(out / "feature_exemplars.png", grid([rng.to_image(p) for p in patches.patches()], scale=4))
    z = [(v - stats["mean"]) / stats["std"] for v in vis.values.tolist()]
    rows = [[f"Fourier #{i}", v, zi] for i, (v, zi) in enumerate(zip(vis.values.tolist(), z, strict=True))]
    rows.append(["pixel", float(pixel.values[0]), (float(pixel.values[0]) - stats["mean"]) / stats["std"]])
    html = (
        f"<p>Unit <code>{escape(unit)}</code> (the last conv layer's channel with the largest weight on class "
        f"'circle'), mean over positions. Left three: decorrelated Fourier parametrisation with jitter/scale/rotate "
        f"robustness and a Gram diversity term ({steps} steps); right: the same objective in raw pixels.</p>"
        f"{_img(grid([*vis.images, *pixel.images], scale=4), 'feature visualisation')}"
        f"{_table(['image', 'activation', 'z vs dataset'], rows)}"
        f"<p>Mean pairwise Gram-matrix cosine of the three Fourier images: {vis.similarity:.2f} (1: the same "
        f"features). Diversity trades activation for distinct facets.</p>"
        f"<p>Over {stats['n']} held-out images: mean {stats['mean']:.3f}, std {stats['std']:.3f}, max "
        f"{stats['max']:.3f}. Top images (by the mean), then the receptive-field patches at each top image's "
        f"strongest position:</p>"
        f"{_img(grid([rng.to_image(x) for x in top.images], scale=3), 'top exemplars')}<br>"
        f"{_img(grid([rng.to_image(p) for p in patches.patches()], scale=6), 'exemplar patches')}"
    )
    summary = {"unit": unit, "visualization": vis.to_dict(), "pixel": pixel.to_dict(), "exemplars": top.to_dict(),
               "patches": patches.to_dict()}  # fmt: skip
    return f"Feature visualisation: {unit} on shapes-cnn", html, summary


def prototype_study(org: Any, *, steps: int = 128, n: int = 1, path_weight: float = 10.0,
                    seed: int = 0) -> list[PrototypeResult]:  # fmt: skip
    """Prototype vs activation maximisation for every class of a vision organism (path fitted on fresh images)."""
    from ..data.images import shapes, signal_blocks

    make = shapes if org.spec.data == "shapes" else signal_blocks
    fit = make(512, size=org.spec.size, seed=FIT_SEED)
    paths = class_paths(org.model, fit.images, fit.labels, path_sites(org.model))
    shape, rng = tuple(org.test.images.shape[1:]), InputRange.of(org.test.images)
    cfg = VisualizeConfig(steps=steps, n=n, seed=seed, progress=False)
    return [prototype(org.model, c, paths, held_out=(org.test.images, org.test.labels), shape=shape,
                      input_range=rng, config=cfg, path_weight=path_weight, logit_site="head")
            for c in range(len(org.test.classes))]  # fmt: skip


def prototype_section(org: Any, out: Path, *, steps: int = 128, seed: int = 0) -> tuple[str, str, dict[str, Any]]:
    """Class prototypes beside plain activation maximisation, with activation-path similarity per class."""
    results = prototype_study(org, steps=steps, seed=seed)
    classes = org.test.classes
    rng = InputRange.of(org.test.images)
    real = [rng.to_image(org.test.images[org.test.labels == c][0]) for c in range(len(classes))]
    picture = grid([*[r.prototype.images[0] for r in results], *[r.activation_max.images[0] for r in results], *real],
                   cols=len(classes), scale=4)  # fmt: skip
    save_png(out / "prototypes.png", picture)
    rows = []
    for measure, suffix in (("cosine ↑", ""), ("centred cosine ↑", "_centred"), ("distance ↓", "_distance")):
        sums = [0.0] * 6
        for r in results:
            s = r.summary()
            vals = [*(s[k + suffix] for k in KINDS), s["prototype_prob"], s["activation_max_prob"]]
            rows.append([classes[r.cls], measure, *vals])
            sums = [a + b / len(results) for a, b in zip(sums, vals, strict=True)]
        rows.append(["mean", measure, *sums])
    sites = ", ".join(results[0].sites)
    html = (
        f"<p>Rows: prototypes (class logit + path regulariser), plain activation maximisation of the same logit, "
        f"a real test image; columns: {escape(', '.join(classes))}. Path similarity: cosine of the image's "
        f"position-averaged channel vector to the class's real-image mean at {escape(sites)}, averaged over these "
        f"sites (real = held-out images of the class; other = held-out images of the other classes). The "
        f"regulariser matches these same statistics, fitted on different images (seed {FIT_SEED}). Centred: the "
        f"same after subtracting the all-class mean, so only the class-specific part of the path counts; distance: "
        f"|a - class mean| / |class mean|, which also sees magnitudes.</p>"
        f"{_img(picture, 'prototypes')}"
        f"{_table(HEADER, rows)}"
    )
    summary = {"classes": list(classes), "results": [r.to_dict() for r in results]}
    return "Prototype Generation vs activation maximisation (shapes-cnn)", html, summary


def visualize_sections(out_dir: str | Path, *, steps: int = 128) -> list[tuple[str, str]]:
    """Feature visualisation (with exemplars) and class prototypes on ``shapes-cnn``: ``(title, html)`` pairs.

    PNGs and ``visualize.json`` are written to ``out_dir`` too; the HTML embeds its images (base64). ``steps`` per
    optimisation (tests use a few).
    """
    from ..organisms import vision_organism

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    org = vision_organism("shapes-cnn")
    with torch.random.fork_rng(devices=[]):
        t1, h1, s1 = feature_section(org, out, steps=steps)
        t2, h2, s2 = prototype_section(org, out, steps=steps)
    summary = {"model": org.model.provenance, "feature": s1, "prototypes": s2}
    atomic_write_bytes(out / "visualize.json", json.dumps(summary, indent=2).encode())
    return [(t1, h1), (t2, h2)]
