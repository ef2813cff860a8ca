"""The bench's peers, each trained in a child process of its own: the config by stock Keras `fit` on a
backend (with Keras' image layers for its deformations), by a plain PyTorch loop, or by our compiled engine;
the child reports its epoch times, accuracy, memory and (JAX) what its first epoch spent compiling."""

from __future__ import annotations

import json
import math
import os
import resource
import time
from pathlib import Path

from mnist_mlp.errors import UserError


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config_for(epochs: int | None, config_path: str | None, variant: str = "ours"):
    """The config a bench child trains: the preset (default: the classic one) validated on the test set; stock
    Keras and PyTorch variants train float32 layers of their own (BFloat16Dense is ours)."""
    from mnist_mlp.config import load_config

    overrides = ["train.validation=test"] + ([f"train.epochs={epochs}"] if epochs else [])
    return load_config(config_path, overrides + ([] if variant == "ours" else ["train.precision=float32"]))


class CompileLog:
    """JAX's own compile events in this process (jax.monitoring): tracing, lowering and compiling each program
    (or loading it from the persistent cache), by the function's name, with the time each ended."""

    EVENTS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __init__(self, t0: float):
        from jax import monitoring

        self.t0, self.events, self.hits = t0, [], []
        monitoring.register_event_duration_secs_listener(self._on_duration)
        monitoring.register_event_listener(self._on_event)

    def _on_duration(self, event, seconds, **details):
        if event in self.EVENTS:
            # The compile's "jit(f)"
            name = details.get("fun_name", "?").removeprefix("jit(").removesuffix(")")
            self.events.append((time.time() - self.t0, event, name, seconds))

    def _on_event(self, event, **details):
        if event == "/jax/compilation_cache/cache_hits":
            self.hits.append(time.time() - self.t0)

    def summary(self, until: float) -> dict:
        """Seconds spent compiling up to `until` (seconds from t0), programs compiled or loaded, how many came
        from the cache, and the five functions that took longest ([name, seconds, programs, XLA's seconds for
        each program]: a second program is the same function at other shapes, such as an epoch's last
        batch)."""
        by_name: dict = {}
        for _, event, name, seconds in (e for e in self.events if e[0] <= until):
            total, backend = by_name.get(name, (0.0, []))
            by_name[name] = (total + seconds, backend + [seconds] * (event == self.EVENTS[2]))
        longest = sorted(by_name.items(), key=lambda item: -item[1][0])[:5]
        return {
            "seconds": sum(total for total, _ in by_name.values()),
            "programs": sum(len(backend) for _, backend in by_name.values()),
            "from_cache": sum(hit <= until for hit in self.hits),
            "longest": [[name, total, len(backend), backend] for name, (total, backend) in longest],
        }


def keras_child(
    variant: str,
    epochs: int | None,
    config_path: str | None,
    t0: float,
    stop_at: float | None = None,
    compile_cache: str | None = None,
    give_up: float | None = None,
) -> dict:
    from mnist_mlp.backend import device_name, use_backend

    config = config_for(epochs, config_path, variant)
    backend = use_backend("jax" if variant == "ours" else variant.removeprefix("keras-")).name
    compiles = CompileLog(t0) if backend == "jax" else None
    import keras

    from mnist_mlp.recipe import prepare, resolve

    config = resolve(config, backend)[0]  # precision "auto" made concrete, as train makes it
    setup = prepare(
        config,
        backend,
        engine="compiled" if variant == "ours" else "fit",  # what train does
        compile_cache=compile_cache,
    )
    ends, accuracy, start = [], [], []

    def on_epoch_end(epoch, logs):
        ends.append(time.time() - t0)
        accuracy.append(logs["val_accuracy"])
        reached = stop_at is not None and logs["val_accuracy"] >= stop_at
        if reached or (give_up is not None and ends[-1] >= give_up):  # --time-to: reached, or out of time
            record.model.stop_training = True  # the model being fit (Keras': the one with the image layers)

    record = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: start.append(time.time() - t0), on_epoch_end=on_epoch_end
    )
    _fit(variant, config, setup, record)
    return {
        "epoch_end_s": ends,
        "epoch_accuracy": accuracy,
        "device": device_name(backend),
        "start_s": start[0],
        "compiling": compiles and compiles.summary(until=ends[0]),
    }


def _fit(variant: str, config, setup, record) -> None:
    """Train the variant's model: our compiled engine, or Keras fit as the classic script does (the test set
    as validation; Keras' own image layers in front where the recipe deforms digits)."""
    import keras

    from mnist_mlp.recipe import compile_model

    tc, model = config.train, setup.model
    fit = dict(batch_size=tc.batch_size, epochs=tc.epochs, verbose=0, validation_data=setup.validation)
    if variant == "ours":
        from mnist_mlp.engine import fit_compiled

        fit_compiled(
            model,
            setup.x_train,
            setup.y_train,
            seed=tc.seed,
            callbacks=[record],
            augment=config.augment,
            **fit,
        )
        return
    if config.augment.active:  # the layers are active in fit only
        layers = keras.Sequential([keras.Input((784,)), *keras_augmentation(config.augment), model])
        model = compile_model(layers, tc, len(setup.x_train))
    model.fit(setup.x_train, setup.y_train, callbacks=[record], **fit)


def keras_augmentation(augment) -> list:
    """Keras' own image layers, set as close to `augment` as they go, for Keras fit beside our engine: the
    same ranges of rotation, scale (each axis), shear and shift; and RandomElasticTransform at its largest
    (scale 1: sigma 1.4 px, alpha 2.8 px, a finer-grained field than Simard's sigma 5, which it does not
    allow). Keras has no layer for `stroke`: that variant trains without it."""
    import keras

    fill = {"fill_mode": "constant", "fill_value": 0.0}
    layers, a = [keras.layers.Reshape((28, 28, 1))], augment
    if a.rotation:
        layers.append(keras.layers.RandomRotation(a.rotation / 360, **fill))
    if a.scale:
        layers.append(keras.layers.RandomZoom((-a.scale, a.scale), (-a.scale, a.scale), **fill))
    if a.shear:
        shear = math.tan(math.radians(a.shear))  # a random sign is Keras' own
        layers.append(keras.layers.RandomShear(shear, shear, **fill))
    if a.translation:
        layers.append(keras.layers.RandomTranslation(a.translation / 28, a.translation / 28, **fill))
    if a.elastic_alpha:
        layers.append(keras.layers.RandomElasticTransform(1.0, (1.0, 1.0), value_range=(0, 1), **fill))
    return [*layers, keras.layers.Reshape((784,))]


TORCH_ACTIVATIONS = {
    "relu": "ReLU",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "gelu": "GELU",
    "elu": "ELU",
    "selu": "SELU",
    "silu": "SiLU",
    "softplus": "Softplus",
    "linear": "Identity",
}


def torch_recipe(config, torch):
    """The config's model and optimizer in plain PyTorch, with Keras' defaults where the two differ."""
    from torch import nn

    mc, tc = config.model, config.train
    layers, width = [], 784
    for units in mc.hidden_units:
        layers += [nn.Linear(width, units), getattr(nn, TORCH_ACTIVATIONS[mc.activation])()]
        layers += [nn.Dropout(mc.dropout)] if mc.dropout else []
        width = units
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    optimizers = {
        "rmsprop": lambda p: torch.optim.RMSprop(p, lr=tc.learning_rate, alpha=0.9, eps=1e-7),
        "adam": lambda p: torch.optim.Adam(p, lr=tc.learning_rate, eps=1e-7),
        "sgd": lambda p: torch.optim.SGD(p, lr=tc.learning_rate),
    }
    if tc.optimizer not in optimizers or tc.lr_schedule != "constant":
        raise UserError(
            f"bench's PyTorch variants know rmsprop, adam and sgd at a constant rate; this config has "
            f"{tc.optimizer} ({tc.lr_schedule}): leave torch out with --variants"
        )
    return model, optimizers[tc.optimizer](model.parameters())


def torch_child(variant: str, epochs: int | None, config_path: str | None, t0: float) -> dict:
    """A plain PyTorch loop on the same model and recipe as the config."""
    import torch
    from torch import nn

    from mnist_mlp import data

    config = config_for(epochs, config_path, variant)
    if variant == "torch-1thread":
        torch.set_num_threads(1)
    device = torch.device(
        "cuda" if os.environ.get("MNIST_MLP_BENCH_GPU") and torch.cuda.is_available() else "cpu"
    )
    torch.manual_seed(config.train.seed)
    (x_train, y_train), (x_test, y_test) = data.load_data()
    x_train, x_test = torch.from_numpy(data.preprocess(x_train)), torch.from_numpy(data.preprocess(x_test))
    y_train, y_test = torch.from_numpy(y_train.astype("int64")), torch.from_numpy(y_test.astype("int64"))
    x_train, x_test, y_train, y_test = (t.to(device) for t in (x_train, x_test, y_train, y_test))
    model, optimizer = torch_recipe(config, torch)
    model = model.to(device)
    loss_fn, batch = nn.CrossEntropyLoss(), config.train.batch_size
    ends, accuracy = [], []
    for _ in range(config.train.epochs):
        model.train()
        order = torch.randperm(len(x_train), device=device)
        for start in range(0, len(x_train), batch):
            index = order[start : start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x_train[index]), y_train[index]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy.append(float((model(x_test).argmax(1) == y_test).float().mean()))  # waits for the GPU
        ends.append(time.time() - t0)
    return {
        "epoch_end_s": ends,
        "epoch_accuracy": accuracy,
        "threads": torch.get_num_threads(),
        "device": f"cuda {torch.cuda.get_device_name()}" if device.type == "cuda" else "cpu",
    }


def child(
    variant: str,
    epochs: int | None,
    config_path: str | None,
    t0: float,
    out: str,
    stop_at: float | None = None,
    compile_cache: str | None = None,
    give_up: float | None = None,
) -> None:
    """Run one variant in this (fresh) process and write its raw timings as JSON to `out`; Keras variants stop
    after the first epoch whose test accuracy reaches `stop_at`, or that ends `give_up` seconds or more after
    t0; JAX variants keep compiled programs in `compile_cache` (default: train's)."""
    if variant.startswith("torch"):
        result = torch_child(variant, epochs, config_path, t0)
    else:
        result = keras_child(variant, epochs, config_path, t0, stop_at, compile_cache, give_up)
    result["peak_memory_mb"] = peak_mb()
    Path(out).write_text(json.dumps(result))
