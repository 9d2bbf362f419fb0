"""The tuned lens: one learned affine translator per layer in front of the model's own final norm and unembedding.

Belrose et al. 2023 (*Eliciting Latent Predictions from Transformers with the Tuned Lens*, §3): the logit lens reads
an early residual stream in a basis it was never written in; the tuned lens first maps it with ``A_l h + b_l`` and
trains each map so that the lens's next-token distribution matches the model's final one (KL from the final
distribution). The map is parametrised as ``h + W_l h + b_l`` with ``W_l = 0, b_l = 0`` at the start, as the paper
and the tuned-lens package do, so an untrained tuned lens *is* the logit lens and weight decay pulls it towards it.

Translator ``i`` reads ``resid_pre.i``, the input of block ``i`` (``i = 0`` is the embedding); the last block's
output is the model's own output and needs none. That is the tuned-lens package's layout (its translators read
``hidden_states[:-1]``), so its files map one to one: ``{i}.weight [d_model d_model]`` (``torch.nn.Linear``'s
``[out in]``) and ``{i}.bias [d_model]``.

On disk (``save_tuned_lens``), a directory holding ``tuned_lens.safetensors`` (those tensors, float32),
``config.json`` (``{"format": "mechscope.tuned_lens", ...}`` with ``d_model`` and ``n_layers``) and
``provenance.json`` (model and weights sha256, corpus and its sha256, steps, tokens, seed). ``export_tuned_lens``
writes the tuned-lens package's layout (``params.pt``: a plain state dict of tensors; ``config.json``:
``TunedLensConfig``); ``load_tuned_lens`` reads either, opening ``params.pt`` only with
``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save
from torch import Tensor, nn

from .._cache import atomic_write_bytes
from .._errors import MismatchError, NonFiniteError
from ..core._model import Inputs, Model
from ..core._unembed import unembed
from ._registry import METHODS
from .logit_lens import LogitLensConfig, LogitLensResult, lens_result

FORMAT = "mechscope.tuned_lens"
FORMAT_VERSION = 1
WEIGHTS = "tuned_lens.safetensors"
PROVENANCE = "provenance.json"


class TunedLens(nn.Module):
    """Affine translators for ``resid_pre.0 .. resid_pre.{n_layers-1}``, stacked: ``h -> h + h W_i^T + b_i``."""

    def __init__(self, n_layers: int, d_model: int, *, provenance: dict[str, Any] | None = None) -> None:
        super().__init__()
        if n_layers < 1 or d_model < 1:
            raise ValueError(f"a tuned lens needs n_layers >= 1 and d_model >= 1, got {n_layers} and {d_model}")
        self.weight = nn.Parameter(torch.zeros(n_layers, d_model, d_model))
        """``[layer out in]``: the translator's linear part minus the identity (zero: the logit lens)."""
        self.bias = nn.Parameter(torch.zeros(n_layers, d_model))
        self.provenance: dict[str, Any] = dict(provenance or {})
        """What the lens was trained on (model, weights sha256, corpus, steps, seed); empty when unknown."""

    @classmethod
    def for_model(cls, model: Model) -> TunedLens:
        """An identity (untrained) lens shaped for ``model``."""
        cfg = _cfg(model)
        return cls(cfg.n_layers, cfg.d_model, provenance={**model.provenance})

    @property
    def n_layers(self) -> int:
        return self.weight.shape[0]

    @property
    def d_model(self) -> int:
        return self.weight.shape[-1]

    def translate(
        self, resid: Float[Tensor, "layer ... d_model"], layers: slice | None = None
    ) -> Float[Tensor, "layer ... d_model"]:
        """Apply translators ``layers`` (default: all) to ``resid``, whose first axis is those translators' inputs."""
        w, b = (self.weight, self.bias) if layers is None else (self.weight[layers], self.bias[layers])
        if resid.shape[0] != w.shape[0] or resid.shape[-1] != self.d_model:
            raise ValueError(
                f"the tuned lens translates [layer ... {self.d_model}] with {w.shape[0]} layers; got "
                f"{tuple(resid.shape)}"
            )
        flat = resid.reshape(resid.shape[0], -1, self.d_model).to(w.dtype)  # [layer tokens d_model]
        out = flat + torch.baddbmm(b[:, None, :], flat, w.transpose(1, 2))
        return out.reshape(resid.shape)

    def check(self, model: Model, what: str = "the tuned lens") -> None:
        """Raise ``MismatchError`` unless this lens fits ``model`` (shape, and weights if the lens recorded them)."""
        cfg = _cfg(model)
        if (self.n_layers, self.d_model) != (cfg.n_layers, cfg.d_model):
            raise MismatchError(
                f"{what} has {self.n_layers} translators of width {self.d_model}, but {model.name} has "
                f"{cfg.n_layers} layers of width {cfg.d_model}",
                hint="train a tuned lens for this model (mechscope train-lens) or load the one made for it",
            )
        saved = self.provenance.get("weights_sha256")
        if saved and saved != model.provenance.get("weights_sha256"):
            raise MismatchError(
                f"{what} was trained on {self.provenance.get('model')!r} (weights sha256 {saved[:16]}...), not on "
                f"{model.name!r} (weights sha256 {str(model.provenance.get('weights_sha256'))[:16]}...)",
                hint="train a tuned lens for this model (mechscope train-lens) or load the one made for it",
            )

    def state(self) -> dict[str, Tensor]:
        """The translators as the tuned-lens package names them: ``{i}.weight`` ``[out in]`` and ``{i}.bias``."""
        out: dict[str, Tensor] = {}
        for i in range(self.n_layers):
            out[f"{i}.weight"] = self.weight[i].detach().float().contiguous()
            out[f"{i}.bias"] = self.bias[i].detach().float().contiguous()
        return out

    @classmethod
    def from_state(cls, state: dict[str, Tensor], where: str, provenance: dict[str, Any] | None = None) -> TunedLens:
        """Rebuild from ``state()`` tensors, checking names, shapes and values (``where`` names the file)."""
        n = sum(1 for k in state if k.endswith(".weight"))
        if n == 0 or "0.weight" not in state:
            raise ValueError(f"{where} holds no tuned-lens translators (expected 0.weight, 0.bias, 1.weight, ...)")
        d = state["0.weight"].shape[-1]
        expected = {f"{i}.{p}": (d, d) if p == "weight" else (d,) for i in range(n) for p in ("weight", "bias")}
        if set(state) != set(expected):
            raise ValueError(
                f"{where}: tensors {sorted(state)[:6]}... do not match {n} translators (missing "
                f"{sorted(set(expected) - set(state))[:4]}, unexpected {sorted(set(state) - set(expected))[:4]})"
            )
        for name, shape in expected.items():
            if tuple(state[name].shape) != shape:
                raise ValueError(f"{where}: {name} is {tuple(state[name].shape)}, expected {shape} (d_model={d})")
            if not bool(state[name].isfinite().all()):
                raise NonFiniteError(f"{where}: {name} holds NaN or infinite values", hint="the file is damaged")
        lens = cls(n, d, provenance=provenance)
        with torch.no_grad():
            lens.weight.copy_(torch.stack([state[f"{i}.weight"] for i in range(n)]))
            lens.bias.copy_(torch.stack([state[f"{i}.bias"] for i in range(n)]))
        return lens


def save_tuned_lens(lens: TunedLens, path: str | Path) -> Path:
    """Write ``lens`` to the directory ``path`` in mechscope's layout (each file replaced atomically)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path / WEIGHTS, save(lens.state()))
    cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, "n_layers": lens.n_layers, "d_model": lens.d_model}
    atomic_write_bytes(path / "config.json", json.dumps(cfg, indent=2).encode())
    atomic_write_bytes(path / PROVENANCE, json.dumps(lens.provenance, indent=2).encode())
    return path


def export_tuned_lens(lens: TunedLens, path: str | Path) -> Path:
    """Write ``lens`` in the tuned-lens package's layout: ``params.pt`` (a state dict of tensors) + ``config.json``.

    ``TunedLens.from_model_and_pretrained(model, path)`` of tuned-lens 0.2 loads it. ``unembed_hash`` is left
    None (the package then skips its unembedding check); the provenance goes to ``provenance.json`` beside them.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    blob = _torch_save(lens.state())
    atomic_write_bytes(path / "params.pt", blob)
    cfg = {
        "base_model_name_or_path": lens.provenance.get("model", ""),
        "d_model": lens.d_model,
        "num_hidden_layers": lens.n_layers,
        "bias": True,
        "base_model_revision": None,
        "unembed_hash": None,
        "lens_type": "linear_tuned_lens",
    }
    atomic_write_bytes(path / "config.json", json.dumps(cfg, indent=2).encode())
    atomic_write_bytes(path / PROVENANCE, json.dumps(lens.provenance, indent=2).encode())
    return path


def load_tuned_lens(path: str | Path) -> TunedLens:
    """Load a tuned lens from a directory in mechscope's layout or the tuned-lens package's (``params.pt``).

    ``params.pt`` is opened with ``torch.load(weights_only=True)``: plain tensors only, no pickled code runs.
    """
    path = Path(path)
    provenance = json.loads((path / PROVENANCE).read_text()) if (path / PROVENANCE).is_file() else {}
    if (path / WEIGHTS).is_file():
        return TunedLens.from_state(load_file(path / WEIGHTS), str(path / WEIGHTS), provenance)
    if (path / "params.pt").is_file():
        cfg = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        if cfg.get("lens_type", "linear_tuned_lens") != "linear_tuned_lens" or cfg.get("bias") is False:
            raise ValueError(
                f"{path / 'config.json'}: lens_type={cfg.get('lens_type')!r}, bias={cfg.get('bias')!r}; mechscope "
                "reads linear tuned lenses with biases (lens_type 'linear_tuned_lens', bias true)"
            )
        try:
            state = torch.load(path / "params.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refuses pickled objects: say so rather than fall back
            raise ValueError(
                f"{path / 'params.pt'} is not a plain state dict of tensors ({type(exc).__name__}: {exc}); "
                "mechscope loads tuned-lens params.pt only with torch.load(weights_only=True)"
            ) from exc
        provenance = provenance or {"model": cfg.get("base_model_name_or_path"), "source": "tuned-lens"}
        lens = TunedLens.from_state(dict(state), str(path / "params.pt"), provenance)
        if cfg.get("d_model") not in (None, lens.d_model) or cfg.get("num_hidden_layers") not in (None, lens.n_layers):
            raise ValueError(
                f"{path / 'config.json'} says d_model={cfg.get('d_model')}, num_hidden_layers="
                f"{cfg.get('num_hidden_layers')}, but params.pt holds {lens.n_layers} translators of width "
                f"{lens.d_model}"
            )
        return lens
    raise FileNotFoundError(
        f"{path} holds no tuned lens: expected {WEIGHTS} (mechscope) or params.pt + config.json (tuned-lens)"
    )


def tuned_logits(model: Model, lens: TunedLens, resid_pre: Float[Tensor, "layer ... d_model"]) -> Tensor:
    """Logits of every translator's lens: ``resid_pre[i]`` is ``resid_pre.i``; final norm + unembedding after."""
    dtype = next(model.module.parameters()).dtype
    return unembed(model, lens.translate(resid_pre).to(dtype))


@dataclass(frozen=True)
class TunedLensConfig(LogitLensConfig):
    """Settings of the tuned lens (``mechscope lens --tuned DIR``); the rest as the logit lens."""

    tuned: str = ""
    """Directory of a trained tuned lens (``mechscope train-lens``; mechscope or tuned-lens layout)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tuned:
            raise ValueError("the tuned lens needs the directory of a trained lens: --tuned DIR")


@torch.no_grad()
def tuned_lens(
    model: Model,
    lens: TunedLens,
    inputs: Inputs,
    answer: str | int | None = None,
    *,
    pos: int = LogitLensConfig.pos,
    top_k: int = LogitLensConfig.top_k,
) -> LogitLensResult:
    """Read every layer's ``resid_post`` through its translator and the final readout (the last layer: none).

    Same result and axes as ``logit_lens`` (layer ``l`` reads ``resid_post.l`` = ``resid_pre.{l+1}``, through
    translator ``l + 1``), so the two draw on the same grid; the last layer is the model's output.
    """
    lens.check(model)

    def read(resid: Tensor) -> Tensor:  # [batch layer d_model] -> logits
        inner = lens.translate(resid[:, :-1].transpose(0, 1), slice(1, None)).transpose(0, 1)
        dtype = resid.dtype
        return unembed(model, torch.cat([inner.to(dtype), resid[:, -1:]], 1))

    extra = {"tuned_lens": lens.provenance}  # which lens read the layers: its model, corpus, steps, seed
    return lens_result(model, inputs, answer, pos=pos, top_k=top_k, read=read, name="tuned_lens", extra=extra)


@METHODS.declare("tuned-lens", config=TunedLensConfig, result=LogitLensResult)
def tuned_lens_method(model: Model, inputs: Inputs, config: TunedLensConfig) -> LogitLensResult:
    """Read every layer through a trained affine translator and the final readout (Belrose et al. 2023)."""
    lens = load_tuned_lens(config.tuned)
    return tuned_lens(model, lens, inputs, config.answer, pos=config.pos, top_k=config.top_k)


def _cfg(model: Model) -> Any:
    if model.cfg is None:
        raise TypeError(f"the tuned lens needs a transformer language model; {model.name} has no final norm")
    return model.cfg


def _torch_save(state: dict[str, Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()
