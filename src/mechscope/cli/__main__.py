"""``python -m mechscope.cli``: the same command line as ``mechscope`` (``torchrun -m mechscope.cli`` uses it)."""

from . import app

app()
