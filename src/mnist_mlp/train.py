"""Training: data -> preprocess -> build_model -> compile -> fit -> test score, written as a run
directory (config, history, metrics, model, curves)."""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from mnist_mlp import data, plots, runs
from mnist_mlp.backend import BackendChoice
from mnist_mlp.config import Config, TrainConfig, config_to_toml
from mnist_mlp.model import build_model, model_summary

OPTIMIZERS = {
    "rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD, "nadam": keras.optimizers.Nadam, "adamax": keras.optimizers.Adamax,
    "adagrad": keras.optimizers.Adagrad, "adadelta": keras.optimizers.Adadelta,
}


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    test_loss: float
    test_accuracy: float
    ci95: tuple[float, float]  # Wilson 95% interval of the test accuracy
    seconds_per_epoch: float  # median over epochs
    wall_seconds: float
    backend: str


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def compile_model(model: keras.Model, config: TrainConfig) -> keras.Model:
    optimizer = OPTIMIZERS[config.optimizer](learning_rate=config.learning_rate)
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


def choose_engine(requested: str, backend: str) -> str:
    """compiled runs only on JAX; auto picks it there and Keras fit elsewhere."""
    return "compiled" if backend == "jax" and requested in ("auto", "compiled") else "fit"


def engine_note(requested: str, engine: str) -> str:
    if engine == "compiled":
        return "Engine: compiled (each epoch one jitted XLA scan over its batches; --set train.engine=fit for Keras fit)."
    if requested == "compiled":
        return "Engine: Keras fit (the compiled engine needs the JAX backend)."
    return "Engine: Keras fit."


def train(config: Config, run_dir: str | Path, backend: BackendChoice, *, overwrite: bool = False,
          data_dir: str | Path | None = None, train_samples: int = 0, verbose: int | str = "auto",
          log: Callable[[str], None] = lambda text: None) -> TrainResult:
    """Train `config` on MNIST into a new run directory.

    Args:
        backend: the active Keras backend and why it was chosen (recorded in metrics.json).
        train_samples: train on the first N training images only (0 = all); for quick tries and tests.
        verbose: Keras' progress display (1 bar, 2 one line per epoch).
        log: receives the lines a user should see before training (backend, validation, summary).
    """
    started = time.perf_counter()
    run_dir = runs.prepare(run_dir, overwrite)
    runs.write_text(run_dir / runs.CONFIG, config_to_toml(config))
    tc = config.train
    log(f"Backend: {backend.name} (chosen by {backend.reason})")
    keras.utils.set_random_seed(tc.seed)

    (x_train, y_train), (x_test, y_test) = data.load_data(data_dir)
    x_train, x_test = data.preprocess(x_train), data.preprocess(x_test)
    y_train, y_test = data.to_one_hot(y_train), data.to_one_hot(y_test)
    if tc.validation == "split":
        (x_train, y_train), validation = data.split_validation(x_train, y_train)
    else:
        validation = (x_test, y_test)
    if train_samples:
        x_train, y_train = x_train[:train_samples], y_train[:train_samples]
    log(f"{len(x_train)} train samples, {len(x_test)} test samples")
    log(validation_note(tc))

    model = compile_model(build_model(config.model), tc)
    log(model_summary(model))
    engine = choose_engine(tc.engine, backend.name)
    log(engine_note(tc.engine, engine))
    timer = EpochTimer()
    with runs.atomic(run_dir / runs.HISTORY) as history_tmp:
        callbacks = [keras.callbacks.CSVLogger(str(history_tmp)), timer]
        if engine == "compiled":
            from mnist_mlp.engine import enable_compile_cache, fit_compiled

            enable_compile_cache(data.cache_dir(data_dir) / "xla")
            fit_compiled(model, x_train, y_train, batch_size=tc.batch_size, epochs=tc.epochs, seed=tc.seed,
                         validation_data=validation, callbacks=callbacks, verbose=verbose)
        else:
            model.fit(x_train, y_train, batch_size=tc.batch_size, epochs=tc.epochs, verbose=verbose,
                      validation_data=validation, callbacks=callbacks)
    test_loss, test_accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    with runs.atomic(run_dir / runs.MODEL) as model_tmp:
        model.save(model_tmp)
    history = runs.read_history(run_dir / runs.HISTORY)
    plots.plot_curves({run_dir.name: history}, run_dir / runs.CURVES)

    ci95 = wilson_interval(round(test_accuracy * len(x_test)), len(x_test))
    result = TrainResult(run_dir, float(test_loss), float(test_accuracy), ci95,
                         float(np.median(timer.seconds)), time.perf_counter() - started, backend.name)
    runs.write_json(run_dir / runs.METRICS, {
        "test_loss": result.test_loss, "test_accuracy": result.test_accuracy, "test_accuracy_ci95": list(ci95),
        "test_samples": len(x_test), "train_samples": len(x_train), "validation": tc.validation,
        "epochs": tc.epochs, "engine": engine, "seconds_per_epoch": result.seconds_per_epoch, "epoch_seconds": timer.seconds,
        "wall_seconds": result.wall_seconds, "backend": backend.name, "backend_reason": backend.reason,
        "versions": versions(backend.name), "machine": f"{platform.machine()}, {platform.system()}",
        "data_sha256": {key: sha for key, (_, sha) in data.FILES.items()},
    })
    return result
