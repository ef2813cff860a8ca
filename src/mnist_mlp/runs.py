"""The run directory, the unit of output: the only module that knows its file names. Claiming a folder
(marked as the tool's, locked while a process trains into it), the resume checkpoint, and reading a run
back."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mnist_mlp import cache
from mnist_mlp.config import Config, ConfigError, config_from_dict, edits, flat_config, load_config
from mnist_mlp.errors import Fix, UserError
from mnist_mlp.outputs import free_name, shell_path

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
PARTIAL_HISTORY = ".history.partial.csv"  # the epochs done so far; renamed to history.csv at the end
GROUP = "group.json"  # in a folder of seed runs (train --seeds): seeds and accuracy statistics
DIVERGED = "diverged.txt"  # a run whose loss became NaN: what to do instead of resuming
MARKER = (
    ".mnist-mlp-run"  # written when the tool creates a run folder; also the lock a training process holds
)
AGAIN = "train the run again with"  # the words before the command that trains a damaged run again
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


def run_config(path: str | Path) -> Config:
    """A run's config.toml; a bad value there names that file (--resume, evaluate and predict take no
    --set)."""
    try:
        return load_config(Path(path) / CONFIG)
    except ConfigError as e:
        raise UserError(f"{Path(path) / CONFIG}: config key {e.key} {e.why}; fix it in that file") from None


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
            raise diverged(path)
        raise UserError(f"{path} is an incomplete run (missing {', '.join(missing)})", Fix("go-on", path))
    try:
        metrics = json.loads((path / METRICS).read_text())
    except OSError as e:  # unreadable here (its permissions): one run, not the whole `runs list`
        raise UserError(f"cannot read {path / METRICS} ({e.strerror}); check its permissions") from None
    except ValueError:
        metrics = None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("config"), dict):
        raise UserError(
            f"{path / METRICS} is not a run's metrics (JSON of one object)",
            Fix("train-again", path, lead=AGAIN),
        )
    run = Run(path, run_config(path), read_history(path / HISTORY), metrics)
    edited = edits(flat_config(config_from_dict(metrics["config"])), run.config)  # what model.keras learned
    if edited:
        raise UserError(
            f"{path / CONFIG} was edited after training ({'; '.join(edited)}), so it no longer describes "
            "model.keras",
            Fix("train-again", path, lead="undo the edit, or train the edited config with"),
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
                f"{run.model_path} is not the model this run saved (its SHA-256 differs from {METRICS})",
                Fix("train-again", run.path, lead=AGAIN),
            )
        return keras.saving.load_model(run.model_path)
    except (zipfile.BadZipFile, ValueError, OSError, KeyError, EOFError) as e:
        raise UserError(
            f"{run.model_path} is corrupt or unreadable ({type(e).__name__})",
            Fix("train-again", run.path, lead=AGAIN),
        ) from None


def diverged(path: Path) -> UserError:
    """A run whose loss became NaN or infinite: what its diverged.txt says happened (older versions wrote
    their advice after a "; "), and the fix, a lower learning rate."""
    return UserError((path / DIVERGED).read_text().strip().partition("; ")[0], Fix("lower-rate", path))


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
        raise UserError(f"{path} is not a finished seed group (no complete {GROUP})", Fix("go-on", path))
    return group, [load_run(path / name) for name in names]
