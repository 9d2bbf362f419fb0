"""Read a residual stream as logits with the model's own final norm and unembedding (no copies of weights).

Used by lenses and direct logit attribution. The modules are the model's own, so any hooks installed on them (for
example by an active ``model.intervene`` block on ``final_norm`` or ``logits``) run too.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ._model import Model


def final_modules(model: Model) -> tuple[nn.Module, nn.Module]:
    """The model's final norm and unembedding modules (located through the ``final_norm`` and ``logits`` sites)."""
    if model.cfg is None:
        raise TypeError(
            f"{model.name} is not a transformer language model mechscope knows: it has no final norm or "
            "unembedding to read the residual stream with"
        )
    root = model.module
    norm = root.get_submodule(model.resolve("final_norm")[0].module)
    head = root.get_submodule(model.resolve("logits")[0].module)
    return norm, head


def unembed(model: Model, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """Logits the model would output if ``resid`` were its last residual stream: final norm, then unembedding.

    Norms act on each position separately, so ``resid`` may hold any selection of positions or layers.
    """
    norm, head = final_modules(model)
    logits = head(norm(resid))
    # Gemma 2 squashes its logits in the causal-LM head's forward (not a module we can call): cap * tanh(x / cap).
    cap = getattr(getattr(model.module, "config", None), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
