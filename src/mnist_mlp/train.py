"""Training: data -> preprocess -> build_model -> compile -> fit -> test score, written as a run
directory (config, history, metrics, model, curves)."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from mnist_mlp import data, plots, runs
from mnist_mlp.backend import BackendChoice, device_name
from mnist_mlp.config import Config, TrainConfig, check_fits, config_to_toml
from mnist_mlp.errors import UserError, WriteFailed, write_failed
from mnist_mlp.model import build_model, model_summary

OPTIMIZERS = {
    "rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD, "nadam": keras.optimizers.Nadam, "adamax": keras.optimizers.Adamax,
    "adagrad": keras.optimizers.Adagrad, "adadelta": keras.optimizers.Adadelta,
}


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    test_loss: float | None  # None when the test set was not scored (sweep trials)
    test_accuracy: float | None
    ci95: tuple[float, float] | None  # Wilson 95% interval of the test accuracy
    seconds_per_epoch: float  # median over epochs
    wall_seconds: float
    backend: str


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def set_seed(seed: int, backend: str) -> None:
    """keras.utils.set_random_seed, without its import of TensorFlow (~2 s here) when TensorFlow is
    installed but not the backend: Keras seeds it only for tf.data pipelines, which we do not use."""
    if backend == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    sys.modules["tensorflow"] = None  # `import tensorflow` raises ImportError while this is set
    try:
        keras.utils.set_random_seed(seed)
    finally:
        del sys.modules["tensorflow"]


def compile_model(model: keras.Model, config: TrainConfig, train_samples: int = 60000) -> keras.Model:
    """Loss, optimizer (with its learning-rate schedule over `train_samples` per epoch) and accuracy."""
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":
        steps = math.ceil(train_samples / config.batch_size) * config.epochs
        learning_rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps)
    optimizer = OPTIMIZERS[config.optimizer](learning_rate=learning_rate)
    model.compile(loss=config.loss, optimizer=optimizer, metrics=["accuracy"])
    return model


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch, validation included."""

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def versions(backend: str) -> dict[str, str]:
    packages = ["mnist-mlp", "keras", "numpy", {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}[backend]]
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = metadata.version("tensorflow-cpu") if name == "tensorflow" else "unknown"
    return found


def validation_note(config: TrainConfig) -> str:
    if config.validation == "test":
        return ("Validating on the 10,000 test images each epoch, as the classic example does "
                "(--validation split holds out training images instead).")
    return "Validating on the last 10,000 training images; the test set is scored once, at the end."


@dataclass(frozen=True)
class SeedsResult:
    group_dir: Path
    results: tuple[TrainResult, ...]  # one per seed, in order
    seeds: tuple[int, ...]
    mean: float  # test accuracy over the seeds
    std: float  # sample standard deviation (n - 1)
    low: float
    high: float


def train_seeds(config: Config, group_dir: str | Path, backend: BackendChoice, seeds: int, *,
                overwrite: bool = False, **kwargs) -> SeedsResult:
    """Train `config` with `seeds` consecutive seeds from its own, a run directory each under `group_dir`,
    and write the accuracy statistics to group.json."""
    chosen = tuple(config.train.seed + i for i in range(seeds))
    check_fits(config)
    with runs.claim(group_dir, overwrite=overwrite) as group_dir:
        runs.write_text(group_dir / runs.CONFIG, config_to_toml(config))  # what `fresh_start` repeats
        runs.write_json(group_dir / runs.GROUP, {"planned": list(chosen), "complete": False})
        results = []
        for seed in chosen:
            seeded = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
            results.append(train(seeded, group_dir / f"seed-{seed}", backend, overwrite=True, **kwargs))  # in our group
        accuracies = [r.test_accuracy for r in results]
        result = SeedsResult(group_dir, tuple(results), chosen, statistics.mean(accuracies),
                             statistics.stdev(accuracies) if seeds > 1 else 0.0, min(accuracies), max(accuracies))
        runs.write_json(group_dir / runs.GROUP, {
            "planned": list(chosen), "seeds": list(chosen), "runs": [f"seed-{s}" for s in chosen],
            "test_accuracy": accuracies, "mean": result.mean, "std": result.std, "min": result.low,
            "max": result.high, "complete": True})
    return result


def choose_engine(requested: str, backend: str) -> str:
    """compiled runs only on JAX; auto picks it there and Keras fit elsewhere."""
    return "compiled" if backend == "jax" and requested in ("auto", "compiled") else "fit"


def engine_note(requested: str, engine: str) -> str:
    if engine == "compiled":
        return "Engine: compiled (each epoch one jitted XLA scan over its batches; --set train.engine=fit for Keras fit)."
    if requested == "compiled":
        return "Engine: Keras fit (the compiled engine needs the JAX backend)."
    return "Engine: Keras fit."


class Checkpoint(keras.callbacks.Callback):
    """After each epoch, the run's whole state in one atomic file: the model's variables (dropout's seed
    state among them), the optimizer's, and the global RNG that Keras fit shuffles with (NumPy's on JAX,
    PyTorch's on PyTorch), so a resumed run sees the same batches and masks as an uninterrupted one. An
    epoch whose loss is not finite is not saved: the last good checkpoint stays."""

    def __init__(self, run_dir: Path, rng_state: dict | None = None):
        super().__init__()
        self.run_dir, self.rng_state = run_dir, rng_state

    def on_train_begin(self, logs=None):
        if self.rng_state is not None:  # here, not before fit: fit's data adapter draws from it first
            set_rng_state(self.rng_state)

    def on_epoch_end(self, epoch, logs=None):
        if not math.isfinite((logs or {}).get("loss", 0.0)):
            return
        arrays = {f"model/{i}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(self.model.variables)}
        arrays.update({f"optimizer/{i}": keras.ops.convert_to_numpy(v.value)
                       for i, v in enumerate(self.model.optimizer.variables)})
        runs.save_checkpoint(self.run_dir, epoch + 1, {**arrays, **rng_state()})


def rng_state() -> dict[str, np.ndarray]:
    """The global random state Keras fit shuffles with, as arrays."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"rng/numpy_keys": keys, "rng/numpy": np.array([pos, has_gauss, gauss], dtype=np.float64)}
    if keras.backend.backend() == "torch":  # its DataLoader shuffles with torch's generator
        import torch

        state["rng/torch"] = torch.get_rng_state().numpy()
    return state


def set_rng_state(state: dict[str, np.ndarray]) -> None:
    pos, has_gauss, gauss = state["rng/numpy"]
    np.random.set_state(("MT19937", state["rng/numpy_keys"], int(pos), int(has_gauss), float(gauss)))
    if "rng/torch" in state:
        import torch

        torch.set_rng_state(torch.from_numpy(state["rng/torch"]))


def restore(model: keras.Model, run_dir: Path) -> tuple[int, dict]:
    """Load `run_dir`'s checkpoint into a compiled model: the epochs it had completed, and the global RNG
    state then (for Checkpoint to set when training starts)."""
    epoch, arrays = runs.load_checkpoint(run_dir)
    model.optimizer.build(model.trainable_variables)
    for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"{prefix}/{i}"])
    return epoch, {key: value for key, value in arrays.items() if key.startswith("rng/")}


class Diverged(UserError):
    """The loss became NaN or infinite: the run is not saved as a finished one."""


def train(config: Config, run_dir: str | Path, backend: BackendChoice, *, overwrite: bool = False,
          resume: bool = False, data_dir: str | Path | None = None, verbose: int | str = "auto",
          log: Callable[[str], None] = lambda text: None, callbacks: tuple = (),
          score_test: bool = True) -> TrainResult:
    """Train `config` on MNIST into a new run directory, or continue an interrupted one.

    Args:
        backend: the active Keras backend and why it was chosen (recorded in metrics.json).
        overwrite: replace a run folder the tool made (only the files it wrote there are deleted).
        resume: continue `run_dir` from its last completed epoch (its config.toml is `config`).
        callbacks: more Keras callbacks (a sweep's pruning).
        score_test: score the test set at the end; sweeps pass False, so selection never sees it.
        verbose: Keras' progress display (1 bar, 2 one line per epoch).
        log: receives the lines a user should see before training (backend, validation, summary).
    """
    started = time.perf_counter()
    config = dataclasses.replace(config, backend=backend.name)  # resolved: a rerun uses the same backend
    check_fits(config)
    with runs.claim(run_dir, overwrite=overwrite, resume=resume) as run_dir:
        try:
            return _train(config, run_dir, backend, resume, data_dir, verbose, log, callbacks, score_test, started)
        except WriteFailed as e:
            raise WriteFailed(f"{e}; free some space, then {runs.continue_advice(run_dir)}") from None
        except OSError as e:  # Keras' CSVLogger, or saving the model, on a full or read-only disk
            raise write_failed(run_dir, e, f"free some space, then {runs.continue_advice(run_dir)}") from None


def _train(config, run_dir, backend, resume, data_dir, verbose, log, callbacks, score_test, started) -> TrainResult:
    tc = config.train
    if resume:
        done = runs.completed_epochs(run_dir)
        runs.truncate_history(run_dir / runs.PARTIAL_HISTORY, done)
        log(f"Resuming {run_dir} after epoch {done} of {tc.epochs}")
    else:
        runs.write_text(run_dir / runs.CONFIG, config_to_toml(config))
    log(f"Backend: {backend.name} (chosen by {backend.reason})")
    set_seed(tc.seed, backend.name)
    if backend.name == "jax":  # before the model is built: its initializers are compiled programs too
        from mnist_mlp.engine import enable_compile_cache

        enable_compile_cache(data.cache_dir(data_dir) / "xla")

    (x_train, y_train), (x_test, y_test) = data.load_arrays(data_dir)
    if tc.validation == "split":
        (x_train, y_train), validation = data.split_validation(x_train, y_train)
    else:
        validation = (x_test, y_test)
    if tc.train_samples:
        x_train, y_train = x_train[: tc.train_samples], y_train[: tc.train_samples]
    log(f"{len(x_train)} train samples, {len(x_test)} test samples")
    log(validation_note(tc))

    model = compile_model(build_model(config.model), tc, len(x_train))
    log(model_summary(model))
    initial_epoch, rng = restore(model, run_dir) if resume else (0, None)
    engine = choose_engine(tc.engine, backend.name)
    log(engine_note(tc.engine, engine))
    timer = EpochTimer()
    callbacks = [*callbacks, keras.callbacks.TerminateOnNaN(),
                 keras.callbacks.CSVLogger(str(run_dir / runs.PARTIAL_HISTORY), append=resume), timer,
                 Checkpoint(run_dir, rng)]  # last: saves after the rest
    if engine == "compiled":
        from mnist_mlp.engine import fit_compiled

        fit_compiled(model, x_train, y_train, batch_size=tc.batch_size, epochs=tc.epochs, seed=tc.seed,
                     validation_data=validation, callbacks=callbacks, verbose=verbose, initial_epoch=initial_epoch)
    else:
        model.fit(x_train, y_train, batch_size=tc.batch_size, epochs=tc.epochs, verbose=verbose,
                  validation_data=validation, callbacks=callbacks, initial_epoch=initial_epoch)
    history = runs.read_history(run_dir / runs.PARTIAL_HISTORY)
    if not all(map(math.isfinite, history["loss"])):
        epoch = next(i for i, v in enumerate(history["loss"]) if not math.isfinite(v)) + 1
        lower = 0.001 if tc.learning_rate > 0.001 else tc.learning_rate / 10
        raise Diverged(f"training diverged: the loss became NaN or infinite in epoch {epoch}, so {run_dir} is not "
                       f"a finished run; try a lower learning rate: `mnist-mlp train --config "
                       f"{run_dir / runs.CONFIG} --set train.learning_rate={lower:g} --out {run_dir} --overwrite`")
    return _finish(config, run_dir, model, len(x_train), (x_test, y_test) if score_test else None, timer, backend,
                   engine, started)


def _finish(config, run_dir, model, train_samples, test, timer, backend, engine, started) -> TrainResult:
    """Score the test set once (unless `test` is None) and write the model, history, curves and metrics."""
    test_loss = test_accuracy = ci95 = None
    if test is not None:
        x_test, y_test = test
        test_loss, test_accuracy = map(float, model.evaluate(x_test, y_test, batch_size=1024, verbose=0))
        ci95 = wilson_interval(round(test_accuracy * len(x_test)), len(x_test))
    with runs.atomic(run_dir / runs.MODEL) as model_tmp:
        model.save(model_tmp)
    os.replace(run_dir / runs.PARTIAL_HISTORY, run_dir / runs.HISTORY)
    history = runs.read_history(run_dir / runs.HISTORY)
    plots.plot_curves({run_dir.name: history}, run_dir / runs.CURVES)

    seconds = timer.seconds or [0.0]
    result = TrainResult(run_dir, test_loss, test_accuracy, ci95,
                         float(np.median(seconds)), time.perf_counter() - started, backend.name)
    tc = config.train
    runs.write_json(run_dir / runs.METRICS, {
        "test_loss": result.test_loss, "test_accuracy": result.test_accuracy,
        "test_accuracy_ci95": list(ci95) if ci95 else None, "test_samples": len(test[0]) if test is not None else 0,
        "train_samples": train_samples, "final_val_accuracy": history.get("val_accuracy", [None])[-1],
        "stopped_after_epochs": len(history["loss"]), "validation": tc.validation, "epochs": tc.epochs, "engine": engine,
        "seconds_per_epoch": result.seconds_per_epoch, "epoch_seconds": timer.seconds,
        "epochs_this_process": len(timer.seconds), "wall_seconds": result.wall_seconds,
        "backend": backend.name, "backend_reason": backend.reason, "versions": versions(backend.name),
        "machine": f"{platform.machine()}, {platform.system()}, {os.cpu_count()} CPUs",
        "device": device_name(backend.name),
        "threads": {"cpus_available": len(os.sched_getaffinity(0)), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                    "choice": "the backend's default: a thread pool over every available core (on JAX, one "
                              "core took 1.5-1.7x as long per epoch as two; README, Speed)"},
        "data_sha256": {key: sha for key, (_, sha) in data.FILES.items()},
        "config": dataclasses.asdict(config),  # what was trained: load_run refuses a config.toml edited since
        "model_sha256": runs.file_sha256(run_dir / runs.MODEL),
    })
    (run_dir / runs.CHECKPOINT).unlink(missing_ok=True)  # finished: nothing left to resume
    return result
