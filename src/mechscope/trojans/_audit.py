"""``audit``: reverse-engineer a trigger for every class of an image classifier and name the outlier classes.

A class that a backdoor sends images to needs a far smaller trigger than the others (Wang et al. 2019, section
IV-C). ``audit`` runs one declared search (:data:`METHODS`) per class on part of the given clean images, measures
each trigger's attack success on the rest (held out) and on a reference model when given, and scores each class by
the median-absolute-deviation anomaly index of the trigger sizes. With ``relative=True`` and a clean reference model
the same search runs on the reference too and the index is taken over ``log(size / reference size)``: how much
easier a class is to reach in the suspect model than in a clean one. A model that is easy to push to any class
(small blends reach every class of a non-robust CNN) hides a backdoor among equally small triggers; a clean
reference of the same architecture says which class got easier (docs/trojans.md, "Relative to a reference").

Long audits show a progress bar per class and can be interrupted: with ``folder``, each class's trigger is saved as
it finishes, and a later call with the same model, images, method and config picks up from there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._cache import atomic_write_bytes
from ..core import Model
from ._cleanse import attack_success, frozen
from ._registry import METHODS
from ._result import ReversedTrigger, TrojanAudit
from ._similarity import rank_candidates

MAD_SCALE = 1.4826
"""Consistency constant: ``1.4826 MAD`` estimates the standard deviation of normal data."""


def audit(model: Model | nn.Module, images: Float[Tensor, "batch c h w"], *, method: str = "neural_cleanse",
          config: Any = None, held_out: float = 0.25, threshold: float = 2.0,
          reference: Model | nn.Module | None = None, relative: bool = False, folder: str | Path | None = None,
          progress: bool = True, candidates: Sequence[Tensor] | None = None,
          **settings: Any) -> TrojanAudit:  # fmt: skip
    """Reverse-engineer a trigger per class with ``method`` and rank the classes by anomaly index.

    ``images``: clean images the model takes, ``[batch c h w]``, at least one per class; the last ``held_out``
    share measures attack success. ``settings`` (or ``config``) set the method's config fields (e.g. ``steps``).
    ``reference``: a model believed clean (a twin), on which each trigger's attack success is measured too.
    ``relative``: rank classes by their trigger size relative to the reference model's for the same class (the same
    search, images and config run on ``reference``; needs ``reference``). ``TrojanAudit.reference_triggers`` holds
    the reference's triggers.
    ``folder``: where finished classes are saved and resumed from.
    ``candidates``: pictures of candidate triggers (``[h w]`` or ``[c h w]``, any size; the competition's multiple
    choice): each class's trigger picture is scored against each (``TrojanAudit.candidate_scores``, ``.pick()``).
    """
    spec = METHODS[method]
    if relative and reference is None:
        raise ValueError("relative=True ranks classes against a clean reference model: pass reference=")
    if config is not None and settings:
        raise TypeError("give config= or individual settings, not both")
    cfg = config if config is not None else spec.make_config(**settings)
    module = model.module if isinstance(model, Model) else model
    n_classes = check_images(module, images)
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be a share in (0, 1), got {held_out}")
    n_test = max(1, math.ceil(len(images) * held_out))
    fit, test = images[: len(images) - n_test], images[len(images) - n_test :]
    if len(fit) < 1:
        raise ValueError(f"{len(images)} images leave none to optimise on after holding out {n_test}; give more")
    ref_module = None
    if reference is not None:
        ref_module = reference.module if isinstance(reference, Model) else reference
        check_images(ref_module, images, n_classes)
    search = _Search(spec, cfg, fit, test, n_classes, progress)
    store = _Resume(Path(folder), _fingerprint(module, images, method, cfg)) if folder is not None else None
    triggers = search.run(module, store, method)
    ref = None if ref_module is None else tuple(attack_success(ref_module, test, t.target, t.pattern, t.mask)
                                                for t in triggers)  # fmt: skip
    ref_triggers = None
    if relative:
        assert ref_module is not None
        ref_store = (_Resume(Path(folder) / "reference", _fingerprint(ref_module, images, method, cfg))
                     if folder is not None else None)  # fmt: skip
        ref_triggers = tuple(search.run(ref_module, ref_store, f"{method} on the reference"))
        sizes = [math.log(max(t.size, 1e-12) / max(r.size, 1e-12)) for t, r in zip(triggers, ref_triggers, strict=True)]
    else:
        sizes = [t.size for t in triggers]
    name = model.name if isinstance(model, Model) else type(module).__name__
    scores = None
    if candidates is not None:
        pictures = _check_candidates(candidates)
        scores = tuple(tuple(rank_candidates(t.picture(), pictures)) for t in triggers)
    return TrojanAudit(method, name, tuple(triggers), anomaly_index(sizes), threshold, ref, dataclasses.asdict(cfg),
                       scores, ref_triggers)  # fmt: skip


@dataclasses.dataclass
class _Search:
    """One declared search per class on the same images and config, resumable through a ``_Resume`` store."""

    spec: Any
    cfg: Any
    fit: Tensor
    test: Tensor
    n_classes: int
    progress: bool

    def run(self, module: nn.Module, store: _Resume | None, desc: str) -> list[ReversedTrigger]:
        triggers: list[ReversedTrigger] = []
        bar = tqdm(range(self.n_classes), desc=f"{desc} per class", disable=not self.progress, unit="class")
        for target in bar:
            found = store.load(target) if store is not None else None
            if found is None:
                found = self.spec.fn(module, self.fit, target, self.cfg, self.test)
                if store is not None:
                    store.save(found)
            triggers.append(found)
            bar.set_postfix(size=f"{found.size:.3g}", success=f"{found.attack_success:.2f}")
        return triggers


def _check_candidates(candidates: Sequence[Any]) -> list[Tensor]:
    out = []
    for i, c in enumerate(candidates):
        if not isinstance(c, Tensor) or c.ndim not in (2, 3) or min(c.shape[-2:]) < 2 or not torch.isfinite(c).all():
            got = f"shape {tuple(c.shape)}" if isinstance(c, Tensor) else type(c).__name__
            raise ValueError(f"candidate {i} must be a finite picture [h w] or [c h w] of at least 2 x 2 pixels, "
                             f"got {got}")  # fmt: skip
        out.append(c.detach().float().cpu())
    if not out:
        raise ValueError("candidates is empty: give the candidate trigger pictures, or leave candidates out")
    return out


def anomaly_index(sizes: list[float]) -> tuple[float, ...]:
    """``(median - size) / (1.4826 MAD)`` per class: positive where a class's trigger is smaller than typical."""
    t = torch.tensor(sizes, dtype=torch.float64)
    median = t.median() if len(t) % 2 else t.sort().values[len(t) // 2 - 1 : len(t) // 2 + 1].mean()
    dev = (t - median).abs()
    mad = dev.median() if len(t) % 2 else dev.sort().values[len(t) // 2 - 1 : len(t) // 2 + 1].mean()
    return tuple(float(v) for v in (median - t) / (MAD_SCALE * mad.clamp_min(1e-12)))


def check_images(module: nn.Module, images: Any, n_classes: int | None = None) -> int:
    """The model's class count, after checking that ``images`` suit it; a clear error otherwise."""
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = f"a {images.ndim}-D {images.dtype} tensor" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor [batch channels height width], got {got}; "
                         "add a batch axis or convert with .float()")  # fmt: skip
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values; clean or drop those images")
    if float(images.amax() - images.amin()) == 0:
        raise ValueError("images are all one value; give real clean images (a trigger search needs their range)")
    try:
        with torch.no_grad(), frozen(module):
            logits = module(images[:2])
    except Exception as e:  # the model's own message says what it expected
        raise ValueError(f"the model cannot run images of shape [batch {', '.join(map(str, images.shape[1:]))}] "
                         f"({type(e).__name__}: {e}); give images of the channels and size it was trained on "
                         "(--shape C,H,W on the command line)") from None  # fmt: skip
    if logits.ndim != 2:
        raise ValueError(f"the model must return class logits [batch classes], got shape {tuple(logits.shape)}")
    n = logits.shape[1]
    if n_classes is not None and n != n_classes:
        raise ValueError(f"the reference model has {n} classes, the audited one {n_classes}; give a twin of it")
    if len(images) < n:
        raise ValueError(f"{len(images)} images for {n} classes: give at least one clean image per class "
                         f"(better, a few dozen in all)")  # fmt: skip
    return n


def _fingerprint(module: nn.Module, images: Tensor, method: str, config: Any) -> str:
    h = hashlib.sha256(json.dumps([method, dataclasses.asdict(config)], sort_keys=True).encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _Resume:
    """Finished classes on disk, one JSON file each, tagged with the run's fingerprint."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder, self.fingerprint = folder, fingerprint
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, target: int) -> Path:
        return self.folder / f"class{target:04d}.json"

    def load(self, target: int) -> ReversedTrigger | None:
        path = self._path(target)
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") != self.fingerprint:
            return None  # another model, image set or config: recompute (and overwrite)
        return ReversedTrigger.from_dict(saved["trigger"])

    def save(self, trigger: ReversedTrigger) -> None:
        body = {"fingerprint": self.fingerprint, "trigger": trigger.to_dict(tensors=True)}
        atomic_write_bytes(self._path(trigger.target), json.dumps(body).encode())
