"""Command line for input attribution: ``mechscope attribute`` (images through a vision model, or a prompt)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..attribution._registry import METHODS
from ..core import DEFAULT_MODEL
from ._common import JsonOpt, open_model, user_errors
from ._common import err_console as _err
from ._common import out_console as _out
from ._config import configs_for, method_options

DEFAULT_METHODS = ["integrated_gradients", "grad_cam"]


@method_options(METHODS)
def attribute(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Image files or folders of images (default: the organism's held-out images).", show_default=False
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Vision organism (shapes-cnn, shapes-vit, blocks-cnn), or "
            "'module:callable' returning an nn.Module; with --prompt, a language "
            "model (default smollm2-135m)."
        ),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help=f"Method (repeatable): {', '.join(METHODS.names())}.", show_default=False),
    ] = None,
    target: Annotated[
        str, typer.Option(help="'pred' (the predicted class), 'label' (organism images only), or a class index.")
    ] = "pred",
    n: Annotated[int, typer.Option(help="Organism images to use when no INPUTS are given.")] = 8,
    size: Annotated[int | None, typer.Option(help="Resize images to SIZE x SIZE (default: the organism's).")] = None,
    channels: Annotated[int, typer.Option(help="1 (grey) or 3 (RGB), for 'module:callable' models.")] = 1,
    metrics: Annotated[
        bool, typer.Option(help="Add deletion/insertion AUC (and localisation on organism images).")
    ] = False,
    prompt: Annotated[
        str | None,
        typer.Option(
            help="Attribute a language model's generated tokens to this prompt instead (Integrated "
            "Gradients; --steps sets its steps)."
        ),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="With --prompt: tokens to generate and explain.")] = 4,
    out: Annotated[Path, typer.Option(help="Folder for the PNG overlays / token HTML and summary.json.")] = Path(
        "out/attribute"
    ),
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Explain a vision model's decisions on images (PNG overlays), or a language model's tokens (HTML).

    Method settings apply to every chosen method that has them (e.g. --steps to integrated_gradients).
    """
    settings = settings or {}
    with user_errors():
        out.mkdir(parents=True, exist_ok=True)
        if prompt is not None:
            if extra := sorted(set(settings) - {"steps"}):
                raise ValueError(f"with --prompt only --steps applies, not {', '.join(extra)}")
            token_methods = {"integrated_gradients", "input_x_gradient", "attn_lrp"}
            if len(method or []) > 1 or not set(method or ["integrated_gradients"]) <= token_methods:
                raise ValueError(f"with --prompt, one --method of {', '.join(sorted(token_methods))}")
            chosen = (method or ["integrated_gradients"])[0]
            summary = _tokens(model or DEFAULT_MODEL, prompt, max_new_tokens, settings.get("steps"), out, chosen)
        else:
            summary = _images(inputs or [], model or "shapes-cnn", method or DEFAULT_METHODS, settings, target, n,
                              size, channels, metrics, out)  # fmt: skip
    from .._cache import atomic_write_bytes

    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _show(summary)
    _err().print(f"saved {len(summary['files'])} files and summary.json in {escape(str(out))}")


def _images(inputs: list[Path], model_name: str, methods: list[str], settings: dict[str, Any], target: str, n: int,
            size: int | None, channels: int, metrics: bool, out: Path) -> dict[str, Any]:  # fmt: skip
    import torch

    from .. import attribution as at
    from ..data import images as im
    from ..report._attribution import gallery, save_overlays

    specs = [METHODS[m] for m in methods]  # unknown names: an error listing the declared ones
    model, cam_site, test, channels, size = _vision_model(model_name, size, channels)
    if cam_site is not None and "layer" not in settings and any("cam" in s.tags for s in specs):
        settings = {**settings, "layer": cam_site}  # the organism's own CAM layer
    configs = configs_for(specs, settings, option_owner=METHODS)
    if inputs:
        files = im.image_files(inputs)
        raw = im.read_images(files, size=size, channels=channels)
        x = im.standardise(raw) if test is not None else raw
        names, labels, masks = [f.stem for f in files], None, None
    else:
        if test is None:
            raise ValueError(f"{model_name} has no built-in images: give image files or a folder")
        data = test[:n]
        x, labels, masks, names = data.images, data.labels, data.masks, [f"test{i:03d}" for i in range(len(data))]
    with torch.no_grad():
        logits = model.module(x)
    pred = logits.argmax(-1)
    y = _targets(target, pred, labels)
    results, written = [], []
    for spec, config in zip(specs, configs, strict=True):
        a = spec(model, x, y, config=config)
        if metrics and x.ndim == 4:
            a = at.evaluate(model, x, y, a, mask=masks)
        written += [str(p) for p in save_overlays(x, a, out, names=names)]
        results.append(a)
    picture = out / "gallery.png"
    from .._cache import atomic_write_bytes

    atomic_write_bytes(picture, gallery(x[:16], results, row_labels=names[:16]))
    return {
        "model": model.provenance,
        "images": [{"name": nm, "predicted": int(p), "target": int(t), "label": None if labels is None else int(lb)}
                   for nm, p, t, lb in zip(names, pred, y, labels if labels is not None else pred, strict=True)],
        "methods": [a.to_dict(maps=False) for a in results],
        "files": [*written, str(picture)],
    }  # fmt: skip


def _vision_model(name: str, size: int | None, channels: int):
    """(model, CAM site, held-out images or None, channels, size) for an organism or a 'module:callable'."""
    import mechscope as ms

    from ..organisms import SPECS, vision_organism

    if name in SPECS:
        org = vision_organism(name)
        return org.model, org.cam_site, org.test, 1, size or org.spec.size
    if ":" not in name:
        raise ValueError(f"--model must be a vision organism ({', '.join(SPECS)}) or 'module:callable', got {name!r}")
    module_name, _, attr = name.partition(":")
    factory = getattr(importlib.import_module(module_name), attr, None)
    if factory is None:
        raise ValueError(f"{module_name} has no attribute {attr!r}")
    if size is None:
        raise ValueError("--size is needed for a 'module:callable' model (the input's height and width)")
    module = factory().eval()
    return ms.wrap(module, name=name), None, None, channels, size


def _targets(target: str, pred, labels):
    import torch

    if target == "pred":
        return pred
    if target == "label":
        if labels is None:
            raise ValueError("--target label needs the organism's own images (files carry no labels)")
        return labels
    try:
        return torch.full_like(pred, int(target))
    except ValueError:
        raise ValueError(f"--target must be 'pred', 'label' or a class index, got {target!r}") from None


def _tokens(model_name: str, prompt: str, max_new_tokens: int, steps: int | None, out: Path,
            method: str = "integrated_gradients") -> dict[str, Any]:  # fmt: skip
    import matplotlib.pyplot as plt

    from ..attribution import token_attribution
    from ..report._attribution import save_token_html, token_heatmap

    m = open_model(model_name)
    tok = token_attribution(m, prompt, max_new_tokens=max_new_tokens, steps=steps, method=method)  # type: ignore[arg-type]
    html_path, png_path = out / "tokens.html", out / "tokens.png"
    save_token_html(tok, html_path)
    plt.close(token_heatmap(tok, png_path))
    top = [{"token": t, "top": tok.top(i, k=3)} for i, t in enumerate(tok.new_tokens)]
    return {"model": tok.model, "prompt": prompt, "new_tokens": top, "attribution": tok.to_dict(),
            "files": [str(html_path), str(png_path)]}  # fmt: skip


def _show(summary: dict[str, Any]) -> None:
    console = _out()
    if "prompt" in summary:
        for row in summary["new_tokens"]:
            drivers = ", ".join(f"{t!r} {v:+.2f}" for t, v in row["top"])
            console.print(f"{escape(repr(row['token']))} <- {escape(drivers)}", soft_wrap=True)
        return
    for a in summary["methods"]:
        extra = ""
        if a["metrics"]:
            auc = a["metrics"]
            extra = f" deletion AUC {auc['deletion_auc']:.3f} (chance {auc['deletion_chance_auc']:.3f}), " \
                    f"insertion AUC {auc['insertion_auc']:.3f} (chance {auc['insertion_chance_auc']:.3f})"  # fmt: skip
            if "localisation" in auc:
                extra += f", mass in mask {auc['localisation']['mass_in_mask']:.2f}"
        console.print(f"[bold]{escape(a['method'])}[/] {a['seconds']:.2f}s{escape(extra)}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``mechscope attribute`` to the main CLI."""
    app.command()(attribute)
