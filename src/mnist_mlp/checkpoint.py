"""Resuming exactly: a Keras callback that saves the run's whole state after an epoch (variables, optimizer,
the global RNG that fit shuffles with) in an atomic .npz, its restore, and the callback that stops
training at the next batch after Ctrl-C."""

from __future__ import annotations

import math
from pathlib import Path
from time import monotonic

import keras
import numpy as np

from mnist_mlp import runs, signals
from mnist_mlp.errors import UserError
from mnist_mlp.outputs import atomic


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


def restore(model: keras.Model, run_dir: Path) -> tuple[int, dict]:
    """Load `run_dir`'s checkpoint into a compiled model: the epochs it had completed, and the global RNG
    state then (for Checkpoint to set when training starts)."""
    epoch, arrays = load_checkpoint(run_dir)
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


def save_checkpoint(path: str | Path, epoch: int, arrays: dict[str, np.ndarray]) -> None:
    """Write a run's state after `epoch` completed epochs (an atomic .npz: the last good one survives a full
    disk)."""
    path = Path(path) / runs.CHECKPOINT
    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, epoch=np.int64(epoch), **arrays)


def load_checkpoint(path: str | Path) -> tuple[int, dict[str, np.ndarray]]:
    """(completed epochs, arrays) saved by save_checkpoint."""
    with np.load(Path(path) / runs.CHECKPOINT) as saved:
        return int(saved["epoch"]), {key: saved[key] for key in saved.files if key != "epoch"}


def truncate_history(path: str | Path, epochs: int) -> None:
    """Keep the header and the first `epochs` rows (rows written after the last checkpoint are redone)."""
    path = Path(path)
    # As written: CSVLogger's \r\n
    lines = path.read_bytes().splitlines(keepends=True) if path.exists() else []
    with atomic(path) as tmp:
        tmp.write_bytes(b"".join(lines[: 1 + epochs]) if epochs else b"")
