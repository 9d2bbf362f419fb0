"""Lenses: read intermediate residual streams as next-token predictions."""

from mechscope.lenses.logit_lens import LogitLensResult, logit_lens, plot_logit_lens

__all__ = ["LogitLensResult", "logit_lens", "plot_logit_lens"]
