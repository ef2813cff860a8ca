"""The resume checkpoint: its file (a run's whole state after an epoch, in an atomic .npz; callbacks.py saves
it), its restore, and the checks that say, before Keras starts, whether a run can be resumed."""

from __future__ import annotations

import csv
import itertools
import json
import zipfile
from pathlib import Path

import numpy as np

from mnist_mlp.config import Config, config_from_toml, edits, flat_config
from mnist_mlp.errors import Fix, UserError
from mnist_mlp.outputs import atomic, free_name
from mnist_mlp.runs import (
    CHECKPOINT,
    CONFIG,
    DIVERGED,
    GROUP,
    HISTORY,
    METRICS,
    PARTIAL_HISTORY,
    diverged,
    run_config,
)

AGAIN = "train it again with"  # the words before the command that trains a finished run again


def restore(model, run_dir: Path) -> tuple[int, dict]:
    """Load `run_dir`'s checkpoint into a compiled model: the epochs it had completed, and the global RNG
    state then (for Checkpoint to set when training starts)."""
    epoch, arrays = load_checkpoint(run_dir)
    model.optimizer.build(model.trainable_variables)
    try:
        for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
            for i, variable in enumerate(variables):
                variable.assign(arrays[f"{prefix}/{i}"])
    except (ValueError, KeyError):  # its config matched (resume_config): the arrays are damaged
        raise UserError(
            f"{run_dir / CHECKPOINT} is damaged (it does not fit the model)",
            Fix("train-again", run_dir, lead="start again with"),
        ) from None
    return epoch, {key: value for key, value in arrays.items() if key.startswith("rng/")}


def save_checkpoint(path: str | Path, epoch: int, arrays: dict[str, np.ndarray]) -> None:
    """Write a run's state after `epoch` completed epochs (an atomic .npz: the last good one survives a full
    disk)."""
    path = Path(path) / CHECKPOINT
    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, epoch=np.int64(epoch), **arrays)


def load_checkpoint(path: str | Path) -> tuple[int, dict[str, np.ndarray]]:
    """(completed epochs, arrays) saved by save_checkpoint."""
    with np.load(Path(path) / CHECKPOINT) as saved:
        return int(saved["epoch"]), {key: saved[key] for key in saved.files if key != "epoch"}


def truncate_history(path: str | Path, epochs: int) -> None:
    """Keep the header and the first `epochs` rows (rows written after the last checkpoint are redone)."""
    path = Path(path)
    # As written: CSVLogger's \r\n
    lines = path.read_bytes().splitlines(keepends=True) if path.exists() else []
    with atomic(path) as tmp:
        tmp.write_bytes(b"".join(lines[: 1 + epochs]) if epochs else b"")


def resume_group(path: str | Path) -> tuple[Config, dict]:
    """An interrupted seed group's config and group.json (a UserError, before Keras starts, if it cannot be
    continued: finished, side by side, or unreadable)."""
    path = Path(path)
    try:
        group = json.loads((path / GROUP).read_text())
        planned = [int(seed) for seed in group["planned"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{path / GROUP} is unreadable", Fix("train-again", path, lead="start the group again with")
        ) from None
    if group.get("complete"):
        raise UserError(f"{path} has finished: nothing to resume", Fix("train-again", path, lead=AGAIN))
    if group.get("side_by_side"):
        raise UserError(
            f"{path} trained its seeds side by side, as one program, which does not resume",
            Fix("train-again", path),
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
            f"{Path(path) / CHECKPOINT} is damaged (its config is unreadable)",
            Fix("train-again", Path(path), lead="start again with"),
        ) from None
    edited = edits(trained, config)
    if edited:
        raise UserError(
            f"{Path(path) / CONFIG} was edited after training started ({'; '.join(edited)}), so the "
            "checkpoint does not fit it",
            Fix("train-again", Path(path), lead="undo the edit, or start the edited config with"),
        )
    return config


class NoCheckpoint(UserError):
    """An interrupted run without a readable checkpoint: why, and how to start it again."""


def completed_epochs(path: str | Path) -> int:
    """Epochs an interrupted run finished (from its checkpoint); a UserError if it cannot be resumed."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise UserError(
            f"{path} is not a run directory (no {CONFIG})",
            Fix("train-new", free_name(path) if path.exists() else path),
        )
    if (path / METRICS).is_file():
        raise UserError(f"{path} has finished: nothing to resume", Fix("train-again", path, lead=AGAIN))
    if (path / DIVERGED).is_file():
        raise diverged(path)
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
        raise NoCheckpoint(why, Fix("train-again", path)) from None
    history = path / PARTIAL_HISTORY
    if not history.exists() and (path / HISTORY).exists():
        history = path / HISTORY  # stopped while the finished run was written
    if not _holds_epochs(history, epoch):  # checked before training: a resume would end without its curves
        raise NoCheckpoint(
            f"{history} lacks some of the {epoch} epoch(s) its checkpoint has done (damaged or "
            "removed), so a resumed run would have no whole history",
            Fix("train-again", path),
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
