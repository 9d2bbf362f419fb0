"""Image parametrisations: what the optimiser actually changes when it "draws" an image.

- :class:`FourierImage` (Olah, Mordvintsev & Schubert 2017, "Feature Visualization", Distill, section
  "Preconditioning and Parameterization"; Mordvintsev et al. 2018, "Differentiable Image Parameterizations",
  Distill): the image is the inverse real FFT of a learned spectrum scaled by ``1 / frequency ** decay_power``, so
  a gradient step changes low frequencies as readily as high ones (a whitened, better-conditioned space); channels
  are mixed by a fixed colour matrix (the square root of the colour covariance, "decorrelated colour space"), then
  a sigmoid keeps every pixel in ``(0, 1)``.
- :class:`PixelImage`: one free parameter per pixel, through the same colour matrix and sigmoid (the baseline the
  Fourier space is compared against).

Both return ``[n c h w]`` images in ``(0, 1)``; :class:`InputRange` maps them to the model's input scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

# Square root of ImageNet's RGB covariance, from its SVD (the matrix Lucid and Lucent ship).
IMAGENET_COLOUR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


@dataclass(frozen=True)
class InputRange:
    """The model-input values that image values 0 and 1 stand for: ``input = lo + (hi - lo) * image``."""

    lo: float = 0.0
    hi: float = 1.0

    def to_input(self, image: Tensor) -> Tensor:
        """Model inputs from images in ``[0, 1]``."""
        return self.lo + (self.hi - self.lo) * image

    def to_image(self, x: Tensor) -> Tensor:
        """Images in ``[0, 1]`` (clipped) from model inputs."""
        return ((x - self.lo) / (self.hi - self.lo)).clamp(0, 1)

    @classmethod
    def of(cls, images: Tensor, q: float = 0.001) -> InputRange:
        """The ``q`` and ``1 - q`` quantiles of a dataset's inputs: the range real images occupy."""
        flat = images.flatten().float()
        if flat.numel() > 1_000_000:  # torch.quantile has a size limit; a strided sample is plenty
            flat = flat[:: flat.numel() // 1_000_000 + 1]
        lo, hi = torch.quantile(flat, torch.tensor([q, 1 - q])).tolist()
        return cls(lo, hi)


def colour_matrix(images: Float[Tensor, "n c h w"] | None, channels: int) -> Float[Tensor, "c c"]:
    """Colour-decorrelation matrix: square root of the channel covariance (via SVD), columns scaled to norm <= 1.

    With ``images`` None: ImageNet's matrix for 3 channels, the identity otherwise (one grey channel needs none).
    """
    if images is None:
        m = torch.tensor(IMAGENET_COLOUR_SQRT) if channels == 3 else torch.eye(channels)
    else:
        x = images.movedim(1, -1).reshape(-1, images.shape[1]).double()
        cov = torch.cov(x.T).reshape(images.shape[1], images.shape[1])
        u, s, _ = torch.linalg.svd(cov)
        m = (u * s.sqrt()).float()  # cov = m m^T
    return m / m.norm(dim=0).max().clamp_min(1e-12)


class ImageParam(nn.Module):
    """A batch of images as a function of learnable parameters; ``forward()`` returns ``[n c h w]`` in (0, 1)."""

    def __init__(self, colour: Tensor) -> None:
        super().__init__()
        self.colour: Tensor
        self.register_buffer("colour", colour)

    def _finish(self, x: Float[Tensor, "n c h w"]) -> Float[Tensor, "n c h w"]:
        x = torch.einsum("nchw,dc->ndhw", x, self.colour)  # decorrelated -> correlated colour
        return torch.sigmoid(x)


class PixelImage(ImageParam):
    """One parameter per pixel and channel (plus the colour matrix and sigmoid)."""

    def __init__(self, n: int, shape: tuple[int, int, int], *, colour: Tensor, sd: float = 0.01,
                 generator: torch.Generator | None = None) -> None:  # fmt: skip
        super().__init__(colour)
        self.pixels = nn.Parameter(torch.randn(n, *shape, generator=generator) * sd)

    def forward(self) -> Float[Tensor, "n c h w"]:
        return self._finish(self.pixels)


def fft_frequencies(h: int, w: int) -> Float[Tensor, "h w2"]:
    """Magnitude of each 2-d frequency of ``rfft2`` on an ``h x w`` image (cycles per pixel)."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return (fy**2 + fx**2).sqrt()


class FourierImage(ImageParam):
    """Learned spectrum, scaled by ``1 / max(f, 1/size) ** decay_power``, inverse-FFT'd (Olah et al. 2017)."""

    def __init__(self, n: int, shape: tuple[int, int, int], *, colour: Tensor, decay_power: float = 1.0,
                 sd: float = 0.01, generator: torch.Generator | None = None) -> None:  # fmt: skip
        super().__init__(colour)
        c, h, w = shape
        self.size = (h, w)
        freqs = fft_frequencies(h, w)
        self.scale: Tensor
        self.register_buffer("scale", 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay_power)  # [h w//2+1]
        self.spectrum = nn.Parameter(torch.randn(n, c, h, w // 2 + 1, 2, generator=generator) * sd)

    def forward(self) -> Float[Tensor, "n c h w"]:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale  # [n c h w//2+1]
        x = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        return self._finish(x / 4.0)  # Lucid's constant: keeps the initial image near grey


def make_param(kind: str, n: int, shape: tuple[int, int, int], *, colour: Tensor, decay_power: float = 1.0,
               seed: int = 0) -> ImageParam:  # fmt: skip
    """``fourier`` or ``pixel`` parametrisation of ``n`` images of ``shape = (c, h, w)``, seeded."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "fourier":
        return FourierImage(n, shape, colour=colour, decay_power=decay_power, generator=gen)
    if kind == "pixel":
        return PixelImage(n, shape, colour=colour, generator=gen)
    raise ValueError(f"unknown parametrisation {kind!r}: choose 'fourier' or 'pixel'")


def spectrum_slope(images: Float[Tensor, "n c h w"]) -> float:
    """Log-log slope of the radially averaged power spectrum (natural images: about -2; white noise: 0)."""
    x = images - images.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.rfft2(x).abs().pow(2).mean(dim=(0, 1))  # [h w//2+1]
    f = fft_frequencies(*images.shape[-2:])
    keep = (f > 0) & (f <= 0.5)
    slope = torch.linalg.lstsq(
        torch.stack([f[keep].log(), torch.ones_like(f[keep])], -1).double(),
        power[keep].clamp_min(1e-20).log().double()[:, None],
    ).solution[0, 0]
    return float(slope) if math.isfinite(float(slope)) else float("nan")
