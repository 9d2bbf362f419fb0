"""The errors mechscope raises on purpose, each with the exit status the command line gives it.

Every class here subclasses the built-in exception a caller would already catch (a corrupt file is a ``ValueError``,
a non-finite loss a ``FloatingPointError``), so ``except ValueError`` keeps working; the command line maps the class
to an exit status (``EXIT_CODES``) and prints the message and its ``hint`` as one line (``--debug``: the traceback).
"""

from __future__ import annotations


class MechscopeError(Exception):
    """Base of mechscope's own errors: a message that names the file/site/value, and a hint that says what to do."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class CheckFailed(MechscopeError):
    """A check the command runs failed: an organism's verification, a method, a reproduction tolerance."""

    exit_code = 1


class IntegrityError(MechscopeError, ValueError):
    """A file does not match its recorded checksum, or is truncated or unreadable: it is corrupt."""

    exit_code = 4


class MismatchError(MechscopeError, ValueError):
    """Two artefacts that must come from the same model/store/site do not (the message shows both)."""

    exit_code = 4


class NonFiniteError(MechscopeError, FloatingPointError):
    """A computation produced NaN or infinity (a loss, weights read from a file)."""

    exit_code = 5


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "bad input (a value, site, shape or name the command cannot use), or a check the command runs failed "
    "(bench: an organism or method failed, or --check found a row that moved)",
    2: "command-line usage (unknown option, missing argument)",
    3: "not found: a path, model or file that does not exist, or a directory that is not what was asked for",
    4: "integrity: a file is corrupt (checksum, truncation) or belongs to another model/store/site",
    5: "non-finite: a loss, activation or weight became NaN or infinity",
    6: "resources: disk full, out of memory, or no permission to write",
    70: "internal error: a bug in mechscope (rerun with --debug and report the traceback)",
    130: "interrupted (Ctrl-C or SIGTERM); finished work is kept",
}
"""Exit statuses of the ``mechscope`` command line, by number (docs/cli.md prints this table)."""
