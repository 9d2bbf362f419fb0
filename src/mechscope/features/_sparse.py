"""Sparse latents in coordinate form, and the gathers that train TopK dictionaries without dense products.

A TopK row has k non-zero latents out of ``d_sae``, so a dense decode ``latents @ W_dec`` multiplies
``d_sae / k`` zeros for every useful product (288 at 16x expansion of 576 with k = 32), and so do the two
backward products through the encoder. Here the selected latents are a coordinate list (``SparseLatents``,
row-major), and

- the decode is ``embedding_bag(cols, W_dec, offsets, per_sample_weights=values, mode="sum")``: a weighted sum
  of k decoder rows per input row, whose backward is one dot product per entry (to ``values``, a sampled
  product) and again one ``embedding_bag``, over the entries grouped by latent (to ``W_dec``);
- the encoder still runs one dense product to find the top pre-activations, but the gradient reaches only the
  selected ones (``selected_pre``): ``W_enc``'s gradient is, per latent, the sum of the inputs that selected it
  weighted by their gradients, again one ``embedding_bag`` (over the entries sorted by latent), and ``b_dec``'s
  is one matrix-vector product.

This is the scheme of EleutherAI's sparsify (``fused_encoder``, ``decoder_impl``), with its weight gradient
computed by ``embedding_bag`` rather than by materialising a ``[batch k d_in]`` tensor for ``index_add_``.
Multiply-adds per step: ``B d_in d_sae`` (encoder forward) + ``5 B k d`` (decode, its two gradients, and the
encoder's weight and bias gradients), against ``3 B d_in d_sae`` more for the dense decode and backward.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from torch.autograd.function import once_differentiable


class SparseLatents(NamedTuple):
    """The selected (possibly zero-valued) latents of a batch as a row-major coordinate list."""

    rows: Int[Tensor, " nnz"]
    """Batch row of each entry, non-decreasing."""
    cols: Int[Tensor, " nnz"]
    """Latent index of each entry."""
    values: Float[Tensor, " nnz"]
    """Activation of each entry (non-negative; carries the gradient in training)."""
    offsets: Int[Tensor, " batch"]
    """Position in ``rows``/``cols``/``values`` where each batch row's entries start."""

    def to_sparse_coo(self, d_sae: int) -> Float[Tensor, "batch d_sae"]:
        """The latents as a ``[batch d_sae]`` sparse COO tensor (no gradient; ``.to_dense()`` for a dense one)."""
        indices = torch.stack([self.rows, self.cols])
        size = (len(self.offsets), d_sae)
        return torch.sparse_coo_tensor(indices, self.values.detach(), size, check_invariants=False)

    def fired(self, d_sae: int) -> Int[Tensor, " d_sae"]:
        """Rows in which each latent is non-zero."""
        return torch.bincount(self.cols[self.values.detach() > 0], minlength=d_sae)


def from_mask(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Row-major ``(rows, cols, offsets)`` of the true entries of a ``[batch d_sae]`` mask."""
    rows, cols = mask.nonzero(as_tuple=True)  # nonzero is row-major: rows come out sorted
    return rows, cols, _offsets(rows, mask.shape[0])


def from_topk(indices: Int[Tensor, "batch k"]) -> tuple[Tensor, Tensor, Tensor]:
    """Row-major ``(rows, cols, offsets)`` of k selected latents per row."""
    batch, k = indices.shape
    rows = torch.arange(batch, device=indices.device).repeat_interleave(k)
    return rows, indices.reshape(-1), torch.arange(0, batch * k, k, device=indices.device)


def topk_indices(x: Float[Tensor, "batch n"], k: int) -> Int[Tensor, "batch k"]:
    """Indices of the k largest entries of each row, in no order: ``x.topk(k, sorted=False).indices``.

    torch's CPU top-k copies each row into (value, index) pairs before selecting, ~95 ms for [4096 9216] on one
    thread. Cut into blocks of ``g``, a row's k largest entries all lie in the k blocks with the largest maxima
    (each of them is at least the k-th largest block maximum), so the top-k of the block maxima, then of the
    ``k g`` entries of those blocks (recursively), pick the same entries (up to ties) in ~60 ms.
    """
    batch, n = x.shape
    g = n // (8 * k)  # ~8k blocks: the cheapest split measured at k = 32
    if x.device.type != "cpu" or g < 4 or n % g:
        return x.topk(k, dim=-1, sorted=False).indices
    n_blocks = n // g
    best = x.view(batch, n_blocks, g).amax(-1).topk(k, dim=-1, sorted=False).indices  # [batch k] blocks
    first = torch.arange(0, batch * n_blocks, n_blocks, device=x.device).unsqueeze(1)  # row starts, in blocks
    candidates = x.reshape(batch * n_blocks, g).index_select(0, (best + first).view(-1)).view(batch, k * g)
    pick = topk_indices(candidates, k)  # [batch k] into candidates
    return best.gather(1, pick // g) * g + pick % g


def _offsets(sorted_ids: Tensor, n: int) -> Tensor:
    """Start of each of ``n`` groups in non-decreasing ``sorted_ids``."""
    counts = torch.bincount(sorted_ids, minlength=n)
    return counts.cumsum(0) - counts


def decode(
    rows: Int[Tensor, " nnz"],
    cols: Int[Tensor, " nnz"],
    offsets: Int[Tensor, " batch"],
    values: Float[Tensor, " nnz"],
    w_dec: Tensor,
) -> Float[Tensor, "batch d_out"]:
    """``sum_e values[e] * w_dec[cols[e]]`` per row: a decode touching only the selected decoder rows."""
    return _Decode.apply(rows, cols, offsets, values.to(w_dec.dtype), w_dec)


class _Decode(torch.autograd.Function):
    """``embedding_bag`` decode whose backward sums ``W_dec``'s gradient by latent and samples the values'.

    torch's own backward of a weighted ``embedding_bag`` takes ~65 ms at B = 4096, k = 32, d = 576 on one CPU
    thread; one ``embedding_bag`` over the entries grouped by latent (``W_dec``) and one sampled product
    (``values``) take ~30.
    """

    @staticmethod
    def forward(ctx: Any, rows: Tensor, cols: Tensor, offsets: Tensor, values: Tensor, w_dec: Tensor) -> Tensor:
        ctx.save_for_backward(rows, cols, offsets, values, w_dec)
        return F.embedding_bag(cols, w_dec, offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        rows, cols, offsets, values, w_dec = ctx.saved_tensors
        need_values, need_w = ctx.needs_input_grad[3:5]
        grad_values = _row_dots(grad, w_dec, rows, cols, offsets) if need_values else None
        grad_w = _sum_by_latent(rows, cols, values, grad, w_dec.shape[0]) if need_w else None
        return None, None, None, grad_values, grad_w


def _sum_by_latent(
    rows: Tensor, cols: Tensor, weights: Tensor, dense: Float[Tensor, "batch d"], d_sae: int
) -> Float[Tensor, "d_sae d"]:
    """Row ``j`` is ``sum over entries e with cols[e] = j of weights[e] * dense[rows[e]]``.

    The entries sorted by latent make one bag per latent, summed by ``embedding_bag`` straight into the result.
    """
    order = torch.argsort(cols, stable=True)
    return F.embedding_bag(
        rows[order], dense, _offsets(cols[order], d_sae), mode="sum", per_sample_weights=weights[order]
    )


def _row_dots(
    a: Float[Tensor, "batch d"], b: Float[Tensor, "d_sae d"], rows: Tensor, cols: Tensor, offsets: Tensor
) -> Float[Tensor, " nnz"]:
    """``a[rows[e]] . b[cols[e]]`` for every entry: ``a @ b.T`` sampled at the entries only."""
    if a.device.type != "cpu":  # gathers: simple, and GPUs have the memory for them
        return (a[rows] * b[cols]).sum(-1)
    # On CPU, gathering [nnz d] rows costs far more than the products; a sampled product over a CSR pattern
    # does the nnz dot products in place (column indices may be unsorted within a row: invariants unchecked).
    crow = torch.cat([offsets, offsets.new_tensor([len(cols)])])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        pattern = torch.sparse_csr_tensor(crow, cols, a.new_zeros(len(cols)), (len(a), len(b)), check_invariants=False)
    return torch.sparse.sampled_addmm(pattern, a, b.t(), beta=0.0).values()


def selected_pre(
    pre: Float[Tensor, "batch d_sae"],
    centred: Float[Tensor, "batch d_in"],
    rows: Int[Tensor, " nnz"],
    cols: Int[Tensor, " nnz"],
    offsets: Int[Tensor, " batch"],
    *,
    x: Float[Tensor, "batch d_in"],
    w_enc: Float[Tensor, "d_in d_sae"],
    b_enc: Float[Tensor, " d_sae"],
    b_dec: Float[Tensor, " d_in"] | None,
) -> Float[Tensor, " nnz"]:
    """Gather ``pre[rows, cols]`` of ``pre = (x - b_dec) @ w_enc + b_enc``, differentiable through those only.

    ``pre`` and ``centred = x - b_dec`` are given without gradient; the result is differentiable in ``x``,
    ``w_enc``, ``b_enc`` and ``b_dec`` (None when the input is not centred).
    """
    values = pre.detach().reshape(-1).index_select(0, rows * pre.shape[1] + cols)
    return _SelectedPre.apply(values, centred.detach(), rows, cols, offsets, x, w_enc, b_enc, b_dec)


class _SelectedPre(torch.autograd.Function):
    """Selected pre-activations as a function of the encoder; the backward scatters only their gradients."""

    @staticmethod
    def forward(
        ctx: Any,
        values: Tensor,
        centred: Tensor,
        rows: Tensor,
        cols: Tensor,
        offsets: Tensor,
        x: Tensor,
        w_enc: Tensor,
        b_enc: Tensor,
        b_dec: Tensor | None,
    ) -> Tensor:
        ctx.save_for_backward(centred, rows, cols, offsets, w_enc)
        return values.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        centred, rows, cols, offsets, w_enc = ctx.saved_tensors
        need_x, need_w, need_b, need_c = ctx.needs_input_grad[5:9]
        d_sae = w_enc.shape[1]
        grad = grad.to(w_enc.dtype)
        grad_b = torch.zeros(d_sae, dtype=w_enc.dtype, device=w_enc.device).index_add_(0, cols, grad)
        grad_w = grad_x = grad_c = None
        if need_w:  # dL/dW_enc[:, j] = sum over entries e selecting j of grad[e] * centred[rows[e]]
            grad_w = _sum_by_latent(rows, cols, grad, centred, d_sae).t().contiguous()  # [d_in d_sae]
        if need_x:  # dL/dx[b] = sum over row b's entries of grad[e] * W_enc[:, cols[e]]
            grad_x = F.embedding_bag(cols, w_enc.t().contiguous(), offsets, mode="sum", per_sample_weights=grad)
        if need_c:  # b_dec is subtracted from every row: minus the sum of all rows' gradients
            grad_c = -(w_enc @ grad_b)
        return None, None, None, None, None, grad_x, grad_w, grad_b if need_b else None, grad_c
