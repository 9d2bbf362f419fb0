"""The CAM family: class activation maps from a layer's activations ``A [batch channel h w]`` (and gradients).

With ``g = d target / d A`` and ``ReLU`` applied last, as each paper defines it:

- Grad-CAM (Selvaraju et al. 2017, eq. 1-2): ``sum_c mean_ij(g_c) A_c``.
- Grad-CAM++ (Chattopadhay et al. 2018, eq. 19 with an exponential output, the closed form every implementation
  uses): ``sum_c (sum_ij a_cij ReLU(g_cij)) A_c`` with ``a = g^2 / (2 g^2 + sum_ij(A_c) g^3)``.
- Score-CAM (Wang et al. 2020, Algorithm 1): each channel, upsampled and min-max scaled to [0, 1], masks the
  input; the channel's weight is the softmax over channels of the target on its masked input (pytorch-grad-cam's
  form; the paper's code takes the softmax class probability of each masked input instead). No gradients.
- Layer-CAM (Jiang et al. 2021, eq. 5-6): ``sum_c ReLU(g_c) * A_c``, element by element.
- Eigen-CAM (Bany Muhammad & Yeasin 2020, eq. 4-5): the projection of the (channel-centred) activations on their
  first principal component, per image. No gradients and no target; the sign of a principal component is
  arbitrary, so it is chosen to make the map's mean activation-weighted value positive.

ViT layers give ``[batch tokens d]``: the token grid is found from the shape (``tokens = p + h*w`` with a square
``h = w`` and ``p`` = 0, 1 or 2 leading tokens: none, CLS, CLS + distillation), the leading tokens dropped and the
grid laid out as ``[batch d h w]``, so any CAM works on a ViT layer with no reshape function. Maps are upsampled
bilinearly to the input's height and width (``[batch 1 H W]``) and keep their scale; rendering normalises them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from ..core._model import Model
from ._registry import GradCamPPConfig, ScoreCamConfig
from ._result import Attribution
from ._space import Space, site_pass, space

Weights = Callable[[Tensor, Tensor], Tensor]


def token_grid(act: Tensor) -> tuple[Float[Tensor, "batch d h w"], int]:
    """Lay ``[batch tokens d]`` ViT activations out as ``[batch d h w]``; returns the grid and the leading tokens.

    ``[batch c h w]`` maps pass through unchanged (0 leading tokens).
    """
    if act.ndim == 4:
        return act, 0
    if act.ndim != 3:
        raise ValueError(f"a CAM needs [batch c h w] or [batch tokens d] activations, got {list(act.shape)}")
    tokens = act.shape[1]
    for prefix in (0, 1, 2):
        side = math.isqrt(tokens - prefix) if tokens > prefix else 0
        if side > 1 and side * side == tokens - prefix:
            grid = act[:, prefix:].unflatten(1, (side, side))  # [batch h w d], patches row-major
            return grid.permute(0, 3, 1, 2), prefix
    raise ValueError(
        f"cannot find a square patch grid in {tokens} tokens (tried 0, 1 or 2 leading CLS/distillation tokens); "
        "is the layer's output [batch tokens d]?"
    )


def grad_cam(model: Model, inputs: Any, target: Any, *, at: str) -> Attribution:
    """Grad-CAM at site ``at``: channels weighted by their mean gradient."""
    return _gradient_cam(model, inputs, target, at, "grad_cam", lambda a, g: g.mean((2, 3), keepdim=True) * a)


def grad_cam_pp(model: Model, inputs: Any, target: Any, *, at: str,
                eps: float = GradCamPPConfig.eps) -> Attribution:  # fmt: skip
    """Grad-CAM++ at site ``at``: channels weighted by positive gradients with per-location coefficients.

    ``eps`` is added to the coefficients' denominator, as pytorch-grad-cam does (the paper has none; 0 gives the
    paper's formula). It matters where gradients are tiny, e.g. at a ViT's normalised tokens.
    """

    def weigh(a: Tensor, g: Tensor) -> Tensor:
        g2 = g.pow(2)
        denom = 2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g + eps
        usable = (g > 0) & (denom != 0)  # only positive gradients count (ReLU(g)); guard the division
        coeff = torch.where(usable, g2 / torch.where(usable, denom, torch.ones_like(denom)), torch.zeros_like(g))
        return (coeff * g.clamp_min(0)).sum((2, 3), keepdim=True) * a

    return _gradient_cam(model, inputs, target, at, "grad_cam_pp", weigh)


def layer_cam(model: Model, inputs: Any, target: Any, *, at: str) -> Attribution:
    """Layer-CAM at site ``at``: each activation weighted by its own positive gradient."""
    return _gradient_cam(model, inputs, target, at, "layer_cam", lambda a, g: g.clamp_min(0) * a)


def score_cam(model: Model, inputs: Any, target: Any, *, at: str,
              batch_size: int | None = ScoreCamConfig.batch_size) -> Attribution:  # fmt: skip
    """Score-CAM at site ``at``: channels weighted by the target when their upsampled map masks the input."""
    start = time.perf_counter()
    layer, images = space(model, inputs, target, at), space(model, inputs, target, "input")
    if images.x.ndim != 4:
        raise ValueError(f"Score-CAM masks image inputs [batch c h w]; {model.name} takes {list(images.x.shape)}")
    act, prefix = token_grid(layer.x)
    b, c = act.shape[:2]
    masks = F.interpolate(act, size=images.x.shape[-2:], mode="bilinear", align_corners=True)  # [b c H W]
    lo, hi = masks.amin((2, 3), keepdim=True), masks.amax((2, 3), keepdim=True)
    masks = (masks - lo) / (hi - lo + 1e-8)
    # Row k*b + i is example i masked by channel k: whole copies of the batch, as Space expects.
    masked = (images.x[None] * masks.transpose(0, 1)[:, :, None]).reshape(c * b, *images.x.shape[1:])
    with torch.no_grad():
        scores = torch.cat([images(part) for part in masked.split(images.chunk_rows(batch_size))])
    weights = scores.reshape(c, b).T.softmax(-1)  # [b c]
    cam = (weights[:, :, None, None] * act).sum(1).clamp_min(0)
    return _result(layer, cam, "score_cam", prefix, start)


def eigen_cam(model: Model, inputs: Any, *, at: str) -> Attribution:
    """Eigen-CAM at site ``at``: activations projected on their first principal component (no target)."""
    start = time.perf_counter()
    layer = space(model, inputs, _no_target, at)
    act, prefix = token_grid(layer.x)
    b, c, h, w = act.shape
    flat = act.reshape(b, c, h * w).transpose(1, 2)  # [b hw c]
    centred = flat - flat.mean(1, keepdim=True)
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)  # vt [b c c]
    proj = torch.einsum("bpc,bc->bp", centred, vt[:, 0])  # [b hw]
    sign = torch.sign((proj * flat.mean(-1)).sum(-1, keepdim=True))  # orient towards the activation mass
    cam = (proj * torch.where(sign == 0, 1.0, sign)).reshape(b, h, w).clamp_min(0)
    return _result(layer, cam, "eigen_cam", prefix, start)


def _no_target(result: Any) -> Tensor:
    raise RuntimeError("Eigen-CAM uses no target")


def _gradient_cam(model: Model, inputs: Any, target: Any, at: str, method: str, weigh: Weights) -> Attribution:
    start = time.perf_counter()
    layer, grads = site_pass(model, inputs, target, at)
    act, prefix = token_grid(layer.x)
    g, _ = token_grid(grads)
    cam = weigh(act, g).sum(1).clamp_min(0)  # [b h w]
    return _result(layer, cam, method, prefix, start)


def _result(layer: Space, cam: Tensor, method: str, prefix: int, start: float) -> Attribution:
    grid = list(cam.shape[-2:])
    up = cam[:, None]
    if layer.inputs.ndim == 4 and layer.inputs.is_floating_point():  # image inputs: upsample to their size
        up = F.interpolate(up, size=layer.inputs.shape[-2:], mode="bilinear", align_corners=False)  # [b 1 H W]
    return Attribution(
        map=up.detach(),
        method=method,
        target="none" if method == "eigen_cam" else repr(layer.target),
        at=layer.at,
        params={"grid": grid, "leading_tokens": prefix},
        seconds=time.perf_counter() - start,
        model=layer.model.provenance,
    )
