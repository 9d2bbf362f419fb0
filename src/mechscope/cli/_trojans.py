"""Command line for trojan auditing: ``mechscope audit-trojans``, a trigger search per class of any image classifier."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..trojans._registry import METHODS
from ._common import JsonOpt, user_errors
from ._common import err_console as _err
from ._common import out_console as _out
from ._config import method_options


@method_options(METHODS)
def audit_trojans(
    model: Annotated[str, typer.Option(help="'package.module:factory' returning the classifier (an nn.Module).")],
    images: Annotated[Path, typer.Option(help="Folder (or file) of clean images, at least one per class.")],
    weights: Annotated[Path | None, typer.Option(help="safetensors state dict loaded into the factory's module.")] = (
        None
    ),
    shape: Annotated[str, typer.Option(help="Input shape C,H,W (C: 1 grey or 3 RGB; images are resized).")] = (
        "3,32,32"
    ),
    input_range: Annotated[
        str, typer.Option(help="LO,HI: the model inputs that black and white map to (pixels are scaled linearly).")
    ] = "0,1",
    method: Annotated[str, typer.Option("--method", "-m", help="Trigger method (mechscope methods trojans).")] = (
        "neural_cleanse"
    ),
    reference: Annotated[
        Path | None, typer.Option(help="safetensors weights of a clean reference model (same factory).")
    ] = None,
    relative: Annotated[
        bool, typer.Option(help="Rank classes by trigger size relative to the reference's (runs the search there too).")
    ] = False,
    candidates: Annotated[
        Path | None,
        typer.Option(
            help="Folder of candidate trigger pictures (any size): each is scored against each class's trigger."
        ),
    ] = None,
    held_out: Annotated[float, typer.Option(help="Share of the images kept out of the search to measure it.")] = 0.25,
    threshold: Annotated[float, typer.Option(help="Anomaly index above which a class is a suspect.")] = 2.0,
    out: Annotated[Path, typer.Option(help="Folder for trigger PNGs, audit.json and resumable progress.")] = Path(
        "out/audit-trojans"
    ),
    as_json: JsonOpt = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Reverse-engineer a trigger per class of an image classifier (Neural Cleanse); name anomalous classes.

    Interrupt at any time: finished classes are kept in OUT/progress and the same command resumes from them.
    """
    with user_errors():
        from .. import trojans

        c, h, w = parse_shape(shape)
        lo, hi = parse_range(input_range)
        module = load_module(model, weights)
        ref = load_module(model, reference) if reference is not None else None
        x = read(images, c, h, w) * (hi - lo) + lo
        pictures = None if candidates is None else read_pictures(candidates, c)
        result = trojans.audit(module, x, method=method, reference=ref, relative=relative, held_out=held_out,
                               threshold=threshold, folder=out / "progress", candidates=pictures,
                               **(settings or {}))  # fmt: skip
        files = trojans.save_triggers(result, out, example=x[0])
    summary = result.to_dict() | {"files": [str(f) for f in files]}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console = _out()
    for cls in result.ranking:
        t = result.triggers[cls]
        flag = "[bold red]suspect[/]" if cls in result.suspects else ""
        ref_text = "" if result.reference_success is None else f", on reference {result.reference_success[cls]:.2f}"
        console.print(f"class {cls}: anomaly {result.anomaly[cls]:+.2f}, trigger size {t.size:.3g}, attack success "
                      f"{t.attack_success:.2f}{ref_text} {flag}", soft_wrap=True)  # fmt: skip
    if result.candidate_scores is not None:
        top = result.ranking[0]
        scores = result.candidate_scores[top]
        names = [p.name for p in im_files(candidates)] if candidates is not None else []
        ranked = ", ".join(f"{names[i] if i < len(names) else i} {scores[i]:.2f}" for i in result.pick())
        console.print(f"candidates most like class {top}'s trigger: {ranked}", soft_wrap=True)
    _err().print(f"suspects: {result.suspects or 'none'}; saved {len(files)} files in {escape(str(out))}")


def parse_shape(text: str) -> tuple[int, int, int]:
    parts = [p for p in text.replace("x", ",").split(",") if p]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--shape must be C,H,W (three integers, e.g. 3,32,32), got {text!r}")
    c, h, w = (int(p) for p in parts)
    if c not in (1, 3) or h != w:
        raise ValueError(f"--shape {text}: images are read as 1 (grey) or 3 (RGB) channels, square; got {c},{h},{w}")
    return c, h, w


def parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--input-range must be LO,HI (two numbers, e.g. -1,1), got {text!r}") from None
    if not lo < hi:
        raise ValueError(f"--input-range needs LO < HI, got {text!r}")
    return lo, hi


def load_module(spec: str, weights: Path | None) -> Any:
    """``package.module:factory`` called with no arguments, then ``weights`` loaded into it; clear errors."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"--model must be 'package.module:factory' (e.g. 'mypkg.nets:make_cnn'), got {spec!r}")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {spec!r} ({err}); is the package on PYTHONPATH?") from None
    try:
        module = factory()
    except Exception as err:
        raise ValueError(f"the factory {spec!r} failed when called with no arguments ({type(err).__name__}: {err}); "
                         "point --model at a function that builds the model without arguments") from None  # fmt: skip
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"the factory {spec!r} returned a {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        from safetensors.torch import load_file

        if not weights.exists():
            raise FileNotFoundError(f"weights file {str(weights)!r} does not exist")
        try:
            module.load_state_dict(load_file(str(weights)))
        except RuntimeError as err:
            raise ValueError(f"the weights in {weights} do not match the module {spec!r} builds: "
                             f"{str(err).splitlines()[-1].strip() or err}; give the weights saved from that "
                             "module's state_dict()") from None  # fmt: skip
    return module.eval()


def read(path: Path, c: int, h: int, w: int, option: str = "--images") -> Any:
    from ..data import images as im

    if not path.exists():
        raise FileNotFoundError(f"{option} {str(path)!r} does not exist; give a folder of PNG/JPEG files")
    files = im_files(path)
    if not files:
        raise ValueError(f"no image files in {path}; give a folder of PNG/JPEG images for {option}")
    return im.read_images(files, size=h, channels=c)


def read_pictures(path: Path, c: int) -> list[Any]:
    """Candidate pictures at their own size (a trigger alone is smaller than an image), ``[c h w]`` in [0, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    if not path.exists():
        raise FileNotFoundError(f"--candidates {str(path)!r} does not exist; give a folder of PNG/JPEG pictures")
    out = []
    for file in im_files(path):
        with Image.open(file) as image:
            pixels = np.asarray(image.convert("L" if c == 1 else "RGB"), dtype=np.float32) / 255
        out.append(torch.from_numpy(pixels).reshape(*pixels.shape[:2], -1).permute(2, 0, 1))
    return out


def im_files(path: Path) -> list[Path]:
    """The image files of a folder (or the one file), in the order they are read."""
    from ..data import images as im

    return list(im.image_files([path]))


def register(app: typer.Typer) -> None:
    """Add ``mechscope audit-trojans`` to the main CLI."""
    app.command("audit-trojans")(audit_trojans)
