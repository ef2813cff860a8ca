"""The run directory, the unit of output: the only module that knows its file names, and reading a run back
(its config, history, metrics and model). Claiming a folder to train into is folders.py's; the resume
checkpoint is checkpoint.py's."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mnist_mlp import cache
from mnist_mlp.config import Config, ConfigError, config_from_dict, edits, flat_config, load_config
from mnist_mlp.errors import Fix, UserError
from mnist_mlp.outputs import shell_path

CONFIG = "config.toml"  # resolved config; `train --config RUN/config.toml` repeats the run
HISTORY = "history.csv"  # one row per epoch, Keras' CSVLogger
METRICS = "metrics.json"  # test metrics, timing, versions, data hashes
MODEL = "model.keras"  # loads with stock keras.saving.load_model
CURVES = "curves.png"
WEIGHTS = "weights.png"  # plot --weights: the first layer's weights as images
CONFUSION = "confusion.png"  # written by evaluate
MISCLASSIFIED = "misclassified.png"  # written by evaluate
EVALUATION = "evaluation.json"  # written by evaluate
# Weights, optimizer, random state after an epoch (callbacks.Checkpoint); removed at the end
CHECKPOINT = "checkpoint.npz"
PARTIAL_HISTORY = ".history.partial.csv"  # the epochs done so far; renamed to history.csv at the end
GROUP = "group.json"  # in a folder of seed runs (train --seeds): seeds and accuracy statistics
DIVERGED = "diverged.txt"  # a run whose loss became NaN: what to do instead of resuming
# Written when the tool creates a run folder; also the lock a training process holds (folders.claim)
MARKER = ".mnist-mlp-run"
AGAIN = "train the run again with"  # the words before the command that trains a damaged run again
REQUIRED = (CONFIG, HISTORY, METRICS, MODEL)
# What --overwrite may delete in a folder that carries MARKER (with their temporary names)
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


def group_runs(folder: Path) -> set[str]:
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
    # Keras' CSVLogger adds val_ columns of "NA" where nothing is validated (train.validation = "none")
    keys = [key for key in rows[0] if any(row[key] != "NA" for row in rows)]
    try:
        history = {key: [float(row[key]) for row in rows] for key in keys}
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
        example = sorted(group_runs(path)) or ["seed-N"]
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


def load_committee(given: list) -> list[Run]:
    """Several runs (loaded, or their folders) to score together, each once: a run named twice would count
    twice in the mean of their probabilities."""
    committee = [run if isinstance(run, Run) else load_run(run) for run in given]
    paths = [run.path.resolve() for run in committee]
    twice = next((run.path for run, path in zip(committee, paths) if paths.count(path) > 1), None)
    if twice:
        raise UserError(f"{twice} is named twice; a committee counts each run once: name each once")
    return committee


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
