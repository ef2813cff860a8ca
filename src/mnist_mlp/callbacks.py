"""The Keras callbacks a run trains with: the resume checkpoint saved after an epoch (the run's whole state:
variables, optimizer, the global RNG that fit shuffles with), the stop at the next batch after Ctrl-C, the
stop at a NaN loss, and the epoch timer."""

from __future__ import annotations

import math
import time
from pathlib import Path
from time import monotonic

import keras
import numpy as np

from mnist_mlp import signals
from mnist_mlp.checkpoint import save_checkpoint


class Checkpoint(keras.callbacks.Callback):
    """After an epoch that ends at least `every_seconds` after the last save (or the start), the run's whole
    state in one atomic file: the model's variables (dropout's seed state among them), the optimizer's, and
    the global RNG that Keras fit shuffles with (NumPy's on JAX, PyTorch's on PyTorch), so a resumed run sees
    the same batches and masks as an uninterrupted one. The interval bounds both the work an interruption
    loses and the time spent saving (on a GPU one save can take longer than several epochs). The last epoch is
    always saved: a full disk or a Ctrl-C while the finished run is written loses no training. An epoch whose
    loss is not finite is not saved: the last good checkpoint stays."""

    def __init__(self, run_dir: Path, rng_state: dict | None, config_toml: str, every_seconds: float = 0.0):
        super().__init__()
        self.run_dir, self.rng_state, self.every_seconds = run_dir, rng_state, every_seconds
        self.config_toml = config_toml  # saved with the state: a resume checks config.toml against it

    def on_train_begin(self, logs=None):
        self.saved_at = monotonic()
        if self.rng_state is not None:  # here, not before fit: fit's data adapter draws from it first
            set_rng_state(self.rng_state)

    def on_epoch_end(self, epoch, logs=None):
        if not math.isfinite((logs or {}).get("loss", 0.0)):
            return
        last = epoch + 1 >= (self.params or {}).get("epochs", math.inf)
        if not last and monotonic() - self.saved_at < self.every_seconds:
            return
        arrays = {
            f"model/{i}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(self.model.variables)
        }
        arrays.update(
            {
                f"optimizer/{i}": keras.ops.convert_to_numpy(v.value)
                for i, v in enumerate(self.model.optimizer.variables)
            }
        )
        arrays["config_toml"] = np.array(self.config_toml)  # what the run was started with
        save_checkpoint(self.run_dir, epoch + 1, {**arrays, **rng_state()})
        self.saved_at = monotonic()  # from the end of a save: saving takes at most its share of the time


class CtrlC(keras.callbacks.Callback):
    """Stops fit at the end of the batch after Ctrl-C, `kill` or a closed terminal (signals.training), even
    where the KeyboardInterrupt landed in Keras code that swallows exceptions: `with CtrlC() as ctrl_c:`, and
    ctrl_c among fit's callbacks. Validation batches are not checked: a callback with on_test_batch_end makes
    Keras run them in the foreground, and the epoch's end comes soon after."""

    def __enter__(self) -> CtrlC:
        self.block = signals.training()
        self.stopped = self.block.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self.block.__exit__(*exc_info)

    def on_train_batch_end(self, batch, logs=None):
        if self.stopped():
            raise KeyboardInterrupt

    on_epoch_end = on_train_batch_end


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


class StopOnNaN(keras.callbacks.Callback):
    """Keras' TerminateOnNaN without its line for every batch that still ran (4 in a row before our one line):
    the run's own error says what happened and what to do."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch, validation and a checkpoint saved after it included (side by side: the
    group's epoch up to this run's checkpoint)."""

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)
