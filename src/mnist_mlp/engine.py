"""The compiled training engine for the JAX backend: Keras builds the model and optimizer, and each
epoch runs as a few jitted `lax.scan` chunks over all its batches (stateless_call + stateless_apply),
with the variables written back into the Keras model at the end."""

from __future__ import annotations

import functools
import importlib
import inspect
import math

import jax
import jax.numpy as jnp
import keras
import numpy as np

from mnist_mlp.augment import deform
from mnist_mlp.config import AugmentConfig

CHUNKS = 4  # jitted calls per epoch on CPU: the progress bar moves between them
# On a GPU an epoch takes a few hundredths of a second: one call per epoch, and the scan unrolled so that
# fewer loop iterations each wait on the host (measured on an H200, docs/benchmarks.md).
GPU_CHUNKS, GPU_UNROLL = 1, 4
AUGMENT_STREAM = 0x61756720  # folded into the seed: the deformations' random stream, apart from any other


def enable_compile_cache(path) -> None:
    """JAX's persistent compilation cache: a second run of the same config skips most compiling."""
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@functools.cache
def unroll_threefry_on_cpu() -> bool:
    """Dropout's random bits come from JAX's threefry hash, which JAX lowers on the CPU as a rolled loop
    of 5 rounds (to compile faster): XLA then makes a pass over the whole array per round. Lowered
    unrolled, as JAX does on other platforms, the hash fuses into the dropout kernel: the two masks of a
    classic epoch took 0.41 s rolled and 0.06 s unrolled here. Same hash, same bits, for every threefry
    draw in this process from now on. False where this JAX keeps the lowering elsewhere (nothing changes)."""
    for name in ("jax._src.random.threefry2x32", "jax._src.prng"):  # newer JAX, older JAX
        lowering = getattr(_try_import(name), "_threefry2x32_lowering", None)
        if lowering is not None and "use_rolled_loops" in inspect.signature(lowering).parameters:
            break
    else:
        return False
    from jax.extend.random import threefry2x32_p
    from jax.interpreters import mlir

    unrolled = mlir.lower_fun(functools.partial(lowering, use_rolled_loops=False), multiple_results=True)
    mlir.register_lowering(threefry2x32_p, unrolled, platform="cpu")
    return True


def _try_import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _loss_fn(model, loss):
    def compute(trainable, non_trainable, x, y):
        y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        value = jnp.mean(loss(y, y_pred))
        return value, (y_pred, non_trainable)
    return compute


def _make_programs(model, optimizer, loss, unroll: int = 1, augment: AugmentConfig | None = None):
    grad_fn = jax.value_and_grad(_loss_fn(model, loss), has_aux=True)

    def step(state, batch):
        trainable, non_trainable, opt_vars, loss_sum, correct = state
        x, y = batch
        (value, (y_pred, non_trainable)), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        hits = jnp.sum(jnp.argmax(y_pred, axis=-1) == jnp.argmax(y, axis=-1))
        return (trainable, non_trainable, opt_vars, loss_sum + value * x.shape[0], correct + hits), None

    @functools.partial(jax.jit, donate_argnums=0)
    def run_chunk(state, x, y, index, key, first_step):
        """index: int32 (steps, batch_size) rows of x/y for each step of this chunk; with `augment`, step s of
        the epoch deforms its batch with the key fold_in(key, s): fresh every step, the same on a resume."""
        def body(s, item):
            i, number = item
            batch = x[i] if augment is None else deform(jax.random.fold_in(key, number), x[i], augment)
            return step(s, (batch, y[i]))

        steps = first_step + jnp.arange(index.shape[0], dtype=jnp.int32)
        state, _ = jax.lax.scan(body, state, (index, steps), unroll=unroll)
        return state

    @jax.jit
    def evaluate(trainable, non_trainable, x, y):
        y_pred, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        hits = jnp.sum(jnp.argmax(y_pred, axis=-1) == jnp.argmax(y, axis=-1))
        return jnp.mean(loss(y, y_pred)), hits / x.shape[0]

    return run_chunk, evaluate


def epoch_index(n: int, batch_size: int, rng: np.random.Generator | None, chunks: int = CHUNKS) -> list[np.ndarray]:
    """An epoch as index arrays, shuffled by `rng` (None: in order): up to `chunks` blocks of full batches,
    then the last partial batch (as `fit` does), each of shape (steps, batch_size_or_rest). Blocks are of
    one length where a count up to `chunks` divides the batches, so that one program is traced, not two."""
    order = (rng.permutation(n) if rng is not None else np.arange(n)).astype(np.int32)
    full = n // batch_size
    blocks = order[: full * batch_size].reshape(full, batch_size)
    chunks = next((k for k in range(chunks, 1, -1) if full % k == 0), chunks)
    per_chunk = math.ceil(full / chunks) if full else 0
    parts = [blocks[i : i + per_chunk] for i in range(0, full, per_chunk)] if full else []
    if n % batch_size:
        parts.append(order[full * batch_size :][None, :])
    return parts


def fit_compiled(model: keras.Model, x, y, *, batch_size: int, epochs: int, seed: int,
                 validation_data=None, callbacks=(), verbose=1, initial_epoch: int = 0,
                 shuffle: bool = True, chunks: int | None = None, unroll: int | None = None,
                 augment: AugmentConfig | None = None) -> None:
    """Train a compiled Keras model as `model.fit` would, reporting to the same callbacks and
    progress bar; loss and accuracy accumulate as Keras' metrics define them (means over samples).
    On a CPU, call `unroll_threefry_on_cpu()` once first for the fast dropout (recipe.prepare does)."""
    optimizer, loss = model.optimizer, model.loss
    loss = keras.losses.get(loss) if isinstance(loss, str) else loss
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    on_cpu = jax.devices()[0].platform == "cpu"
    chunks = chunks or (CHUNKS if on_cpu else GPU_CHUNKS)
    augment = augment if augment is not None and augment.active else None
    run_chunk, evaluate = _make_programs(model, optimizer, loss, unroll or (1 if on_cpu else GPU_UNROLL), augment)
    deform_key = jax.random.fold_in(jax.random.key(seed), AUGMENT_STREAM)
    x, y = jax.device_put(x), jax.device_put(y)  # one copy; jnp.asarray holds two at its peak
    if validation_data is not None:
        x_val, y_val = map(jax.device_put, validation_data)
    n = x.shape[0]
    steps = math.ceil(n / batch_size)
    callback_list = keras.callbacks.CallbackList(list(callbacks), add_history=True, add_progbar=verbose != 0,
                                                 model=model, verbose=verbose, epochs=epochs, steps=steps)
    model.stop_training = False
    callback_list.on_train_begin()
    rng = np.random.default_rng(seed) if shuffle else None
    for _ in range(initial_epoch if shuffle else 0):  # a resumed run sees the same shuffles as an uninterrupted one
        rng.permutation(n)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    opt_vars = [v.value for v in optimizer.variables]
    logs = {}
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        # A copy: the chunks donate (reuse) their input buffers, and the model's own must stay valid.
        state = _copy((trainable, non_trainable, opt_vars)) + (jnp.float32(0), jnp.int32(0))
        done_steps = done_samples = 0
        for index in epoch_index(n, batch_size, rng, chunks):
            state = run_chunk(state, x, y, jnp.asarray(index), jax.random.fold_in(deform_key, epoch),
                              jnp.int32(done_steps))
            done_steps += index.shape[0]
            done_samples += index.size
            logs = {"loss": float(state[3]) / done_samples, "accuracy": int(state[4]) / done_samples}
            callback_list.on_train_batch_end(done_steps - 1, logs)
        trainable, non_trainable, opt_vars = state[0], state[1], state[2]
        if validation_data is not None:
            val_loss, val_accuracy = evaluate(trainable, non_trainable, x_val, y_val)
            logs = {**logs, "val_loss": float(val_loss), "val_accuracy": float(val_accuracy)}
        _write_back(model, optimizer, trainable, non_trainable, opt_vars)
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)


@jax.jit
def _copy(tree):
    """Fresh buffers for every variable, in one program (a jnp.copy per variable compiles one each)."""
    return jax.tree.map(jnp.copy, tree)


def _write_back(model, optimizer, trainable, non_trainable, opt_vars) -> None:
    for variable, value in zip(model.trainable_variables, trainable):
        variable.assign(value)
    for variable, value in zip(model.non_trainable_variables, non_trainable):
        variable.assign(value)
    for variable, value in zip(optimizer.variables, opt_vars):
        variable.assign(value)
