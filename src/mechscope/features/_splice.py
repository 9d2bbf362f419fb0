"""Splicing: how much of the model's behaviour survives when a dictionary's output replaces the site it models.

An autoencoder's reconstruction replaces its site; a transcoder's prediction, computed from its input site,
replaces its target site. The spliced model's next-token cross-entropy is compared with the clean model's and
with the model whose site is zeroed (Bricken et al. 2023, "Towards Monosemanticity", loss recovered; Gao et al.
2024, "Scaling and evaluating sparse autoencoders", §4.1, downstream loss and KL)::

    ce_loss_recovered = (ce_zero_ablated - ce_spliced) / (ce_zero_ablated - ce_clean)

1 when splicing costs nothing, 0 when it is as bad as erasing the site. The KL divergences from the clean
next-token distribution are averaged over the same positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechscope.core import Ablate, Replace
from mechscope.core._interventions import Index
from mechscope.features._dictionary import Dictionary
from mechscope.features._intervene import as_rows, eval_mode, site_of

if TYPE_CHECKING:
    from mechscope.core import Model


class SpliceMetrics(NamedTuple):
    """Next-token loss of a model with a dictionary spliced in, against clean and zero-ablated runs."""

    ce_clean: float
    """Mean next-token cross-entropy (nats) of the unmodified model."""
    ce_spliced: float
    """The same with the dictionary's output in place of the site."""
    ce_zero_ablated: float
    """The same with the site set to zero."""
    ce_loss_recovered: float
    """``(ce_zero_ablated - ce_spliced) / (ce_zero_ablated - ce_clean)``; nan when zeroing costs nothing."""
    kl_spliced: float
    """Mean KL(clean ‖ spliced) of the next-token distributions (nats)."""
    kl_zero: float
    """Mean KL(clean ‖ zero-ablated) (nats)."""
    n_tokens: int
    """Predictions averaged over: every position but the last of every context."""


@torch.no_grad()
def splice_eval(
    model: Model,
    dictionary: Dictionary,
    site: str | None,
    tokens: Int[Tensor, "batch pos"],
    *,
    target_site: str | None = None,
    skip_bos: bool = True,
    batch_size: int = 8,
    progress: bool = False,
) -> SpliceMetrics:
    """Cross-entropy recovered and KL when ``dictionary`` replaces its site, over contexts of token ids.

    ``site`` is the site the dictionary reads (None: ``dictionary.cfg.site``); a transcoder replaces
    ``target_site`` (default ``cfg.target_site``) with its prediction from ``site``'s clean activations. With
    ``skip_bos`` position 0 is neither spliced nor ablated, as the store leaves the BOS token out of training.
    Contexts run ``batch_size`` at a time, three forward passes each (a progress bar with ``progress``).
    """
    site = site_of(dictionary, site)
    target = (target_site or dictionary.cfg.target_site) if dictionary.cfg.is_transcoder else site
    if target is None:
        raise ValueError("the transcoder's config names no target site: pass target_site=")
    if [s.name for s in model.resolve([target, site])] != [site, target] and site != target:
        raise ValueError(f"the transcoder's input {site!r} must come before its target {target!r} in the model")
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [batch pos] with pos >= 2, got shape {list(tokens.shape)}")
    pos = slice(1, None) if skip_bos else None
    sums = torch.zeros(5, dtype=torch.float64)  # ce clean, ce spliced, ce zero, kl spliced, kl zero
    for chunk in tqdm(tokens.split(batch_size), desc="splice", unit="batch", disable=not progress):
        clean = model.run(chunk, cache=[site] if dictionary.cfg.is_transcoder else ())
        if dictionary.cfg.is_transcoder:
            spliced = _predicted(dictionary, site, target, clean.cache[site], pos)
        else:
            spliced = splice(dictionary, site=site, pos=pos)
        with model.intervene(spliced):
            logits_spliced = model.run(chunk).logits
        with model.intervene(Ablate(target, pos=pos)):
            logits_zero = model.run(chunk).logits
        sums += _losses(chunk, clean.logits, logits_spliced, logits_zero)  # type: ignore[arg-type]
    n = tokens.shape[0] * (tokens.shape[1] - 1)
    ce_clean, ce_spliced, ce_zero, kl_spliced, kl_zero = (sums / n).tolist()
    gap = ce_zero - ce_clean
    recovered = (ce_zero - ce_spliced) / gap if gap != 0 else float("nan")
    return SpliceMetrics(ce_clean, ce_spliced, ce_zero, recovered, kl_spliced, kl_zero, n)


@torch.no_grad()
def _losses(
    tokens: Int[Tensor, "batch pos"],
    clean: Float[Tensor, "batch pos d_vocab"],
    spliced: Float[Tensor, "batch pos d_vocab"],
    zero: Float[Tensor, "batch pos d_vocab"],
) -> Tensor:
    """Summed next-token CE of each run and summed KL(clean ‖ run), over every position but the last."""
    targets = tokens[:, 1:].reshape(-1).to(clean.device)
    logp = [F.log_softmax(logits[:, :-1].flatten(0, 1).float(), dim=-1) for logits in (clean, spliced, zero)]
    ce = [F.nll_loss(lp, targets, reduction="sum") for lp in logp]
    kl = [F.kl_div(lp, logp[0], log_target=True, reduction="sum") for lp in logp[1:]]
    return torch.stack([*ce, *kl]).double().cpu()


@dataclass(frozen=True, eq=False, repr=False)
class _Reconstruct:
    """The ``fn`` of ``splice``: an autoencoder's reconstruction of the activation."""

    dictionary: Dictionary
    site: str

    def __repr__(self) -> str:
        cfg = self.dictionary.cfg
        return f"reconstruction({cfg.kind}, d_in={cfg.d_in}, d_sae={cfg.d_sae})"

    def __call__(self, act: Tensor) -> Tensor:
        d = self.dictionary
        with eval_mode(d):
            recon = d.reconstruct(as_rows(act, d.cfg.d_in, self.site).to(d.W_dec))
        return recon.reshape(act.shape).to(act)


def splice(dictionary: Dictionary, *, site: str | None = None, pos: Index = None) -> Replace:
    """Replace ``site`` (default ``dictionary.cfg.site``) by the autoencoder's reconstruction, without error term.

    For runs and generation with the dictionary in the model; ``splice_eval`` measures what that costs.
    """
    if dictionary.cfg.is_transcoder:
        raise TypeError("splice() takes an autoencoder; splice_eval() splices a transcoder between its two sites")
    site = site_of(dictionary, site)
    return Replace(site, fn=_Reconstruct(dictionary, site), pos=pos)


def _predicted(dictionary: Dictionary, site: str, target: str, inputs: Tensor, pos: slice | None) -> Replace:
    """Replace ``target`` by the transcoder's prediction from the clean ``inputs`` at ``site``.

    The target lies downstream of the input, so the input in the spliced run is the clean run's.
    """
    d = dictionary
    with eval_mode(d):
        prediction = d.reconstruct(as_rows(inputs, d.cfg.d_in, site).to(d.W_dec))
    prediction = prediction.reshape(*inputs.shape[:2], d.cfg.width_out)  # [batch pos d_out]
    region = prediction if pos is None else prediction[:, pos]
    return Replace(target, fn=lambda act: region.reshape(act.shape).to(act), pos=pos)
