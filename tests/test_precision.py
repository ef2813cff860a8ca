"""train.precision = "bfloat16": each product within bfloat16's rounding bound of float32's, forward and
backward; training that follows float32's closely; a saved model that loads and scores the same; and a
one-line refusal where it cannot run."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_mlp import runs
from mnist_mlp.cli import main
from mnist_mlp.model import _bf16_matmul

# Rounding to bfloat16 (8 significant bits) moves a number by at most 2**-9 of itself, so a product of two
# rounded inputs is within (1 + 2**-9)**2 - 1 < 2**-7.9 of the exact one; summed in float32, the error of
# x @ w is at most that times |x| @ |w|, plus float32's own (far smaller) rounding.
BOUND = 2**-7.9
SMALL = ["--train-samples", "2000", "--epochs", "4", "--set", "model.hidden_units=[64,64]", "--batch-size", "64"]


def _rounding_bound(a, b):
    return BOUND * (np.abs(a) @ np.abs(b)) + 1e-5 * (1 + np.abs(a @ b))


def test_the_product_and_its_gradients_are_within_bfloat16_rounding():
    rng = np.random.default_rng(0)
    x, w, g = rng.normal(size=(64, 300)), rng.normal(size=(300, 50)), rng.normal(size=(64, 50))
    x, w, g = (a.astype(np.float32) for a in (x, w, g))
    matmul = _bf16_matmul()
    y, pullback = jax.vjp(matmul, jnp.asarray(x), jnp.asarray(w))
    dx, dw = pullback(jnp.asarray(g))
    for got, a, b in ((y, x, w), (dx, g, w.T), (dw, x.T, g)):
        assert got.dtype == np.float32 and got.shape == (a.shape[0], b.shape[1])  # float32 out, as float32 in
        got = np.asarray(got, np.float64)
        error = np.abs(got - a.astype(np.float64) @ b.astype(np.float64))
        assert np.all(error <= _rounding_bound(a, b))
        assert error.max() > 1e-4  # rounded for real: float32 alone would be ~1e-5 here


def test_bfloat16_training_follows_float32_within_the_seed_to_seed_spread(synthetic_dir, tmp_path, capsys):
    """Rounding the products' inputs perturbs every step a little, so the bfloat16 run must end closer to
    the float32 run than another seed's float32 run does: the noise a user already lives with."""
    cache = ["--cache-dir", str(synthetic_dir)]
    for name, extra in (("f32", []), ("bf16", ["--set", "train.precision=bfloat16"]), ("seed", ["--seed", "7"])):
        assert main(["train", *SMALL, *extra, "--out", str(tmp_path / name), *cache]) == 0
    history = {name: runs.read_history(tmp_path / name / runs.HISTORY) for name in ("f32", "bf16", "seed")}
    for key in ("loss", "val_loss"):
        ours = np.abs(np.subtract(history["bf16"][key], history["f32"][key]))
        seed = np.abs(np.subtract(history["seed"][key], history["f32"][key]))
        assert ours[-1] < seed[-1] and np.all(ours > 0)  # different (rounded), but within the spread
    run = runs.load_run(tmp_path / "bf16")
    assert run.config.train.precision == "bfloat16"
    assert {type(layer).__name__ for layer in runs.load_model(run).layers} >= {"BFloat16Dense"}
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "bf16"), *cache]) == 0  # reloaded, it scores what training scored
    assert f"Test accuracy: {run.metrics['test_accuracy']:.4f}" in capsys.readouterr().out


def test_bfloat16_on_another_backend_is_refused_in_one_line(synthetic_dir, tmp_path):
    pytest.importorskip("torch")
    argv = ["train", *SMALL, "--set", "train.precision=bfloat16", "--backend", "torch", "--out", str(tmp_path / "r"),
            "--cache-dir", str(synthetic_dir)]
    done = subprocess.run([sys.executable, "-m", "mnist_mlp", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and not (tmp_path / "r").exists()
    assert done.stderr.startswith("mnist-mlp: error: train.precision = bfloat16 runs on JAX")
    assert done.stderr.count("\n") == 1
