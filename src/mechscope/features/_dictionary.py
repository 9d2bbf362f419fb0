"""Sparse dictionaries: an affine encoder to many sparse latents and a linear decoder back.

Every dictionary computes ``pre = (x - b_dec) @ W_enc + b_enc``, turns ``pre`` into sparse non-negative
``latents`` by its activation rule, and reconstructs ``latents @ W_dec + b_dec``. Only the rule and its
sparsity penalty differ between kinds:

- ``relu``: ReLU, penalised by L1 weighted by decoder row norms (Anthropic, "Circuits Updates, April 2024").
- ``topk``: keep the k largest pre-activations of each row (Gao et al. 2024, "Scaling and evaluating sparse
  autoencoders", §2.3); no penalty.
- ``batchtopk``: keep the ``k * batch`` largest over the whole batch while training; at inference a single
  threshold estimated during training replaces the batch (Bussmann et al. 2024, "BatchTopK Sparse
  Autoencoders").
- ``jumprelu``: ``pre * (pre > threshold)`` with a learned per-latent threshold, trained through
  straight-through estimators of the threshold's gradient, penalised by L0 (Rajamanoharan et al. 2024,
  "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse Autoencoders", §3-4).

Each kind is declared once in the kinds registry (``_kinds.KINDS``), on its class, with a config of its own
settings; ``build_dictionary`` and loading read the registry, so a kind declared elsewhere trains, saves and loads
like a built-in one.

Distributed training (``train`` under torchrun) sets ``process_group``: the training batch is then the union
of every rank's rows, BatchTopK's cutoff and threshold are taken over all of them, and the FVU and AuxK terms are
normalised by the global batch's variance and scaled so that their mean over ranks is the global term.

``topk`` and ``batchtopk`` train sparsely: ``forward`` decodes the kept latents with gathers over their indices
and sends the encoder's gradient only to them (``_sparse``), equal to the dense products up to float rounding;
``encode`` and ``decode`` stay dense.

A transcoder is the same module reading one site and predicting another (``d_out`` set, trained against a
different target; Dunefsky et al. 2024, "Transcoders Find Interpretable LLM Feature Circuits").
Weights use the SAELens orientation: ``W_enc [d_in d_sae]``, ``W_dec [d_sae d_out]``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

import einops
import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from mechscope.core import _distributed as distributed
from mechscope.features import _sparse as sparse_ops
from mechscope.features._kinds import (
    KINDS,
    BatchTopKConfig,
    JumpReLUConfig,
    ReLUConfig,
    TopKConfig,
    kind_settings,
)
from mechscope.features._sparse import SparseLatents

if TYPE_CHECKING:
    from mechscope.features._train import TrainConfig

Kind = str
"""A dictionary kind: a name declared in ``KINDS`` (``relu``, ``topk``, ``batchtopk``, ``jumprelu`` built in)."""
BDecInit = Literal["zeros", "mean", "geometric_median"]


@dataclass(frozen=True)
class DictionaryConfig:
    """Shape and activation rule of a sparse dictionary (autoencoder or transcoder)."""

    kind: Kind
    """Activation rule: a kind declared in ``KINDS`` (``relu``, ``topk``, ``batchtopk``, ``jumprelu``; see the module
    docstring)."""
    d_in: int
    """Width of the input activations."""
    d_sae: int
    """Number of latents (dictionary size)."""
    d_out: int | None = None
    """Width of the target for a transcoder (reads one site, predicts another); None for an autoencoder."""
    k: int = TopKConfig.k
    """Active latents per row (``topk``), or on average per row over a training batch (``batchtopk``)."""
    apply_b_dec_to_input: bool = True
    """Subtract ``b_dec`` from the input before encoding. Must be False for transcoders (``b_dec`` lives in
    the target space) and is False in some released SAEs (Gemma Scope)."""
    jumprelu_init_threshold: float = JumpReLUConfig.jumprelu_init_threshold
    """Initial JumpReLU threshold (Rajamanoharan et al. 2024 use 0.001 on inputs scaled to E|x|² = d_in)."""
    jumprelu_bandwidth: float = JumpReLUConfig.jumprelu_bandwidth
    """Width ε of the rectangle kernel in JumpReLU's straight-through estimators (pre-activation units)."""
    batchtopk_threshold_lr: float = BatchTopKConfig.batchtopk_threshold_lr
    """Step of the moving average that estimates the BatchTopK inference threshold from the smallest
    positive latent of each training batch."""
    skip_connection: bool = False
    """Add a learned linear map of the input to the output, ``x @ W_skip`` (sparsify's ``skip_connection``; a
    transcoder with one is a skip transcoder, Paulo et al. 2025)."""
    site: str | None = None
    """Site the dictionary reads (e.g. ``resid_post.6``); metadata only."""
    target_site: str | None = None
    """Site a transcoder predicts (e.g. ``mlp_out.6``); metadata only."""
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    """Settings of a kind that are not fields here (kinds declared outside mechscope), by name; saved with it."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {tuple(KINDS.names())}, got {self.kind!r}")
        if min(self.d_in, self.d_sae) < 1 or (self.d_out is not None and self.d_out < 1):
            raise ValueError(f"widths must be positive: d_in={self.d_in} d_sae={self.d_sae} d_out={self.d_out}")
        if "k" in {f.name for f in KINDS[self.kind].fields()} and not 1 <= self.k <= self.d_sae:
            raise ValueError(f"k must be in [1, d_sae={self.d_sae}], got {self.k}")
        if self.d_out is not None and self.apply_b_dec_to_input:
            raise ValueError("a transcoder's b_dec lives in the target space: set apply_b_dec_to_input=False")
        if self.jumprelu_init_threshold <= 0 or self.jumprelu_bandwidth <= 0:
            raise ValueError("jumprelu_init_threshold and jumprelu_bandwidth must be positive")
        if not 0 < self.batchtopk_threshold_lr <= 1:
            raise ValueError(f"batchtopk_threshold_lr must be in (0, 1], got {self.batchtopk_threshold_lr}")

    @property
    def is_transcoder(self) -> bool:
        """True when the dictionary predicts a different target than its input."""
        return self.d_out is not None

    @property
    def width_out(self) -> int:
        """Width of the reconstruction: ``d_out`` for a transcoder, ``d_in`` for an autoencoder."""
        return self.d_in if self.d_out is None else self.d_out


class DictionaryOutput(NamedTuple):
    """One forward pass of a dictionary: reconstruction, latents and the loss terms (before coefficients)."""

    reconstruction: Float[Tensor, "batch d_out"]
    """Decoded latents: the prediction of the target (the input itself for an autoencoder)."""
    latents: Float[Tensor, "batch d_sae"]
    """Sparse non-negative latent activations: dense for ``relu`` and ``jumprelu``, a sparse COO tensor (no
    gradient; ``.to_dense()``) for ``topk`` and ``batchtopk``, which never build the dense one in ``forward``."""
    pre_acts: Float[Tensor, "batch d_sae"]
    """Encoder outputs before the activation rule."""
    fvu: Float[Tensor, ""]
    """Fraction of variance unexplained: sum of squared errors over the batch's total variance."""
    sparsity: Float[Tensor, ""]
    """The kind's sparsity penalty, averaged over rows: decoder-norm-weighted L1 (relu), straight-through
    L0 (jumprelu), zero (topk, batchtopk)."""
    auxk: Float[Tensor, ""]
    """AuxK loss: the top dead latents reconstructing the residual, normalised like ``fvu`` (zero when no
    latent is dead; Gao et al. 2024, §2.4 and Appendix A)."""
    sparse: SparseLatents | None = None
    """The kept latents as a coordinate list (``topk``, ``batchtopk``), None for the dense kinds. For those two
    kinds the gradient flows through ``sparse.values``; ``latents`` and ``pre_acts`` carry none."""


class _Encoded(NamedTuple):
    """Encoder state the sparse gathers differentiate through (``Dictionary.forward``)."""

    x: Tensor
    centred: Tensor  # x - b_dec (or x), without gradient
    pre: Tensor  # [batch d_sae]; with gradient for the dense kinds only


class Dictionary(nn.Module, ABC):
    """Shared parameters, encode/decode, losses and decoder constraints of every sparse dictionary."""

    process_group: distributed.Group
    """The processes a training batch is spread over; set by ``train`` under torchrun, None otherwise."""
    sparse_forward: ClassVar[bool] = False
    """``forward`` decodes from the coordinates ``select`` gives, through gathers (``_sparse``)."""

    def __init__(self, cfg: DictionaryConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.process_group = None
        gen = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(cfg.d_sae, cfg.width_out, generator=gen)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        if cfg.is_transcoder:
            w_enc = torch.randn(cfg.d_in, cfg.d_sae, generator=gen)
            w_enc /= w_enc.norm(dim=0, keepdim=True)
        else:  # encoder initialised to the decoder's transpose (Gao et al. 2024, §2.4)
            w_enc = w_dec.T.clone()
        self.W_enc = nn.Parameter(w_enc.contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(w_dec)
        self.b_dec = nn.Parameter(torch.zeros(cfg.width_out))
        if cfg.skip_connection:
            self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.width_out))

    @property
    def settings(self) -> Any:
        """The kind's config (its declared settings), read from ``cfg``."""
        return kind_settings(self.cfg)

    def penalty_coeff(self, config: TrainConfig) -> float:
        """Weight of ``sparsity_penalty`` in the training loss (0 unless overridden)."""
        return 0.0

    @abstractmethod
    def activate(self, pre_acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        """Apply the activation rule to pre-activations."""

    def sparsity_penalty(
        self, pre_acts: Float[Tensor, "batch d_sae"], latents: Float[Tensor, "batch d_sae"]
    ) -> Float[Tensor, ""]:
        """Return the kind's sparsity penalty, averaged over rows (zero unless overridden)."""
        return pre_acts.new_zeros(())

    @torch.no_grad()
    def observe(self, out: DictionaryOutput) -> None:
        """Update running statistics after a training step (no-op unless overridden)."""

    def pre_activations(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        """Compute the encoder output before the activation rule."""
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return einops.einsum(x, self.W_enc, "batch d_in, d_in d_sae -> batch d_sae") + self.b_enc

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        """Sparse latent activations of ``x``."""
        return self.activate(self.pre_activations(x))

    def decode(self, latents: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_out"]:
        """Reconstruction (or, for a transcoder, prediction of the target) from latents."""
        return einops.einsum(latents, self.W_dec, "batch d_sae, d_sae d_out -> batch d_out") + self.b_dec

    def skip(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"] | float:
        """The skip connection's share of the output (0 without one)."""
        if not self.cfg.skip_connection:
            return 0.0
        return einops.einsum(x, self.W_skip, "batch d_in, d_in d_out -> batch d_out")

    def reconstruct(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        """The dictionary's output for ``x``: decoded latents plus the skip connection, if any."""
        return self.decode(self.encode(x)) + self.skip(x)

    def forward(
        self,
        x: Float[Tensor, "batch d_in"],
        target: Float[Tensor, "batch d_out"] | None = None,
        *,
        dead_mask: Bool[Tensor, " d_sae"] | None = None,
        k_aux: int | None = None,
        pre_out: Float[Tensor, "batch d_sae"] | None = None,
    ) -> DictionaryOutput:
        """Encode, decode and compute the loss terms against ``target`` (``x`` itself for an autoencoder).

        ``dead_mask`` marks latents that have not fired for a while; when any is set the AuxK term uses the
        ``k_aux`` (default ``d_out // 2``, as in sparsify) largest dead pre-activations. ``pre_out``, for the
        sparse kinds only, is a ``[batch d_sae]`` buffer the pre-activations are written into (and returned
        as ``pre_acts``) instead of a fresh tensor: a training loop reusing one saves the page faults of a
        fresh 150 MB allocation every step (B = 4096, d_sae = 9216).
        """
        if target is None:
            if self.cfg.is_transcoder:
                raise ValueError("a transcoder predicts another site: pass its activations as target")
            target = x
        enc, sparse = self._encode_for_loss(x, pre_out)
        if sparse is None:
            latents = self.activate(enc.pre)
            recon = self.decode(latents)
        else:
            latents = sparse.to_sparse_coo(self.cfg.d_sae)
            recon = sparse_ops.decode(sparse.rows, sparse.cols, sparse.offsets, sparse.values, self.W_dec) + self.b_dec
        if self.cfg.skip_connection:
            recon = recon + self.skip(x)
        residual = target - recon
        total_var = self._total_variance(target)
        fvu = residual.pow(2).sum() / total_var
        auxk = self._auxk(enc, residual, dead_mask, k_aux, total_var)
        penalty = self.sparsity_penalty(enc.pre, latents)
        return DictionaryOutput(recon, latents, enc.pre, fvu, penalty, auxk, sparse)

    def select(self, pre_acts: Float[Tensor, "batch d_sae"]) -> tuple[Tensor, Tensor, Tensor]:
        """Row-major ``(rows, cols, offsets)`` of the latents the rule keeps (kinds with ``sparse_forward``).

        ``activate(pre_acts)`` must equal ``pre_acts.relu()`` at those coordinates and zero elsewhere.
        """
        raise NotImplementedError(f"{type(self).__name__} trains densely (sparse_forward is False)")

    def _encode_for_loss(
        self, x: Float[Tensor, "batch d_in"], pre_out: Tensor | None = None
    ) -> tuple[_Encoded, SparseLatents | None]:
        """Pre-activations, and for a sparse kind the kept latents, differentiable through their gathers only."""
        if not self.sparse_forward:
            if pre_out is not None:
                raise ValueError(f"{type(self).__name__} trains densely: pre_out is for the sparse kinds")
            return _Encoded(x, x, self.pre_activations(x)), None
        with torch.no_grad():
            centred = x - self.b_dec if self.cfg.apply_b_dec_to_input else x
            pre = torch.addmm(self.b_enc, centred, self.W_enc, out=pre_out)  # [batch d_sae]; bias fused in
            coords = self.select(pre)
        enc = _Encoded(x, centred, pre)
        return enc, SparseLatents(coords[0], coords[1], self._gather(enc, *coords).relu(), coords[2])

    def _gather(self, enc: _Encoded, rows: Tensor, cols: Tensor, offsets: Tensor) -> Float[Tensor, " nnz"]:
        """``enc.pre[rows, cols]``, with the gradient of the encoder (sparse when ``pre`` carries none)."""
        if not self.sparse_forward:
            return enc.pre[rows, cols]
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        return sparse_ops.selected_pre(
            enc.pre, enc.centred, rows, cols, offsets, x=enc.x, w_enc=self.W_enc, b_enc=self.b_enc, b_dec=b_dec
        )

    def _total_variance(self, target: Float[Tensor, "batch d_out"]) -> Float[Tensor, ""]:
        """Summed squared deviation of the target from its mean: the FVU and AuxK denominator.

        Under a process group it is the global batch's, divided by the world size, so that each rank's terms
        average (over ranks) to the global batch's.
        """
        tiny = torch.finfo(target.dtype).tiny
        group = self.process_group
        if group is None:
            return (target - target.mean(0)).pow(2).sum().clamp_min(tiny)
        world, t = distributed.world_size(group), target.detach()
        mean = distributed.all_reduce(t.sum(0), group) / (len(t) * world)
        total = distributed.all_reduce((t - mean).pow(2).sum(), group)
        return (total / world).clamp_min(tiny)

    def _auxk(
        self,
        enc: _Encoded,
        residual: Float[Tensor, "batch d_out"],
        dead_mask: Bool[Tensor, " d_sae"] | None,
        k_aux: int | None,
        total_var: Float[Tensor, ""],
    ) -> Float[Tensor, ""]:
        if dead_mask is None or not dead_mask.any():
            return enc.pre.new_zeros(())
        dead = dead_mask.nonzero().squeeze(1)  # [n_dead]
        k_aux = self.cfg.width_out // 2 if k_aux is None else k_aux
        scale = min(len(dead) / k_aux, 1.0)  # fewer dead latents than k_aux: shrink the term (sparsify)
        with torch.no_grad():
            top = enc.pre[:, dead].topk(min(k_aux, len(dead)), dim=-1).indices  # [batch k_aux] into dead
        rows, cols, offsets = sparse_ops.from_topk(dead[top])
        values = self._gather(enc, rows, cols, offsets).relu()
        # Gao et al. 2024, Appendix A: e_hat = W_dec z, without the decoder bias, fits the detached error.
        e_hat = sparse_ops.decode(rows, cols, offsets, values, self.W_dec)
        return scale * (e_hat - residual.detach()).pow(2).sum() / total_var

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder row to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).eps))

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Remove from ``W_dec.grad`` its component along each (unit) decoder row.

        A step then moves along the sphere the rows are renormalised onto (Bricken et al. 2023, "Towards
        Monosemanticity").
        """
        if self.W_dec.grad is None:
            return
        # one pass each (einsum's batched matrix product and broadcast product took twice as long on CPU)
        parallel = torch.linalg.vecdot(self.W_dec.grad, self.W_dec, dim=1)  # [d_sae]
        self.W_dec.grad.addcmul_(parallel.unsqueeze(1), self.W_dec, value=-1)

    @torch.no_grad()
    def init_b_dec_(self, data: Float[Tensor, "n d_out"], method: BDecInit) -> None:
        """Set ``b_dec`` from a sample of the target: zeros, its mean or its geometric median."""
        inits = {
            "zeros": lambda d: torch.zeros(d.shape[1], dtype=d.dtype),
            "mean": lambda d: d.mean(0),
            "geometric_median": geometric_median,
        }
        if method not in inits:
            raise ValueError(f"b_dec init must be one of {sorted(inits)}, got {method!r}")
        self.b_dec.copy_(inits[method](data.to(self.b_dec.dtype)))


@KINDS.declare("relu", config=ReLUConfig)
class ReLUDictionary(Dictionary):
    """ReLU latents with an L1 penalty weighted by decoder norms.

    Weighting by each latent's decoder norm means shrinking a decoder row cannot buy a smaller penalty
    (Anthropic, "Circuits Updates, April 2024").
    """

    def activate(self, pre_acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        return pre_acts.relu()

    def penalty_coeff(self, config: TrainConfig) -> float:
        return config.l1_coeff

    def sparsity_penalty(
        self, pre_acts: Float[Tensor, "batch d_sae"], latents: Float[Tensor, "batch d_sae"]
    ) -> Float[Tensor, ""]:
        weighted = einops.einsum(latents, self.W_dec.norm(dim=1), "batch d_sae, d_sae -> batch")
        return weighted.mean()


@KINDS.declare("topk", config=TopKConfig)
class TopKDictionary(Dictionary):
    """Exactly the k largest pre-activations of each row survive (then a ReLU); Gao et al. 2024, §2.3."""

    sparse_forward = True

    def activate(self, pre_acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        top = pre_acts.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre_acts).scatter(-1, top.indices, top.values.relu())

    @torch.no_grad()
    def select(self, pre_acts: Float[Tensor, "batch d_sae"]) -> tuple[Tensor, Tensor, Tensor]:
        return sparse_ops.from_topk(sparse_ops.topk_indices(pre_acts, self.cfg.k))


@KINDS.declare("batchtopk", config=BatchTopKConfig)
class BatchTopKDictionary(Dictionary):
    """The ``k * batch`` largest activations of the whole batch survive while training.

    In eval mode one threshold, a moving average of each training batch's smallest kept activation, replaces
    the batch (Bussmann et al. 2024), so a row's latents no longer depend on the other rows. Under a process
    group the batch is every rank's rows together.
    """

    threshold: Tensor
    sparse_forward = True

    def __init__(self, cfg: DictionaryConfig, *, seed: int = 0) -> None:
        super().__init__(cfg, seed=seed)
        self.register_buffer("threshold", torch.zeros(()))

    def activate(self, pre_acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        acts = pre_acts.relu()
        if not self.training:
            return acts * (acts > self.threshold)
        return acts * (acts >= self._batch_cutoff(acts))

    @torch.no_grad()
    def select(self, pre_acts: Float[Tensor, "batch d_sae"]) -> tuple[Tensor, Tensor, Tensor]:
        acts = pre_acts.relu()
        cutoff = self._batch_cutoff(acts) if self.training else self.threshold
        # positive only: where the cutoff is 0 the dense rule keeps zeros, which decode to nothing
        return sparse_ops.from_mask((acts >= cutoff if self.training else acts > cutoff) & (acts > 0))

    @torch.no_grad()
    def _batch_cutoff(self, acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, ""]:
        """The ``k * batch``-th largest activation of the (global) batch: the smallest one kept."""
        group = self.process_group
        n_keep = self.cfg.k * acts.shape[0] * distributed.world_size(group)
        flat = einops.rearrange(acts, "batch d_sae -> (batch d_sae)")
        # Each rank's n_keep largest hold the global n_keep largest; k <= d_sae makes them enough to choose from.
        candidates = flat.topk(min(n_keep, flat.numel()), sorted=False).values
        if group is None:
            return candidates.min()
        return distributed.all_gather(candidates, group).topk(n_keep, sorted=False).values.min()

    @torch.no_grad()
    def observe(self, out: DictionaryOutput) -> None:
        kept = out.latents if out.sparse is None else out.sparse.values.detach()
        positive = kept[kept > 0]
        smallest = positive.min() if positive.numel() else out.latents.new_tensor(torch.inf)
        distributed.all_reduce(smallest, self.process_group, "min")
        if not torch.isfinite(smallest):
            return
        if self.threshold == 0:  # first observation: start the average at it rather than at zero
            self.threshold.copy_(smallest)
        else:
            self.threshold.lerp_(smallest, self.cfg.batchtopk_threshold_lr)


def _rectangle(z: Tensor) -> Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class _JumpReLU(torch.autograd.Function):
    """``z * H(z - θ)``, with straight-through gradients.

    Gradient to z is H(z - θ); to θ the pseudo-derivative -(θ/ε) K((z-θ)/ε) (Rajamanoharan et al. 2024, §3).
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        z, theta = ctx.saved_tensors
        grad_z = (z > theta).to(z.dtype) * grad
        grad_theta = (-(theta / ctx.eps) * _rectangle((z - theta) / ctx.eps) * grad).sum(0)
        return grad_z, grad_theta, None


class _Step(torch.autograd.Function):
    """``H(z - θ)``; no gradient to z, to θ the pseudo-derivative -(1/ε) K((z-θ)/ε) (same §3)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        z, theta = ctx.saved_tensors
        grad_theta = (-(1.0 / ctx.eps) * _rectangle((z - theta) / ctx.eps) * grad).sum(0)
        return None, grad_theta, None


@KINDS.declare("jumprelu", config=JumpReLUConfig)
class JumpReLUDictionary(Dictionary):
    """Latents ``pre * (pre > θ)`` with a learned per-latent threshold and an L0 penalty.

    θ = exp(log_threshold) stays positive; threshold and L0 are trained through straight-through estimators
    (Rajamanoharan et al. 2024, §3-4).
    """

    def __init__(self, cfg: DictionaryConfig, *, seed: int = 0) -> None:
        super().__init__(cfg, seed=seed)
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), math.log(cfg.jumprelu_init_threshold)))

    @property
    def threshold(self) -> Float[Tensor, " d_sae"]:
        """Per-latent threshold θ (always positive)."""
        return self.log_threshold.exp()

    def activate(self, pre_acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        return _JumpReLU.apply(pre_acts, self.threshold, self.cfg.jumprelu_bandwidth)

    def penalty_coeff(self, config: TrainConfig) -> float:
        return config.l0_coeff

    def sparsity_penalty(
        self, pre_acts: Float[Tensor, "batch d_sae"], latents: Float[Tensor, "batch d_sae"]
    ) -> Float[Tensor, ""]:
        fired = _Step.apply(pre_acts, self.threshold, self.cfg.jumprelu_bandwidth)
        return fired.sum(-1).mean()


def check_widths(cfg: DictionaryConfig, x: Tensor, target: Tensor | None = None) -> None:
    """Raise ``ValueError`` naming both widths unless ``x`` (and ``target``) rows fit the dictionary."""
    where = f" (site {cfg.site!r})" if cfg.site else ""
    if x.shape[-1] != cfg.d_in:
        raise ValueError(f"the dictionary reads d_in={cfg.d_in}{where} but the input rows are {x.shape[-1]} wide")
    if target is not None and target.shape[-1] != cfg.width_out:
        to = f" (site {cfg.target_site!r})" if cfg.target_site else ""
        raise ValueError(f"the dictionary predicts {cfg.width_out}{to} but the target rows are {target.shape[-1]} wide")


def build_dictionary(cfg: DictionaryConfig, *, seed: int = 0) -> Dictionary:
    """Build a fresh dictionary of ``cfg.kind`` (unit-norm decoder rows; deterministic in ``seed``)."""
    return KINDS[cfg.kind].fn(cfg, seed=seed)


def geometric_median(points: Float[Tensor, "n d"], *, max_iter: int = 200, tol: float = 1e-7) -> Float[Tensor, " d"]:
    """Find the point minimising the summed Euclidean distance to ``points``.

    Weiszfeld's iteration (Weiszfeld 1937), started from the mean; initialises ``b_dec`` robustly to outliers.
    """
    median = points.mean(0)
    for _ in range(max_iter):
        dist = (points - median).norm(dim=1).clamp_min(1e-12)
        weights = 1.0 / dist
        new = einops.einsum(weights, points, "n, n d -> d") / weights.sum()
        moved = (new - median).norm()
        median = new
        if moved <= tol * max(float(median.norm()), 1.0):
            break
    return median
