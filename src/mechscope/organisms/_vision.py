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

Weights are cached under ``cache_dir("vision", ...)`` as safetensors beside a JSON record of the spec, the held-out
accuracy and the file's sha256; a cached file whose checksum does not match is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from .._cache import atomic_write_bytes, cache_dir, sha256_file
from ..core import Model
from ..core._sites import module_sites
from ..data.images import ImageSet, shapes, signal_blocks

# --- architectures -----------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Conv-BatchNorm-ReLU x 4 with two 2 x 2 max-pools (32 -> 8), global max pool, linear head.

    The global max pool (rather than an average) makes each channel a position-invariant detector, and batch norm
    lets the net train in a few epochs; with an average pool and no norm it learns these small shapes far slower.
    """

    def __init__(self, n_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        w = width
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv3, self.bn3, self.relu3 = nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv4, self.bn4, self.relu4 = nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU()
        self.pool3, self.head = nn.AdaptiveMaxPool2d(1), nn.Linear(2 * w, n_classes)

    def forward(self, x: Float[Tensor, "batch 1 h w"]) -> Float[Tensor, "batch n_classes"]:
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


# --- specs and results -------------------------------------------------------------------------------------------


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


@dataclass(frozen=True, eq=False)
class VisionOrganism:
    """A trained vision organism: the wrapped model, its held-out data and how well it does."""

    name: str
    model: Model
    """``ms.wrap``-ed module; ``features`` is an alias of the CNN's last ReLU."""
    spec: OrganismSpec
    seed: int
    accuracy: float
    """Accuracy on ``test``."""
    test: ImageSet
    """Held-out images (a seed no training epoch used)."""
    sha256: str
    """Checksum of the cached safetensors file."""
    seconds: float = 0.0
    """Training time (0 when loaded from the cache)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cam_site(self) -> str:
        return self.spec.cam_site

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "accuracy": self.accuracy, "sha256": self.sha256,
                "seconds": self.seconds, "spec": dataclasses.asdict(self.spec)}  # fmt: skip


def vision_organism(name: str = "shapes-cnn", *, seed: int = 0, rebuild: bool = False) -> VisionOrganism:
    """Load a built-in vision organism from the cache, training it first (seconds) when needed."""
    if name not in SPECS:
        raise ValueError(f"unknown vision organism {name!r}; built-in: {', '.join(SPECS)}")
    spec = SPECS[name]
    folder = cache_dir("vision", f"{name}-seed{seed}-v{VERSION}")
    weights, meta_path = folder / "model.safetensors", folder / "meta.json"
    module = _build(spec)
    test = _data(spec, 256, seed=10_000 + seed)
    meta = json.loads(meta_path.read_text()) if meta_path.exists() and weights.exists() else None
    if meta is not None and not rebuild and sha256_file(weights) == meta["sha256"]:
        module.load_state_dict(load_file(str(weights)))
        return _organism(name, module, spec, seed, test, meta["sha256"], 0.0)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # seeded initialisation and batches; the caller's RNG is untouched
        torch.manual_seed(seed)
        module = _build(spec)
        train(module, spec, seed)
    seconds = time.perf_counter() - start
    acc = accuracy(module, test)
    if acc < spec.min_accuracy:
        raise RuntimeError(f"{name} (seed {seed}) reached {acc:.3f} held-out accuracy, below {spec.min_accuracy}")
    atomic_write_bytes(weights, save_bytes({k: v.contiguous() for k, v in module.state_dict().items()}))
    sha = sha256_file(weights)
    record = {"sha256": sha, "accuracy": acc, "seed": seed, "seconds": seconds, "spec": dataclasses.asdict(spec),
              "torch": torch.__version__}  # fmt: skip
    atomic_write_bytes(meta_path, json.dumps(record, indent=2).encode())
    return _organism(name, module, spec, seed, test, sha, seconds)


def _organism(name: str, module: nn.Module, spec: OrganismSpec, seed: int, test: ImageSet, sha: str,
              seconds: float) -> VisionOrganism:  # fmt: skip
    module.eval().requires_grad_(False)
    aliases = {"features": "relu4"} if spec.arch == "cnn" else {}
    # Built like ``ms.wrap`` does, plus the cached file's checksum as the weights' provenance.
    model = Model(module, module_sites(module, aliases), name=f"{name}-seed{seed}", weights_sha256=sha)
    return VisionOrganism(name, model, spec, seed, accuracy(module, test), test, sha, seconds)


def _build(spec: OrganismSpec) -> nn.Module:
    return SmallCNN() if spec.arch == "cnn" else SmallViT(size=spec.size)


def _data(spec: OrganismSpec, n: int, seed: int) -> ImageSet:
    make = shapes if spec.data == "shapes" else signal_blocks
    return make(n, size=spec.size, seed=seed)


# --- training ----------------------------------------------------------------------------------------------------


def train(module: nn.Module, spec: OrganismSpec, seed: int) -> None:
    """Train ``module`` in place: AdamW, warm-up then cosine schedule, fresh seeded images every epoch."""
    module.train().requires_grad_(True)
    opt = torch.optim.AdamW(module.parameters(), lr=spec.lr, weight_decay=1e-4)
    steps = spec.epochs * (spec.per_epoch // spec.batch)
    warmup = spec.per_epoch // spec.batch  # one epoch of linear warm-up, then cosine decay

    def schedule(i: int) -> float:
        return min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * i / steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    for epoch in range(spec.epochs):
        data = _data(spec, spec.per_epoch, seed=seed * 1000 + epoch)
        order = torch.randperm(len(data))
        for i in range(0, len(data) - spec.batch + 1, spec.batch):
            idx = order[i : i + spec.batch]
            step(module, opt, data.images[idx], data.labels[idx])
            sched.step()
    module.eval()


def step(module: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
    """One optimiser step of cross-entropy; returns the loss."""
    loss = F.cross_entropy(module(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


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


def state_sha256(module: nn.Module) -> str:
    """sha256 over a module's state (names and float32/int bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).numpy().tobytes())
    return h.hexdigest()
