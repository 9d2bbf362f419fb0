"""Sites: one vocabulary for the places inside a model that can be read and written.

A site is a tensor the model already computes — a module's input or output — seen through a *view* (for example
the input of the attention output projection, split by head, is ``head.L.z``). Views are always torch views of
the raw tensor, so writing into a view of a clone writes the right entries of the module's tensor.

``resid_mid.L`` is the one site that no module produces: it is ``resid_pre.L + attn_out.L``. It is read by adding
the layer's residual input to the attention output, and written by changing the attention output, so the model's
own addition produces the requested value.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ._families import Family


class View(Protocol):
    """Maps a module's raw tensor to the site's tensor, always as a torch view (never a copy)."""

    def __call__(self, raw: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class Whole:
    """The raw tensor itself."""

    def __call__(self, raw: Tensor) -> Tensor:
        return raw


@dataclass(frozen=True)
class Heads:
    """A slice of the last axis, split into heads: ``raw[..., start : start + n*d]`` -> ``[..., n, d]``."""

    start: int
    n: int
    d: int

    def __call__(self, raw: Tensor) -> Tensor:
        return raw[..., self.start : self.start + self.n * self.d].unflatten(-1, (self.n, self.d))


@dataclass(frozen=True)
class Interleaved:
    """One part of a per-head fused projection laid out as ``[head, part, d_head]`` (GPT-NeoX's qkv)."""

    part: int
    n: int
    d: int
    parts: int = 3

    def __call__(self, raw: Tensor) -> Tensor:
        per_head = raw.unflatten(-1, (self.n, self.parts * self.d))
        return per_head[..., self.part * self.d : (self.part + 1) * self.d]


@dataclass(frozen=True)
class Site:
    """A named place in a model: which module, its input or output, and how to view it."""

    name: str
    module: str
    """Module path in the wrapped model ("" is the root)."""
    io: Literal["in", "out"]
    """Read the module's first input (forward pre-hook) or its output (forward hook)."""
    index: int = 0
    """Which element when the module returns a tuple."""
    view: View = Whole()
    axes: tuple[str, ...] = ()
    """Axis names, e.g. ``("batch", "pos", "head", "d_head")``; empty when only known at run time."""
    sizes: tuple[int | None, ...] = ()
    """Known sizes per axis (None for batch and pos)."""
    meaning: str = ""
    order: float = 0.0
    """Position in the forward pass, for stopping early after the deepest requested site."""
    writable: bool = True
    residual_from: str | None = None
    """For ``resid_mid``: module whose input is the residual stream that this site's tensor is added to."""
    tokens_from: str | None = None
    """The module's tensor has batch and positions flattened into one axis (OPT's MLP): this module's input gives
    the ``[batch pos]`` shape the site unflattens it to."""
    modified_later: bool = False
    """The model adds to this tensor in place after the module returns (Falcon's parallel MLP output): readers
    get a copy taken when the module returns."""

    def describe(self) -> str:
        """Shape with axis names, e.g. ``[batch pos head=9 d_head=64]``."""
        if not self.axes:
            return "[module output]" if self.io == "out" else "[module input]"
        parts = [a if s is None else f"{a}={s}" for a, s in zip(self.axes, self.sizes, strict=True)]
        return "[" + " ".join(parts) + "]"


class SiteInfo(NamedTuple):
    """One row of a site listing."""

    name: str
    shape: str
    meaning: str


@dataclass(frozen=True)
class ModelConfig:
    """Dimensions of a transformer language model, read from its config and modules."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    parallel: bool
    """Attention and MLP read the same residual stream (GPT-J/NeoX style): there is no ``resid_mid``."""
    n_ctx: int | None = None
    """Positions the model was built for (``max_position_embeddings``); longer inputs are refused."""

    def kv_head_of(self, head: int) -> int:
        """Index of the key/value head that query head ``head`` reads (grouped-query attention)."""
        return head // (self.n_heads // self.n_kv_heads)

    def query_heads_of(self, kv_head: int) -> list[int]:
        """Query heads that share key/value head ``kv_head``."""
        group = self.n_heads // self.n_kv_heads
        return list(range(kv_head * group, (kv_head + 1) * group))


def lm_sites(family: Family, cfg: ModelConfig) -> dict[str, Site]:
    """All uniform sites of a transformer LM, in forward order."""
    f, c = family, cfg
    res = ("batch", "pos", "d_model")
    res_sizes = (None, None, c.d_model)
    sites = [Site("embed", f.embed, "out", axes=res, sizes=res_sizes, meaning="token embeddings", order=-1)]
    for layer in range(c.n_layers):
        sites += _layer_sites(f, c, layer)
    if f.final_norm is not None:
        sites.append(Site("final_norm", f.final_norm, "out", axes=res, sizes=res_sizes,
                          meaning="residual after the final norm", order=1e9))  # fmt: skip
    sites += [
        Site("logits", f.unembed, "out", axes=("batch", "pos", "d_vocab"), sizes=(None, None, c.d_vocab),
             meaning="unembedding output (before any soft-capping)", order=1e9 + 1),
    ]  # fmt: skip
    return {s.name: s for s in sites}


def _layer_sites(f: Family, c: ModelConfig, layer: int) -> list[Site]:
    block = f"{f.layers}.{layer}"
    res, res_sizes = ("batch", "pos", "d_model"), (None, None, c.d_model)
    head_axes = ("batch", "pos", "head", "d_head")
    q_sizes, kv_sizes = (None, None, c.n_heads, c.d_head), (None, None, c.n_kv_heads, c.d_head)
    o = layer * 10
    kv_note = f"; GQA: each of {c.n_kv_heads} KV heads serves {c.n_heads // c.n_kv_heads} query heads"
    kv_note = kv_note if c.n_kv_heads != c.n_heads else ""
    flat = block if f.mlp_flat else None  # the block's input has the [batch pos] shape its MLP flattened
    sites = [
        Site(f"resid_pre.{layer}", block, "in", axes=res, sizes=res_sizes, meaning="residual stream into the block",
             order=o + 1),
    ]  # fmt: skip
    if f.ln1 is not None:
        sites.append(Site(f"ln1.{layer}", f"{block}.{f.ln1}", "out", axes=res, sizes=res_sizes,
                          meaning="normalised residual stream that attention reads (the block's first norm)",
                          order=o + 1.5))  # fmt: skip
    qkv_views = _qkv_views(f, c)
    for part, (module, view) in zip("qkv", qkv_views, strict=True):
        sizes = q_sizes if part == "q" else kv_sizes
        what = {"q": "query (before rotary)", "k": "key (before rotary)" + kv_note, "v": "value" + kv_note}[part]
        sites.append(Site(f"head.{layer}.{part}", f"{block}.{module}", "out", view=view, axes=head_axes,
                          sizes=sizes, meaning=f"per-head {what}", order=o + 2,
                          modified_later=f.qkv_in_place))  # fmt: skip
    sites += [
        Site(f"head.{layer}.pattern", f"{block}.{f.attn}", "out", index=1, axes=("batch", "head", "qpos", "kpos"),
             sizes=(None, c.n_heads, None, None), meaning="attention probabilities (eager attention; read-only)",
             order=o + 3, writable=False),
        Site(f"head.{layer}.z", f"{block}.{f.o_proj}", "in", view=Heads(0, c.n_heads, c.d_head), axes=head_axes,
             sizes=q_sizes, meaning="per-head attention output before the output projection", order=o + 4),
        Site(f"attn_out.{layer}", f"{block}.{f.attn_out}", "out", axes=res, sizes=res_sizes,
             meaning="attention output added to the residual stream", order=o + 5),
    ]  # fmt: skip
    if not c.parallel:
        sites.append(Site(f"resid_mid.{layer}", f"{block}.{f.attn_out}", "out", axes=res, sizes=res_sizes,
                          meaning="residual stream between attention and MLP (resid_pre + attn_out)", order=o + 6,
                          residual_from=f"{block}.{f.ln1 or f.attn}"))  # fmt: skip
    if f.ln2 is not None and f.ln2 != f.ln1:  # a norm shared by both branches (GPT-J, Phi) is ln1 only
        sites.append(Site(f"ln2.{layer}", f"{block}.{f.ln2}", "out", axes=res, sizes=res_sizes, tokens_from=flat,
                          meaning="normalised residual stream that the MLP reads (the norm in front of the MLP)",
                          order=o + 6.5))  # fmt: skip
    if f.router is not None:
        sites.append(Site(f"mlp.{layer}.router", f"{block}.{f.router}", "out", axes=("token", "expert"),
                          sizes=(None, None), order=o + 6.8, writable=False,
                          meaning="router logits, one row per token (batch and pos flattened, as the router sees "
                                  "them; read-only: the router picks experts inside its own forward)"))  # fmt: skip
    if f.mlp_down is not None:
        sites.append(Site(f"mlp.{layer}.post", f"{block}.{f.mlp_down}", "in", axes=("batch", "pos", "d_mlp"),
                          tokens_from=flat, sizes=(None, None, c.d_mlp), order=o + 7,
                          meaning="MLP neuron activations (input of the down projection)"))  # fmt: skip
    sites += [
        Site(f"mlp_out.{layer}", f"{block}.{f.mlp_out}", "out", axes=res, sizes=res_sizes,
             meaning="MLP output added to the residual stream", order=o + 8, modified_later=f.mlp_out_in_place,
             tokens_from=flat),
        Site(f"resid_post.{layer}", block, "out", axes=res, sizes=res_sizes, meaning="residual stream out of the block",
             order=o + 9),
    ]  # fmt: skip
    return sites


def _qkv_views(f: Family, c: ModelConfig) -> list[tuple[str, View]]:
    nq, nkv, d = c.n_heads, c.n_kv_heads, c.d_head
    if f.qkv_layout == "separate":
        return [(f.qkv[0], Heads(0, nq, d)), (f.qkv[1], Heads(0, nkv, d)), (f.qkv[2], Heads(0, nkv, d))]
    if f.qkv_layout == "concat":
        return [
            (f.qkv[0], Heads(0, nq, d)),
            (f.qkv[0], Heads(nq * d, nkv, d)),
            (f.qkv[0], Heads((nq + nkv) * d, nkv, d)),
        ]
    return [(f.qkv[0], Interleaved(i, nq, d)) for i in range(3)]


def module_sites(root: torch.nn.Module, aliases: dict[str, str] | None = None) -> dict[str, Site]:
    """Sites of an arbitrary module: every submodule's output, named by its path, plus user aliases."""
    sites: dict[str, Site] = {}
    for order, (path, mod) in enumerate(root.named_modules()):
        if path:
            sites[path] = Site(path, path, "out", meaning=type(mod).__name__, order=order)
    for alias, path in (aliases or {}).items():
        if path not in sites:
            raise ValueError(f"site alias {alias!r} points at {path!r}, which is not a module path of this model")
        sites[alias] = Site(alias, path, "out", meaning=f"{path} ({sites[path].meaning})", order=sites[path].order)
    return sites


def resolve(sites: dict[str, Site], patterns: str | Sequence[str]) -> list[Site]:
    """Expand names and glob patterns (``resid_post.*``, ``head.3.*``) into sites, in forward order."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found: dict[str, Site] = {}
    for pattern in patterns:
        if pattern not in sites and (translated := site_of_hook(pattern)) in sites:
            pattern = translated  # a TransformerLens / SAELens hook name
        matches = [n for n in sites if fnmatch.fnmatchcase(n, pattern)] if _is_glob(pattern) else [pattern]
        if not matches or matches[0] not in sites:
            raise UnknownSiteError(unknown_site_message(sites, pattern))
        for name in matches:
            found[name] = sites[name]
    return sorted(found.values(), key=lambda s: s.order)


HOOK_NAMES: dict[str, str] = {
    "hook_embed": "embed",
    "blocks.{L}.hook_resid_pre": "resid_pre.{L}",
    "blocks.{L}.hook_attn_in": "resid_pre.{L}",
    "blocks.{L}.ln1.hook_normalized": "ln1.{L}",
    "blocks.{L}.attn.hook_q": "head.{L}.q",
    "blocks.{L}.attn.hook_k": "head.{L}.k",
    "blocks.{L}.attn.hook_v": "head.{L}.v",
    "blocks.{L}.attn.hook_pattern": "head.{L}.pattern",
    "blocks.{L}.attn.hook_z": "head.{L}.z",
    "blocks.{L}.hook_attn_out": "attn_out.{L}",
    "blocks.{L}.hook_resid_mid": "resid_mid.{L}",
    "blocks.{L}.hook_mlp_in": "resid_mid.{L}",
    "blocks.{L}.ln2.hook_normalized": "ln2.{L}",
    "blocks.{L}.mlp.hook_post": "mlp.{L}.post",
    "blocks.{L}.hook_mlp_out": "mlp_out.{L}",
    "blocks.{L}.hook_resid_post": "resid_post.{L}",
    "unembed.hook_out": "logits",
}
"""TransformerLens hook names (which SAELens dictionaries record as ``hook_name``) -> mechscope site names.

``resolve`` accepts either. Shapes agree except where TransformerLens splits heads differently: ``hook_q/k/v/z``
are ``[batch pos head d_head]`` in both; an SAE trained on flattened ``hook_z`` reads ``head.L.z`` flattened over
its last two axes. ``hook_attn_in``/``hook_mlp_in`` are the residual streams the block's norms read.
"""

_HOOK_PATTERNS = [
    (re.compile("^" + re.escape(hook).replace(re.escape("{L}"), r"(?P<L>\d+)") + "$"), site)
    for hook, site in HOOK_NAMES.items()
]


def site_of_hook(name: str) -> str | None:
    """The mechscope site for a TransformerLens/SAELens hook name (``blocks.6.hook_resid_post`` -> ``resid_post.6``)."""
    for pattern, site in _HOOK_PATTERNS:
        if m := pattern.match(name):
            return site.format(L=m["L"]) if "{L}" in site else site
    return None


def hook_of_site(site: str) -> str | None:
    """The TransformerLens hook name for a mechscope site (the first listed in ``HOOK_NAMES``), or None."""
    for hook, name in HOOK_NAMES.items():
        pattern = "^" + re.escape(name).replace(re.escape("{L}"), r"(?P<L>\d+)") + "$"
        if m := re.match(pattern, site):
            return hook.format(L=m["L"]) if "{L}" in hook else hook
    return None


class UnknownSiteError(KeyError):
    """A site name or pattern that matches nothing; the message names the closest valid sites."""

    def __str__(self) -> str:
        return str(self.args[0])


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def unknown_site_message(sites: dict[str, Site], pattern: str) -> str:
    """Error text naming the closest valid sites."""
    probe = pattern.replace("*", "0").replace("?", "0")
    close = difflib.get_close_matches(probe, list(sites), n=5, cutoff=0.4)
    hint = f" Closest: {', '.join(close)}." if close else ""
    if "expert" in pattern:
        hint += (
            " Mixture-of-experts models have a router site (mlp.L.router) but no per-expert sites: the experts"
            " are one fused parameter with no module per expert, and each sees only the tokens routed to it."
        )
    if pattern.startswith("resid_mid") and not any(n.startswith("resid_mid") for n in sites):
        hint += " This model's attention and MLP read the same residual stream (parallel blocks): no resid_mid."
    return f"unknown site {pattern!r}.{hint} List them with model.sites() or `mechscope sites MODEL`."
