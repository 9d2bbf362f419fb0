"""Running an image model with sites captured *with* their autograd graph (``Model.run`` detaches its cache)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..core import HookSet, Model
from ..core._hookset import StopForward
from ._objectives import LOGITS


def capture(model: Model, x: Tensor, sites: Sequence[str]) -> dict[str, Tensor]:
    """Activations of ``sites`` for images ``x`` (``logits``: the model's output unless a module has that name).

    Gradients follow the caller's grad mode. When the output is not requested, the pass stops after the deepest
    site.
    """
    names = list(dict.fromkeys(sites))
    wants_logits = LOGITS in names and not _has_site(model, LOGITS)
    resolved = model.resolve([n for n in names if not (n == LOGITS and wants_logits)]) if names else []
    acts: dict[str, Tensor] = {}
    with HookSet(model.module) as hooks:
        for s in resolved:
            hooks.add(s, _keeper(acts, s.name))
        if resolved and not wants_logits:
            hooks.stop_after(resolved[-1])
        try:
            out = model.module(x.to(model.device))
        except StopForward:
            out = None
    if wants_logits:
        if not isinstance(out, Tensor):
            raise TypeError(f"{model.name} returns {type(out).__name__}, not a logits tensor: name a site instead")
        acts[LOGITS] = out
    return acts


def _has_site(model: Model, name: str) -> bool:
    try:
        model.resolve(name)
    except KeyError:
        return False
    return True


def _keeper(store: dict[str, Tensor], name: str):
    def keep(act: Tensor) -> None:
        store[name] = act

    return keep
