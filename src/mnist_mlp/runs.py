"""The run directory, the unit of output: the only module that knows its file names. Creating it
safely, writing files atomically (temporary name, then rename), and reading a run back."""

from __future__ import annotations

import contextlib
import dataclasses
import csv
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from mnist_mlp.config import Config, load_config
from mnist_mlp.errors import UserError

CONFIG = "config.toml"  # resolved config; `train --config RUN/config.toml` repeats the run
HISTORY = "history.csv"  # one row per epoch, Keras' CSVLogger
METRICS = "metrics.json"  # test metrics, timing, versions, data hashes
MODEL = "model.keras"  # loads with stock keras.saving.load_model
CURVES = "curves.png"
CONFUSION = "confusion.png"  # written by evaluate
MISCLASSIFIED = "misclassified.png"  # written by evaluate
EVALUATION = "evaluation.json"  # written by evaluate
CHECKPOINT = "checkpoint"  # Keras BackupAndRestore folder while training; removed when the run finishes
PARTIAL_HISTORY = ".history.partial.csv"  # the epochs done so far; renamed to history.csv at the end
RNG_STATE = "rng.json"  # inside CHECKPOINT: shuffle and dropout random state, for an exact resume
GROUP = "group.json"  # in a folder of seed runs (train --seeds): seeds and accuracy statistics
REQUIRED = (CONFIG, HISTORY, METRICS, MODEL)


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


def prepare(path: str | Path, overwrite: bool = False) -> Path:
    """Create an empty run directory; an existing one is replaced only with `overwrite`."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not overwrite:
            raise UserError(f"{path} already exists; choose another --out or add --overwrite")
        if not (path / CONFIG).exists() and not (path / GROUP).exists():
            raise UserError(f"{path} is not a run directory, so --overwrite will not delete it; choose another --out")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic(path: str | Path):
    """Yield a temporary path beside `path` (same suffix); rename it to `path` only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_history(path: str | Path) -> dict[str, list[float]]:
    """history.csv as column -> values, epochs in order."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise UserError(f"{path} has no epochs; train the run again")
    try:
        return {key: [float(row[key]) for row in rows] for key in rows[0]}
    except (TypeError, ValueError):
        raise UserError(f"{path} is not a valid history; train the run again") from None


def load_run(path: str | Path) -> Run:
    """Read a finished run directory; a missing or incomplete one is a UserError."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory {path} not found; give a folder written by `mnist-mlp train`")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise UserError(f"{path} is an incomplete run (missing {', '.join(missing)}); "
                        f"train it again with `mnist-mlp train --out {path} --overwrite`")
    try:
        metrics = json.loads((path / METRICS).read_text())
    except ValueError:
        raise UserError(f"{path / METRICS} is not valid JSON; train the run again") from None
    return Run(path, load_config(path / CONFIG), read_history(path / HISTORY), metrics)


def load_group(path: str | Path) -> tuple[dict, list[Run]]:
    """A `train --seeds` folder: its group.json and its runs."""
    path = Path(path)
    try:
        group = json.loads((path / GROUP).read_text())
    except (OSError, ValueError):
        raise UserError(f"{path} is not a finished seed group (no valid {GROUP}); run `mnist-mlp train --seeds N`") from None
    return group, [load_run(path / name) for name in group["runs"]]


def completed_epochs(path: str | Path) -> int:
    """Epochs an interrupted run finished (from its checkpoint); a UserError if it cannot be resumed."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise UserError(f"{path} is not a run directory (no {CONFIG}); start it with `mnist-mlp train --out {path}`")
    if (path / METRICS).is_file():
        raise UserError(f"{path} has finished; nothing to resume (train again with --overwrite)")
    try:
        return int(json.loads((path / CHECKPOINT / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        raise UserError(f"{path} has no completed epoch to resume from; train it again with "
                        f"`mnist-mlp train --out {path} --overwrite`") from None


def truncate_history(path: str | Path, epochs: int) -> None:
    """Keep the header and the first `epochs` rows (a row written after the last checkpoint is redone)."""
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    write_text(path, "".join(lines[: 1 + epochs]) if epochs else "")


def list_runs(root: str | Path = "runs") -> list[Path]:
    """Finished run directories under `root` (seed groups included), oldest first."""
    root = Path(root)
    found = [p.parent for p in root.rglob(METRICS)] if root.is_dir() else []
    return sorted(found, key=lambda p: (p / METRICS).stat().st_mtime)


def flat_config(config: Config) -> dict[str, object]:
    """{"model.dropout": 0.2, ...}: every config key with its value."""
    flat = {}
    for section, value in dataclasses.asdict(config).items():
        if isinstance(value, dict):
            flat.update({f"{section}.{key}": v for key, v in value.items()})
        else:
            flat[section] = value
    return flat


def config_differences(loaded: list[Run]) -> dict[str, list]:
    """The config keys whose values differ between runs, with each run's value (seed included)."""
    flats = [flat_config(run.config) for run in loaded]
    return {key: [flat[key] for flat in flats] for key in flats[0] if len({str(f[key]) for f in flats}) > 1}


def summary(run: Run) -> dict[str, object]:
    """One row of `mnist-mlp runs list`."""
    return {"run": str(run.path), "date": time.strftime("%Y-%m-%d %H:%M", time.localtime((run.path / METRICS).stat().st_mtime)),
            "epochs": run.metrics.get("stopped_after_epochs", run.config.train.epochs),  # pruned trials stop early
            "test_accuracy": run.metrics.get("test_accuracy"),
            "seconds_per_epoch": run.metrics.get("seconds_per_epoch"), "backend": run.metrics.get("backend"),
            "engine": run.metrics.get("engine", "fit")}
