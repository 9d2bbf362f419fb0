"""Lenses: read intermediate residual streams as next-token predictions.

Example::

    import mechscope as ms
    from mechscope.lenses import METHODS, logit_lens, logit_lens_grid

    model = ms.load("smollm2-135m")
    lens = logit_lens(model, "When Mary and John went to the store, John gave a drink to", " Mary")
    lens.answer_probs  # [batch layer]: P(" Mary") read from every layer's resid_post
    METHODS["logit-lens"](model, "The capital of France is", top_k=10)  # the same method, by its declared name
    logit_lens_grid(model, "The capital of France is").top_tokens  # [layer][pos][k]: every position at once

Pictures of these results are drawn by ``mechscope.report`` (``plot_logit_lens``, ``logit_lens_heatmap``).
"""

from mechscope.lenses._grid import LensGrid, logit_lens_grid
from mechscope.lenses._registry import METHODS
from mechscope.lenses.logit_lens import LogitLensConfig, LogitLensResult, logit_lens

__all__ = ["METHODS", "LensGrid", "LogitLensConfig", "LogitLensResult", "logit_lens", "logit_lens_grid"]
