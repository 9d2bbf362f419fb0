"""Task metrics on final-position logits, and the normalisation that maps clean to 1 and corrupt to 0.

Every metric takes logits ``[batch vocab]`` at each prompt's final position (``final_logits`` picks them out
of ``[batch pos vocab]`` given the attention mask, whichever side the padding is on) and returns one value per
prompt. Answer and wrong *sets* (``[batch k]``, padded with -1) are summed (probabilities) or averaged
(logits).
"""

from __future__ import annotations

import torch
from einops import einsum
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechscope.data._task import PAD_ID, Task


def final_logits(
    logits: Float[Tensor, "batch pos vocab"], attention_mask: Int[Tensor, "batch pos"] | None = None
) -> Float[Tensor, "batch vocab"]:
    """Logits at each prompt's last real (non-pad) token; the last position when no mask is given.

    Works for left or right padding: the final position is the highest position whose mask is nonzero.
    """
    if logits.ndim != 3:
        raise ValueError(f"final_logits expects logits [batch pos vocab], got shape {tuple(logits.shape)}")
    batch, pos, _ = logits.shape
    if attention_mask is None:
        return logits[:, -1]
    if tuple(attention_mask.shape) != (batch, pos):
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} does not match logits [batch pos] {(batch, pos)}"
        )
    real = attention_mask != 0  # [batch pos]
    if not bool(real.any(dim=1).all()):
        raise ValueError("attention_mask has a row with no real tokens")
    positions = torch.arange(pos, device=logits.device).expand(batch, pos)
    last = torch.where(real, positions, -1).amax(dim=1)  # [batch]
    return logits[torch.arange(batch, device=logits.device), last]


def _sets(ids: Tensor, logits: Tensor) -> tuple[Int[Tensor, "batch k"], Bool[Tensor, "batch k"]]:
    """Ids as ``[batch k]`` (padding replaced by 0, safe to gather) and the mask of real entries."""
    if logits.ndim != 2:
        raise ValueError(
            f"metrics take final-position logits [batch vocab], got shape {tuple(logits.shape)}; "
            "use final_logits(logits, attention_mask) first"
        )
    ids = ids.to(logits.device)
    ids = ids[:, None] if ids.ndim == 1 else ids
    if ids.shape[0] != logits.shape[0]:
        raise ValueError(f"logits have batch {logits.shape[0]} but the task has {ids.shape[0]} prompts")
    real = ids != PAD_ID
    return torch.where(real, ids, 0), real


def _mean_logit(logits: Tensor, ids: Tensor) -> Float[Tensor, " batch"]:
    idx, real = _sets(ids, logits)
    picked = logits.float().gather(1, idx)  # [batch k]
    return (picked * real).sum(1) / real.sum(1)


def _mass(logits: Tensor, ids: Tensor) -> Float[Tensor, " batch"]:
    idx, real = _sets(ids, logits)
    probs = logits.float().softmax(-1).gather(1, idx)  # [batch k]
    return (probs * real).sum(1)


def logit_diff(logits: Float[Tensor, "batch vocab"], task: Task) -> Float[Tensor, " batch"]:
    """Answer logit minus wrong logit (means over sets), per prompt (Wang et al. 2022, section 3)."""
    return _mean_logit(logits, task.answers) - _mean_logit(logits, task.wrongs)


def prob(logits: Float[Tensor, "batch vocab"], task: Task) -> Float[Tensor, " batch"]:
    """Probability of the answer (total over a set), per prompt."""
    return _mass(logits, task.answers)


def prob_diff(logits: Float[Tensor, "batch vocab"], task: Task) -> Float[Tensor, " batch"]:
    """Probability of the answers minus that of the wrongs, per prompt.

    For ``greater_than`` this is Hanna et al.'s (2023, section 2) probability difference: mass on later years
    minus mass on years up to the start year.
    """
    return _mass(logits, task.answers) - _mass(logits, task.wrongs)


def accuracy(logits: Float[Tensor, "batch vocab"], task: Task) -> Float[Tensor, " batch"]:
    """1.0 where the top-1 token is (one of) the answer(s), else 0.0."""
    idx, real = _sets(task.answers, logits)
    top = logits.argmax(-1, keepdim=True)  # [batch 1]
    return ((idx == top) & real).any(1).float()


def kl_to_clean(
    logits: Float[Tensor, "batch vocab"], clean_logits: Float[Tensor, "batch vocab"]
) -> Float[Tensor, " batch"]:
    """KL(clean || run) of the next-token distributions, per prompt; 0 on the clean run (Conmy et al. 2023).

    Normalise with ``normalise(kl, 0.0, kl_corrupt)`` to get 1 at clean and 0 at corrupt.
    """
    if logits.shape != clean_logits.shape or logits.ndim != 2:
        raise ValueError(
            f"kl_to_clean expects two [batch vocab] tensors of one shape, got {tuple(logits.shape)} "
            f"and {tuple(clean_logits.shape)}"
        )
    return kl_to_log_probs(logits, clean_logits.float().log_softmax(-1))


def kl_to_log_probs(
    logits: Float[Tensor, "batch vocab"], clean_log_probs: Float[Tensor, "batch vocab"]
) -> Float[Tensor, " batch"]:
    """``kl_to_clean`` given the clean run's log-probabilities (computed once when many runs are compared)."""
    log_q = logits.float().log_softmax(-1)
    return einsum(clean_log_probs.exp(), clean_log_probs - log_q, "batch vocab, batch vocab -> batch")


def normalise(value: Tensor | float, clean_value: Tensor | float, corrupt_value: Tensor | float) -> Tensor | float:
    """Rescale a metric so the clean run scores 1 and the corrupt run 0: (v - corrupt) / (clean - corrupt).

    Works elementwise on tensors (broadcasting) or on floats. Raises ValueError where clean equals corrupt,
    since the metric then does not separate them (average over the batch first if single prompts tie).
    """
    gap = clean_value - corrupt_value
    if bool(torch.as_tensor(gap == 0).any()):
        raise ValueError(f"normalise: clean and corrupt values are equal ({clean_value}); nothing to normalise by")
    return (value - corrupt_value) / gap
