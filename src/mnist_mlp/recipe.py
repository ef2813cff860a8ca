"""The training set-up that train and bench share, from a Config alone: the seed, JAX's compile cache, the
data split the config asks for, and the model built and compiled with its optimizer. Writes no files."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from mnist_mlp import cache, data
from mnist_mlp.backend import choose_precision
from mnist_mlp.config import Config, TrainConfig
from mnist_mlp.model import build_model


@dataclass(frozen=True)
class Setup:
    model: keras.Model  # built and compiled
    x_train: np.ndarray  # float32 (n, 784) in [0, 1]
    y_train: np.ndarray  # float32 (n, 10) one-hot
    validation: tuple[np.ndarray, np.ndarray] | None  # the test set, the last 10,000 training images, or none
    test: tuple[np.ndarray, np.ndarray]


def resolve(config: Config, backend: str) -> tuple[Config, str]:
    """`config` as this machine trains it, which a run records (config.toml), so a rerun or a resume elsewhere
    trains the same: its backend, and train.precision = "auto" made float32 or bfloat16; with a line saying
    what auto chose and why ("" when nothing was chosen)."""
    precision, why = choose_precision(config.train.precision, backend)
    note = (
        f"Precision: {precision} (train.precision = auto: {why})" if config.train.precision == "auto" else ""
    )
    return dataclasses.replace(
        config, backend=backend, train=dataclasses.replace(config.train, precision=precision)
    ), note


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
    optimizer_class = type(keras.optimizers.get(config.optimizer))  # Keras' own name -> class table
    model.compile(
        loss=config.loss, optimizer=optimizer_class(learning_rate=learning_rate), metrics=["accuracy"]
    )
    return model


def prepare(
    config: Config,
    backend: str,
    data_dir: str | Path | None = None,
    engine: str = "fit",
    compile_cache: str | Path | None = None,
) -> Setup:
    """Seed, data and compiled model for `config` on the active `backend`; `engine` "compiled" also makes
    JAX lower dropout's hash for speed (process-wide; stock Keras fit is left as it comes). JAX's compile
    cache is the folder `compile_cache`, else "xla" in the data cache. Sets Keras' floatx and epsilon to their
    defaults (process-wide), whatever a keras.json says."""
    tc = config.train
    set_seed(tc.seed, backend)
    # Keras' own defaults, whatever a ~/.keras/keras.json says: its floatx would change the weights' type and
    # its epsilon the loss's clipping, and neither is in the run's config (train.precision is).
    keras.config.set_floatx("float32")
    keras.config.set_epsilon(1e-7)
    if backend == "jax":  # before the model is built: its initializers are compiled programs too
        from mnist_mlp import engine as compiled

        compiled.enable_compile_cache(compile_cache or cache.cache_dir(data_dir) / "xla")
        if engine == "compiled":
            compiled.unroll_threefry_on_cpu()
    (x_train, y_train), test = data.load_arrays(data_dir)
    if tc.validation == "split":
        (x_train, y_train), validation = data.split_validation(x_train, y_train)
    else:
        validation = test if tc.validation == "test" else None
    if tc.train_samples:
        x_train, y_train = x_train[: tc.train_samples], y_train[: tc.train_samples]
    model = compile_model(build_model(config.model, tc.precision), tc, len(x_train))
    return Setup(model, x_train, y_train, validation, test)
