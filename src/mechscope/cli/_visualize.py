"""``mechscope visualize``: feature visualisation, dataset exemplars and class prototypes of an image model."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..visualize._registry import METHODS
from ._common import JsonOpt, user_errors
from ._common import err_console as _err
from ._common import out_console as _out
from ._config import configs_for, method_options


@dataclasses.dataclass(frozen=True)
class _Subject:
    """What the command works on: a wrapped model, its input shape and range, and real images for exemplars."""

    model: Any
    shape: tuple[int, int, int]
    input_range: Any
    images: Any
    labels: Any
    organism: Any


def _shape(text: str) -> tuple[int, int, int]:
    parts = [p for p in text.replace("x", ",").split(",") if p]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--shape must be C,H,W (three integers, e.g. 3,224,224), got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _load_module(spec: str, weights: Path | None) -> Any:
    """``package.module:factory`` called with no arguments, then ``weights`` (safetensors) loaded into it."""
    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--model must be 'package.module:factory' (e.g. 'torchvision.models:resnet18'), got {spec!r}")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {spec!r}: {err}") from None
    module = factory()
    if weights is not None:
        from safetensors.torch import load_file

        if not weights.exists():
            raise FileNotFoundError(f"weights file {str(weights)!r} does not exist")
        module.load_state_dict(load_file(str(weights)))
    return module.eval().requires_grad_(False)


def _subject(organism: str, model: str | None, weights: Path | None, shape: str | None, input_range: str | None,
             images: Path | None) -> _Subject:  # fmt: skip
    import mechscope as ms
    from mechscope.visualize import InputRange, read_folder

    rng = None
    if input_range is not None:
        try:
            lo, hi = (float(v) for v in input_range.split(","))
        except ValueError:
            raise ValueError(f"--input-range must be LO,HI (two numbers, e.g. -2.1,2.6), got {input_range!r}") from None
        rng = InputRange(lo, hi)
    if model is None:
        from mechscope.organisms import vision_organism

        with _err().status(f"Loading vision organism {escape(organism)} (trains in seconds on first use)…"):
            org = vision_organism(organism)
        data = org.test
        rng = rng or InputRange.of(data.images)
        c, h, w = (int(d) for d in data.images.shape[1:])
        real: Any = data.images
        labels: Any = data.labels
        if images is not None:
            real, labels = read_folder(images, (c, h, w), rng)[0], None
        return _Subject(org.model, (c, h, w), rng, real, labels, org)
    if shape is None:
        raise ValueError("--model needs --shape C,H,W (the input image shape, e.g. 3,224,224)")
    c, h, w = _shape(shape)
    wrapped = ms.wrap(_load_module(model, weights), name=model)
    rng = rng or InputRange()
    found = read_folder(images, (c, h, w), rng)[0] if images is not None else None
    return _Subject(wrapped, (c, h, w), rng, found, None, None)


@method_options(METHODS)
def visualize(
    unit: Annotated[str | None, typer.Argument(help="Unit: SITE:CHANNEL or SITE:CHANNEL@Y,X, e.g. 'relu3:5'.")] = None,
    organism: Annotated[str, typer.Option(help="Built-in vision organism (shapes-cnn, shapes-vit, blocks-cnn).")] = (
        "shapes-cnn"
    ),
    model: Annotated[str | None, typer.Option(help="Instead of an organism: 'package.module:factory'.")] = None,
    weights: Annotated[Path | None, typer.Option(help="safetensors state dict for --model.")] = None,
    shape: Annotated[str | None, typer.Option(help="Input shape C,H,W for --model.")] = None,
    input_range: Annotated[str | None, typer.Option(help="LO,HI: model inputs that black and white stand for.")] = None,
    transforms: Annotated[bool, typer.Option("--transforms/--no-transforms", help="Jitter, scale, rotate.")] = True,
    exemplars: Annotated[int, typer.Option(help="Top-K dataset exemplars (0: none).")] = 8,
    images: Annotated[
        Path | None, typer.Option(help="Folder of images for exemplars (default: organism's test set).")
    ] = None,
    prototype: Annotated[
        list[int] | None, typer.Option(help="Class prototype(s) vs activation max; repeatable.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the PNGs and summary.json.")] = Path("out/visualize"),
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Feature visualisation of UNIT (and its dataset exemplars), and/or class prototypes; PNGs + JSON.

    Method settings apply to both when both run (--path-weight to prototypes only).
    """
    with user_errors():
        if unit is None and not prototype:
            raise ValueError("give a UNIT (e.g. 'relu3:5') and/or --prototype CLASS")
        specs = [METHODS[name] for name, wanted in (("feature", unit is not None), ("prototype", bool(prototype)))
                 if wanted]  # fmt: skip
        configs = dict(zip([s.name for s in specs], configs_for(specs, settings or {}, option_owner=METHODS),
                           strict=True))  # fmt: skip
        if not transforms:
            from mechscope.visualize import Transforms

            off = Transforms(0.0, (1.0, 1.0), 0.0)
            configs = {k: dataclasses.replace(c, transforms=off) for k, c in configs.items()}
        subject = _subject(organism, model, weights, shape, input_range, images)
        summary: dict[str, Any] = {"model": subject.model.provenance, "outputs": []}
        if unit is not None:
            summary["visualization"] = _feature(subject, unit, configs["feature"], exemplars, out, summary["outputs"])
        if prototype:
            summary["prototypes"] = _prototypes(subject, prototype, configs["prototype"], out, summary["outputs"])
        from .._cache import atomic_write_bytes

        atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
        summary["outputs"].append(str(out / "summary.json"))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    _show(summary)


def _feature(subject: _Subject, unit: str, cfg: Any, k: int, out: Path, outputs: list[str]) -> dict[str, Any]:
    from mechscope.report import grid, save_png
    from mechscope.visualize import exemplars

    vis = METHODS["feature"](subject.model, unit, subject.shape, subject.input_range, config=cfg)
    stem = unit.replace(":", "_").replace("@", "_at_").replace(",", "_")
    outputs.append(str(save_png(out / f"{stem}.png", grid(list(vis.images), scale=4))))
    result: dict[str, Any] = vis.to_dict()
    if k > 0 and subject.images is not None:
        # Images ranked by the objective itself (its mean over positions), and patches at each image's best position.
        top = exemplars(subject.model, unit, subject.images, k=k, reduce="mean", progress=cfg.progress)
        best = exemplars(subject.model, unit, subject.images, k=k, reduce="max", progress=cfg.progress)
        to_image = subject.input_range.to_image
        outputs.append(str(save_png(out / f"{stem}_exemplars.png", grid([to_image(x) for x in top.images], scale=3))))
        outputs.append(str(save_png(out / f"{stem}_patches.png", grid([to_image(p) for p in best.patches()],
                                                                      scale=6))))  # fmt: skip
        result["exemplars"], result["patches"] = top.to_dict(), best.to_dict()
    return result


def _prototypes(subject: _Subject, classes: list[int], cfg: Any, out: Path, outputs: list[str]) -> list[dict[str, Any]]:
    from mechscope.report import grid, save_png
    from mechscope.visualize import class_paths, path_sites

    if subject.organism is None or subject.labels is None:
        raise ValueError("--prototype needs labelled real images of each class: use a built-in --organism "
                         "(without --images)")  # fmt: skip
    from mechscope.data.images import shapes, signal_blocks

    org = subject.organism
    make = shapes if org.spec.data == "shapes" else signal_blocks
    fit = make(512, size=org.spec.size, seed=123)  # statistics from images other than the held-out ones scored
    paths = class_paths(subject.model, fit.images, fit.labels, path_sites(subject.model))
    n_classes = len(org.test.classes)
    results = []
    for c in classes:
        if not 0 <= c < n_classes:
            raise ValueError(
                f"--prototype {c}: {org.name} has classes 0..{n_classes - 1} ({', '.join(org.test.classes)})"
            )
        r = METHODS["prototype"](subject.model, c, paths, (subject.images, subject.labels), subject.shape,
                                 subject.input_range, "head" if org.spec.arch == "cnn" else "logits",
                                 config=cfg)  # fmt: skip
        picture = grid([*r.prototype.images, *r.activation_max.images], cols=len(r.prototype.images), scale=4)
        outputs.append(str(save_png(out / f"prototype_{c}.png", picture)))
        results.append({"class_name": org.test.classes[c], **r.to_dict()})
    return results


def _show(summary: dict[str, Any]) -> None:
    console = _out()
    if "visualization" in summary:
        v = summary["visualization"]
        console.print(f"[bold]{escape(v['unit'])}[/]: objective per image {v['values']} ({v['seconds']:.1f} s)")
        if "exemplars" in v:
            d = v["exemplars"]["dataset"]
            console.print(f"  same objective on {d['n']} dataset images: mean {d['mean']:.3f}, std {d['std']:.3f}, "
                          f"max {d['max']:.3f}; top exemplar indices {v['exemplars']['indices']}")  # fmt: skip
    for p in summary.get("prototypes", []):
        console.print(f"[bold]prototype {p['class']} ({escape(p['class_name'])})[/]: path similarity "
                      f"{p['prototype']:.3f} vs activation max {p['activation_max']:.3f} (real images "
                      f"{p['real']:.3f}, other classes {p['other_classes']:.3f}); distance to the class mean "
                      f"{p['prototype_distance']:.3f} vs {p['activation_max_distance']:.3f} (real "
                      f"{p['real_distance']:.3f})")  # fmt: skip
    for path in summary["outputs"]:
        _err().print(f"saved {escape(path)}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``visualize`` to the main CLI."""
    app.command()(visualize)
