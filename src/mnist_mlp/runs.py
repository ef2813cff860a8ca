"""The run directory, the unit of output: the only module that knows its file names. Claiming a folder
(marked as the tool's, locked while a process trains into it), the resume checkpoint, and reading a run
back."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import itertools
import json
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_mlp import cache
from mnist_mlp.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_from_toml,
    flat_config,
    load_config,
)
from mnist_mlp.errors import UserError
from mnist_mlp.outputs import (
    UNWRITABLE,
    after_failed_write,
    free_name,
    shell_path,
    writable_folder,
)

CONFIG = "config.toml"  # resolved config; `train --config RUN/config.toml` repeats the run
HISTORY = "history.csv"  # one row per epoch, Keras' CSVLogger
METRICS = "metrics.json"  # test metrics, timing, versions, data hashes
MODEL = "model.keras"  # loads with stock keras.saving.load_model
CURVES = "curves.png"
WEIGHTS = "weights.png"  # plot --weights: the first layer's weights as images
CONFUSION = "confusion.png"  # written by evaluate
MISCLASSIFIED = "misclassified.png"  # written by evaluate
EVALUATION = "evaluation.json"  # written by evaluate
CHECKPOINT = (
    "checkpoint.npz"  # weights, optimizer, random state after an epoch (see Checkpoint); removed at the end
)
SAVING_ONLY = {"train.checkpoint_seconds"}  # config keys that say when a run saves, not what it learns
PARTIAL_HISTORY = ".history.partial.csv"  # the epochs done so far; renamed to history.csv at the end
GROUP = "group.json"  # in a folder of seed runs (train --seeds): seeds and accuracy statistics
DIVERGED = "diverged.txt"  # a run whose loss became NaN: what to do instead of resuming
MARKER = (
    ".mnist-mlp-run"  # written when the tool creates a run folder; also the lock a training process holds
)
REQUIRED = (CONFIG, HISTORY, METRICS, MODEL)
OURS = (
    CONFIG,
    HISTORY,
    METRICS,
    MODEL,
    CURVES,
    WEIGHTS,
    CONFUSION,
    MISCLASSIFIED,
    EVALUATION,
    CHECKPOINT,
    PARTIAL_HISTORY,
    GROUP,
    DIVERGED,
)  # what --overwrite may delete in a folder that carries MARKER (with their temporary names)
LOCK_WAIT_S = 2.0  # how long the process that made a marker waits for its lock (another may hold it a moment)


def _is_ours(name: str) -> bool:
    """One of the tool's file names, or a temporary name made from one."""
    return name in OURS or (
        name.startswith(".")
        and re.sub(r"\.tmp-\d+-[0-9a-f]+", "", name[1:], count=1) in OURS
        and ".tmp-" in name
    )


@dataclass(frozen=True)
class Run:
    path: Path
    config: Config
    history: dict[str, list[float]]  # column -> one value per epoch
    metrics: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model_path(self) -> Path:
        return self.path / MODEL


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
        raise UserError(
            f"cannot use {path} as a run folder ({e.strerror}); {_elsewhere(path, resume, e)}"
        ) from None
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
            raise UserError(
                f"cannot use {path} as a run folder ({e.strerror}); {_elsewhere(path, resume, e)}"
            ) from None
        if not created and not resume:
            if not overwrite and any(
                entry.name != MARKER for entry in path.iterdir()
            ):  # the marker alone: no run
                raise UserError(
                    f"{path} already holds a run; choose another --out or add --overwrite to replace it"
                )
            _remove_ours(path)
        yield path
    finally:
        os.close(fd)


def _elsewhere(path: Path, resume: bool, error: OSError) -> str:
    """What to do when run folder `path` cannot be written: another --out; a resume (which takes none) from a
    copy where one can write, or, on a full disk, after freeing some space."""
    if not resume:
        return "choose another --out"
    if error.errno not in UNWRITABLE:
        return after_failed_write(error.errno, f"`mnist-mlp train --resume {shell_path(path)}`")
    command, copy = writable_copy(path)
    return f"resume a copy of it: `{command} && mnist-mlp train --resume {copy}`"


def writable_copy(path: Path) -> tuple[str, str]:
    """The shell command that copies run folder `path` to a new name where this user can write, writable even
    where the original's modes are not; and the copy's name, quoted."""
    copy = shell_path(free_name(writable_folder(avoid=path) / (path.resolve().name or "run")))
    return f"cp -r {shell_path(path)} {copy} && chmod -R u+w {copy}", copy


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
        seeds = _group_runs(folder)  # read before group.json goes
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


def _group_runs(folder: Path) -> set[str]:
    """The seed runs a group folder's group.json names (none if it has none)."""
    try:
        group = json.loads((folder / GROUP).read_text())
        return {f"seed-{seed}" for seed in group.get("planned", [])} | set(group.get("runs", []))
    except (OSError, ValueError, TypeError, AttributeError):
        return set()


def in_use(path: str | Path) -> bool:
    """Whether a process holds run folder `path` (is training into it)."""
    try:
        fd = os.open(Path(path) / MARKER, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def resume_group(path: str | Path) -> tuple[Config, dict]:
    """An interrupted seed group's config and group.json (a UserError, before Keras starts, if it cannot be
    continued: finished, side by side, or unreadable)."""
    path = Path(path)
    try:
        group = json.loads((path / GROUP).read_text())
        planned = [int(seed) for seed in group["planned"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{path / GROUP} is unreadable; start the group again with {fresh_start(path)}"
        ) from None
    if group.get("complete"):
        raise UserError(f"{path} has finished; nothing to resume (train it again with {fresh_start(path)})")
    if group.get("side_by_side"):
        raise UserError(
            f"{path} trained its seeds side by side, as one program, which does not resume; start it "
            f"again with {fresh_start(path)}"
        )
    return run_config(path), {**group, "planned": planned}


def resume_config(path: str | Path) -> Config:
    """The config of an interrupted run that can be resumed (a UserError, before Keras starts, if not)."""
    completed_epochs(path)
    config = run_config(path)
    try:
        with np.load(Path(path) / CHECKPOINT) as saved:
            trained = flat_config(config_from_toml(str(saved["config_toml"])))
    except (KeyError, ValueError, UserError):  # tomllib's errors are ValueErrors
        raise UserError(
            f"{Path(path) / CHECKPOINT} is damaged (its config is unreadable); start again with "
            f"{fresh_start(path)}"
        ) from None
    edited = _edits(trained, config)
    if edited:
        raise UserError(
            f"{Path(path) / CONFIG} was edited after training started ({'; '.join(edited)}), so the "
            f"checkpoint does not fit it; undo the edit, or start the edited config with {fresh_start(path)}"
        )
    return config


def _edits(trained: dict[str, object], config: Config) -> list[str]:
    """ "key old -> new" for each key of `config` (but SAVING_ONLY) that differs from the flat config a run
    was trained with."""
    return [
        f"{key} {trained[key]!r} -> {value!r}"
        for key, value in flat_config(config).items()
        if trained.get(key) != value and key not in SAVING_ONLY
    ]


def run_config(path: str | Path) -> Config:
    """A run's config.toml; a bad value there names that file (--resume, evaluate and predict take no
    --set)."""
    try:
        return load_config(Path(path) / CONFIG)
    except ConfigError as e:
        raise UserError(f"{Path(path) / CONFIG}: config key {e.key} {e.why}; fix it in that file") from None


def fresh_start(path: str | Path) -> str:
    """The command that trains the run in `path` again from scratch, as far as the tool may write there."""
    path = Path(path)
    try:
        load_config(path / CONFIG)
        config = f"--config {shell_path(path / CONFIG)} "
    except UserError:
        config = ""
    seeds = ""
    if (path / GROUP).is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            group = json.loads((path / GROUP).read_text())
            seeds = f"--seeds {len(group['planned'])} " + (
                "--side-by-side " if group.get("side_by_side") else ""
            )
        made = [p for p in path.glob("seed-*") if (p / MARKER).is_file()]
        if (
            not seeds and made
        ):  # a damaged group.json: its seed folders say how many (the advice trained one run)
            seeds = f"--seeds {len(made)} "
    if (path / MARKER).is_file() and not Path.cwd().is_relative_to(path.resolve()):
        return f"`mnist-mlp train {config}{seeds}--out {shell_path(path)} --overwrite`"
    return f"`mnist-mlp train {config}{seeds}--out {shell_path(free_name(path))}`"  # never the working folder


def continue_advice(path: str | Path) -> str:
    """How to go on with an interrupted run: resume from its checkpoint, else start it again (and why)."""
    if (Path(path) / GROUP).is_file():
        try:
            resume_group(path)
            return f"continue with `mnist-mlp train --resume {shell_path(path)}` (finished seeds are kept)"
        except UserError:
            return f"start it again with {fresh_start(path)}"
    try:
        completed_epochs(path)
        return f"continue with `mnist-mlp train --resume {shell_path(path)}`"
    except NoCheckpoint as e:
        return str(e)
    except UserError:
        return f"start it again with {fresh_start(path)}"


def read_history(path: str | Path) -> dict[str, list[float]]:
    """history.csv as column -> values, epochs in order."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(
            f"cannot read {path} ({getattr(e, 'strerror', None) or e}); train the run again"
        ) from None
    if not rows:
        raise UserError(f"{path} has no epochs; train the run again")
    try:
        history = {key: [float(row[key]) for row in rows] for key in rows[0]}
    except (TypeError, ValueError):
        raise UserError(f"{path} is not a valid history; train the run again") from None
    if not {"loss", "accuracy"} <= set(history):  # Keras' CSVLogger writes both, each epoch
        raise UserError(f"{path} is not a valid history (no loss and accuracy columns); train the run again")
    return history


def load_run(path: str | Path) -> Run:
    """Read a finished run directory; a missing, incomplete or edited one is a UserError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a run folder; give a folder written by `mnist-mlp train`")
    if not path.is_dir():
        raise UserError(f"run directory {path} not found; give a folder written by `mnist-mlp train`")
    if (path / GROUP).is_file() and not (path / METRICS).is_file():
        example = sorted(_group_runs(path)) or ["seed-N"]
        raise UserError(
            f"{path} is a seed group, not one run; give one of its runs, e.g. {path / example[0]}, "
            f"or plot them all with `mnist-mlp plot {shell_path(path)}`"
        )
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if len(missing) == len(REQUIRED) and not (path / MARKER).is_file():
        raise UserError(
            f"{path} is not a run folder (no {CONFIG}, no model); give a folder written by `mnist-mlp "
            "train`, e.g. one that `mnist-mlp runs list` shows"
        )
    if missing:
        if in_use(path):
            raise UserError(f"{path} is still training in another process; wait for it to finish")
        if (path / DIVERGED).is_file():
            raise UserError((path / DIVERGED).read_text().strip())
        raise UserError(
            f"{path} is an incomplete run (missing {', '.join(missing)}); {continue_advice(path)}"
        )
    try:
        metrics = json.loads((path / METRICS).read_text())
    except OSError as e:  # unreadable here (its permissions): one run, not the whole `runs list`
        raise UserError(f"cannot read {path / METRICS} ({e.strerror}); check its permissions") from None
    except ValueError:
        metrics = None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("config"), dict):
        raise UserError(
            f"{path / METRICS} is not a run's metrics (JSON of one object); train the run again with "
            f"{fresh_start(path)}"
        )
    run = Run(path, run_config(path), read_history(path / HISTORY), metrics)
    edited = _edits(flat_config(config_from_dict(metrics["config"])), run.config)  # what model.keras learned
    if edited:
        raise UserError(
            f"{path / CONFIG} was edited after training ({'; '.join(edited)}), so it no longer describes "
            f"model.keras; undo the edit, or train the edited config with {fresh_start(path)}"
        )
    return run


def load_model(run: Run):
    """The run's model.keras as a Keras model; a corrupt file, or one that is not the model this run saved
    (its SHA-256 differs from metrics.json), is a UserError."""
    import keras

    import mnist_mlp.model  # noqa: F401  registers BFloat16Dense, which bfloat16 runs save

    recorded = run.metrics.get("model_sha256")
    try:
        if recorded and cache.file_sha256(run.model_path) != recorded:
            raise UserError(
                f"{run.model_path} is not the model this run saved (its SHA-256 differs from "
                f"{METRICS}); train the run again with {fresh_start(run.path)}"
            )
        return keras.saving.load_model(run.model_path)
    except (zipfile.BadZipFile, ValueError, OSError, KeyError, EOFError) as e:
        raise UserError(
            f"{run.model_path} is corrupt or unreadable ({type(e).__name__}); train the run "
            f"again with {fresh_start(run.path)}"
        ) from None


def load_group(path: str | Path) -> tuple[dict, list[Run]]:
    """A `train --seeds` folder: its group.json and its runs."""
    path = Path(path)
    try:
        group = json.loads((path / GROUP).read_text())
        names = group["runs"] if group.get("complete") else None
    except (OSError, ValueError, KeyError, TypeError):
        names = None
    if names is None:
        if in_use(path):
            raise UserError(f"{path} is still training in another process; wait for it to finish")
        raise UserError(f"{path} is not a finished seed group (no complete {GROUP}); {continue_advice(path)}")
    return group, [load_run(path / name) for name in names]


class NoCheckpoint(UserError):
    """An interrupted run without a readable checkpoint: why, and how to start it again."""


def completed_epochs(path: str | Path) -> int:
    """Epochs an interrupted run finished (from its checkpoint); a UserError if it cannot be resumed."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise UserError(
            f"{path} is not a run directory (no {CONFIG}); start a run with "
            f"`mnist-mlp train --out {shell_path(free_name(path) if path.exists() else path)}`"
        )
    if (path / METRICS).is_file():
        raise UserError(f"{path} has finished; nothing to resume (train it again with {fresh_start(path)})")
    if (path / DIVERGED).is_file():
        raise UserError((path / DIVERGED).read_text().strip())
    try:
        with np.load(path / CHECKPOINT) as saved:
            epoch = int(saved["epoch"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        partial = path / PARTIAL_HISTORY
        epochs = max(len(partial.read_bytes().splitlines()) - 1, 0) if partial.is_file() else 0
        if (path / CHECKPOINT).exists():
            why = f"{path / CHECKPOINT} is damaged"
        elif epochs:
            why = (
                f"{path} stopped after {epochs} epoch(s), before its first checkpoint (one is saved once "
                f"train.checkpoint_seconds have passed)"
            )
        else:
            why = f"{path} has no completed epoch to resume from"
        raise NoCheckpoint(f"{why}; start it again with {fresh_start(path)}") from None
    history = path / PARTIAL_HISTORY
    if not history.exists() and (path / HISTORY).exists():
        history = path / HISTORY  # stopped while the finished run was written
    if not _holds_epochs(history, epoch):  # checked before training: a resume would end without its curves
        raise NoCheckpoint(
            f"{history} lacks some of the {epoch} epoch(s) its checkpoint has done (damaged or "
            f"removed), so a resumed run would have no whole history; start it again with "
            f"{fresh_start(path)}"
        )
    return epoch


def _holds_epochs(history: Path, epochs: int) -> bool:
    """Whether the history file's first `epochs` rows are there, each with a loss and an accuracy."""
    try:
        with open(history, newline="") as f:
            rows = list(itertools.islice(csv.DictReader(f), epochs))
        for row in rows:
            float(row["loss"]), float(row["accuracy"])
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError):
        return False
    return len(rows) == epochs
