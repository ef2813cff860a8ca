"""Run folders claimed for training: created and marked as the tool's, locked while a process trains into
one (a second process is refused, not mixed in), emptied of the tool's own files by --overwrite, and removed
when a run leaves nothing behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from pathlib import Path

from mnist_mlp.errors import Fix, UserError
from mnist_mlp.outputs import free_name
from mnist_mlp.runs import MARKER, OURS, group_runs

LOCK_WAIT_S = 2.0  # how long the process that made a marker waits for its lock (another may hold it a moment)


def _is_ours(name: str) -> bool:
    """One of the tool's file names, or a temporary name made from one."""
    return name in OURS or (
        name.startswith(".")
        and re.sub(r"\.tmp-\d+-[0-9a-f]+", "", name[1:], count=1) in OURS
        and ".tmp-" in name
    )


@contextlib.contextmanager
def claim(path: str | Path, *, overwrite: bool = False, resume: bool = False):
    """Hold run folder `path` for the block: created and marked as the tool's, or, with `overwrite`, emptied
    of what the tool wrote there; `resume` takes a run as it is. Locked while the block runs, so a second
    process gets a UserError instead of mixing its files in. Yields the path."""
    path = Path(path)
    try:
        if path.is_symlink():
            raise UserError(
                f"{path} is a symbolic link; give the folder itself (mnist-mlp never writes through a link)"
            )
        here, where = Path.cwd().resolve(), path.resolve()
        if not resume and (where == here or where in here.parents):
            raise UserError(
                f"{path} is the working folder or holds it; give a new folder, e.g. --out runs/NAME"
            )
        fd, created = _open_marker(path, resume)
    except OSError as e:  # a name too long, a read-only or full disk, no permission
        raise _unusable(path, resume, e) from None
    try:
        try:
            _lock(fd, LOCK_WAIT_S if created else 0)
            if created:
                os.write(fd, b"made by mnist-mlp: --overwrite deletes only the files mnist-mlp writes here\n")
        except BlockingIOError:
            other = "" if resume else " or choose another --out"  # --resume takes no --out
            raise UserError(
                f"{path} is in use: another mnist-mlp process is training into it; wait for it to "
                f"finish{other}"
            ) from None
        except OSError as e:  # a full disk for the marker's line, a file system without locks
            raise _unusable(path, resume, e) from None
        if not created and not resume:
            # the marker alone: no run
            if not overwrite and any(entry.name != MARKER for entry in path.iterdir()):
                raise UserError(
                    f"{path} already holds a run; choose another --out or add --overwrite to replace it"
                )
            _remove_ours(path)
        yield path
    finally:
        os.close(fd)


def _unusable(path: Path, resume: bool, error: OSError) -> UserError:
    """A folder that cannot be written: another --out, or, for a resume (which takes none), from a copy."""
    why = f"cannot use {path} as a run folder ({error.strerror})"
    return (
        UserError(why, Fix("resume", path, error.errno))
        if resume
        else UserError(f"{why}; choose another --out")
    )


def _lock(fd: int, wait: float) -> None:
    """An exclusive lock on `fd`, waiting up to `wait` seconds; BlockingIOError if another process keeps
    it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _open_marker(path: Path, resume: bool) -> tuple[int, bool]:
    """An open descriptor of `path`'s marker, and whether this call created it (and the folder's claim)."""
    marker, flags = path / MARKER, os.O_RDWR | os.O_NOFOLLOW
    if resume:
        if not marker.is_file():
            raise UserError(
                f"{path} is not a run folder made by mnist-mlp train (no {MARKER}); nothing to resume"
            )
        return os.open(marker, flags), False
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{path} exists and is not a folder; choose another --out") from None
    if not marker.exists() and any(path.iterdir()):
        raise UserError(
            f"{path} holds files that mnist-mlp did not write, so it will neither train into it nor "
            f"delete it (--overwrite included); choose another --out, e.g. {free_name(path)}"
        )
    try:
        return os.open(marker, flags | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:  # made a moment ago by another process, or a run of ours
        return os.open(marker, flags), False


def _remove_ours(folder: Path) -> None:
    """Delete what the tool wrote in a run folder of its own (the marker stays: it holds the lock); keep the
    rest."""
    try:
        seeds = group_runs(folder)  # read before group.json goes
        for entry in folder.iterdir():
            if entry.is_symlink() or not entry.is_dir():
                if _is_ours(entry.name):
                    entry.unlink()
            elif entry.name in seeds and (entry / MARKER).is_file():  # this group's own seed runs, no other
                with claim(entry, overwrite=True):
                    if [p.name for p in entry.iterdir()] == [MARKER]:  # else it keeps files of the user's
                        (entry / MARKER).unlink()
                        entry.rmdir()
    except OSError as e:
        raise UserError(
            f"cannot clear {folder} for --overwrite ({e.strerror}); remove it yourself or choose "
            "another --out"
        ) from None


def remove_run(path: str | Path) -> None:
    """Delete a run folder of the tool's: what it wrote there, then the folder if nothing of the user's is
    left. Nothing if it is not there, not the tool's, or held by a process training into it."""
    path = Path(path)
    if not (path / MARKER).is_file():
        return
    with contextlib.suppress(UserError, OSError):
        with claim(path, overwrite=True):
            pass  # what the tool wrote, removed under the lock
        remove_unused(path)  # then the folder, if only the marker is left and no claim came meanwhile


def remove_unused(folder: Path) -> None:
    """Remove run folder `folder` if it holds nothing, or only the marker of a claim no process holds (one
    that stopped before writing anything); an OSError if not."""
    if [entry.name for entry in folder.iterdir()] == [MARKER]:
        fd = os.open(folder / MARKER, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while the marker goes: no claim slips in
            (folder / MARKER).unlink()
        finally:
            os.close(fd)
    folder.rmdir()
