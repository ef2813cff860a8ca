"""The exceptions a user can fix (the CLI prints the message on one line and exits with code 2), a failed
write among them, and Interrupted (stopped by Ctrl-C, `kill` or a closed terminal: signals.py). An error's
`fix` holds the facts of its remedy; advice.py, in the command layer, words it as the command to run."""

from __future__ import annotations

import errno
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fix:
    """What would mend an error, as facts: `action` (a key of advice.ACTIONS) on the run folder `path`, after
    the failed write's `errno` is mended where there is one; `lead` words the action if not the default."""

    action: str
    path: Path | None = None
    errno: int | None = None
    lead: str = ""


class UserError(Exception):
    """Bad input, missing files or a missing package: what is wrong (the message) and what would fix it
    (words in the message, or `fix`, which the command layer words as a command)."""

    def __init__(self, message: str, fix: Fix | None = None):
        super().__init__(message)
        self.fix = fix


class WriteFailed(UserError):
    """A file could not be written (disk full, read-only, name too long, ...); nothing partial was left."""

    def __init__(self, message: str, errno: int | None = None, advised: bool = True, fix: Fix | None = None):
        super().__init__(message, fix)
        self.errno = errno
        self.advised = advised or fix is not None  # False: no fix yet (the command layer may add one)


class Interrupted(UserError):
    """Stopped by Ctrl-C or a signal; the message says how to go on. Exit code 130."""


def write_failed(path: str | Path, error: OSError, advice: str = "", fix: Fix | None = None) -> WriteFailed:
    """The one line for an OSError while writing `path`: the path, the cause, and `advice` or `fix` if any."""
    cause = error.strerror or type(error).__name__
    if not advice and fix is None:
        advice = {
            errno.ENOENT: "its folder does not exist: make it first, or give another path",
            errno.EISDIR: "a folder has that name: give a file name",
        }.get(error.errno, "")
    return WriteFailed(
        f"cannot write {path} ({cause})" + (f"; {advice}" if advice else ""), error.errno, bool(advice), fix
    )


def pip_install(spec: str) -> str:
    """The command that installs `spec` into the Python running mnist-mlp: a bare `pip` may be another
    Python's (the system's, with .venv not activated), which this one never sees."""
    return f"`{shlex.quote(sys.executable)} -m pip install {shlex.quote(spec)}`"
