"""Cross-layer transcoders: each layer's features read its MLP input and write every MLP output from there on.

A cross-layer transcoder (Ameisen et al. 2025, "Circuit Tracing", §2.1) has one encoder per layer and, for the
features of layer ``s``, one decoder per later layer ``d >= s``; the MLP output of layer ``d`` is predicted as

    mlp_out.d ≈ sum_{s <= d} z_s @ W_dec[s][d - s] + b_dec[d],   z_s = act(x_s @ W_enc[s] + b_enc[s])

so a feature that many layers' MLPs compute in turn ("amplification") can be one feature. The activation rule is
TopK per layer and row (Gao et al. 2024) or ReLU with an L1 penalty weighted by the decoder norms summed over the
layers written. ``train_clt`` fits one on a model's own MLP inputs and outputs, on the fly over token contexts
(one process; the per-layer dictionaries of ``features`` are the ones that train under torchrun).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save
from torch import Tensor, nn

from mechscope._cache import atomic_write_bytes
from mechscope.core import Model

FORMAT = "mechscope.cross_layer_transcoder"


@dataclass(frozen=True)
class CLTConfig:
    """Shape and activation rule of a cross-layer transcoder."""

    n_layers: int
    """Layers (one encoder each)."""
    d_model: int
    """Width of the MLP inputs and outputs."""
    d_sae: int
    """Features per layer."""
    kind: Literal["topk", "relu"] = "topk"
    """``topk``: the ``k`` largest pre-activations of each row survive; ``relu``: ReLU, trained with an L1 penalty."""
    k: int = 16
    """Active features per layer and row (``topk``)."""

    def __post_init__(self) -> None:
        if min(self.n_layers, self.d_model, self.d_sae) < 1:
            raise ValueError(f"sizes must be positive: {self}")
        if self.kind not in ("topk", "relu"):
            raise ValueError(f"kind must be 'topk' or 'relu', got {self.kind!r}")
        if self.kind == "topk" and not 1 <= self.k <= self.d_sae:
            raise ValueError(f"k must be in [1, d_sae={self.d_sae}], got {self.k}")


class CrossLayerTranscoder(nn.Module):
    """Encoders ``W_enc [layer d_model d_sae]``; decoders ``W_dec[s] [n_layers - s, d_sae, d_model]``."""

    def __init__(self, cfg: CLTConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed)
        n, d, m = cfg.n_layers, cfg.d_model, cfg.d_sae
        w_enc = torch.randn(n, d, m, generator=gen)
        self.W_enc = nn.Parameter(w_enc / w_enc.norm(dim=1, keepdim=True))
        self.b_enc = nn.Parameter(torch.zeros(n, m))
        # each of the n - s decoders starts small, so the summed prediction starts near zero
        self.W_dec = nn.ParameterList(
            [nn.Parameter(torch.randn(n - s, m, d, generator=gen) / (math.sqrt(d) * (n - s))) for s in range(n)]
        )
        self.b_dec = nn.Parameter(torch.zeros(n, d))

    @property
    def n_layers(self) -> int:
        """Layers (one encoder each)."""
        return self.cfg.n_layers

    def pre_activations(self, layer: int, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_sae"]:
        """Encoder output of ``layer`` before the activation rule."""
        return x.to(self.W_enc) @ self.W_enc[layer] + self.b_enc[layer]

    def encode(self, layer: int, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_sae"]:
        """Feature activations of ``layer``."""
        pre = self.pre_activations(layer, x)
        if self.cfg.kind == "relu":
            return pre.relu()
        top = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def encoder_column(self, layer: int, feature: int) -> Float[Tensor, " d_model"]:
        """``feature``'s encoder column at ``layer``."""
        return self.W_enc.detach()[layer, :, feature]

    def writes_to(self, layer: int) -> range:
        """Every layer from ``layer`` on."""
        return range(layer, self.n_layers)

    def decoder_rows(self, src: int, dst: int, features: Int[Tensor, " n"]) -> Float[Tensor, "n d_model"]:
        """What one unit of each of ``src``'s ``features`` writes into ``mlp_out.dst``."""
        w = self.W_dec[src].detach()[dst - src]
        return w[features.to(w.device)]

    def output(
        self, dst: int, latents: Sequence[Tensor | None], x: Float[Tensor, "n d_model"]
    ) -> Float[Tensor, "n d_model"]:
        """The prediction of ``mlp_out.dst``: every layer's features up to ``dst``, decoded to it, plus ``b_dec``."""
        out = self.b_dec[dst].expand(x.shape[0], -1)
        for src in range(dst + 1):
            z = latents[src]
            assert z is not None, f"layer {src} writes mlp_out.{dst}: its latents are needed"
            out = out + z.to(self.W_enc) @ self.W_dec[src][dst - src]
        return out

    def skip(self, dst: int, x: Tensor) -> None:
        """No skip connection."""
        return None

    def forward(self, inputs: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Latents of every layer and the predicted MLP output of every layer, for per-layer input rows."""
        latents: list[Tensor | None] = []
        outputs = []
        for layer, x in enumerate(inputs):
            latents.append(self.encode(layer, x))
            outputs.append(self.output(layer, latents, x))
        return [z for z in latents if z is not None], outputs


@dataclass(frozen=True)
class CLTTrainConfig:
    """How ``train_clt`` fits a cross-layer transcoder."""

    d_sae: int = 256
    """Features per layer."""
    kind: Literal["topk", "relu"] = "topk"
    """Activation rule (see ``CLTConfig``)."""
    k: int = 16
    """Active features per layer and row (``topk``)."""
    l1_coeff: float = 1e-3
    """L1 penalty on activations times summed decoder norms (``relu``)."""
    steps: int = 200
    """Optimiser steps."""
    batch_contexts: int = 8
    """Token contexts per step (every position but the first is a training row)."""
    lr: float = 1e-3
    """Adam learning rate."""
    seed: int = 0
    """Initialisation and context order."""


def train_clt(
    model: Model, tokens: Int[Tensor, "n ctx"], config: CLTTrainConfig = CLTTrainConfig()
) -> tuple[CrossLayerTranscoder, list[float]]:
    """Fit a cross-layer transcoder to ``model``'s MLP inputs and outputs over ``tokens``; return it and its FVU.

    The FVU of a step is the squared error summed over every layer's MLP output over the summed variance.
    """
    from mechscope.graphs._replacement import mlp_input_site

    if model.cfg is None:
        raise TypeError(f"{model.name} is not a transformer language model")
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [contexts ctx] with ctx >= 2, got shape {list(tokens.shape)}")
    n = model.cfg.n_layers
    clt = CrossLayerTranscoder(CLTConfig(n, model.cfg.d_model, config.d_sae, config.kind, config.k), seed=config.seed)
    ins = [mlp_input_site(model, layer).name for layer in range(n)]
    outs = [f"mlp_out.{layer}" for layer in range(n)]
    opt = torch.optim.Adam(clt.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    history = []
    for _ in range(config.steps):
        pick = torch.randperm(len(tokens), generator=gen)[: config.batch_contexts]
        with torch.no_grad():
            run = model.run(tokens[pick], cache=ins + outs, logits=False)
        xs = [run.cache[s][:, 1:].reshape(-1, clt.cfg.d_model).float() for s in ins]
        ys = [run.cache[s][:, 1:].reshape(-1, clt.cfg.d_model).float() for s in outs]
        latents, preds = clt(xs)
        err = torch.stack([((y - p) ** 2).sum() for y, p in zip(ys, preds, strict=True)]).sum()
        var = torch.stack([((y - y.mean(0)) ** 2).sum() for y in ys]).sum()
        fvu = err / var.clamp_min(1e-12)
        loss = fvu
        if config.kind == "relu":
            norms = [torch.stack([w.norm(dim=-1) for w in clt.W_dec[s]]).sum(0) for s in range(n)]  # [d_sae]
            loss = loss + config.l1_coeff * sum(
                (z * norm).sum(-1).mean() for z, norm in zip(latents, norms, strict=True)
            )
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(fvu))
    return clt.eval(), history


def save_clt(clt: CrossLayerTranscoder, path: str | Path) -> Path:
    """Write ``clt`` to the folder ``path``: ``cfg.json`` (its ``CLTConfig``) and ``clt.safetensors``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": clt.W_enc, "b_enc": clt.b_enc, "b_dec": clt.b_dec}
    tensors.update({f"W_dec.{s}": w for s, w in enumerate(clt.W_dec)})
    atomic_write_bytes(path / "clt.safetensors", save({k: v.detach().float().contiguous() for k, v in tensors.items()}))
    cfg = {"format": FORMAT, "format_version": 1, **asdict(clt.cfg)}
    atomic_write_bytes(path / "cfg.json", json.dumps(cfg, indent=2).encode())
    return path


def load_clt(path: str | Path) -> CrossLayerTranscoder:
    """Read a cross-layer transcoder that ``save_clt`` wrote (in eval mode)."""
    path = Path(path)
    cfg = json.loads((path / "cfg.json").read_text())
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{path}/cfg.json is not a mechscope cross-layer transcoder (format {cfg.get('format')!r})")
    clt = CrossLayerTranscoder(CLTConfig(**{k: v for k, v in cfg.items() if k not in ("format", "format_version")}))
    state = load_file(path / "clt.safetensors")
    try:
        clt.load_state_dict({k: v for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}/clt.safetensors does not match its cfg.json: {e}") from None
    return clt.eval()
