"""Input attribution: gradients, Integrated Gradients, SmoothGrad, occlusion, LRP, the CAM family, quality metrics.

Every method explains one scalar per example (a class logit, a logit difference, a site's unit, or any function of
the run) and returns an :class:`Attribution`. Example::

    import mechscope as ms
    from mechscope import attribution as at, organisms

    org = organisms.vision_organism("shapes-cnn")  # small CNN trained in seconds on procedural shapes, cached
    x, y = org.test.images[:8], org.test.labels[:8]
    ig = at.integrated_gradients(org.model, x, y)  # adaptive steps; ig.completeness_gap per example
    cam = at.grad_cam(org.model, x, y, at=org.cam_site)
    curves = at.deletion_insertion(org.model, x, y, ig)  # RISE deletion/insertion, with chance curves
    ig = at.evaluate(org.model, x, y, ig, mask=org.test.masks[:8])  # the result carries its quality metrics
    toks = at.token_attribution(ms.load(), "The capital of France is", max_new_tokens=3)
"""

from ._cam import eigen_cam, grad_cam, grad_cam_pp, layer_cam, score_cam, token_grid
from ._demo import demo_sections
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
from ._render import gallery, save_overlays
from ._result import Attribution
from ._targets import Logit, LogitDiff, Norm, Target, Unit
from ._tokens import TokenAttribution, token_attribution

__all__ = [
    "Attribution",
    "Logit",
    "LogitDiff",
    "Norm",
    "PerturbationCurves",
    "RandomisationCheck",
    "Target",
    "TokenAttribution",
    "Unit",
    "completeness",
    "deletion_insertion",
    "demo_sections",
    "edge_detector",
    "eigen_cam",
    "evaluate",
    "gallery",
    "grad_cam",
    "grad_cam_pp",
    "input_x_gradient",
    "integrated_gradients",
    "layer_cam",
    "localisation",
    "lrp",
    "occlusion",
    "randomisation_check",
    "saliency",
    "save_overlays",
    "score_cam",
    "smoothgrad",
    "spearman",
    "ssim",
    "token_attribution",
    "token_grid",
]
