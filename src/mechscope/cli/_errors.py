"""One place that turns any failure of a command into one line (or one JSON object) and a documented exit status.

Commands raise; they do not print errors. ``LazyGroup.invoke`` hands whatever escapes a command to ``report``,
which classifies it (``classify``: mechscope's own errors carry their exit status and hint, the built-in ones are
mapped by kind), prints ``error: MESSAGE`` and ``hint: ...`` on stderr — or, under ``--json``,
``{"error": {"type", "message", "hint", "exit_code"}}`` on stdout — and exits with the status of
``mechscope._errors.EXIT_CODES``. ``mechscope --debug CMD`` (or ``MECHSCOPE_DEBUG=1``) re-raises instead, with the
traceback. This module imports neither torch nor any family: it runs for ``mechscope --help`` too.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape

from .._errors import MechscopeError

_STATE: dict[str, Any] = {"json": False, "debug": False, "device": None, "dtype": None, "device_map": None}
"""Set while a command line is parsed: ``--json`` by the group from the raw arguments (``reset``), ``--debug`` and
the placement options by the group's callback."""


def reset(args: list[str]) -> None:
    """Start a command line: forget the previous one's flags, note whether it asks for JSON.

    ``--json`` anywhere before ``--`` counts, even when the line itself is malformed; the test runner invokes many
    commands in one process, hence the forgetting.
    """
    ours = args[: args.index("--")] if "--" in args else args
    _STATE.update(json="--json" in ours, device=None, dtype=None, device_map=None)
    _STATE["debug"] = os.environ.get("MECHSCOPE_DEBUG", "") not in ("", "0")


def set_debug(debug: bool) -> None:
    _STATE["debug"] = _STATE["debug"] or debug


def set_placement(device: str | None, dtype: str | None, device_map: str | None) -> None:
    """The root options ``--device``, ``--dtype`` and ``--device-map``: where and how every command opens models."""
    _STATE.update(device=device, dtype=dtype, device_map=device_map)


def placement() -> dict[str, Any]:
    return {k: _STATE[k] for k in ("device", "dtype", "device_map")}


def debugging() -> bool:
    return _STATE["debug"]


def wants_json() -> bool:
    return _STATE["json"]


@dataclass(frozen=True)
class Failure:
    """A failure as the command line reports it."""

    exit_code: int
    type: str
    message: str
    hint: str | None = None

    def to_json(self) -> str:
        return json.dumps({"error": {"type": self.type, "message": self.message, "hint": self.hint,
                                     "exit_code": self.exit_code}})  # fmt: skip


def classify(err: BaseException) -> Failure:
    """The exit status, type name, one-line message and hint for ``err``."""
    kind = type(err).__name__
    message = _message(err)
    if isinstance(err, MechscopeError):
        return Failure(err.exit_code, kind, message, err.hint)
    if isinstance(err, KeyboardInterrupt):
        return Failure(130, "Interrupted", "interrupted; finished work is kept", "rerun the same command to resume")
    if isinstance(err, MemoryError):
        return Failure(6, kind, "out of memory", "use a smaller --batch-size, fewer sites, or a shorter prompt")
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {err.filename}" if err.filename else ""
        return Failure(6, "DiskFull", f"no space left on the device{where}",
                       "free some space or write elsewhere; finished shards and checkpoints are kept")  # fmt: skip
    if isinstance(err, PermissionError):
        return Failure(6, kind, message, "choose a folder you can write to")
    if isinstance(err, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return Failure(3, kind, message)
    if kind == "SafetensorError" or isinstance(err, json.JSONDecodeError):
        return Failure(4, "IntegrityError", f"a file is corrupt or not in the expected format: {message}",
                       "rebuild or re-download it; mechscope never repairs files in place")  # fmt: skip
    if isinstance(err, FloatingPointError):
        return Failure(5, kind, message, "lower the learning rate, or resume from the last good checkpoint")
    if isinstance(err, (KeyError, ValueError, TypeError, IndexError)):
        return Failure(1, kind, message, getattr(err, "hint", None))
    hint = "this is a bug in mechscope: rerun with `mechscope --debug ...` and report the traceback"
    return Failure(70, kind, f"internal error: {kind}: {message}", hint)


def report(err: BaseException) -> int:
    """Print ``err`` as the command line does (JSON on stdout under --json) and return its exit status."""
    failure = classify(err)
    if _STATE["json"]:
        sys.stdout.write(failure.to_json() + "\n")
        sys.stdout.flush()
        return failure.exit_code
    console = Console(stderr=True, highlight=False)
    console.print(f"[bold red]error:[/] {escape(failure.message)}", soft_wrap=True)
    if failure.hint:
        console.print(f"[dim]hint:[/] {escape(failure.hint)}", soft_wrap=True)
    return failure.exit_code


def report_usage(err: Any) -> int:
    """A malformed command line under --json: the usage error as JSON on stdout, exit status 2."""
    failure = Failure(2, "UsageError", err.format_message(), "see `mechscope COMMAND --help`")
    sys.stdout.write(failure.to_json() + "\n")
    return failure.exit_code


def passes_through(err: BaseException) -> bool:
    """Exceptions the command-line framework handles itself (exit, usage errors, --help)."""
    return type(err).__module__.split(".")[0] in {"click", "typer"} or isinstance(err, SystemExit)


def _message(err: BaseException) -> str:
    # A KeyError's str() is the repr of its argument: show the argument itself when it is a sentence.
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]
        return text if " " in text else f"no entry named {text!r}"
    text = str(err) or type(err).__name__
    return " ".join(text.split()) if "\n" not in text.strip() else text.strip()
