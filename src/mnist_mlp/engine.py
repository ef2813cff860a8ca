"""The compiled training engine for the JAX backend: Keras builds the model and optimizer, and each
epoch runs as a few jitted `lax.scan` chunks over all its batches (stateless_call + stateless_apply),
their programs compiled concurrently before the first epoch, with the variables written back into the
Keras model at the end; several models of one architecture (a group's seeds) can train side by side in
one vmapped program."""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import operator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

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


def _make_programs(
    model, optimizer, loss, unroll: int = 1, augment: AugmentConfig | None = None, side_by_side: bool = False
):
    """The jitted chunk and validation programs; `side_by_side`: vmapped over a leading axis of models (their
    variables, indices and keys stacked), the data shared."""
    grad_fn = jax.value_and_grad(_loss_fn(model, loss), has_aux=True)

    def step(state, batch):
        trainable, non_trainable, opt_vars, loss_sum, correct = state
        x, y = batch
        (value, (y_pred, non_trainable)), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        hits = jnp.sum(jnp.argmax(y_pred, axis=-1) == jnp.argmax(y, axis=-1))
        return (trainable, non_trainable, opt_vars, loss_sum + value * x.shape[0], correct + hits), None

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

    def evaluate(trainable, non_trainable, x, y):
        y_pred, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        hits = jnp.sum(jnp.argmax(y_pred, axis=-1) == jnp.argmax(y, axis=-1))
        return jnp.mean(loss(y, y_pred)), hits / x.shape[0]

    if side_by_side:
        run_chunk = jax.vmap(run_chunk, in_axes=(0, None, None, 0, 0, None))
        evaluate = jax.vmap(evaluate, in_axes=(0, 0, None, None))
    return jax.jit(run_chunk, donate_argnums=0), jax.jit(evaluate)


def epoch_index(
    n: int, batch_size: int, rng: np.random.Generator | None, chunks: int = CHUNKS
) -> list[np.ndarray]:
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


def fit_compiled(model: keras.Model, x, y, *, seed: int, callbacks=(), **options) -> None:
    """Train a compiled Keras model as `model.fit` would, reporting to the same callbacks and
    progress bar; loss and accuracy accumulate as Keras' metrics define them (means over samples).
    On a CPU, call `unroll_threefry_on_cpu()` once first for the fast dropout (recipe.prepare does).
    Options: batch_size, epochs, validation_data, verbose, initial_epoch, shuffle, chunks, unroll, augment."""
    fit_side_by_side([model], x, y, seeds=[seed], callbacks=[callbacks], **options)


def fit_side_by_side(
    models: list[keras.Model],
    x,
    y,
    *,
    batch_size: int,
    epochs: int,
    seeds: list[int],
    validation_data=None,
    callbacks: list = (),
    verbose=1,
    initial_epoch: int = 0,
    shuffle: bool = True,
    chunks: int | None = None,
    unroll: int | None = None,
    augment: AugmentConfig | None = None,
) -> None:
    """fit_compiled for models of one architecture and optimizer (a group's seeds), all trained in one
    program: their variables stacked on a leading axis and every step vmapped over it. Model i shuffles by
    seeds[i] and reports to callbacks[i] as it would alone (the progress bar is the first's); its products are
    computed in other kernels, so its numbers can differ from a lone run's by rounding. Stops when any model
    stops."""
    together, count = len(models) > 1, len(models)
    callbacks = list(callbacks) or [()] * count
    if not len(seeds) == len(callbacks) == count:
        raise ValueError(f"{count} models need {count} seeds and {count} callback lists")
    on_cpu = jax.devices()[0].platform == "cpu"
    chunks = chunks or (CHUNKS if on_cpu else GPU_CHUNKS)
    plan = _Epochs.of(x, y, validation_data, batch_size, chunks, seeds, shuffle, initial_epoch)
    for m in models:  # built before the callbacks are told training begins (they may restore its state)
        if not m.optimizer.built:
            m.optimizer.build(m.trainable_variables)
    callback_lists = _callback_lists(models, callbacks, verbose, epochs, math.ceil(len(x) / batch_size))
    variables = [_variables(m) for m in models]
    stacked = _stack(variables) if together else None
    if initial_epoch < epochs:
        unroll = unroll or (1 if on_cpu else GPU_UNROLL)
        plan.compile(models, stacked if together else variables[0], augment, unroll, at_once=on_cpu)
    logs = [{} for _ in models]
    try:
        for epoch in range(initial_epoch, epochs):
            for c in callback_lists:
                c.on_epoch_begin(epoch)
            # The chunks donate (reuse) their input buffers: a lone model's own must stay valid, so it gets a
            # copy; stacked variables are the engine's own (the models hold slices of them).
            state = _epoch_state(stacked if together else _copy(variables[0]), count)
            state, logs = plan.run(epoch, state, callback_lists)
            stacked = state[:3]
            variables = _unstack(stacked, count) if together else [stacked]
            for m, c, values, log in zip(models, callback_lists, variables, logs):
                _write_back(m, m.optimizer, *values)
                c.on_epoch_end(epoch, log)
            if any(m.stop_training for m in models):
                break
    finally:  # after a Ctrl-C or an error: compiles not yet started are dropped, not waited for
        for program in plan.programs.values():
            program.cancel()
    for c, log in zip(callback_lists, logs):
        c.on_train_end(log)


@dataclass
class _Epochs:
    """What each epoch of a fit uses: the data on the device, each model's shuffles and deformation stream,
    and the compiled programs."""

    x: jax.Array
    y: jax.Array
    validation: tuple | None
    batch_size: int
    chunks: int
    rngs: list  # a shuffler per model (None: in order)
    deform_keys: list  # a key per model
    programs: dict = field(default_factory=dict)

    @classmethod
    def of(
        cls, x, y, validation_data, batch_size: int, chunks: int, seeds, shuffle: bool, initial_epoch: int
    ):
        x, y = jax.device_put(x), jax.device_put(y)  # one copy; jnp.asarray holds two at its peak
        validation = None if validation_data is None else tuple(map(jax.device_put, validation_data))
        rngs = [_shuffler(seed, x.shape[0], initial_epoch) if shuffle else None for seed in seeds]
        keys = [jax.random.fold_in(jax.random.key(seed), AUGMENT_STREAM) for seed in seeds]
        return cls(x, y, validation, batch_size, chunks, rngs, keys)

    def compile(self, models, variables, augment, unroll: int, at_once: bool) -> None:
        """Start compiling every program the epochs will call (see _compile_ahead), for `variables` (stacked
        where several models train together)."""
        model, count = models[0], len(models)
        loss = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
        augment = augment if augment is not None and augment.active else None
        run_chunk, evaluate = _make_programs(
            model, model.optimizer, loss, unroll, augment, side_by_side=count > 1
        )
        stack = (count,) if count > 1 else ()
        index = epoch_index(self.x.shape[0], self.batch_size, None, self.chunks)
        shapes = list(dict.fromkeys(stack + part.shape for part in index))
        key = jnp.stack(self.deform_keys) if count > 1 else self.deform_keys[0]
        state = _epoch_state(variables, count)
        self.programs = _compile_ahead(
            run_chunk, evaluate, state, self.x, self.y, shapes, key, self.validation, at_once
        )

    def run(self, epoch: int, state, callback_lists) -> tuple:
        """One epoch from `state`, then the validation: (the state at the end, each model's logs)."""
        keys = [jax.random.fold_in(key, epoch) for key in self.deform_keys]
        key = jnp.stack(keys) if len(keys) > 1 else keys[0]
        blocks = [epoch_index(self.x.shape[0], self.batch_size, rng, self.chunks) for rng in self.rngs]
        state, logs = _run_epoch(self.programs, state, self.x, self.y, blocks, key, callback_lists)
        if self.validation is None:
            return state, logs
        val_loss, val_accuracy = (
            np.atleast_1d(np.asarray(v))
            for v in self.programs["evaluate"].result()(state[0], state[1], *self.validation)
        )
        logs = [
            {**log, "val_loss": float(val_loss[i]), "val_accuracy": float(val_accuracy[i])}
            for i, log in enumerate(logs)
        ]
        return state, logs


def _shuffler(seed: int, n: int, initial_epoch: int) -> np.random.Generator:
    """The epochs' shuffles from `seed`; a resumed run sees the same ones as an uninterrupted run."""
    rng = np.random.default_rng(seed)
    for _ in range(initial_epoch):
        rng.permutation(n)
    return rng


def _variables(model) -> tuple[list, list, list]:
    """A model's trainable, non-trainable and optimizer variables, as arrays."""
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
    )


def _callback_lists(models, callbacks, verbose, epochs: int, steps: int) -> list:
    """Each model's callbacks as Keras' CallbackList (with its History; the progress bar only on the first's),
    told that training begins."""
    lists = [
        keras.callbacks.CallbackList(
            list(c),
            add_history=True,
            add_progbar=verbose != 0 and i == 0,
            model=m,
            verbose=verbose,
            epochs=epochs,
            steps=steps,
        )
        for i, (m, c) in enumerate(zip(models, callbacks))
    ]
    for m, c in zip(models, lists):
        m.stop_training = False
        c.on_train_begin()
    return lists


def _run_epoch(programs, state, x, y, blocks: list[list[np.ndarray]], key, callback_lists):
    """One epoch's chunks through their compiled programs, `blocks` a list of index blocks per model (stacked
    where several train together), each model's running loss and accuracy to its callbacks after each chunk;
    (the state at the end, each model's logs)."""
    together, logs = len(blocks) > 1, [{} for _ in blocks]
    done_steps = done_samples = 0
    for parts in zip(*blocks):
        index = np.stack(parts) if together else parts[0]
        state = programs[index.shape].result()(state, x, y, jnp.asarray(index), key, jnp.int32(done_steps))
        done_steps += parts[0].shape[0]
        done_samples += parts[0].size
        losses, hits = np.atleast_1d(np.asarray(state[3])), np.atleast_1d(np.asarray(state[4]))
        for i, c in enumerate(callback_lists):
            logs[i] = {"loss": float(losses[i]) / done_samples, "accuracy": int(hits[i]) / done_samples}
            c.on_train_batch_end(done_steps - 1, logs[i])
    return state, logs


def _epoch_state(variables, count: int):
    """An epoch's starting state: the variables, then the loss sum and hit count at zero (one per model)."""
    zero = jnp.zeros(count) if count > 1 else jnp.float32(0)
    return (*variables, zero, zero.astype(jnp.int32))


def _compile_ahead(
    run_chunk, evaluate, state, x, y, index_shapes, key, validation, at_once: bool
) -> dict[object, Future]:
    """Every program the epochs will call, by the index's shape, and "evaluate": traced here one after
    another, then compiled by XLA in threads (outside Python's lock). `at_once` (the CPU): all together, so
    that the epoch's last partial batch and the validation program compile while the first chunk does.
    Otherwise one after another in a thread: a GPU compile times kernels on the device to choose them
    (autotuning), and compiles side by side would time each other's (not measured yet on a GPU)."""
    pool = ThreadPoolExecutor(max_workers=len(index_shapes) + 1 if at_once else 1)
    programs = {}
    for shape in index_shapes:
        lowered = run_chunk.lower(state, x, y, jax.ShapeDtypeStruct(shape, jnp.int32), key, jnp.int32(0))
        programs[shape] = pool.submit(lowered.compile)
    if validation is not None:
        programs["evaluate"] = pool.submit(evaluate.lower(state[0], state[1], *validation).compile)
    pool.shutdown(wait=False)
    return programs


@jax.jit
def _copy(tree):
    """Fresh buffers for every variable, in one program (a jnp.copy per variable compiles one each)."""
    return jax.tree.map(jnp.copy, tree)


@jax.jit
def _stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


@functools.partial(jax.jit, static_argnums=1)
def _unstack(tree, count: int):
    """Model i's variables out of the stack, as fresh buffers, in one program."""
    return [jax.tree.map(operator.itemgetter(i), tree) for i in range(count)]


def _write_back(model, optimizer, trainable, non_trainable, opt_vars) -> None:
    for variable, value in zip(model.trainable_variables, trainable):
        variable.assign(value)
    for variable, value in zip(model.non_trainable_variables, non_trainable):
        variable.assign(value)
    for variable, value in zip(optimizer.variables, opt_vars):
        variable.assign(value)
