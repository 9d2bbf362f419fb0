"""Nodes: the cells of a patching grid, and how a grid's axes map to sites, heads and positions.

A *kind* is a site name with its layer taken out (``resid_pre``, ``attn_out``, ``head.z``, ``head.k``...). A
node is one kind at one layer, optionally narrowed to one head (key/value heads for ``head.k`` / ``head.v``,
which grouped-query attention shares between query heads) and to one position. Patching grids and attribution
grids of a kind list their nodes in the same row-major order, so the two can be compared cell by cell.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core._sites import ModelConfig

RESIDUAL_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
HEAD_KINDS = ("head.z", "head.q", "head.k", "head.v")
KINDS = RESIDUAL_KINDS + HEAD_KINDS
"""Node kinds that patching and attribution sweep over."""


@dataclass(frozen=True)
class Node:
    """One cell of a sweep: a site at one layer, optionally one head and one position (None = all)."""

    kind: str
    layer: int
    head: int | None = None
    """Query head (``head.z``, ``head.q``) or key/value head (``head.k``, ``head.v``)."""
    pos: int | None = None

    @property
    def site(self) -> str:
        """The site name, e.g. ``head.3.z`` or ``resid_pre.3``."""
        return site_name(self.kind, self.layer)

    def region(self) -> tuple[int | slice, ...]:
        """Index into a per-site tensor with axes ``[pos]`` (residual kinds) or ``[pos head]`` (head kinds)."""
        pos = slice(None) if self.pos is None else self.pos
        if self.kind in HEAD_KINDS:
            return (pos, slice(None) if self.head is None else self.head)
        return (pos,)

    def label(self) -> str:
        """Short readable name, e.g. ``head.3.z[h5, p7]``."""
        parts = [f"h{self.head}" if self.head is not None else "", f"p{self.pos}" if self.pos is not None else ""]
        inner = ", ".join(p for p in parts if p)
        return f"{self.site}[{inner}]" if inner else self.site


def site_name(kind: str, layer: int) -> str:
    """Site name of ``kind`` at ``layer``: ``head.z`` -> ``head.{layer}.z``, ``attn_out`` -> ``attn_out.{layer}``."""
    check_kind(kind)
    if kind in HEAD_KINDS:
        return f"head.{layer}.{kind.removeprefix('head.')}"
    return f"{kind}.{layer}"


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown node kind {kind!r}; choose from {', '.join(KINDS)}")


@dataclass(frozen=True)
class Layout:
    """The axes, shape and tick labels of one kind's grid, and its nodes in row-major order."""

    kind: str
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    labels: tuple[tuple[str, ...], ...]

    def nodes(self) -> list[Node]:
        """Nodes in row-major order of the grid."""
        return nodes_of(self.kind, self.axes, self.shape)


def layout(kind: str, cfg: ModelConfig, pos_labels: list[str], by_pos: bool | None = None) -> Layout:
    """Grid layout for ``kind``: ``[layer pos]`` for residual kinds, ``[layer head]`` for head kinds.

    ``by_pos`` overrides the default (True for residual kinds, False for head kinds): residual kinds without
    positions give ``[layer]`` (every position patched at once); head kinds with positions ``[layer head pos]``.
    """
    check_kind(kind)
    is_head = kind in HEAD_KINDS
    by_pos = (not is_head) if by_pos is None else by_pos
    axes: tuple[str, ...] = ("layer",)
    shape: tuple[int, ...] = (cfg.n_layers,)
    labels: tuple[tuple[str, ...], ...] = (tuple(str(i) for i in range(cfg.n_layers)),)
    if is_head:
        kv = kind in ("head.k", "head.v")
        n = cfg.n_kv_heads if kv else cfg.n_heads
        axes, shape = (*axes, "kv_head" if kv else "head"), (*shape, n)
        labels = (*labels, tuple(f"{'KV' if kv else 'H'}{i}" for i in range(n)))
    if by_pos:
        axes, shape, labels = (*axes, "pos"), (*shape, len(pos_labels)), (*labels, tuple(pos_labels))
    return Layout(kind, axes, shape, labels)


def nodes_of(kind: str, axes: tuple[str, ...], shape: tuple[int, ...]) -> list[Node]:
    """Nodes of a grid with these axes and shape, in row-major order."""
    size = dict(zip(axes, shape, strict=True))
    heads = range(size.get("head", size.get("kv_head", 0))) if kind in HEAD_KINDS else [None]
    positions = range(size["pos"]) if "pos" in size else [None]
    return [Node(kind, layer, h, p) for layer in range(size["layer"]) for h in heads for p in positions]
