"""Vision model organisms: a small CNN and a small ViT, trained in seconds on procedural data, cached with a checksum.

Three organisms, each seeded and rebuilt identically from its spec:

- ``shapes-cnn``: four conv layers (the last, ``features``, is the 8 x 8 map CAMs explain), global max pool,
  linear head, on :func:`mechscope.data.images.shapes`.
- ``shapes-vit``: a hybrid ViT: a conv stem turns a 32 x 32 image into an 8 x 8 grid of tokens, plus a CLS token,
  two pre-norm blocks, classification from the CLS token. CAMs explain ``blocks.1.norm1``: the last block's
  attention input, where patch tokens still reach the CLS token (after the last block, only the CLS token feeds
  the head, so patch-token gradients there are zero).
- ``blocks-cnn``: the CNN trained on :func:`mechscope.data.images.signal_blocks`, where only one known block of each
  image carries the class: the ground truth for localisation tests.

Each is an ``Organism`` (``Vision``) obtained like every other one: ``obtain`` trains it with the organisms' one
training loop (``_train.train_classifier``), verifies its held-out accuracy, and caches it with its checksum;
``vision_organism(name)`` is that call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from .._cache import state_sha256
from ..core import Model
from ..core._sites import module_sites
from ..data.images import ImageSet, shapes, signal_blocks
from ._organism import Built, Organism, obtain, require
from ._train import Schedule, train_classifier

# --- architectures -----------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Conv-BatchNorm-ReLU x 4 with two 2 x 2 max-pools (32 -> 8), global max pool, linear head.

    The global max pool (rather than an average) makes each channel a position-invariant detector, and batch norm
    lets the net train in a few epochs; with an average pool and no norm it learns these small shapes far slower.
    """

    def __init__(self, n_classes: int = 4, width: int = 16, channels: int = 1) -> None:
        super().__init__()
        w = width
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv3, self.bn3, self.relu3 = nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv4, self.bn4, self.relu4 = nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU()
        self.pool3, self.head = nn.AdaptiveMaxPool2d(1), nn.Linear(2 * w, n_classes)

    def forward(self, x: Float[Tensor, "batch c h w"]) -> Float[Tensor, "batch n_classes"]:
        x = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        x = self.relu3(self.bn3(self.conv3(self.pool1(x))))
        x = self.relu4(self.bn4(self.conv4(self.pool2(x))))  # [batch 2w h/4 w/4]
        return self.head(self.pool3(x).flatten(1))


class _Attention(nn.Module):
    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: Float[Tensor, "batch pos d"]) -> Float[Tensor, "batch pos d"]:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.n_heads, -1)).permute(2, 0, 3, 1, 4)  # [3 batch head pos dh]
        z = F.scaled_dot_product_attention(q, k, v)
        return self.proj(z.transpose(1, 2).flatten(2))


class _Block(nn.Module):
    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), _Attention(d, n_heads)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SmallViT(nn.Module):
    """Hybrid ViT (Dosovitskiy et al. 2021, section 3.1): conv stem, CLS token, pre-norm blocks, head on CLS.

    The stem makes the patch grid; learned positions are added to the CLS and patch tokens.

    The stem (two conv-BN-ReLU-pool stages, 32 -> 8) stands in for a linear patch embedding: a plain patch-4 ViT
    needs far more images than a few seconds of training give to learn these shapes.
    """

    def __init__(self, n_classes: int = 4, size: int = 32, d: int = 48, depth: int = 2, n_heads: int = 4) -> None:
        super().__init__()
        n_patches = (size // 4) ** 2
        self.stem = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, d, 3, padding=1), nn.BatchNorm2d(d), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, 1 + n_patches, d) * 0.02)
        self.blocks = nn.ModuleList(_Block(d, n_heads) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, n_classes)

    def forward(self, x: Float[Tensor, "batch 1 h w"]) -> Float[Tensor, "batch n_classes"]:
        x = self.stem(x).flatten(2).transpose(1, 2)  # [batch patches d], patches row-major over the grid
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos  # [batch 1+patches d]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


# --- specs, recipe and built organism ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrganismSpec:
    """Everything that determines a vision organism's weights."""

    arch: Literal["cnn", "vit"]
    data: Literal["shapes", "signal_blocks"]
    cam_site: str
    """Site whose activations CAMs explain."""
    epochs: int
    per_epoch: int = 2048
    """Fresh images drawn per epoch (the generators are unlimited, so there is no overfitting to a fixed set)."""
    lr: float = 3e-3
    batch: int = 64
    size: int = 32
    min_accuracy: float = 0.9
    """Held-out accuracy the build must reach, else it fails loudly."""


SPECS: dict[str, OrganismSpec] = {
    "shapes-cnn": OrganismSpec("cnn", "shapes", cam_site="features", epochs=5, lr=8e-3, min_accuracy=0.93),
    "shapes-vit": OrganismSpec("vit", "shapes", cam_site="blocks.1.norm1", epochs=12, lr=5e-3, min_accuracy=0.85),
    "blocks-cnn": OrganismSpec("cnn", "signal_blocks", cam_site="features", epochs=7, lr=8e-3, min_accuracy=0.9),
}
"""The built-in vision organisms by name."""

VERSION = 1
"""Bump when an architecture or a generator changes, so stale caches are not reused."""


@dataclass(eq=False)
class VisionOrganism(Built):
    """A trained vision organism: the wrapped model, its held-out data and how well it does."""

    name: str
    module: nn.Module
    spec: OrganismSpec
    seed: int
    organism: str = "vision"
    verification: dict[str, float] = field(default_factory=dict)

    @cached_property
    def model(self) -> Model:
        """The ``ms.wrap``-ed module, its cached file's checksum as provenance (``features``: the CNN's last ReLU)."""
        aliases = {"features": "relu4"} if self.spec.arch == "cnn" else {}
        return Model(self.module, module_sites(self.module, aliases), name=f"{self.name}-seed{self.seed}",
                     weights_sha256=self.sha256 or None)  # fmt: skip

    @cached_property
    def test(self) -> ImageSet:
        """Held-out images (a seed no training epoch used)."""
        return _data(self.spec, 256, seed=10_000 + self.seed)

    @cached_property
    def accuracy(self) -> float:
        """Accuracy on ``test``."""
        return accuracy(self.module, self.test)

    @property
    def cam_site(self) -> str:
        return self.spec.cam_site

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.module.state_dict())

    @property
    def truth(self) -> dict[str, Any]:
        return {"classes": list(self.test.classes), "cam_site": self.spec.cam_site}

    def verify(self) -> dict[str, float]:
        """Held-out accuracy at least ``spec.min_accuracy``."""
        least = self.spec.min_accuracy
        return require(self.name, self.seed, {"accuracy": self.accuracy},
                       {f"held-out accuracy >= {least}": self.accuracy >= least})  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "accuracy": self.accuracy, "sha256": self.sha256,
                "seconds": self.seconds, "spec": dataclasses.asdict(self.spec)}  # fmt: skip


@dataclass(frozen=True)
class Vision(Organism):
    """Recipe of a vision organism: one of ``SPECS`` by name, trained by the organisms' one training loop."""

    model: str = "shapes-cnn"
    """Name in ``SPECS``."""
    spec: OrganismSpec = SPECS["shapes-cnn"]
    name: ClassVar[str] = "vision"
    family: ClassVar[str] = "vision"

    @classmethod
    def named(cls, model: str) -> Vision:
        """The recipe of the vision organism ``SPECS[model]``."""
        if model not in SPECS:
            raise ValueError(f"unknown vision organism {model!r}; built-in: {', '.join(SPECS)}")
        return cls(model, SPECS[model])

    @property
    def key(self) -> str:
        """``vision-<model>-v<VERSION>``, plus a hash of the spec when it is not the one in ``SPECS``."""
        key = f"vision-{self.model}-v{VERSION}"
        if self.spec == SPECS.get(self.model):
            return key
        return f"{key}-{self.config_digest()}"

    def build(self, seed: int) -> VisionOrganism:
        spec = self.spec

        def data(epoch: int) -> tuple[Tensor, Tensor]:
            images = _data(spec, spec.per_epoch, seed=seed * 1000 + epoch)
            return images.images, images.labels

        schedule = Schedule(spec.epochs, spec.per_epoch, spec.batch, spec.lr, kind="warmup_cosine", shuffle=True)
        return self._built(seed, train_classifier(lambda: _build(spec), data, schedule, seed))

    def load(self, seed: int, tensors: dict[str, Tensor]) -> VisionOrganism:
        module = _build(self.spec)
        module.load_state_dict(tensors)
        return self._built(seed, module.eval().requires_grad_(False))

    def _built(self, seed: int, module: nn.Module) -> VisionOrganism:
        return VisionOrganism(self.model, module, self.spec, seed)


def vision_organism(name: str = "shapes-cnn", *, seed: int = 0, rebuild: bool = False) -> VisionOrganism:
    """A built-in vision organism, verified, from the cache (``obtain``), trained first (seconds) when needed."""
    built = obtain(Vision.named(name), seed, rebuild=rebuild)
    assert isinstance(built, VisionOrganism)
    return built


def _build(spec: OrganismSpec) -> nn.Module:
    return SmallCNN() if spec.arch == "cnn" else SmallViT(size=spec.size)


def _data(spec: OrganismSpec, n: int, seed: int) -> ImageSet:
    make = shapes if spec.data == "shapes" else signal_blocks
    return make(n, size=spec.size, seed=seed)


@torch.no_grad()
def accuracy(module: nn.Module, data: ImageSet) -> float:
    """Fraction of ``data`` classified correctly."""
    return float((module(data.images).argmax(-1) == data.labels).float().mean())


# --- weights independent of torch's RNG ---------------------------------------------------------------------------


def numpy_seeded(arch: Literal["cnn", "vit"], seed: int = 0) -> tuple[nn.Module, str]:
    """A :class:`SmallCNN` or :class:`SmallViT` whose every parameter and buffer is drawn by numpy from ``seed``.

    The weights are the same bytes under any torch version (torch's RNG and training are not), so results computed
    from them can be committed as goldens and compared in CI. Matrices and kernels are He-scaled normals, norm
    scales ``1 + N(0, 0.1)``, everything else ``N(0, 0.1)``, running variances ``U(0.5, 1.5)``. Returns the module
    (eval mode) and the sha256 of its state.
    """
    module = SmallCNN() if arch == "cnn" else SmallViT()
    rng = np.random.default_rng(seed)
    state = {}
    for name, t in sorted(module.state_dict().items()):
        if not t.is_floating_point():
            state[name] = t
            continue
        shape = tuple(t.shape)
        if name.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif t.ndim >= 2 and name.endswith("weight"):
            value = rng.normal(0, (2 / (t.numel() / shape[0])) ** 0.5, shape)  # He: std sqrt(2 / fan_in)
        elif name.endswith("weight"):  # norm scales
            value = 1 + rng.normal(0, 0.1, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        state[name] = torch.from_numpy(value.astype(np.float32))
    module.load_state_dict(state)
    return module.eval().requires_grad_(False), state_sha256(module)
