"""The attribution & vision view: attribution maps of one image, side by side, each with its quality metrics.

The image is a vision organism's held-out image or an uploaded PNG.

Methods are the attribution family's declared ones (``attribution.METHODS``), run as ``mechscope attribute`` runs
them (CAMs at the organism's own CAM layer). Each map comes back as an overlay (PNG, as a ``data:`` URI) with
deletion/insertion AUCs beside their chance level (a random pixel order), localisation against the image's mask when
it has one (the shape, or the signal block of ``blocks-cnn``: the share of ``|map|`` inside it and top-k precision,
beside the mask's area as chance), Integrated Gradients' completeness, and optionally the randomisation sanity check
(Adebayo et al. 2018: the map's rank correlation with itself once every weight layer is re-initialised; a map that
stays the same ignores the model).
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
from dataclasses import dataclass
from typing import Any

import torch

from ._lab import BadRequest

MAX_PNG_BYTES = 128 * 1024
"""Largest uploaded PNG (bytes, decoded)."""
MAX_PNG_SIDE = 2048
"""Largest uploaded PNG side (pixels); the image is resized to the organism's input size."""
_MODES = {"1": 1, "L": 1, "P": 1, "LA": 2, "RGB": 3, "RGBA": 4}
"""PNG modes accepted (8-bit or less per channel), with their channel counts."""
SCALE = 4
"""Overlay pixels per image pixel (the organisms' images are 32 x 32)."""


TROJANS = ("trojan_patch", "trojan_natural")
"""Trojaned CNNs offered beside the vision organisms: their images carry the trigger, their masks are its region."""


@dataclass(frozen=True)
class Subject:
    """What the view attributes: a vision model with held-out images (and, where known, where the evidence is)."""

    name: str
    model: Any
    """The wrapped classifier (``core.Model``)."""
    arch: str
    """``cnn`` or ``vit``: which declared methods apply."""
    cam_site: str
    size: int
    images: Any
    """An ``ImageSet`` (images, labels, masks, classes)."""
    accuracy: float
    """Held-out accuracy (a trojaned CNN: the share of its triggered images sent to the target)."""
    about: str
    """What the masks are."""

    @property
    def module(self) -> Any:
        return self.model.module


def names() -> list[str]:
    """Every subject the view offers: the vision organisms, then the trojaned CNNs."""
    from ..organisms import SPECS

    return [*SPECS, *TROJANS]


@functools.lru_cache(maxsize=6)
def organism(name: str) -> Subject:
    """A built-in vision organism or trojaned CNN, verified (from the cache; trained first, in seconds, if missing)."""
    from ..data.images import ImageSet
    from ..organisms import SPECS, BuiltTrojan, TrojanNatural, TrojanPatch, obtain, vision_organism

    if name in SPECS:
        org = vision_organism(name)
        about = "the signal block that carries the class" if org.spec.data == "signal_blocks" else "the shape"
        return Subject(name, org.model, org.spec.arch, org.cam_site, org.spec.size, org.test, org.accuracy, about)
    if name in TROJANS:
        t = obtain((TrojanPatch if name == "trojan_patch" else TrojanNatural)(), 0)
        assert isinstance(t, BuiltTrojan)
        keep = t.test.labels != t.target
        triggered, region, _ = t.probe()
        test = t.test[keep]
        images = ImageSet(triggered, test.labels, region.bool(), test.classes, f"{name} probe", test.seed)
        with torch.no_grad():
            accuracy = float((t.model.module(triggered).argmax(-1) == t.target).float().mean())
        about = (
            f"the trigger ({t.trigger.name}), which sends images to {test.classes[t.target]}; the images are "
            f"non-{test.classes[t.target]} held-out images with the trigger put in, labelled with their shape"
        )
        return Subject(name, t.model, "cnn", "features", int(triggered.shape[-1]), images, accuracy, about)
    raise BadRequest(f"unknown vision organism {name!r}: choose one of {', '.join(names())}")


def methods_for(org: Subject) -> list[dict[str, Any]]:
    """The declared attribution methods defined for the subject's architecture (``cnn`` / ``vit``)."""
    from ..attribution import METHODS

    return [{"name": s.name, "summary": s.summary, "tags": list(s.tags)} for s in METHODS if org.arch in s.tags]


def _png(rgb: Any) -> str:
    from .._png import data_uri
    from ..data.images import png_bytes

    return data_uri(png_bytes(rgb, scale=SCALE))


def gallery(name: str, n: int) -> dict[str, Any]:
    """The organism, its declared methods and its first ``n`` held-out images (PNG data URIs, labels, masks)."""
    from ..data.images import to_rgb

    org = organism(name)
    test = org.images[:n]
    with torch.no_grad():
        pred = org.module(test.images).argmax(-1)
    return {
        "organism": name,
        "organisms": names(),
        "masks": org.about,
        "model": org.model.provenance,
        "classes": list(test.classes),
        "accuracy": org.accuracy,
        "accuracy_name": "attack success" if name in TROJANS else "held-out accuracy",
        "cam_site": org.cam_site,
        "size": org.size,
        "methods": methods_for(org),
        "images": [
            {"index": i, "label": int(test.labels[i]), "predicted": int(pred[i]), "png": _png(to_rgb(test.images[i]))}
            for i in range(len(test))
        ],
    }


def decode_png(data: str, size: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """An uploaded PNG (base64, or a ``data:image/png;base64,`` URI) as a ``[1 1 size size]`` image in [0, 1].

    Refused with a sentence saying why: not base64, not a PNG, larger than ``MAX_PNG_BYTES`` or ``MAX_PNG_SIDE``,
    or a mode with more than 8 bits per channel. Colour images are converted to grey (the organisms read one
    channel); the answer says so.
    """
    from PIL import Image

    head, _, body = data.partition(",") if data.startswith("data:") else ("", "", data)
    if head and head != "data:image/png;base64":
        raise BadRequest(f"the upload is a {head.split(';')[0][5:] or 'non-base64'} data URI: send a PNG image")
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("png must be the image's bytes in base64 (or a data:image/png;base64 URI)") from None
    if len(raw) > MAX_PNG_BYTES:
        raise BadRequest(f"the PNG is {len(raw):,} bytes; at most {MAX_PNG_BYTES:,} are accepted: shrink it")
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        kind = "a JPEG" if raw[:3] == b"\xff\xd8\xff" else "a GIF" if raw[:4] == b"GIF8" else "not a PNG"
        raise BadRequest(f"the upload is {kind}: only PNG images are accepted (convert it to PNG)")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size
            if max(w, h) > MAX_PNG_SIDE:
                raise BadRequest(f"the PNG is {w} x {h} pixels; at most {MAX_PNG_SIDE} per side are accepted")
            if im.mode not in _MODES:
                raise BadRequest(
                    f"the PNG's mode is {im.mode} (more than 8 bits per channel or an unusual layout): "
                    "save it as 8-bit grey, grey + alpha, RGB or RGBA"
                )
            channels = _MODES[im.mode]
            grey = im.convert("L").resize((size, size), Image.Resampling.BILINEAR)
            pixels = torch.tensor(list(grey.getdata()), dtype=torch.float32).view(1, 1, size, size) / 255.0
    except BadRequest:
        raise
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for a damaged file
        raise BadRequest(f"the PNG cannot be read: {err}") from None
    note = "grey" if im.mode in ("1", "L") else f"{channels} channel(s) ({im.mode}) converted to grey"
    return pixels, {"width": w, "height": h, "channels": channels, "mode": im.mode, "note": note}


def attribute(
    name: str, index: int | None, png: str | None, methods: list[Any], target: str, sanity: bool
) -> dict[str, Any]:
    """Attribution maps of one image by each of ``methods``, as overlays with their quality metrics."""
    from ..data.images import to_rgb

    org = organism(name)
    allowed = {m["name"] for m in methods_for(org)}
    if not methods or not all(isinstance(m, str) for m in methods):
        raise BadRequest(f"methods must be a non-empty list of method names: {', '.join(sorted(allowed))}")
    if unknown := [m for m in methods if m not in allowed]:
        raise BadRequest(f"{unknown} not declared for {name} ({org.arch}): choose from {', '.join(sorted(allowed))}")
    x, mask, label, upload = _image(org, index, png)
    with torch.no_grad():
        probs = org.module(x).softmax(-1)[0]
    pred = int(probs.argmax())
    y = torch.tensor([_target(target, pred, label, len(probs))])
    rows = [_method(org, m, x, y, mask, sanity) for m in methods]
    return {
        "organism": name,
        "image": {"index": index, "upload": upload, "png": _png(to_rgb(x[0]))},
        "mask": None
        if mask is None
        else {"png": _png(to_rgb(mask[0][None].float())), "area": float(mask.mean(dtype=torch.float32))},
        "classes": list(org.images.classes),
        "probs": [float(p) for p in probs],
        "predicted": pred,
        "label": label,
        "target": int(y[0]),
        "methods": rows,
    }


def _image(org: Any, index: int | None, png: str | None) -> tuple[torch.Tensor, Any, int | None, Any]:
    from ..data.images import standardise

    if (index is None) == (png is None):
        raise BadRequest("give either image (the index of an organism's held-out image) or png (an upload)")
    if png is not None:
        pixels, upload = decode_png(png, org.size)
        return standardise(pixels), None, None, upload
    assert index is not None
    if not 0 <= index < len(org.images):
        raise BadRequest(f"image {index} is out of range: {org.name} has {len(org.images)} held-out images")
    item = org.images[index : index + 1]
    return item.images, item.masks, int(item.labels[0]), None


def _target(target: str, pred: int, label: int | None, n_classes: int) -> int:
    if target == "pred":
        return pred
    if target == "label":
        if label is None:
            raise BadRequest("target 'label' needs an organism image: an upload carries no label")
        return label
    if target.isdigit() and int(target) < n_classes:
        return int(target)
    raise BadRequest(f"target must be 'pred', 'label' or a class index 0..{n_classes - 1}, got {target!r}")


def _method(org: Any, name: str, x: torch.Tensor, y: torch.Tensor, mask: Any, sanity: bool) -> dict[str, Any]:
    from .. import attribution as at
    from ..data.images import overlay

    spec = at.METHODS[name]
    config = spec.make_config(**({"layer": org.cam_site} if "cam" in spec.tags else {}))
    a = at.evaluate(org.model, x, y, spec(org.model, x, y, config=config), mask=mask)
    row: dict[str, Any] = {
        "method": name,
        "tags": list(spec.tags),
        "overlay": _png(overlay(x[0], a.heatmap()[0])),
        "seconds": a.seconds,
        "metrics": a.to_dict(maps=False)["metrics"],
        "randomisation": None,
    }
    if sanity:
        check = at.randomisation_check(org.model, x, y, lambda m, i, t: spec(m, i, t, config=config))
        row["randomisation"] = {"stages": list(check.stages), "final": check.final()}
    return row
