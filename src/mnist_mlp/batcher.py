"""The server's inference: a compiled forward pass, and the micro-batcher that gathers concurrent
requests' images into one call of it on its own thread, answering each request with its own row."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from typing import Callable

import numpy as np

from mnist_mlp.data import preprocess

BATCH_SIZES = (
    1,
    2,
    4,
    8,
    16,
    32,
    64,
    128,
)  # batches are padded up to one of these: one compiled program each
MAX_WAIT = 0.001  # s; the longest a request waits for others to join its batch


def forward_pass(model) -> Callable[[np.ndarray], np.ndarray]:
    """float32 (n, 784), n <= BATCH_SIZES[-1] -> probabilities float32 (n, 10). On JAX a jitted stateless call
    of the model, every padded size compiled now; on other backends Keras' `predict_on_batch`."""
    import keras

    if keras.backend.backend() != "jax":
        return lambda x: np.asarray(model.predict_on_batch(x), np.float32)
    import jax

    # copies of the weights: Keras' own predict/fit may donate the variables' buffers later
    trainable = [jax.device_put(np.asarray(v.value)) for v in model.trainable_variables]
    non_trainable = [jax.device_put(np.asarray(v.value)) for v in model.non_trainable_variables]
    call = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])

    def forward(x: np.ndarray) -> np.ndarray:
        size = next(s for s in BATCH_SIZES if s >= len(x))
        padded = np.zeros((size, x.shape[1]), np.float32)
        padded[: len(x)] = x
        return np.asarray(call(trainable, non_trainable, padded))[: len(x)]

    for size in BATCH_SIZES:  # compile before the first user, not during
        forward(np.zeros((size, 784), np.float32))
    return forward


class Batcher:
    """`await batcher.probabilities(image)` from any event loop; one daemon thread runs the batches."""

    def __init__(
        self,
        forward: Callable[[np.ndarray], np.ndarray],
        max_batch: int = BATCH_SIZES[-1],
        max_wait: float = MAX_WAIT,
    ):
        self.forward, self.max_batch, self.max_wait = forward, max_batch, max_wait
        self.batches = self.images = 0  # counters, for tests and the load report
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="mnist-mlp-batcher", daemon=True)
        self._thread.start()

    async def probabilities(self, image: np.ndarray) -> np.ndarray:
        """uint8 (28, 28) -> float32 (10,)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.submit(image, future, loop)
        return await future

    def submit(
        self,
        image: np.ndarray,
        future: asyncio.Future,
        loop: asyncio.AbstractEventLoop,
        finish: Callable[[np.ndarray], object] | None = None,
    ) -> None:
        """From any thread: `future` (of `loop`) gets finish(probabilities) (on the batch thread), or them."""
        self._queue.put((image, future, loop, finish))

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                rows = self.forward(preprocess(np.stack([item[0] for item in batch])))
                outcome = [_finish(item, row) for item, row in zip(batch, rows)]
            except Exception as e:  # noqa: BLE001  a bug: each waiting request gets it (a 500), the thread lives on
                outcome = [(future, loop, None, e) for _, future, loop, _ in batch]
            self.batches += 1
            self.images += len(batch)
            for loop, group in _by_loop(outcome).items():
                # RuntimeError: that loop has closed (a test client gone), so nobody waits
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, group)


def _finish(item: tuple, row: np.ndarray) -> tuple:
    _, future, loop, finish = item
    try:
        return future, loop, finish(row) if finish else row, None
    except Exception as e:  # noqa: BLE001  a bug in finish: that request gets it
        return future, loop, None, e


def _by_loop(outcome: list) -> dict:
    groups: dict = {}
    for future, loop, row, error in outcome:
        groups.setdefault(loop, []).append((future, row, error))
    return groups


def _settle(group: list) -> None:
    for future, row, error in group:
        if future.done():  # the request was cancelled (client gone)
            continue
        if error is None:
            future.set_result(row)
        else:
            future.set_exception(error)
