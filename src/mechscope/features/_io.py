"""Dictionaries on disk: mechscope's own layout, and the SAELens and EleutherAI sparsify layouts.

mechscope layout (``save_dictionary``), a directory holding:

- ``sae.safetensors``: the module's state dict, float32: ``W_enc [d_in d_sae]``, ``b_enc [d_sae]``,
  ``W_dec [d_sae d_out]``, ``b_dec [d_out]``, plus ``log_threshold [d_sae]`` (jumprelu; θ = exp) or
  ``threshold []`` (batchtopk's inference threshold).
- ``cfg.json``: ``{"format": "mechscope.dictionary", "format_version": 1}`` and every ``DictionaryConfig``
  field by name.

SAELens layout (read by ``load_dictionary``, written by ``export_saelens``): ``cfg.json`` with
``architecture`` (``standard``, ``topk``, ``jumprelu``, ``transcoder``, ``jumprelu_transcoder``), ``d_in``,
``d_sae``, ``k`` (topk; ``activation_fn_kwargs.k`` before SAELens 6), ``apply_b_dec_to_input``,
``normalize_activations`` and ``metadata.hook_name``; and ``sae_weights.safetensors`` with ``W_enc [d_in
d_sae]``, ``W_dec [d_sae d_in]``, ``b_enc``, ``b_dec`` and ``threshold [d_sae]`` for JumpReLU. BatchTopK is
exported as JumpReLU with its inference threshold on every latent, as SAELens itself does.

sparsify layout (read by ``load_dictionary``): ``cfg.json`` with the ``SparseCoderConfig`` fields (``k``,
``activation``, ``transcode``, ``skip_connection``, ...) plus ``d_in``; and ``sae.safetensors`` with
``encoder.weight [d_sae d_in]``, ``encoder.bias [d_sae]``, ``W_dec [d_sae d_in]`` and ``b_dec [d_in]``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from safetensors.torch import load_file, save
from torch import Tensor

from mechscope._cache import atomic_write_bytes
from mechscope._errors import MismatchError, NonFiniteError
from mechscope.core import hook_of_site, site_of_hook
from mechscope.features._dictionary import (
    BatchTopKDictionary,
    Dictionary,
    DictionaryConfig,
    JumpReLUDictionary,
    Kind,
    build_dictionary,
)

PROVENANCE = "provenance.json"
FORMAT = "mechscope.dictionary"
FORMAT_VERSION = 1
SAELENS_VERSION = "6.0.0"  # the SAELens config format written by export_saelens

_SAELENS_KINDS: dict[str, Kind] = {
    "gated": "jumprelu",  # exactly: see _gated_as_jumprelu
    "standard": "relu",
    "transcoder": "relu",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "jumprelu_transcoder": "jumprelu",
}


def save_dictionary(dictionary: Dictionary, path: str | Path, *, provenance: dict | None = None) -> Path:
    """Write ``dictionary`` to ``path`` in mechscope's layout (each file replaced atomically).

    ``provenance`` (model, weights checksum, store, site: what it was trained on) goes to ``provenance.json``;
    evaluation, splicing and feature databases refuse a store or model it does not match (``check_provenance``).
    """
    path = Path(path)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in dictionary.state_dict().items()}
    cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(dictionary.cfg)}
    _write(path, "sae.safetensors", tensors, cfg)
    if provenance is not None:
        atomic_write_bytes(path / PROVENANCE, json.dumps(provenance, indent=2).encode())
    return path


def read_provenance(path: str | Path) -> dict | None:
    """What the dictionary at ``path`` was trained on (``save_dictionary(provenance=...)``), or None if unrecorded."""
    file = Path(path) / PROVENANCE
    return _read_json(file) if file.is_file() else None


def check_provenance(path: str | Path, *, model: dict | None = None, site: str | None = None) -> None:
    """Raise ``MismatchError`` if the dictionary at ``path`` was trained on another model or site.

    ``model`` is a provenance with ``model`` and ``weights_sha256`` (``Model.provenance``, or a store's).
    Dictionaries without a record (imported from SAELens, say) pass: there is nothing to compare.
    """
    saved = read_provenance(path) or {}
    if model is not None and saved.get("weights_sha256") and saved["weights_sha256"] != model.get("weights_sha256"):
        raise MismatchError(
            f"the dictionary at {path} was trained on model {saved.get('model')!r} (weights sha256 "
            f"{saved['weights_sha256'][:16]}...), not on {model.get('model')!r} (weights sha256 "
            f"{str(model.get('weights_sha256'))[:16]}...)",
            hint="use a dictionary trained on this model, or the store/model it was trained on",
        )
    trained_on = saved.get("site")
    if site is not None and trained_on is not None and site != trained_on:
        raise MismatchError(
            f"the dictionary at {path} reads site {trained_on!r}, not {site!r}",
            hint=f"use --site {trained_on} (or leave --site out)",
        )


def load_dictionary(path: str | Path) -> Dictionary:
    """Load a dictionary (in eval mode) from a directory in mechscope, SAELens or sparsify layout."""
    path = Path(path)
    if (path / "sae_weights.safetensors").is_file():
        dictionary = _load_saelens(path)
    elif (path / "sae.safetensors").is_file():
        cfg = _read_json(path / "cfg.json")
        dictionary = _load_mechscope(path, cfg) if cfg.get("format") == FORMAT else _load_sparsify(path, cfg)
    else:
        raise FileNotFoundError(
            f"{path} holds no dictionary: expected cfg.json with sae.safetensors (mechscope, sparsify) "
            "or sae_weights.safetensors (SAELens)"
        )
    return dictionary.eval()


def _write(path: Path, weights_name: str, tensors: dict[str, Tensor], cfg: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path / weights_name, save(tensors))
    atomic_write_bytes(path / "cfg.json", json.dumps(cfg, indent=2).encode())


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}")
    return json.loads(path.read_text())


def _build(cfg: DictionaryConfig, state: dict[str, Tensor], where: Path) -> Dictionary:
    dictionary = build_dictionary(cfg)
    expected = dictionary.state_dict()
    if set(state) != set(expected):
        raise ValueError(
            f"{where}: weights {sorted(state)} do not match a {cfg.kind} dictionary's {sorted(expected)} "
            f"(missing {sorted(set(expected) - set(state))}, unexpected {sorted(set(state) - set(expected))})"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"{where}: {name} is {tuple(tensor.shape)}, but cfg.json's widths (d_in={cfg.d_in}, d_sae={cfg.d_sae}) "
                f"make it {tuple(expected[name].shape)}"
            )
        bad = tensor.isnan() | (tensor == math.inf) if name == "log_threshold" else ~tensor.isfinite()  # log 0 = -inf
        if tensor.is_floating_point() and bool(bad.any()):
            raise NonFiniteError(
                f"{where}: {name} holds NaN or infinite values", hint="the file is damaged or its training diverged"
            )
    dictionary.load_state_dict(state)
    return dictionary


def _load_mechscope(path: Path, cfg: dict) -> Dictionary:
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {cfg.get('format_version')} is not {FORMAT_VERSION}")
    names = {f.name for f in dataclasses.fields(DictionaryConfig)}
    return _build(
        DictionaryConfig(**{k: v for k, v in cfg.items() if k in names}), load_file(path / "sae.safetensors"), path
    )


def _load_saelens(path: Path) -> Dictionary:
    cfg = _read_json(path / "cfg.json")
    tensors = load_file(path / "sae_weights.safetensors")
    arch = cfg.get("architecture", "standard")
    if arch == "standard" and cfg.get("activation_fn", cfg.get("activation_fn_str")) == "topk":
        arch = "topk"  # before SAELens 6, TopK SAEs were "standard" with a topk activation function
    if arch not in _SAELENS_KINDS:
        raise ValueError(f"SAELens architecture {arch!r} is not supported; known: {sorted(_SAELENS_KINDS)}")
    if cfg.get("normalize_activations") not in (None, False, "none"):
        raise ValueError(
            f"{path}: normalize_activations={cfg['normalize_activations']!r} rescales inputs with a factor "
            "kept outside these files; fold it into the weights first"
        )
    if arch == "gated":
        tensors = _gated_as_jumprelu(tensors, path)
    if missing := {"W_enc", "b_enc", "W_dec", "b_dec"} - set(tensors):
        raise ValueError(f"{path / 'sae_weights.safetensors'} lacks {sorted(missing)}: not a SAELens {arch} SAE")
    d_in, d_sae = tensors["W_enc"].shape
    transcoder = "transcoder" in arch
    meta = cfg.get("metadata") or {}
    dcfg = DictionaryConfig(
        kind=_SAELENS_KINDS[arch],
        d_in=d_in,
        d_sae=d_sae,
        d_out=tensors["W_dec"].shape[1] if transcoder else None,
        k=int(cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k", 32)),
        apply_b_dec_to_input=not transcoder and bool(cfg.get("apply_b_dec_to_input", True)),
        site=_site_name(meta.get("hook_name", cfg.get("hook_name"))),
        target_site=_site_name(cfg.get("hook_name_out") or None),
    )
    names = ("W_enc", "b_enc", "W_dec", "b_dec")
    state: dict[str, Tensor] = {name: tensors.pop(name) for name in names if name in tensors}
    if dcfg.kind == "jumprelu" and "threshold" in tensors:
        threshold = tensors.pop("threshold")
        if (threshold < 0).any():
            raise ValueError(f"{path}: negative JumpReLU thresholds cannot be represented")
        state["log_threshold"] = threshold.float().log()
    state.update(tensors)  # anything left over is reported as unexpected by _build
    return _build(dcfg, state, path)


def _site_name(hook: str | None) -> str | None:
    """A SAELens ``hook_name`` as a mechscope site (``blocks.6.hook_resid_post`` -> ``resid_post.6``), else as is."""
    return None if hook is None else site_of_hook(hook) or hook


def _hook_name(site: str | None) -> str | None:
    """A mechscope site as the TransformerLens hook name SAELens expects, else as is."""
    return None if site is None else hook_of_site(site) or site


def _gated_as_jumprelu(tensors: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """A gated SAE (Rajamanoharan et al. 2024a) rewritten as the JumpReLU SAE that computes the same latents.

    Gated: ``f = 1[x W + b_gate > 0] * relu(x (W * e^r) + b_mag)``. Multiplying the gate's inequality by
    ``e^r > 0`` gives ``pi_mag > b_mag - b_gate * e^r``, so with ``W_enc = W * e^r``, ``b_enc = b_mag`` and
    threshold ``max(b_mag - b_gate * e^r, 0)`` a JumpReLU ``pi * 1[pi > θ]`` equals it exactly (the max keeps the
    relu: a latent with a negative θ fires for every positive ``pi`` and no other).
    """
    if missing := {"W_enc", "b_gate", "b_mag", "r_mag"} - set(tensors):
        raise ValueError(f"{path / 'sae_weights.safetensors'} lacks {sorted(missing)}: not a SAELens gated SAE")
    scale = tensors.pop("r_mag").exp()
    b_gate, b_mag = tensors.pop("b_gate"), tensors.pop("b_mag")
    threshold = (b_mag - b_gate * scale).clamp_min(0)
    return {**tensors, "W_enc": tensors["W_enc"] * scale, "b_enc": b_mag, "threshold": threshold}


def _load_sparsify(path: Path, cfg: dict) -> Dictionary:
    tensors = load_file(path / "sae.safetensors")
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(f"sparsify activation {cfg['activation']!r} is not supported (only topk)")
    skip = bool(cfg.get("skip_connection")) or "W_skip" in tensors
    missing = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"} - set(tensors)
    if missing:
        raise ValueError(
            f"{path / 'sae.safetensors'} lacks {sorted(missing)}: it is neither a mechscope dictionary (cfg.json has "
            f'no "format": "{FORMAT}") nor a sparsify one (encoder.weight, encoder.bias, W_dec, b_dec)'
        )
    encoder = tensors.pop("encoder.weight")  # [d_sae d_in]
    d_sae, d_in = encoder.shape
    if cfg.get("d_in", d_in) != d_in:
        raise ValueError(f"{path}: cfg.json says d_in={cfg['d_in']} but encoder.weight is {tuple(encoder.shape)}")
    transcode = bool(cfg.get("transcode", False))
    dcfg = DictionaryConfig(
        kind="topk",
        d_in=d_in,
        d_sae=d_sae,
        d_out=tensors["W_dec"].shape[1] if transcode else None,
        k=int(cfg["k"]),
        apply_b_dec_to_input=not transcode,  # sparsify subtracts b_dec from the input unless transcoding
        skip_connection=skip,
    )
    if skip:
        if "W_skip" not in tensors:
            raise ValueError(f"{path}: cfg.json asks for a skip connection but sae.safetensors has no W_skip")
        tensors["W_skip"] = tensors["W_skip"].T.contiguous()  # sparsify: out += x @ W_skip.mT, W_skip [d_out d_in]
    state = {"W_enc": encoder.T.contiguous(), "b_enc": tensors.pop("encoder.bias"), **tensors}
    return _build(dcfg, state, path)


def export_saelens(dictionary: Dictionary, path: str | Path) -> Path:
    """Write a copy of ``dictionary`` that SAELens loads (``SAE.load_from_disk``) to ``path``."""
    cfg = dictionary.cfg
    if cfg.is_transcoder and cfg.kind == "topk":
        raise ValueError("SAELens has no TopK transcoder architecture to export to")
    if cfg.skip_connection:
        raise ValueError("SAELens's file format has no skip connection: export_sparsify keeps it")
    arch = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}[cfg.kind]
    if cfg.is_transcoder:
        arch = {"standard": "transcoder", "jumprelu": "jumprelu_transcoder"}[arch]
    tensors = {n: getattr(dictionary, n).detach().to("cpu").contiguous() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if cfg.kind in ("jumprelu", "batchtopk"):
        assert isinstance(dictionary, JumpReLUDictionary | BatchTopKDictionary)  # the kinds with a threshold
        threshold = dictionary.threshold.detach().to("cpu")  # [d_sae] (jumprelu) or [] (batchtopk)
        tensors["threshold"] = threshold.expand(cfg.d_sae).contiguous()
    out = {
        "architecture": arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"hook_name": _hook_name(cfg.site), "sae_lens_version": SAELENS_VERSION},
    }
    if cfg.kind == "topk":
        out |= {"k": cfg.k, "rescale_acts_by_decoder_norm": False}
    if cfg.is_transcoder:
        out |= {"d_out": cfg.width_out, "hook_name_out": _hook_name(cfg.target_site) or ""}
    path = Path(path)
    _write(path, "sae_weights.safetensors", tensors, out)
    return path


def export_sparsify(dictionary: Dictionary, path: str | Path) -> Path:
    """Write a copy of ``dictionary`` in EleutherAI sparsify's layout (``SparseCoder.load_from_disk`` reads it).

    sparsify's coders are TopK: other kinds are refused. A transcoder must predict a target as wide as its input
    (sparsify's ``transcode``).
    """
    cfg = dictionary.cfg
    if cfg.kind != "topk":
        raise ValueError(f"sparsify coders are TopK; a {cfg.kind} dictionary cannot be exported to its layout")
    if cfg.is_transcoder and cfg.width_out != cfg.d_in:
        raise ValueError(
            f"sparsify transcoders predict a target as wide as their input ({cfg.d_in}), not {cfg.width_out}"
        )
    if not cfg.is_transcoder and not cfg.apply_b_dec_to_input:
        raise ValueError("sparsify subtracts b_dec from an autoencoder's input; this dictionary does not")
    tensors = {
        "encoder.weight": dictionary.W_enc.detach().to("cpu").T.contiguous(),
        "encoder.bias": dictionary.b_enc.detach().to("cpu").contiguous(),
        "W_dec": dictionary.W_dec.detach().to("cpu").contiguous(),
        "b_dec": dictionary.b_dec.detach().to("cpu").contiguous(),
    }
    if cfg.skip_connection:
        tensors["W_skip"] = dictionary.W_skip.detach().to("cpu").T.contiguous()
    out = {"activation": "topk", "expansion_factor": max(1, cfg.d_sae // cfg.d_in), "normalize_decoder": True,
           "num_latents": cfg.d_sae, "k": cfg.k, "multi_topk": False, "skip_connection": cfg.skip_connection,
           "transcode": cfg.is_transcoder, "d_in": cfg.d_in}  # fmt: skip
    path = Path(path)
    _write(path, "sae.safetensors", tensors, out)
    return path
