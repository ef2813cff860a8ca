"""The compiled JAX engine against Keras fit: same weights and batches give the same training."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from mnist_mlp import data, engine
from mnist_mlp.config import AugmentConfig, ModelConfig, TrainConfig
from mnist_mlp.model import build_model
from mnist_mlp.recipe import compile_model
from mnist_mlp.train import choose_engine

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the compiled engine is JAX-only")


def _twin_models(config: ModelConfig, train: TrainConfig):
    keras.utils.set_random_seed(3)
    first = compile_model(build_model(config), train)
    second = compile_model(build_model(config), train)
    for ours, theirs in zip(second.variables, first.variables):  # weights and dropout seed states
        ours.assign(np.array(theirs))
    return first, second


@pytest.mark.parametrize(
    "optimizer, dropout, chunks, unroll",
    [
        ("rmsprop", 0.0, None, None),
        ("adam", 0.0, None, None),
        ("rmsprop", 0.2, None, None),
        ("rmsprop", 0.2, 1, 4),  # the GPU's layout (one call per epoch, scan unrolled), run here on the CPU
    ],
)
def test_same_weights_same_batches_same_training_as_fit(mnist, optimizer, dropout, chunks, unroll):
    (x_train, y_train), _ = mnist
    x, y = data.preprocess(x_train[:700]), data.to_one_hot(y_train[:700])  # 5 full batches + one of 60
    train = TrainConfig(optimizer=optimizer)
    by_fit, by_engine = _twin_models(ModelConfig(hidden_units=(64, 32), dropout=dropout), train)
    fit_history = by_fit.fit(x, y, batch_size=128, epochs=2, shuffle=False, verbose=0).history
    logger = keras.callbacks.History()
    engine.fit_compiled(
        by_engine,
        x,
        y,
        batch_size=128,
        epochs=2,
        seed=0,
        shuffle=False,
        verbose=0,
        callbacks=[logger],
        chunks=chunks,
        unroll=unroll,
    )
    np.testing.assert_allclose(logger.history["loss"], fit_history["loss"], atol=1e-5)
    np.testing.assert_allclose(logger.history["accuracy"], fit_history["accuracy"], atol=1e-6)
    for ours, theirs in zip(by_engine.get_weights(), by_fit.get_weights()):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert int(by_engine.optimizer.iterations.numpy()) == 12  # 6 steps per epoch, as fit


def test_validation_metrics_match_keras_evaluate(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    x, y = data.preprocess(x_train[:1000]), data.to_one_hot(y_train[:1000])
    x_val, y_val = data.preprocess(x_test[:2000]), data.to_one_hot(y_test[:2000])
    model = compile_model(build_model(ModelConfig(hidden_units=(32,))), TrainConfig())
    logger = keras.callbacks.History()
    engine.fit_compiled(
        model,
        x,
        y,
        batch_size=100,
        epochs=1,
        seed=1,
        validation_data=(x_val, y_val),
        verbose=0,
        callbacks=[logger],
    )
    loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
    assert logger.history["val_loss"][0] == pytest.approx(loss, abs=1e-5)
    assert logger.history["val_accuracy"][0] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_side_by_side_deforms_and_trains_each_model_as_alone(mnist, precision):
    """Two seeds, deformed digits, dropout, Adam, a cosine schedule: trained together (vmapped) and each alone
    give the same history and weights; model i keeps its own weights, shuffles, masks and deformations. On
    this CPU they are bit for bit the same; the tolerance leaves room for XLA choosing other kernels
    elsewhere."""
    (x_train, y_train), (x_test, y_test) = mnist
    x, y = data.preprocess(x_train[:600]), data.to_one_hot(y_train[:600])
    val = data.preprocess(x_test[:500]), data.to_one_hot(y_test[:500])
    train = TrainConfig(optimizer="adam", lr_schedule="cosine", epochs=2, precision=precision)
    augment = AugmentConfig(rotation=12, scale=0.1, translation=2, elastic_alpha=34)

    def models():
        built = []
        for seed in (5, 6):
            keras.utils.set_random_seed(seed)
            built.append(
                compile_model(
                    build_model(ModelConfig(hidden_units=(64,), dropout=0.2), precision), train, 600
                )
            )
        return built

    options = dict(batch_size=128, epochs=2, validation_data=val, verbose=0, augment=augment)
    alone, together = models(), models()
    alone_logs = [keras.callbacks.History() for _ in alone]
    for model, seed, logger in zip(alone, (5, 6), alone_logs):
        engine.fit_compiled(model, x, y, seed=seed, callbacks=[logger], **options)
    together_logs = [keras.callbacks.History() for _ in together]
    engine.fit_side_by_side(together, x, y, seeds=[5, 6], callbacks=[[h] for h in together_logs], **options)
    for a, b, model_a, model_b in zip(alone_logs, together_logs, alone, together):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(b.history[key], a.history[key], atol=1e-5)
        for ours, theirs in zip(model_b.get_weights(), model_a.get_weights()):
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
        assert int(model_b.optimizer.iterations.numpy()) == 10
    gap = abs(alone_logs[0].history["loss"][-1] - alone_logs[1].history["loss"][-1])
    assert gap > 0.01  # two seeds differ by far more than the tolerance above


def test_each_program_compiled_once_ahead_off_the_main_thread(mnist):
    """The epochs' programs (one per chunk shape, and validation) are each compiled once, by XLA in threads
    started before the first chunk runs, not at their first call (the last partial batch compiles while the
    first chunk does)."""
    import threading

    import jax
    from jax import monitoring

    (x_train, y_train), (x_test, y_test) = mnist
    x, y = (
        data.preprocess(x_train[:700]),
        data.to_one_hot(y_train[:700]),
    )  # chunks of 2, 2, 1 batches + one of 60
    val = data.preprocess(x_test[:300]), data.to_one_hot(y_test[:300])
    model = compile_model(build_model(ModelConfig(hidden_units=(48,))), TrainConfig())
    compiled = []

    def on_duration(event, seconds, **details):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append((details.get("fun_name"), threading.current_thread() is threading.main_thread()))

    cache_was = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)  # compile every program, whatever ran before
    monitoring.register_event_duration_secs_listener(on_duration)
    try:
        engine.fit_compiled(model, x, y, batch_size=128, epochs=2, seed=0, validation_data=val, verbose=0)
    finally:
        monitoring.unregister_event_duration_listener(on_duration)
        jax.config.update("jax_enable_compilation_cache", cache_was)
    ours = sorted(c for c in compiled if c[0] in ("jit(run_chunk)", "jit(evaluate)"))
    assert ours == [("jit(evaluate)", False)] + [("jit(run_chunk)", False)] * 3


def test_epoch_index_covers_every_example_once_in_equal_chunks():
    parts = engine.epoch_index(1000, 128, np.random.default_rng(0), chunks=3)
    assert [p.shape for p in parts] == [(3, 128), (3, 128), (1, 128), (1, 104)]
    assert sorted(np.concatenate([p.ravel() for p in parts]).tolist()) == list(range(1000))
    assert np.concatenate([p.ravel() for p in engine.epoch_index(10, 4, None)]).tolist() == list(range(10))
    # blocks of one length where a count up to `chunks` divides the full batches: one program, not two
    assert [p.shape for p in engine.epoch_index(60000, 128, None, chunks=4)] == [(117, 128)] * 4 + [(1, 96)]
    assert [p.shape for p in engine.epoch_index(60000, 256, None, chunks=4)] == [(78, 256)] * 3 + [(1, 96)]


def test_engine_choice():
    assert choose_engine("auto", "jax") == "compiled"
    assert choose_engine("auto", "torch") == "fit"
    assert choose_engine("compiled", "tensorflow") == "fit"
    assert choose_engine("fit", "jax") == "fit"


@pytest.mark.slow
def test_dropout_bits_unchanged_and_hash_unrolled_on_cpu():
    code = """
import jax
from mnist_mlp import engine
bernoulli = jax.jit(lambda key: jax.random.bernoulli(key, 0.8, (64, 32)))
key = jax.random.key(20160715)
before = bernoulli(key)
assert engine.unroll_threefry_on_cpu()
after = jax.jit(lambda key: jax.random.bernoulli(key, 0.8, (64, 32)))
print(bool((before == after(key)).all()), "while" in after.lower(key).as_text())
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]  # same bits, no loop left
