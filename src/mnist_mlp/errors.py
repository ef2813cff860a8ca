"""The one exception a user can fix: the CLI prints its message on one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input, missing files or a missing package: what is wrong and what to do, in one line."""


class WriteFailed(UserError):
    """A file could not be written (disk full, read-only, name too long, ...); nothing partial was left."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


def write_failed(path: str | Path, error: OSError, advice: str = "") -> WriteFailed:
    """The one line for an OSError while writing `path`: the path, the cause, and `advice` if any."""
    cause = error.strerror or type(error).__name__
    return WriteFailed(f"cannot write {path} ({cause})" + (f"; {advice}" if advice else ""), error.errno)
