"""Training, as examples/walkthrough.py does it plus what a tool adds: `train` claims a run folder; `_train`
builds the model and data (recipe.py), calls `fit` with the walk-through's arguments (Keras' own, or the
compiled engine on JAX) and the tool's callbacks (history, checkpoints, Ctrl-C), then scores the test set once
and writes the run directory (config, history, metrics, model, curves). Seed groups of runs come last."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from mnist_mlp import cache, data, folders, outputs, plots, runs, stats
from mnist_mlp.backend import BackendChoice, cpu_bfloat16, device_name
from mnist_mlp.callbacks import Checkpoint, CtrlC, EpochTimer, StopOnNaN
from mnist_mlp.checkpoint import completed_epochs, restore, truncate_history
from mnist_mlp.config import Config, TrainConfig, config_to_toml
from mnist_mlp.errors import Fix, UserError, WriteFailed, write_failed
from mnist_mlp.fits import check_fits
from mnist_mlp.model import model_summary
from mnist_mlp.recipe import Setup, prepare, resolve


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    test_loss: float | None  # None when the test set was not scored (sweep trials)
    test_accuracy: float | None
    ci95: tuple[float, float] | None  # Wilson 95% interval of the test accuracy
    seconds_per_epoch: float  # median over epochs
    wall_seconds: float
    backend: str


class Diverged(UserError):
    """The loss became NaN or infinite: the run is not saved as a finished one."""


def train(
    config: Config,
    run_dir: str | Path,
    backend: BackendChoice,
    *,
    overwrite: bool = False,
    resume: bool = False,
    data_dir: str | Path | None = None,
    verbose: int | str = "auto",
    log: Callable[[str], None] = lambda text: None,
    callbacks: tuple = (),
    score_test: bool = True,
    config_name: str | None = None,
) -> TrainResult:
    """Train `config` on MNIST into a new run directory, or continue an interrupted one.

    Args:
        backend: the active Keras backend and why it was chosen (recorded in metrics.json).
        overwrite: replace a run folder the tool made (only the files it wrote there are deleted).
        resume: continue `run_dir` from its last checkpoint (its config.toml is `config`).
        callbacks: more Keras callbacks (a sweep's pruning).
        score_test: score the test set at the end; sweeps pass False, so selection never sees it.
        verbose: Keras' progress display (1 bar, 2 one line per epoch).
        log: receives the lines a user should see before training (backend, validation, summary).
        config_name: the preset or file it came from ("handwriting"), recorded for the page that serves it.
    """
    started = time.perf_counter()
    config = resolved(config, backend, log)
    check_engine(config, backend)
    data.ensure(data_dir)  # before the folder is claimed: no data, no run folder
    with folders.claim(run_dir, overwrite=overwrite, resume=resume) as run_dir:
        try:
            run = _train(config, run_dir, backend, resume, data_dir, verbose, log, callbacks)
            return finish_run(run, backend, score_test, started, config_name)
        except WriteFailed as e:
            raise WriteFailed(str(e), e.errno, fix=Fix("go-on", run_dir, e.errno)) from None
        except OSError as e:  # Keras' CSVLogger, or saving the model, on a full or read-only disk
            raise write_failed(run_dir, e, fix=Fix("go-on", run_dir, e.errno)) from None


def _train(config, run_dir, backend, resume, data_dir, verbose, log, callbacks) -> Started:
    run = start_run(config, run_dir, backend, resume, data_dir, log, callbacks)  # model, data, callbacks
    model, tc = run.setup.model, config.train
    # The same arguments, the same callbacks
    fit = model.fit if run.engine == "fit" else _compiled_fit(model, config)
    with CtrlC() as ctrl_c:
        fit(
            run.setup.x_train,
            run.setup.y_train,
            batch_size=tc.batch_size,
            epochs=tc.epochs,
            verbose=verbose,
            validation_data=run.setup.validation,
            callbacks=[*run.callbacks, ctrl_c],
            initial_epoch=run.initial_epoch,
        )
    check_finite(run)
    return run


def _compiled_fit(model, config: Config) -> Callable:
    """`model.fit` done by the compiled engine: each epoch one XLA program, the deformations inside it."""
    from mnist_mlp.engine import fit_compiled

    return functools.partial(fit_compiled, model, seed=config.train.seed, augment=config.augment)


@dataclass
class Started:
    """A run set up to train: its model and data, callbacks, and where a resume starts."""

    config: Config
    run_dir: Path
    setup: Setup
    callbacks: list
    timer: EpochTimer
    initial_epoch: int
    engine: str
    side_by_side: int = 1  # the runs trained together with this one, itself included


def start_run(config, run_dir, backend, resume, data_dir, log, callbacks) -> Started:
    tc = config.train
    if resume:
        done = completed_epochs(run_dir)
        if not (run_dir / runs.PARTIAL_HISTORY).exists() and (run_dir / runs.HISTORY).exists():
            os.replace(run_dir / runs.HISTORY, run_dir / runs.PARTIAL_HISTORY)  # stopped while saving the end
        truncate_history(run_dir / runs.PARTIAL_HISTORY, done)
        log(f"Resuming {run_dir} after epoch {done} of {tc.epochs}")
    else:
        outputs.write_text(run_dir / runs.CONFIG, config_to_toml(config))
    log(f"Backend: {backend.name} (chosen by {backend.reason})")
    engine = choose_engine(tc.engine, backend.name)
    setup = prepare(config, backend.name, data_dir, engine)
    log(f"{len(setup.x_train)} train samples, {len(setup.test[0])} test samples")
    log(validation_note(tc))
    log(model_summary(setup.model))
    initial_epoch, rng = restore(setup.model, run_dir) if resume else (0, None)
    log(engine_note(tc.engine, engine))
    if (
        not resume
        and tc.precision == "bfloat16"
        and (note := precision_note(tc, device_name(backend.name), cpu_bfloat16()))
    ):
        log(note)  # not on a resume (its config cannot change); float32 runs never read /proc/cpuinfo
    timer = EpochTimer()
    callbacks = [
        *callbacks,
        StopOnNaN(),
        keras.callbacks.CSVLogger(str(run_dir / runs.PARTIAL_HISTORY), append=resume),
        Checkpoint(run_dir, rng, config_to_toml(config), tc.checkpoint_seconds),  # saves after the rest
        timer,
    ]  # an epoch's seconds include saving it
    return Started(config, run_dir, setup, callbacks, timer, initial_epoch, engine)


def check_finite(run: Started) -> None:
    """A run whose loss became NaN or infinite is marked diverged (what a later resume or evaluate says)."""
    history = runs.read_history(run.run_dir / runs.PARTIAL_HISTORY)
    if all(map(math.isfinite, history["loss"])):
        return
    epoch = next(i for i, v in enumerate(history["loss"]) if not math.isfinite(v)) + 1
    message = (
        f"training diverged: the loss became NaN or infinite in epoch {epoch}, so {run.run_dir} is not a "
        "finished run"
    )
    outputs.write_text(run.run_dir / runs.DIVERGED, message + "\n")
    raise Diverged(message, Fix("lower-rate", run.run_dir))


def finish_run(
    run: Started, backend, score_test: bool, started: float, config_name: str | None = None
) -> TrainResult:
    """Score the test set once (unless not `score_test`) and write the model, history, curves and metrics."""
    run_dir, model, timer = run.run_dir, run.setup.model, run.timer
    test = run.setup.test if score_test else None
    test_loss = test_accuracy = ci95 = None
    if test is not None:
        x_test, y_test = test
        test_loss, test_accuracy = map(float, model.evaluate(x_test, y_test, batch_size=1024, verbose=0))
        ci95 = stats.wilson_interval(round(test_accuracy * len(x_test)), len(x_test))
    with outputs.atomic(run_dir / runs.MODEL) as model_tmp:
        model.save(model_tmp)
    os.replace(run_dir / runs.PARTIAL_HISTORY, run_dir / runs.HISTORY)
    history = runs.read_history(run_dir / runs.HISTORY)
    plots.plot_curves({run_dir.name: history}, run_dir / runs.CURVES)

    seconds = timer.seconds or [0.0]
    result = TrainResult(
        run_dir,
        test_loss,
        test_accuracy,
        ci95,
        float(np.median(seconds)),
        time.perf_counter() - started,
        backend.name,
    )
    outputs.write_json(run_dir / runs.METRICS, _metrics(run, result, history, test, config_name, backend))
    (run_dir / runs.CHECKPOINT).unlink(missing_ok=True)  # finished: nothing left to resume
    return result


def _metrics(run: Started, result: TrainResult, history: dict, test, config_name, backend) -> dict:
    """metrics.json: the scores, the times, and what trained them (versions, machine, data, config)."""
    tc, timer = run.config.train, run.timer
    return {
        "test_loss": result.test_loss,
        "test_accuracy": result.test_accuracy,
        "test_accuracy_ci95": list(result.ci95) if result.ci95 else None,
        "test_samples": len(test[0]) if test is not None else 0,
        "train_samples": len(run.setup.x_train),
        "final_val_accuracy": history.get("val_accuracy", [None])[-1],
        "stopped_after_epochs": len(history["loss"]),
        "validation": tc.validation,
        "epochs": tc.epochs,
        "engine": run.engine,
        "seconds_per_epoch": result.seconds_per_epoch,
        "epoch_seconds": timer.seconds,
        "epochs_this_process": len(timer.seconds),
        "wall_seconds": result.wall_seconds,
        "side_by_side": run.side_by_side,  # > 1: the times are the group's, trained together
        "config_name": config_name,  # the preset or file it came from; None where not known (a resume)
        "backend": backend.name,
        "backend_reason": backend.reason,
        "versions": versions(backend.name),
        "machine": f"{platform.machine()}, {platform.system()}, {os.cpu_count()} CPUs",
        "device": device_name(backend.name),
        "threads": {
            "cpus_available": len(os.sched_getaffinity(0)),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        },
        "data_sha256": {key: sha for key, (_, sha) in cache.FILES.items()},
        # What was trained: load_run refuses a config.toml edited since
        "config": dataclasses.asdict(run.config),
        "model_sha256": cache.file_sha256(run.run_dir / runs.MODEL),
    }


def describe(result: TrainResult, next_step: str) -> str:
    """The end of `mnist-mlp train`: test loss and accuracy (the walk-through's two lines), time, where it
    went and `next_step` (a command)."""
    low, high = result.ci95
    speed = (
        f"{result.seconds_per_epoch:.2f} s per epoch (median)"
        if result.seconds_per_epoch
        else "no epoch left to train"
    )
    return (
        f"Test loss: {result.test_loss:.4f}\n"
        f"Test accuracy: {result.test_accuracy:.4f} (95% interval {low:.4f}-{high:.4f})\n"
        f"{speed}, {result.wall_seconds:.1f} s in all, on {result.backend}\n"
        f"Run saved in {result.run_dir}/ (next: {next_step})"
    )


def resolved(config: Config, backend: BackendChoice, log: Callable[[str], None]) -> Config:
    config, note = resolve(config, backend.name)
    if note:
        log(note)
    return config


def check_engine(config: Config, backend: BackendChoice) -> None:
    """Settings the backend or engine cannot train, refused before anything is written."""
    check_fits(config)
    if config.augment.active and choose_engine(config.train.engine, backend.name) != "compiled":
        raise UserError(
            "augmentation runs inside the compiled engine, on JAX: add --backend jax --engine compiled, "
            "or drop the [augment] settings"
        )
    if config.train.precision == "bfloat16" and backend.name != "jax":
        raise UserError(
            f"train.precision = bfloat16 runs on JAX (on {backend.name} the products would stay "
            f"float32): use --backend jax, or --set train.precision=float32"
        )


def choose_engine(requested: str, backend: str) -> str:
    """compiled runs only on JAX; auto picks it there and Keras fit elsewhere."""
    return "compiled" if backend == "jax" and requested in ("auto", "compiled") else "fit"


def validation_note(config: TrainConfig) -> str:
    if config.validation == "test":
        return (
            "Validating on the 10,000 test images each epoch, as the classic example does "
            "(--validation split holds out training images instead)."
        )
    if config.validation == "none":
        return "No validation: no training image is held out; the test set is scored once, at the end."
    return "Validating on the last 10,000 training images; the test set is scored once, at the end."


def engine_note(requested: str, engine: str) -> str:
    if engine == "compiled":
        return (
            "Engine: compiled (each epoch one jitted XLA scan over its batches; --set train.engine=fit for "
            "Keras fit)."
        )
    if requested == "compiled":
        return "Engine: Keras fit (the compiled engine needs the JAX backend)."
    return "Engine: Keras fit."


def precision_note(config: TrainConfig, device: str, fast_bfloat16: bool | None) -> str:
    """A line when bfloat16 products would train slower than float32: on a CPU without bfloat16
    instructions."""
    if config.precision != "bfloat16" or device != "cpu" or fast_bfloat16 is not False:
        return ""
    return (
        "Note: this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16), so train.precision = bfloat16 "
        "trains slower here than float32 (1.2–2.3x an epoch); for speed, add --set train.precision=float32."
    )


def versions(backend: str) -> dict[str, str]:
    packages = [
        "mnist-mlp",
        "keras",
        "numpy",
        {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}[backend],
    ]
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = metadata.version("tensorflow-cpu") if name == "tensorflow" else "unknown"
    return found
