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

from mechscope.features import Dictionary


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


@contextmanager
def _eval(module: torch.nn.Module) -> Iterator[None]:
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)
