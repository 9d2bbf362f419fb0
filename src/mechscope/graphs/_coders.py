"""What the replacement model needs from its transcoders, for per-layer and cross-layer transcoders alike.

A layer's features are encoded from that layer's MLP input; a feature of layer ``src`` writes into the MLP outputs of
the layers ``writes_to(src)``: ``src`` alone for a per-layer transcoder, ``src .. n_layers-1`` for a cross-layer one
(Ameisen et al. 2025, "Circuit Tracing", §2.1). ``Coders`` is that interface; ``PerLayer`` implements it for one
``features.Dictionary`` per layer, ``CrossLayerTranscoder`` (``_clt``) for a cross-layer transcoder.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.features import Dictionary, DictionaryConfig, build_dictionary


class Coders(Protocol):
    """Encoders per layer and decoders from each layer to the MLP outputs it writes."""

    @property
    def n_layers(self) -> int:
        """Layers (one encoder each)."""
        ...

    def encode(self, layer: int, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_sae"]:
        """Feature activations of ``layer`` for MLP inputs ``x``."""
        ...

    def pre_activations(self, layer: int, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_sae"]:
        """Encoder outputs of ``layer`` before the activation rule (what a feature's row measures)."""
        ...

    def encoder_column(self, layer: int, feature: int) -> Float[Tensor, " d_model"]:
        """The linear part of ``feature``'s pre-activation: its encoder column."""
        ...

    def writes_to(self, layer: int) -> range:
        """The layers whose MLP output ``layer``'s features write."""
        ...

    def decoder_rows(self, src: int, dst: int, features: Int[Tensor, " n"]) -> Float[Tensor, "n d_model"]:
        """What one unit of each of ``src``'s ``features`` writes into ``mlp_out.dst``."""
        ...

    def output(
        self, dst: int, latents: Sequence[Tensor | None], x: Float[Tensor, "n d_model"]
    ) -> Float[Tensor, "n d_model"]:
        """The prediction of ``mlp_out.dst`` from the latents of layers ``0 .. dst`` and ``dst``'s input ``x``.

        ``latents[i]`` may be None for a layer ``i`` that does not write ``dst``.
        """
        ...

    def skip(self, dst: int, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_model"] | None:
        """A linear skip from ``dst``'s input to its output, part of the linear system (None without one)."""
        ...


class PerLayer:
    """One transcoder (``features.Dictionary`` with ``d_out``) per layer, each writing its own layer's MLP output."""

    def __init__(self, transcoders: Sequence[Dictionary]) -> None:
        self.transcoders = tuple(transcoders)

    @property
    def n_layers(self) -> int:
        """Layers (one transcoder each)."""
        return len(self.transcoders)

    def encode(self, layer: int, x: Tensor) -> Tensor:
        tc = self.transcoders[layer]
        with _eval(tc):
            return tc.encode(x.to(tc.W_enc))

    def pre_activations(self, layer: int, x: Tensor) -> Tensor:
        tc = self.transcoders[layer]
        return tc.pre_activations(x.to(tc.W_enc))

    def encoder_column(self, layer: int, feature: int) -> Tensor:
        return self.transcoders[layer].W_enc.detach()[:, feature]

    def writes_to(self, layer: int) -> range:
        return range(layer, layer + 1)

    def decoder_rows(self, src: int, dst: int, features: Tensor) -> Tensor:
        assert src == dst, "a per-layer transcoder writes its own layer only"
        w = self.transcoders[src].W_dec.detach()
        return w[features.to(w.device)]

    def output(self, dst: int, latents: Sequence[Tensor | None], x: Tensor) -> Tensor:
        tc, z = self.transcoders[dst], latents[dst]
        assert z is not None
        with _eval(tc):
            return tc.decode(z.to(tc.W_dec)) + tc.skip(x.to(tc.W_enc))

    def skip(self, dst: int, x: Tensor) -> Tensor | None:
        tc = self.transcoders[dst]
        return x.to(tc.W_skip) @ tc.W_skip.detach() if tc.cfg.skip_connection else None


def relu_mlp_transcoders(gpt2: torch.nn.Module) -> dict[int, Dictionary]:
    """Each ReLU MLP of a GPT-2 as a ReLU transcoder ``ln2.L -> mlp_out.L`` holding the MLP's own weights.

    ``relu(x W_in + b_in) W_out + b_out`` is a ReLU transcoder with ``W_enc = W_in``, ``W_dec = W_out``, so the
    replacement model built from these has no error at all: latent ``i`` of layer ``L`` is neuron ``i`` of
    ``mlp.L.post``. The oracle transcoders of ``organisms.planted_graph`` and the exactness tests use this.
    """
    blocks = getattr(getattr(gpt2, "transformer", gpt2), "h", None)
    act = getattr(getattr(gpt2, "config", None), "activation_function", None)
    if blocks is None or act != "relu":
        raise ValueError(
            f"relu_mlp_transcoders needs a GPT-2 module with ReLU MLPs (transformer.h[L].mlp.c_fc/c_proj and "
            f"config.activation_function='relu'); got {type(gpt2).__name__} with activation {act!r}. Train "
            f"transcoders for other models (features.train_dictionary with a target site)."
        )
    out: dict[int, Dictionary] = {}
    for layer, block in enumerate(blocks):
        fc, proj = block.mlp.c_fc, block.mlp.c_proj
        (d_in, d_mlp), d_out = fc.weight.shape, proj.weight.shape[1]
        cfg = DictionaryConfig("relu", d_in=d_in, d_sae=d_mlp, d_out=d_out, apply_b_dec_to_input=False,
                               site=f"ln2.{layer}", target_site=f"mlp_out.{layer}")  # fmt: skip
        tc = build_dictionary(cfg)
        with torch.no_grad():
            tc.W_enc.copy_(fc.weight)
            tc.b_enc.copy_(fc.bias)
            tc.W_dec.copy_(proj.weight)
            tc.b_dec.copy_(proj.bias)
        out[layer] = tc.eval().requires_grad_(False)
    return out


@contextmanager
def _eval(module: torch.nn.Module) -> Iterator[None]:
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)
