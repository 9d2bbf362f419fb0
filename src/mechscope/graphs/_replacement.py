"""The replacement model of one prompt: per-layer transcoders in place of the MLPs, with error nodes.

Each layer's transcoder reads the MLP's input site (``ln2.L`` where the block has a norm in front of its MLP, the
shared ``ln1.L`` in parallel blocks without one, else ``resid_mid.L``; or whatever site its config names) and
predicts ``mlp_out.L``. For a prompt, the real MLP output splits into the transcoder's prediction and an error,

    mlp_out.L = sum_f a_f W_dec[f] + b_dec + x @ W_skip + error.L

so a model whose MLP outputs are rebuilt from transcoder and error reproduces the real logits exactly (float
rounding) (Ameisen et al. 2025, "Circuit Tracing", §2 "Building a replacement model"; Dunefsky et al. 2024,
"Transcoders Find Interpretable LLM Feature Circuits"). ``ReplacementModel.trace`` runs the prompt once and returns
those pieces; ``ReplacementModel.logits`` runs the spliced model, which tests compare with the real one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechscope.core import HookSet, Model
from mechscope.core._sites import Site
from mechscope.features import Dictionary, load_dictionary
from mechscope.graphs._clt import CrossLayerTranscoder, load_clt
from mechscope.graphs._coders import Coders, PerLayer

LAYER_DIR = re.compile(r"^layer_(\d+)$")
"""A transcoders folder holds one saved dictionary per layer, in a subfolder named ``layer_{L}``."""


@dataclass(frozen=True, eq=False)
class Trace:
    """One prompt's run through the replacement model: everything the graph is built from (batch of one)."""

    tokens: Int[Tensor, " pos"]
    """The prompt's token ids."""
    logits: Float[Tensor, "pos d_vocab"]
    """The real model's logits."""
    embed: Float[Tensor, "pos d_model"]
    """The residual stream entering block 0 (token embeddings, plus position embeddings where the model has them)."""
    inputs: tuple[Float[Tensor, "pos d_in"], ...]
    """Per layer, the transcoder's input (the MLP input site)."""
    mlp_out: tuple[Float[Tensor, "pos d_model"], ...]
    """Per layer, the real MLP output."""
    latents: tuple[Float[Tensor, "pos d_sae"], ...]
    """Per layer, the transcoder's feature activations (dense)."""
    errors: tuple[Float[Tensor, "pos d_model"], ...]
    """Per layer, ``mlp_out - transcoder output``: the error nodes' vectors."""

    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return len(self.mlp_out)

    def active(self) -> tuple[Int[Tensor, "n 3"], Float[Tensor, " n"]]:
        """Every active feature as ``(layer, position, feature)`` rows, layer-major, and its activation."""
        rows, values = [], []
        for layer, z in enumerate(self.latents):
            pos, feat = (z != 0).nonzero(as_tuple=True)
            rows.append(torch.stack([torch.full_like(pos, layer), pos, feat], dim=1))
            values.append(z[pos, feat])
        return torch.cat(rows), torch.cat(values)


class ReplacementModel:
    """A model whose MLP outputs are predicted by transcoders reading the MLPs' input sites.

    ``transcoders`` maps every layer to a mechscope ``Dictionary`` that is a transcoder (any kind: ReLU, TopK,
    BatchTopK, JumpReLU, with or without a skip connection), trained by mechscope or loaded from SAELens / sparsify
    files (``features.load_dictionary``; a folder of them: ``load_transcoders``); or it is one
    ``CrossLayerTranscoder``, whose layer-``L`` features write every MLP output from ``L`` on. ``input_sites``
    overrides the site a layer's encoder reads (default: a transcoder config's ``site``, else the MLP's input site).
    """

    def __init__(
        self,
        model: Model,
        transcoders: Mapping[int, Dictionary] | CrossLayerTranscoder,
        *,
        input_sites: Mapping[int, str] | None = None,
    ) -> None:
        if model.cfg is None:
            raise TypeError(f"{model.name} is not a transformer language model: a replacement model needs layers")
        n = model.cfg.n_layers
        self.model = model
        overrides = dict(input_sites or {})
        self.coders: Coders
        if isinstance(transcoders, CrossLayerTranscoder):
            if transcoders.n_layers != n or transcoders.cfg.d_model != model.cfg.d_model:
                have = f"{transcoders.n_layers} layers of width {transcoders.cfg.d_model}"
                raise ValueError(f"the cross-layer transcoder has {have}; {model.name} has {n} of width "
                                 f"{model.cfg.d_model}")  # fmt: skip
            self.transcoders: tuple[Dictionary, ...] = ()
            self.coders = transcoders
            recorded: list[str | None] = [None] * n
        else:
            missing = [layer for layer in range(n) if layer not in transcoders]
            extra = [layer for layer in transcoders if not 0 <= layer < n]
            if missing or extra:
                raise ValueError(
                    f"{model.name} has {n} layers; transcoders are needed for every one: missing {missing}"
                    + (f", out of range {extra}" if extra else "")
                )
            self.transcoders = tuple(transcoders[layer] for layer in range(n))
            self.coders = PerLayer(self.transcoders)
            recorded = [tc.cfg.site for tc in self.transcoders]
        self.input_sites: tuple[Site, ...] = tuple(
            mlp_input_site(model, layer, overrides.get(layer) or recorded[layer]) for layer in range(n)
        )
        self.output_sites: tuple[Site, ...] = tuple(model.resolve(f"mlp_out.{layer}")[0] for layer in range(n))
        for layer, tc in enumerate(self.transcoders):
            self._check(layer, tc)

    @property
    def n_layers(self) -> int:
        """Number of layers (one encoder each)."""
        return self.coders.n_layers

    def _check(self, layer: int, tc: Dictionary) -> None:
        assert self.model.cfg is not None
        d_model = self.model.cfg.d_model
        where = f"layer {layer}'s transcoder ({tc.cfg.kind}, d_in={tc.cfg.d_in}, d_sae={tc.cfg.d_sae})"
        if not tc.cfg.is_transcoder:
            raise TypeError(f"{where} is an autoencoder (no d_out): the replacement model needs transcoders that "
                            f"predict mlp_out.{layer} from the MLP's input")  # fmt: skip
        target = tc.cfg.target_site
        if target is not None:
            try:
                resolved = self.model.resolve(target)[0].name
            except KeyError:
                resolved = target
            if resolved != f"mlp_out.{layer}":
                raise ValueError(f"{where} predicts {target!r}, but layer {layer}'s MLP output is mlp_out.{layer}: "
                                 "check which layer folder it was saved in")  # fmt: skip
        if tc.cfg.d_in != d_model or tc.cfg.width_out != d_model:
            raise ValueError(f"{where} maps {tc.cfg.d_in} -> {tc.cfg.width_out} wide rows; {self.model.name}'s "
                             f"{self.input_sites[layer].name} and mlp_out.{layer} are {d_model} wide")  # fmt: skip

    # --- one prompt ------------------------------------------------------------------------------------------

    def tokens(self, prompt: str | Tensor) -> Int[Tensor, " pos"]:
        """The prompt's token ids (a string is tokenised; a 1-D tensor of ids is taken as is)."""
        if isinstance(prompt, Tensor):
            if prompt.ndim != 1 or prompt.numel() == 0:
                raise ValueError(f"token ids must be a non-empty 1-D tensor, got shape {list(prompt.shape)}")
            return prompt.to(self.model.device)
        return self.model.encode(prompt).tokens[0]

    @torch.no_grad()
    def trace(self, prompt: str | Tensor) -> Trace:
        """Run ``prompt`` once: real logits and MLP outputs, transcoder inputs, feature activations, errors."""
        tokens = self.tokens(prompt)
        sites = ["resid_pre.0", *(s.name for s in self.input_sites), *(s.name for s in self.output_sites)]
        run = self.model.run(tokens[None], cache=sites)
        assert run.logits is not None
        inputs = tuple(run.cache[s.name][0] for s in self.input_sites)
        mlp_out = tuple(run.cache[s.name][0] for s in self.output_sites)
        latents: list[Tensor] = []
        errors = []
        for layer, (x, out) in enumerate(zip(inputs, mlp_out, strict=True)):
            latents.append(self.coders.encode(layer, x))
            errors.append(out - self.coders.output(layer, latents, x).to(out))
        return Trace(tokens, run.logits[0], run.cache["resid_pre.0"][0], inputs, mlp_out, tuple(latents),
                     tuple(errors))  # fmt: skip

    @torch.no_grad()
    def logits(self, prompt: str | Tensor, trace: Trace | None = None) -> Float[Tensor, "pos d_vocab"]:
        """Logits of the replacement model: every MLP output rebuilt as transcoder(live input) + the trace's error.

        Equal to the real logits up to float rounding; a test that the pieces add up.
        """
        trace = trace or self.trace(prompt)
        with self.spliced(trace):
            out = self.model.run(trace.tokens[None]).logits
        assert out is not None
        return out[0]

    @contextmanager
    def spliced(self, trace: Trace) -> Iterator[None]:
        """Inside the block, each MLP output is its transcoder's prediction from the live input plus the error."""
        live: dict[int, Tensor] = {}
        hooks = HookSet(self.model.module)
        try:
            for layer in range(self.n_layers):
                hooks.add(self.input_sites[layer], _keeper(live, layer))
                hooks.add(self.output_sites[layer], _splicer(self.coders, live, layer, trace.errors[layer]))
            yield
        finally:
            hooks.close()


def mlp_input_site(model: Model, layer: int, name: str | None = None) -> Site:
    """The site layer ``layer``'s encoder reads: ``name`` if given, else the MLP's input.

    The MLP's input is ``ln2.L`` where the block has a norm in front of its MLP, the shared ``ln1.L`` in parallel
    blocks without one, else ``resid_mid.L``.
    """
    assert model.cfg is not None
    if name is None:
        names = {s.name for s in model.resolve("*")}
        if f"ln2.{layer}" in names:
            name = f"ln2.{layer}"
        elif model.cfg.parallel and f"ln1.{layer}" in names:
            name = f"ln1.{layer}"
        else:
            name = f"resid_mid.{layer}"
    try:
        return model.resolve(name)[0]
    except KeyError as e:
        raise ValueError(
            f"layer {layer}'s transcoder reads {name!r}, which is not a site of {model.name} ({e}); pass "
            f"input_sites={{{layer}: 'ln2.{layer}'}} (the MLP's input) or retrain it on a site of this model"
        ) from None


def _keeper(store: dict[int, Tensor], layer: int) -> Any:
    def keep(act: Tensor) -> None:
        store[layer] = act.reshape(-1, act.shape[-1])

    return keep


def _splicer(coders: Coders, live: dict[int, Tensor], layer: int, error: Tensor) -> Any:
    def splice(act: Tensor) -> Tensor:
        # the live latents of every layer that writes here (inputs of this forward pass, kept by _keeper)
        latents = [coders.encode(i, live[i]) if layer in coders.writes_to(i) else None for i in range(layer + 1)]
        out = coders.output(layer, latents, live[layer])
        return out.reshape(act.shape).to(act) + error.to(act)

    return splice


def load_transcoders(path: str | Path) -> dict[int, Dictionary] | CrossLayerTranscoder:
    """Load a folder of per-layer transcoders, ``path/layer_{L}/`` each a saved dictionary, or a cross-layer one.

    Each ``layer_{L}`` subfolder is in any layout ``features.load_dictionary`` reads (mechscope's
    ``save_dictionary``, SAELens, sparsify); a folder holding ``clt.safetensors`` is a cross-layer transcoder that
    ``save_clt`` wrote. ``ReplacementModel`` checks that every layer of the model is present and fits.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"transcoders folder {root} does not exist: it should hold layer_0/, layer_1/, ...")
    if (root / "clt.safetensors").is_file():
        return load_clt(root)
    found: dict[int, Dictionary] = {}
    for child in sorted(root.iterdir()):
        m = LAYER_DIR.match(child.name)
        if m and child.is_dir():
            found[int(m[1])] = load_dictionary(child)
    if not found:
        raise FileNotFoundError(
            f"{root} holds no layer_{{L}}/ subfolders: save one transcoder per layer as {root}/layer_0/, ... "
            "(features.save_dictionary writes one), or a cross-layer transcoder there (graphs.save_clt)"
        )
    for layer, tc in found.items():
        if not tc.cfg.is_transcoder:
            raise ValueError(f"{root}/layer_{layer} holds an autoencoder, not a transcoder (its config has no d_out)")
    return found
