"""Input attribution by gradients and perturbation: saliency, input x gradient, IG, SmoothGrad, occlusion.

Where Captum has the algorithm it runs it (these are thin adapters: mechscope supplies the attributed tensor, the
target as a function of it, and cache-friendly batch sizes); Integrated Gradients also has mechscope's own
adaptive rule (``_adaptive.py``). Every function attributes a target of ``model`` on ``inputs`` at ``at``: the
input (default for image models), or any site (``"embed"``, default for language models; ``"features"``...).

- saliency: Simonyan, Vedaldi & Zisserman 2013, "Deep Inside Convolutional Networks", section 3.1.
- input x gradient: Shrikumar et al. 2016, "Not Just a Black Box" (gradient times input).
- Integrated Gradients: Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks", eq. 1 and 3.
- SmoothGrad: Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise", eq. 3.
- occlusion: Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks", section 4.2.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from torch import Tensor

from ..core._model import Model
from ._adaptive import adaptive_ig
from ._registry import IntegratedGradientsConfig as IG
from ._registry import OcclusionConfig, Rule, SaliencyConfig, SmoothGradConfig
from ._result import Attribution
from ._space import Space, space


def saliency(model: Model, inputs: Any, target: Any, *, at: str | None = None,
             abs: bool = SaliencyConfig.abs) -> Attribution:  # fmt: skip
    """Gradient of the target with respect to the attributed tensor (its absolute value when ``abs``)."""
    start, sp = time.perf_counter(), space(model, inputs, target, at)
    attr = Saliency(sp).attribute(sp.leaf(), abs=abs)
    return _result(sp, attr, "saliency", {"abs": abs}, start)


def input_x_gradient(model: Model, inputs: Any, target: Any, *, at: str | None = None) -> Attribution:
    """Attributed tensor times the target's gradient with respect to it."""
    start, sp = time.perf_counter(), space(model, inputs, target, at)
    attr = InputXGradient(sp).attribute(sp.leaf())
    return _result(sp, attr, "input_x_gradient", {}, start)


def integrated_gradients(
    model: Model,
    inputs: Any,
    target: Any,
    *,
    at: str | None = None,
    baseline: float | Tensor = IG.baseline,
    steps: int | None = IG.steps,
    rule: Rule = IG.rule,
    batch_size: int | None = IG.batch_size,
) -> Attribution:
    """Integrated Gradients along the straight path from ``baseline`` to the attributed tensor.

    ``rule="adaptive"`` (default, 48 steps) places steps where the gradient changes (``_adaptive.py``); the
    other rules are Captum's (its default is ``gausslegendre`` with 50 steps). ``steps`` counts gradient
    evaluations. ``batch_size`` is rows per forward pass (default: about 128k attributed elements). The result
    carries the completeness gap per example: ``sum(map) - (f(x) - f(baseline))``.
    """
    start, sp = time.perf_counter(), space(model, inputs, target, at)
    base = torch.as_tensor(baseline, dtype=sp.x.dtype, device=sp.x.device).expand_as(sp.x)
    steps = steps if steps is not None else (48 if rule == "adaptive" else 50)
    params: dict[str, Any] = {"rule": rule, "steps": steps, "baseline": _describe(baseline)}
    if rule == "adaptive":
        attr, change, alpha = adaptive_ig(sp, base, steps, batch_size)
        params["points_per_example"] = alpha.shape[0]
    else:
        ig = IntegratedGradients(sp)
        attr = ig.attribute(sp.leaf(), base, n_steps=steps, method=rule, internal_batch_size=sp.chunk_rows(batch_size))
        with torch.no_grad():
            change = sp(sp.x) - sp(base)
    gap = attr.reshape(sp.n, -1).sum(-1) - change
    return _result(sp, attr, "integrated_gradients", params, start, gap=gap, change=change)


def smoothgrad(
    model: Model,
    inputs: Any,
    target: Any,
    *,
    at: str | None = None,
    samples: int = SmoothGradConfig.samples,
    noise: float = SmoothGradConfig.noise,
    abs: bool = SmoothGradConfig.abs,
    seed: int = SmoothGradConfig.seed,
    batch_size: int | None = SmoothGradConfig.batch_size,
) -> Attribution:
    """Mean saliency over ``samples`` noisy copies; noise std is ``noise`` times the batch's value range."""
    start, sp = time.perf_counter(), space(model, inputs, target, at)
    std = float(noise * (sp.x.max() - sp.x.min()))
    per_pass = max(1, sp.chunk_rows(batch_size) // sp.n)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        attr = NoiseTunnel(Saliency(_interleaved(sp))).attribute(
            sp.leaf(), nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=per_pass, stdevs=std, abs=abs
        )
    params = {"samples": samples, "noise": noise, "stdev": std, "abs": abs, "seed": seed}
    return _result(sp, attr, "smoothgrad", params, start)


def occlusion(
    model: Model,
    inputs: Any,
    target: Any,
    *,
    at: str | None = None,
    window: int | tuple[int, ...] | None = OcclusionConfig.window,
    stride: int | tuple[int, ...] | None = OcclusionConfig.stride,
    baseline: float = OcclusionConfig.baseline,
    batch_size: int | None = OcclusionConfig.batch_size,
) -> Attribution:
    """Drop in the target when a sliding window of the attributed tensor is set to ``baseline``.

    Defaults: for ``[batch c h w]`` all channels, 1/8 of height and width, stride half the window; for
    ``[batch pos d]`` (tokens) one whole position at a time. An int ``window`` / ``stride`` is a square of that
    side over all channels (images) or that many whole positions (tokens); a tuple gives every axis.
    """
    start, sp = time.perf_counter(), space(model, inputs, target, at)
    window, stride = _window(tuple(sp.x.shape[1:]), window, stride)
    per_pass = max(1, sp.chunk_rows(batch_size) // sp.n)
    with torch.no_grad():
        attr = Occlusion(sp).attribute(
            sp.x, sliding_window_shapes=window, strides=stride, baselines=baseline, perturbations_per_eval=per_pass
        )
    return _result(sp, attr, "occlusion", {"window": list(window), "stride": list(stride), "baseline": baseline},
                   start)  # fmt: skip


def _interleaved(sp: Space) -> Callable[[Tensor], Tensor]:
    """``sp`` for rows stacked example by example (``repeat_interleave``, NoiseTunnel's order), not copy by copy."""

    def forward(z: Tensor) -> Tensor:
        k = z.shape[0] // sp.n
        blocks = z.unflatten(0, (sp.n, k)).transpose(0, 1).flatten(0, 1)  # [k*n ...], copy after copy
        return sp(blocks).unflatten(0, (k, sp.n)).transpose(0, 1).flatten()

    return forward


def _window(
    shape: tuple[int, ...], window: int | tuple[int, ...] | None, stride: int | tuple[int, ...] | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    image = len(shape) == 3
    window, stride = _square(shape, window, image), _square(shape, stride, image)
    if window is None:
        window = (shape[0], max(1, shape[1] // 8), max(1, shape[2] // 8)) if image else (1, *shape[1:])
    if stride is None:
        stride = tuple(w if i == 0 or len(shape) != 3 else max(1, w // 2) for i, w in enumerate(window))
    if len(window) != len(shape) or len(stride) != len(shape):
        raise ValueError(f"window {window} and stride {stride} need one entry per axis of {list(shape)}")
    return window, stride


def _square(shape: tuple[int, ...], side: int | tuple[int, ...] | None, image: bool) -> tuple[int, ...] | None:
    """An int side as a full window: ``(c, side, side)`` for images, ``(side, d...)`` for tokens."""
    if not isinstance(side, int):
        return side
    return (shape[0], side, side) if image else (side, *shape[1:])


def _describe(baseline: float | Tensor) -> Any:
    return f"Tensor{list(baseline.shape)}" if isinstance(baseline, Tensor) else baseline


def _result(sp: Space, attr: Tensor, method: str, params: dict[str, Any], start: float, *,
            gap: Tensor | None = None, change: Tensor | None = None) -> Attribution:  # fmt: skip
    return Attribution(
        map=attr.detach(),
        method=method,
        target=repr(sp.target),
        at=sp.at,
        completeness_gap=None if gap is None else gap.detach(),
        output_change=None if change is None else change.detach(),
        params=params,
        seconds=time.perf_counter() - start,
        model=sp.model.provenance,
    )
