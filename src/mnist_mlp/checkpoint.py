"""Resuming exactly: a Keras callback that saves the run's whole state after an epoch (variables, optimizer,
the global RNG that fit shuffles with) through runs.save_checkpoint, its restore, and a Ctrl-C that always
stops training."""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from time import monotonic

import keras
import numpy as np

from mnist_mlp import runs
from mnist_mlp.errors import UserError, interrupt


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
        self.run_dir, self.rng_state, self.config_toml = (
            run_dir,
            rng_state,
            config_toml,
        )  # resume checks the config
        self.every_seconds = every_seconds

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
        runs.save_checkpoint(self.run_dir, epoch + 1, {**arrays, **rng_state()})
        self.saved_at = monotonic()  # from the end of a save: saving takes at most its share of the time


class CtrlC(keras.callbacks.Callback):
    """Ctrl-C while training, made sure of: within `with CtrlC() as ctrl_c:` the signal raises
    KeyboardInterrupt where it lands, as Python's own handler does, and also sets a flag that the end of each
    training batch and epoch checks (and the end of the block). Where it lands in Keras' pythonify_logs, which
    catches every exception, the flag stops training at the next batch (before, `--engine fit` trained on to
    the end after Ctrl-C 8 times in 8 here). SIGTERM and SIGHUP too, where the command made them a Ctrl-C
    (errors.interrupt, which also remembers a signal dropped before training). Only where the signal has
    Python's own handler or that one, in the main thread: an ignored SIGINT (a background job) or another
    handler is left alone. Validation batches are not checked: a callback with on_test_batch_end makes Keras
    run them in the foreground, and the epoch's end comes soon after."""

    def __init__(self):
        super().__init__()
        self.pressed, self.previous = False, {}

    def __enter__(self) -> CtrlC:
        if interrupt.received:  # came before training, where it was dropped
            raise KeyboardInterrupt
        if threading.current_thread() is threading.main_thread():
            for number in (
                signal.SIGINT,
                signal.SIGTERM,
                signal.SIGHUP,
            ):  # the last two where the command set
                if signal.getsignal(number) in (signal.default_int_handler, interrupt):  # errors.interrupt
                    self.previous[number] = signal.signal(number, self._press)
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        if (self.pressed or interrupt.received) and exc_type is None:  # swallowed after the last epoch's end
            raise KeyboardInterrupt

    def _press(self, signum, frame):
        self.pressed = True
        self.previous[signum](signum, frame)  # raises KeyboardInterrupt, as the handler it stands in for

    def on_train_batch_end(self, batch, logs=None):
        if self.pressed or interrupt.received:
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


def restore(model: keras.Model, run_dir: Path) -> tuple[int, dict]:
    """Load `run_dir`'s checkpoint into a compiled model: the epochs it had completed, and the global RNG
    state then (for Checkpoint to set when training starts)."""
    epoch, arrays = runs.load_checkpoint(run_dir)
    model.optimizer.build(model.trainable_variables)
    try:
        for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
            for i, variable in enumerate(variables):
                variable.assign(arrays[f"{prefix}/{i}"])
    except (ValueError, KeyError):  # its config matched (runs.resume_config): the arrays are damaged
        raise UserError(
            f"{run_dir / runs.CHECKPOINT} is damaged (it does not fit the model); start again with "
            f"{runs.fresh_start(run_dir)}"
        ) from None
    return epoch, {key: value for key, value in arrays.items() if key.startswith("rng/")}
