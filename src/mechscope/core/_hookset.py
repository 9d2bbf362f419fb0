"""The one seam between mechscope and a model's modules: PyTorch forward hooks, always removed on exit.

A handler sees a site's tensor and returns either None (leave the model untouched: the hook returns None, so a
run with only reading handlers is bitwise the plain model) or a new tensor of the same shape, which is written back
through the site's view into a clone of the module's tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ._sites import Site, Whole

Handler = Callable[[Tensor], Tensor | None]


class StopForward(Exception):
    """Raised by a hook after the deepest requested site, so the rest of the forward pass is skipped."""


class HookSet:
    """Hooks registered on one model; :meth:`close` (or leaving the ``with`` block) removes every one."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> HookSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook this set registered."""
        while self._handles:
            self._handles.pop().remove()

    def _module(self, path: str) -> nn.Module:
        try:
            return self.root.get_submodule(path)
        except AttributeError:
            raise KeyError(f"module {path!r} not found in {type(self.root).__name__}") from None

    def add(self, site: Site, handler: Handler) -> None:
        """Call ``handler`` on ``site``'s tensor at every forward pass."""
        residual: dict[str, Tensor] = {}
        if site.residual_from is not None:
            # Capture the residual stream as the block really uses it (after any edits to resid_pre).
            def capture(_m: nn.Module, args: tuple, kwargs: dict) -> None:
                residual["x"] = _first_input(args, kwargs)

            self._handles.append(self._module(site.residual_from).register_forward_pre_hook(capture, with_kwargs=True))

        def apply(raw: Tensor) -> Tensor | None:
            res = residual.get("x")
            act = raw + res if res is not None else site.view(raw)  # resid_mid = resid_pre + attn_out
            if site.modified_later:
                act = act.clone()  # the value the module returned, before the model adds to it in place
            new = handler(act)
            if new is None:
                return None
            if new.shape != act.shape:
                raise ValueError(f"site {site.name!r}: a handler returned shape {list(new.shape)}, "
                                 f"expected {list(act.shape)}")  # fmt: skip
            if res is not None:
                if new.requires_grad:  # a differentiable replacement (attribution): gradients must reach it
                    return new - res
                # Only entries that change are rewritten, so patching a value with itself is exactly a no-op.
                return torch.where(new == act, raw, new - res)
            if isinstance(site.view, Whole):
                return new
            out = raw.clone()
            site.view(out).copy_(new)
            return out

        self._register(site, apply)

    def track_grad(self, site: Site, store: list[tuple[Site, Tensor]]) -> None:
        """Record the tensor flowing through ``site`` so gradients can be taken with respect to it."""

        def apply(raw: Tensor) -> Tensor | None:
            # When the model changes the tensor in place later (a clamp, an addition), it must change a copy: the
            # gradient is taken at the value the module returned.
            if raw.requires_grad:
                store.append((site, raw))
                return raw.clone() if site.modified_later else None
            leaf = raw.detach().requires_grad_(True)  # nothing upstream needs gradients
            store.append((site, leaf))
            return leaf.clone() if site.modified_later else leaf

        self._register(site, apply)

    def stop_after(self, site: Site) -> None:
        """Abort the forward pass once ``site`` has been computed (register after the site's handlers)."""

        def stop(raw: Tensor) -> None:
            raise StopForward(site.name)

        self._register(site, stop)

    def _register(self, site: Site, fn: Callable[[Tensor], Tensor | None]) -> None:
        module = self._module(site.module)
        if site.tokens_from is not None:
            fn = self._unflattening(site.tokens_from, fn)
        if site.io == "in":

            def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
                new = fn(_first_input(args, kwargs))
                return None if new is None else _replace_input(args, kwargs, new)

            self._handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:

            def hook(_m: nn.Module, _args: tuple, out: Any) -> Any:
                raw = out[site.index] if isinstance(out, tuple) else out
                if not isinstance(raw, Tensor):
                    raise RuntimeError(f"site {site.name!r}: module {site.module!r} produced no tensor here "
                                       f"({type(raw).__name__}); attention patterns need eager attention")  # fmt: skip
                new = fn(raw)
                if new is None:
                    return None
                return (*out[: site.index], new, *out[site.index + 1 :]) if isinstance(out, tuple) else new

            self._handles.append(module.register_forward_hook(hook))

    def _unflattening(self, tokens_from: str, fn: Callable[[Tensor], Tensor | None]) -> Callable[[Tensor], Tensor]:
        """``fn`` on a ``[batch*pos ...]`` tensor seen as ``[batch pos ...]`` (the shape of ``tokens_from``'s input).

        The module's tensor is always replaced by a flattened view of what ``fn`` saw (the same values), so gradients
        taken at the unflattened tensor reach the model.
        """
        shape: dict[str, torch.Size] = {}

        def capture(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            shape["x"] = _first_input(args, kwargs).shape[:2]

        self._handles.append(self._module(tokens_from).register_forward_pre_hook(capture, with_kwargs=True))

        def apply(raw: Tensor) -> Tensor:
            tokens = raw.unflatten(0, shape["x"])  # [batch pos ...]
            new = fn(tokens)
            return (tokens if new is None else new).flatten(0, 1)

        return apply


def _first_input(args: tuple, kwargs: dict) -> Tensor:
    if args and isinstance(args[0], Tensor):
        return args[0]
    if isinstance(kwargs.get("hidden_states"), Tensor):
        return kwargs["hidden_states"]
    for value in kwargs.values():
        if isinstance(value, Tensor):
            return value
    raise RuntimeError("module was called without a tensor input")


def _replace_input(args: tuple, kwargs: dict, new: Tensor) -> tuple:
    if args and isinstance(args[0], Tensor):
        return (new, *args[1:]), kwargs
    key = (
        "hidden_states"
        if isinstance(kwargs.get("hidden_states"), Tensor)
        else next(k for k, v in kwargs.items() if isinstance(v, Tensor))
    )
    return args, {**kwargs, key: new}


@contextmanager
def eager_attention(module: nn.Module, needed: bool):
    """Run a Hugging Face model with eager attention inside the block (patterns exist only there)."""
    config = getattr(module, "config", None)
    old = getattr(config, "_attn_implementation", None)
    if not needed or config is None or old in (None, "eager"):
        yield
        return
    module.set_attn_implementation("eager")  # type: ignore[operator]
    try:
        yield
    finally:
        module.set_attn_implementation(old)  # type: ignore[operator]
