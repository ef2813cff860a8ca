"""The user's files: read with a cap (read_capped); written atomically (a temporary name, then a rename),
under a free default name (curves.png, then curves-2.png, ...), or where the user said, never replacing a
file of the user's (ours carry MADE_BY); and paths that advice may print. Standard library only."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import secrets
import shlex
import stat
import tempfile
from pathlib import Path

from mnist_mlp.errors import UserError, write_failed

MADE_BY = "mnist-mlp"  # in the metadata of the figures we write and in bench's JSON: a file --out may replace
# Where our figures and JSON reports carry MADE_BY: the PNG's Software text, the JPEG's comment, the SVG's
# creator, the PDF's Creator (near its end), bench's made_by key.
MARKS = (
    b"tEXtSoftware\x00mnist-mlp",
    b"\xff\xfe\x00\x0bmnist-mlp",
    b"<dc:title>mnist-mlp</dc:title>",
    b"/Creator (mnist-mlp)",
    b'"made_by": "mnist-mlp"',
)


UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)  # a read-only disk or a folder of someone else's
FIXES = {
    errno.EROFS: "make the disk writable",
    errno.EACCES: "make the folder writable",
    errno.EPERM: "make the folder writable",
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some of your quota",
}


SHELL_PIPES = ("/dev/fd/", "/proc/self/fd/", "/dev/stdin")  # where the shell hands a pipe over: <(command)


def read_capped(path: Path, limit: int, what: str, give: str) -> bytes:
    """The bytes of the user's file `path` (see check_readable), `what` it is meant to be; a UserError,
    advising `give`, for more than `limit` bytes. FileNotFoundError and IsADirectoryError are the caller's."""
    check_readable(path, what, give)
    with open(path, "rb") as f:
        content = f.read(limit + 1)
    if len(content) > limit:
        raise UserError(
            f"{what} {path} holds more than {limit / 2**20:g} MB, more than any {what} does; {give}"
        )
    return content


def check_readable(path: Path, what: str, give: str) -> None:
    """A UserError, advising `give`, unless `path` is a regular file or a pipe the shell made (`<(command)`,
    /dev/stdin): a device (/dev/zero would be read until memory runs out) or a named pipe (it would wait for
    a writer unseen) is no file of the user's. FileNotFoundError and IsADirectoryError are the caller's."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if stat.S_ISFIFO(mode) and not str(path).startswith(SHELL_PIPES):
        raise UserError(f"{what} {path} is a named pipe, which would wait for a writer; {give}")
    if not stat.S_ISREG(mode) and not stat.S_ISFIFO(mode):
        raise UserError(f"{what} {path} is a device or socket, not a file; {give}")


def stamp(path: str | Path) -> tuple | None:
    """Which file `path` is (a file renamed into place is a new inode; one rewritten changes its time or
    size), or None if there is none."""
    try:
        found = Path(path).stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def temporary(path: Path) -> Path:
    """A temporary name beside `path`, unique to this call: two processes never share one. (folders._is_ours
    knows this form: --overwrite clears what a killed write left.)"""
    tag = f".tmp-{os.getpid()}-{secrets.token_hex(3)}{path.suffix}"
    # A name fits in 255 bytes
    stem = path.stem.encode()[: 255 - 1 - len(tag.encode())].decode(errors="ignore")
    return path.with_name(f".{stem}{tag}")


@contextlib.contextmanager
def atomic(path: str | Path, advice: str = ""):
    """Yield a temporary path beside `path` (same suffix); rename it to `path` only if the block succeeds.
    An OSError (disk full, read-only, ...) becomes a WriteFailed naming `path` (and `advice`); no temporary
    file is left."""
    path = Path(path)
    tmp = temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise write_failed(path, e, advice) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def shell_path(path: str | Path) -> str:
    """`path` as a command line argument that works as written: quoted, and never read as an option."""
    text = str(path)
    return shlex.quote(f"./{text}" if text.startswith("-") else text)


def free_name(path: str | Path, suffix: str = "", flag: str = "--out") -> Path:
    """`path` itself if nothing is there, else the first of path-2, path-3, ... that does not exist; a file
    name keeps its `suffix` last (curves.png, curves-2.png, ...), so a default output never replaces a
    file."""
    path = Path(path)
    if not path.name:  # "." names no folder: the folder it stands for; "/" none at all: one inside it
        path = path.resolve() if path.resolve().name else path / "run"
    stem = path.name.removesuffix(suffix)
    names = itertools.chain([path], (path.with_name(f"{stem}-{i}{suffix}") for i in range(2, 10_000)))
    free = next((p for p in names if not os.path.lexists(p)), None)  # a broken link is a name taken too
    if free is None:
        raise UserError(f"{path} and 9,998 numbered names like it are taken; give a name with {flag}")
    return free


@contextlib.contextmanager
def output(
    given: str | Path | None,
    default: str | Path,
    suffix: str = "",
    *,
    folder: bool = False,
    flag: str = "--out",
    remove_unused=None,
):
    """Where a command writes: `given` (the user's `flag`) as it is; else the first free name of `default`
    (see free_name), made now, empty (a file, or a folder with `folder`), so that two commands at once never
    take one name (the second takes default-2). Yields it for the block to fill; a default name still empty
    after the block (it failed) is removed: a file of no bytes, a folder by `remove_unused` (else if
    empty)."""
    if given:
        if not folder:
            check_target(Path(given), flag, Path(default).name)
        yield Path(given)
        return
    default, taken = Path(default), None
    made = not default.parent.exists()
    try:
        try:
            default.parent.mkdir(parents=True, exist_ok=True)  # runs/
            for _ in range(100):
                name = free_name(default, suffix, flag)
                try:
                    if folder:
                        name.mkdir()
                    else:
                        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
                    taken = name
                    break
                except FileExistsError:  # made a moment ago by another command (or a broken link there)
                    continue
            else:
                raise UserError(f"cannot take a free name for {default}; give one with {flag}")
        except OSError as e:
            raise write_failed(e.filename or default, e, f"choose where to write with {flag}") from None
        yield taken
    finally:  # also after Ctrl-C: nothing of ours left empty
        with contextlib.suppress(OSError):
            if taken is not None and folder:
                (remove_unused or Path.rmdir)(taken)
            elif taken is not None and taken.stat().st_size == 0:
                taken.unlink()
        if made:
            with contextlib.suppress(OSError):
                default.parent.rmdir()  # only if empty


def check_target(path: Path, flag: str, example: str) -> None:
    """A UserError if `path` is there and not a plain file: the rename that writes it would replace a folder's
    name, a symbolic link (not what it points to) or a device (root's `--out /dev/null` became a PNG); or if
    it is a file of the user's (not empty, without our mark)."""
    try:
        status = os.lstat(path)
    except OSError:
        return  # not there (or not reachable): the write says what is wrong
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        name = free_name(path / example, Path(example).suffix, flag)  # not a file of the user's there
        raise UserError(f"{flag} {path} is a folder; give a file name, e.g. {flag} {shell_path(name)}")
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "a device or pipe"
        raise UserError(f"{flag} {path} is {kind}, which writing would replace; give the name of a file")
    if status.st_size and not made_by_us(path):
        other = shell_path(free_name(path, path.suffix, flag))
        raise UserError(
            f"{flag} {path} is a file that mnist-mlp did not write, so it is not replaced; give another "
            f"name, e.g. {flag} {other} (or move it away first)"
        )


def made_by_us(path: Path) -> bool:
    """Whether file `path` carries one of our MARKS near its start or end."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            f.seek(max(0, os.fstat(f.fileno()).st_size - (1 << 16)))
            tail = f.read()
    except OSError:
        return False
    return any(mark in head or mark in tail for mark in MARKS)


def writable_folder(avoid: Path | None = None) -> Path:
    """Where advice may send a file: the working folder (as "") if this user can write there and it is not
    inside `avoid`, else home if writable, else the temporary folder (a read-only HOME)."""
    here = Path.cwd()
    inside = avoid is not None and here.resolve().is_relative_to(Path(avoid).resolve())
    if os.access(here, os.W_OK) and not inside:
        return Path()
    return Path.home() if os.access(Path.home(), os.W_OK) else Path(tempfile.gettempdir())
