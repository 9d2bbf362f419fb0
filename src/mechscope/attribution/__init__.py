"""Input attribution: gradients, Integrated Gradients, SmoothGrad, occlusion, LRP, the CAM family, quality metrics.

Every method explains one scalar per example (a class logit, a logit difference, a site's unit, or any function of
the run) and returns an :class:`Attribution`. Example::

    import mechscope as ms
    from mechscope import attribution as at, organisms

    org = organisms.vision_organism("shapes-cnn")  # small CNN trained in seconds on procedural shapes, cached
    x, y = org.test.images[:8], org.test.labels[:8]
    ig = at.integrated_gradients(org.model, x, y)  # adaptive steps; ig.completeness_gap per example
    sg = at.METHODS["smoothgrad"](org.model, x, y, samples=16)  # any declared method, by name, with its config
    cam = at.grad_cam(org.model, x, y, at=org.cam_site)
    curves = at.deletion_insertion(org.model, x, y, ig)  # RISE deletion/insertion, with chance curves
    ig = at.evaluate(org.model, x, y, ig, mask=org.test.masks[:8])  # the result carries its quality metrics
    toks = at.token_attribution(ms.load(), "The capital of France is", max_new_tokens=3)
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._registry import (
    METHODS,
    CamConfig,
    EdgeDetectorConfig,
    GradCamPPConfig,
    InputXGradientConfig,
    IntegratedGradientsConfig,
    LRPConfig,
    OcclusionConfig,
    SaliencyConfig,
    ScoreCamConfig,
    SmoothGradConfig,
)
from ._result import Attribution

# The methods load on first use (Captum is slow to import): ``mechscope attribute --help`` reads ``METHODS``
# without them.
_LAZY = {
    **dict.fromkeys(["eigen_cam", "grad_cam", "grad_cam_pp", "layer_cam", "score_cam", "token_grid"], "._cam"),
    **dict.fromkeys(["input_x_gradient", "integrated_gradients", "occlusion", "saliency", "smoothgrad"],
                    "._gradients"),
    "lrp": "._lrp",
    **dict.fromkeys(["attn_lrp", "lrp_rules"], "._attnlrp"),
    **dict.fromkeys(["PerturbationCurves", "RandomisationCheck", "completeness", "deletion_insertion",
                     "edge_detector", "evaluate", "localisation", "randomisation_check", "spearman", "ssim"],
                    "._metrics"),
    **dict.fromkeys(["Logit", "LogitDiff", "Norm", "Target", "Unit"], "._targets"),
    **dict.fromkeys(["TokenAttribution", "token_attribution"], "._tokens"),
}  # fmt: skip

if TYPE_CHECKING:
    from ._attnlrp import attn_lrp, lrp_rules
    from ._cam import eigen_cam, grad_cam, grad_cam_pp, layer_cam, score_cam, token_grid
    from ._gradients import input_x_gradient, integrated_gradients, occlusion, saliency, smoothgrad
    from ._lrp import lrp
    from ._metrics import (
        PerturbationCurves,
        RandomisationCheck,
        completeness,
        deletion_insertion,
        edge_detector,
        evaluate,
        localisation,
        randomisation_check,
        spearman,
        ssim,
    )
    from ._targets import Logit, LogitDiff, Norm, Target, Unit
    from ._tokens import TokenAttribution, token_attribution


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "METHODS",
    "Attribution",
    "CamConfig",
    "EdgeDetectorConfig",
    "GradCamPPConfig",
    "InputXGradientConfig",
    "IntegratedGradientsConfig",
    "LRPConfig",
    "Logit",
    "LogitDiff",
    "Norm",
    "OcclusionConfig",
    "PerturbationCurves",
    "RandomisationCheck",
    "SaliencyConfig",
    "ScoreCamConfig",
    "SmoothGradConfig",
    "Target",
    "TokenAttribution",
    "Unit",
    "attn_lrp",
    "completeness",
    "deletion_insertion",
    "edge_detector",
    "eigen_cam",
    "evaluate",
    "grad_cam",
    "grad_cam_pp",
    "input_x_gradient",
    "integrated_gradients",
    "layer_cam",
    "localisation",
    "lrp",
    "lrp_rules",
    "occlusion",
    "randomisation_check",
    "saliency",
    "score_cam",
    "smoothgrad",
    "spearman",
    "ssim",
    "token_attribution",
    "token_grid",
]
