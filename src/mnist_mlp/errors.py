"""The exceptions a user can fix (the CLI prints the message on one line and exits with code 2), a failed
write among them, and Interrupted (the way on after Ctrl-C, `kill` or a closed terminal: signals.py)."""

from __future__ import annotations

import errno
import shlex
import sys
from pathlib import Path


class UserError(Exception):
    """Bad input, missing files or a missing package: what is wrong and what to do, in one line."""


class WriteFailed(UserError):
    """A file could not be written (disk full, read-only, name too long, ...); nothing partial was left."""

    def __init__(self, message: str, errno: int | None = None, advised: bool = True):
        super().__init__(message)
        self.errno = errno
        self.advised = advised  # False: the message names no fix yet (the command layer may add one)


class Interrupted(UserError):
    """Stopped by Ctrl-C or a signal; the message says how to go on. Exit code 130."""


def write_failed(path: str | Path, error: OSError, advice: str = "") -> WriteFailed:
    """The one line for an OSError while writing `path`: the path, the cause, and `advice` if any."""
    cause = error.strerror or type(error).__name__
    advice = advice or {
        errno.ENOENT: "its folder does not exist: make it first, or give another path",
        errno.EISDIR: "a folder has that name: give a file name",
    }.get(error.errno, "")
    return WriteFailed(
        f"cannot write {path} ({cause})" + (f"; {advice}" if advice else ""), error.errno, bool(advice)
    )


def pip_install(spec: str) -> str:
    """The command that installs `spec` into the Python running mnist-mlp: a bare `pip` may be another
    Python's (the system's, with .venv not activated), which this one never sees."""
    return f"`{shlex.quote(sys.executable)} -m pip install {shlex.quote(spec)}`"
