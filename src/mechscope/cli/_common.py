"""Shared pieces of the command line: opening MODEL arguments, output consoles, user-facing errors."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ._errors import debugging, placement, report

if TYPE_CHECKING:
    from ..core import Model

# This module is imported for `mechscope --help`, which must not import torch: nothing here imports the core at
# module level. The core's DEFAULT_MODEL, repeated (tests/test_startup.py checks that the two agree).
DEFAULT_MODEL = "smollm2-135m"

_TINY = re.compile(r"tiny-(?P<family>[a-z0-9_-]+?)(?:-s(?P<seed>\d+))?")

# Errors whose message is the whole story for a CLI user (the core words them to say what to do instead; its
# UnknownSiteError is a KeyError).
_USER_ERRORS = (KeyError, ValueError, FileNotFoundError, TypeError)

ModelArg = Annotated[str, typer.Argument(help="Built-in name, Hugging Face id, local path, or tiny-FAMILY.")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help='Print JSON instead of a table; errors too, as {"error": {...}} on stdout.')
]


def out_console() -> Console:
    # Built per call, not at import, so the console writes to whatever sys.stdout is now (tests capture it).
    return Console(highlight=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the core's user-facing errors into one line (JSON under --json) and their exit status, no traceback.

    The top-level group does the same for anything a command raises (``_errors.report``); this block is for a
    command that must stop at a known point (before writing partial output, say).
    """
    try:
        yield
    except _USER_ERRORS as err:
        if debugging():
            raise
        raise typer.Exit(report(err)) from None


def open_model(name: str) -> Model:
    """Open MODEL as the CLI understands it: ``tiny-FAMILY[-sSEED]`` or anything ``ms.load`` accepts."""
    from .._names import BUILTIN, locate

    if not name.startswith("tiny-") and name not in BUILTIN:
        locate(name)  # a typo or a missing folder fails here, before torch is imported
    import torch

    import mechscope as ms

    from ..core import TINY_CONFIGS

    where = placement()
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if where["dtype"] is not None and where["dtype"] not in dtypes:
        raise ValueError(f"--dtype {where['dtype']!r} is not one of {', '.join(dtypes)}")
    dtype, device = dtypes[where["dtype"] or "float32"], where["device"] or "cpu"
    if (m := _TINY.fullmatch(name)) and (family := m["family"].replace("-", "_")) in TINY_CONFIGS:
        model = ms.tiny(family, seed=int(m["seed"] or 0))
        model.module.to(device=device, dtype=dtype)
        return model
    if name.startswith("tiny-"):
        raise ValueError(f"unknown tiny model {name!r}; choose from " + ", ".join(f"tiny-{f}" for f in TINY_CONFIGS))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own status line says what is loading
    with err_console().status(f"Loading {escape(name)}…"), redirect_stdout(sys.stderr):  # keep stdout for results only
        return ms.load(name, dtype=dtype, device=device, device_map=where["device_map"])
