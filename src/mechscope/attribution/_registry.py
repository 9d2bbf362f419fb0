"""The declared image attribution methods: one registry, a frozen config per method, the library's defaults.

Every method is declared once here, as ``fn(model, inputs, target, config) -> Attribution``; the command line
(``mechscope attribute -m NAME``), the vision bench and the report read this registry. The library functions
(``saliency``, ``integrated_gradients``, …) take their defaults from these configs, so the two never drift apart.
This module imports no attribution code (Captum) until a method runs: building the command line stays cheap.

Tags say what a method applies to and how it is used: ``cnn`` / ``vit`` (the models it is defined for), ``cam``
(weighs a layer's activations: needs ``layer``), ``bench`` (scored on the vision organisms), ``baseline`` (ignores
the model: a sanity-check reference, not a method under test).

A new method is one function and one declaration::

    @dataclass(frozen=True)
    class MyConfig:
        steps: int = 8
        \"\"\"Gradient evaluations.\"\"\"

    @METHODS.declare("my_method", config=MyConfig, result=Attribution, tags=("cnn", "vit"))
    def my_method(model, inputs, target, config: MyConfig) -> Attribution: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..core._registry import Registry
from ._result import Attribution

if TYPE_CHECKING:
    from ..core._model import Model

METHODS: Registry[Any, Attribution] = Registry("attribution")
"""Image attribution methods by name (declared below, in the order the gallery shows them)."""

Rule = Literal["adaptive", "gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"]


# --- configs -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaliencyConfig:
    """Settings of ``saliency``."""

    abs: bool = True
    """Take the gradient's absolute value (Simonyan et al. 2013); ``--no-abs`` keeps its sign."""


@dataclass(frozen=True)
class InputXGradientConfig:
    """``input_x_gradient`` has no settings."""


@dataclass(frozen=True)
class IntegratedGradientsConfig:
    """Settings of ``integrated_gradients``."""

    steps: int | None = None
    """Gradient evaluations along the path (default: 48 with the adaptive rule, 50 with Captum's rules)."""
    rule: Rule = "adaptive"
    """Where the steps go: ``adaptive`` (where the gradient changes) or one of Captum's quadrature rules."""
    baseline: float = 0.0
    """Value of the baseline input the path starts from (the same at every element)."""
    batch_size: int | None = None
    """Rows per forward pass (default: about 128k attributed elements)."""

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


@dataclass(frozen=True)
class SmoothGradConfig:
    """Settings of ``smoothgrad``."""

    samples: int = 25
    """Noisy copies averaged per example."""
    noise: float = 0.15
    """Noise standard deviation as a share of the batch's value range (Smilkov et al. 2017 use 0.1-0.2)."""
    abs: bool = True
    """Average the gradients' absolute values (``--no-abs`` keeps their signs)."""
    seed: int = 0
    """Seeds the noise."""
    batch_size: int | None = None
    """Rows per forward pass (default: about 128k attributed elements)."""

    def __post_init__(self) -> None:
        if self.samples < 1 or self.noise < 0:
            raise ValueError(f"need samples >= 1 and noise >= 0: {self}")


@dataclass(frozen=True)
class OcclusionConfig:
    """Settings of ``occlusion``."""

    window: int | None = None
    """Side of the square occluded window in pixels, all channels at once (tokens: positions); default 1/8 of the
    image's height and width (tokens: 1)."""
    stride: int | None = None
    """Step between windows in pixels (default: half the window; tokens: the window)."""
    baseline: float = 0.0
    """Value the window is set to."""
    batch_size: int | None = None
    """Rows per forward pass (default: about 128k attributed elements)."""

    def __post_init__(self) -> None:
        if (self.window is not None and self.window < 1) or (self.stride is not None and self.stride < 1):
            raise ValueError(f"window and stride must be >= 1: {self}")


@dataclass(frozen=True)
class LRPConfig:
    """Settings of ``lrp``."""

    epsilon: float = 1e-9
    """Stabiliser of the epsilon rule's denominators (Bach et al. 2015, eq. 58)."""


@dataclass(frozen=True)
class CamConfig:
    """Settings every CAM shares."""

    layer: str | None = None
    """Site whose activations the CAM weighs, ``[batch c h w]`` or ViT tokens (required; the CLI fills in the
    organism's own, e.g. ``features``)."""

    def site(self, method: str) -> str:
        """``layer``, or an error saying that the CAM needs one."""
        if self.layer is None:
            raise ValueError(f"{method} needs a layer (a site name; `mechscope sites` lists a model's sites)")
        return self.layer


@dataclass(frozen=True)
class GradCamPPConfig(CamConfig):
    """Settings of ``grad_cam_pp``."""

    eps: float = 1e-6
    """Added to the coefficients' denominator as pytorch-grad-cam does (0: the paper's formula)."""


@dataclass(frozen=True)
class ScoreCamConfig(CamConfig):
    """Settings of ``score_cam``."""

    batch_size: int | None = None
    """Masked images per forward pass (default: about 128k input elements)."""


@dataclass(frozen=True)
class EdgeDetectorConfig:
    """The edge detector has no settings."""


# --- declarations ------------------------------------------------------------------------------------------------

ALL = ("cnn", "vit")


@dataclass(frozen=True)
class AttnLRPConfig:
    """Settings of ``attn_lrp`` (none: its rules are fixed, see ``attribution/_attnlrp.py``)."""


@METHODS.declare("saliency", config=SaliencyConfig, result=Attribution, tags=(*ALL, "bench"))
def _saliency(model: Model, inputs: Any, target: Any, config: SaliencyConfig) -> Attribution:
    """|Gradient| of the target with respect to the input (Simonyan et al. 2013)."""
    from ._gradients import saliency

    return saliency(model, inputs, target, abs=config.abs)


@METHODS.declare("input_x_gradient", config=InputXGradientConfig, result=Attribution, tags=(*ALL, "bench"))
def _input_x_gradient(model: Model, inputs: Any, target: Any, config: InputXGradientConfig) -> Attribution:
    """Input times the target's gradient (Shrikumar et al. 2016)."""
    from ._gradients import input_x_gradient

    return input_x_gradient(model, inputs, target)


@METHODS.declare("integrated_gradients", config=IntegratedGradientsConfig, result=Attribution,
                 tags=(*ALL, "bench"))  # fmt: skip
def _integrated_gradients(model: Model, inputs: Any, target: Any, config: IntegratedGradientsConfig) -> Attribution:
    """Integrated Gradients from a constant baseline (Sundararajan et al. 2017), adaptive steps by default."""
    from ._gradients import integrated_gradients

    return integrated_gradients(model, inputs, target, baseline=config.baseline, steps=config.steps,
                                rule=config.rule, batch_size=config.batch_size)  # fmt: skip


@METHODS.declare("smoothgrad", config=SmoothGradConfig, result=Attribution, tags=(*ALL, "bench"))
def _smoothgrad(model: Model, inputs: Any, target: Any, config: SmoothGradConfig) -> Attribution:
    """Mean saliency over noisy copies of the input (Smilkov et al. 2017)."""
    from ._gradients import smoothgrad

    return smoothgrad(model, inputs, target, samples=config.samples, noise=config.noise, abs=config.abs,
                      seed=config.seed, batch_size=config.batch_size)  # fmt: skip


@METHODS.declare("occlusion", config=OcclusionConfig, result=Attribution, tags=(*ALL, "bench"))
def _occlusion(model: Model, inputs: Any, target: Any, config: OcclusionConfig) -> Attribution:
    """Drop in the target when a sliding window is occluded (Zeiler & Fergus 2014)."""
    from ._gradients import occlusion

    return occlusion(model, inputs, target, window=config.window, stride=config.stride, baseline=config.baseline,
                     batch_size=config.batch_size)  # fmt: skip


@METHODS.declare("lrp", config=LRPConfig, result=Attribution, tags=("cnn",))
def _lrp(model: Model, inputs: Any, target: Any, config: LRPConfig) -> Attribution:
    """Epsilon-rule layer-wise relevance propagation (Bach et al. 2015); conv/linear/norm/pool models only."""
    from ._lrp import lrp

    return lrp(model, inputs, target, epsilon=config.epsilon)


@METHODS.declare("attn_lrp", config=AttnLRPConfig, result=Attribution, tags=("lm",))
def _attn_lrp(model: Model, inputs: Any, target: Any, config: AttnLRPConfig) -> Attribution:
    """LRP for transformer LMs: identity rule on norms and activations, constant attention, uniform gated product."""
    from ._attnlrp import attn_lrp

    return attn_lrp(model, inputs, target)


@METHODS.declare("grad_cam", config=CamConfig, result=Attribution, tags=(*ALL, "cam", "bench"))
def _grad_cam(model: Model, inputs: Any, target: Any, config: CamConfig) -> Attribution:
    """Grad-CAM (Selvaraju et al. 2017): a layer's channels weighted by their mean gradient."""
    from ._cam import grad_cam

    return grad_cam(model, inputs, target, at=config.site("grad_cam"))


@METHODS.declare("grad_cam_pp", config=GradCamPPConfig, result=Attribution, tags=(*ALL, "cam"))
def _grad_cam_pp(model: Model, inputs: Any, target: Any, config: GradCamPPConfig) -> Attribution:
    """Grad-CAM++ (Chattopadhay et al. 2018): positive gradients with per-location coefficients."""
    from ._cam import grad_cam_pp

    return grad_cam_pp(model, inputs, target, at=config.site("grad_cam_pp"), eps=config.eps)


@METHODS.declare("score_cam", config=ScoreCamConfig, result=Attribution, tags=(*ALL, "cam"))
def _score_cam(model: Model, inputs: Any, target: Any, config: ScoreCamConfig) -> Attribution:
    """Score-CAM (Wang et al. 2020): channels weighted by the target on the input they mask; no gradients."""
    from ._cam import score_cam

    return score_cam(model, inputs, target, at=config.site("score_cam"), batch_size=config.batch_size)


@METHODS.declare("layer_cam", config=CamConfig, result=Attribution, tags=(*ALL, "cam"))
def _layer_cam(model: Model, inputs: Any, target: Any, config: CamConfig) -> Attribution:
    """Layer-CAM (Jiang et al. 2021): each activation weighted by its own positive gradient."""
    from ._cam import layer_cam

    return layer_cam(model, inputs, target, at=config.site("layer_cam"))


@METHODS.declare("eigen_cam", config=CamConfig, result=Attribution, tags=(*ALL, "cam"))
def _eigen_cam(model: Model, inputs: Any, target: Any, config: CamConfig) -> Attribution:
    """Eigen-CAM (Bany Muhammad & Yeasin 2020): first principal component of a layer's activations; no target."""
    from ._cam import eigen_cam

    return eigen_cam(model, inputs, at=config.site("eigen_cam"))


@METHODS.declare("edge_detector", config=EdgeDetectorConfig, result=Attribution,
                 tags=(*ALL, "baseline", "bench"))  # fmt: skip
def _edge_detector(model: Model, inputs: Any, target: Any, config: EdgeDetectorConfig) -> Attribution:
    """Sobel edges of the input: ignores the model (the sanity-check baseline)."""
    from ._metrics import edge_detector

    return edge_detector(model, inputs)
