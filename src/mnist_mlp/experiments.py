"""The runs under a folder, side by side: `mnist-mlp runs list`, `runs show` and `runs compare` (what each run
left of the classic recipe, its score and speed). Reads runs through runs.load_run; writes nothing."""

from __future__ import annotations

import time
from pathlib import Path

from mnist_mlp.config import SAVING_ONLY, Config, flat_config
from mnist_mlp.errors import UserError
from mnist_mlp.runs import METRICS, Run, load_run


def list_runs(root: str | Path = "runs") -> list[Path]:
    """Finished run directories under `root` (seed groups included), oldest first."""
    root = Path(root)
    found = [p.parent for p in root.rglob(METRICS)] if root.is_dir() else []
    return sorted(found, key=lambda p: (p / METRICS).stat().st_mtime)


def config_differences(loaded: list[Run]) -> dict[str, list]:
    """The config keys whose values differ between runs, with each run's value (seed included)."""
    flats = [flat_config(run.config) for run in loaded]
    return {
        key: [flat[key] for flat in flats]
        for key in flats[0]
        if len({str(f[key]) for f in flats}) > 1 and key not in SAVING_ONLY
    }


def summary(run: Run) -> dict[str, object]:
    """One row of `mnist-mlp runs list`."""
    return {
        "run": str(run.path),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime((run.path / METRICS).stat().st_mtime)),
        # Pruned trials stop early
        "epochs": run.metrics.get("stopped_after_epochs", run.config.train.epochs),
        "test_accuracy": run.metrics.get("test_accuracy"),
        "seconds_per_epoch": run.metrics.get("seconds_per_epoch"),
        "backend": run.metrics.get("backend"),
        "engine": run.metrics.get("engine", "fit"),
    }


def describe_list(root: str | Path = "runs") -> tuple[str, list[UserError]]:
    """`runs list`: a table of the finished runs under `root`, each with the config values where it leaves
    the classic recipe (backend is a column); and the error of each run that could not be read (a broken or
    edited run does not hide the rest)."""
    loaded, skipped = [], []
    for path in list_runs(root):
        try:
            loaded.append(load_run(path))
        except UserError as e:
            skipped.append(e)
    if not loaded:
        return f"No finished runs under {root}/ (train one with `mnist-mlp train`)", skipped
    classic = flat_config(Config())
    lines = [
        f"{'run':<36} {'date':<16} {'epochs':>6} {'test acc':>8} {'s/epoch':>7} {'backend':<10} "
        "differs from the classic recipe"
    ]
    for run, row in zip(loaded, map(summary, loaded)):
        differs = ", ".join(
            f"{key.split('.')[-1]}={f'{value:.4g}' if isinstance(value, float) else value}"
            for key, value in flat_config(run.config).items()
            if str(value) != str(classic[key]) and key not in ("backend", *SAVING_ONLY)
        )
        accuracy = f"{row['test_accuracy']:.4f}" if row["test_accuracy"] is not None else "-"
        # 0: no epoch in its last process
        speed = f"{row['seconds_per_epoch']:.2f}" if row["seconds_per_epoch"] else "-"
        lines.append(
            f"{row['run']:<36} {row['date']:<16} {row['epochs']:>6} {accuracy:>8} "
            f"{speed:>7} {row['backend']:<10} {differs}"
        )
    return "\n".join(lines), skipped


def describe_run(run: Run) -> str:
    """`runs show`: the run's summary and every config key."""
    return "\n".join(
        f"{key:<22} {value}" for key, value in {**summary(run), **flat_config(run.config)}.items()
    )


def describe_compare(loaded: list[Run]) -> str:
    """`runs compare`: the config keys that differ, and each run's test accuracy."""
    if len(loaded) < 2:
        raise UserError("runs compare needs at least two run directories")
    differing = config_differences(loaded)
    lines = ["config differences:" if differing else "same config in every run"]
    lines += [f"  {key}: " + " | ".join(map(str, values)) for key, values in differing.items()]
    for run in loaded:
        accuracy = run.metrics.get("test_accuracy")
        lines.append(
            f"{run.path}: test accuracy {accuracy:.4f}"
            if accuracy is not None
            else f"{run.path}: not scored on test"
        )
    return "\n".join(lines)
