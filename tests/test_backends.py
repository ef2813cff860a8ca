"""Backend switching, in fresh processes: one epoch on each backend, and a model saved on JAX that
loads on PyTorch and TensorFlow with the same predictions."""

import json

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow

PREDICT = """
import sys, numpy as np, keras
from mnist_mlp import data
(_, _), (x_test, _) = data.load_data(sys.argv[2])
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], np.asarray(model.predict(data.preprocess(x_test[:500]), verbose=0)))
print(keras.backend.backend())
"""


@pytest.fixture(scope="module")
def backend_runs(mnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    done = {}
    for name in ("jax", "torch", "tensorflow"):
        result = run_cli(
            "train",
            "--backend",
            name,
            "--epochs",
            "1",
            "--train-samples",
            "5000",
            "--out",
            str(root / name),
            "--cache-dir",
            str(mnist_dir),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        done[name] = (root / name, result.stdout)
    return done


@pytest.mark.parametrize("name", ["jax", "torch", "tensorflow"])
def test_one_epoch_on_each_backend(backend_runs, name):
    run_dir, stdout = backend_runs[name]
    assert f"Backend: {name} (chosen by --backend / config)" in stdout
    assert ("Engine: compiled" if name == "jax" else "Engine: Keras fit.") in stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["engine"] == ("compiled" if name == "jax" else "fit")
    assert metrics["backend"] == name and metrics["test_accuracy"] > 0.8  # 1 epoch on 5,000 images: ~0.87-0.9


def test_backend_from_environment_variable(mnist_dir, tmp_path):
    result = run_cli(
        "train",
        "--epochs",
        "1",
        "--train-samples",
        "500",
        "--out",
        str(tmp_path / "r"),
        "--cache-dir",
        str(mnist_dir),
        env={"KERAS_BACKEND": "torch"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Backend: torch (chosen by KERAS_BACKEND environment variable)" in result.stdout


def test_model_saved_on_jax_predicts_the_same_on_every_backend(backend_runs, mnist_dir, tmp_path):
    model = backend_runs["jax"][0] / "model.keras"
    predictions = {}
    for name in ("jax", "torch", "tensorflow"):
        out = tmp_path / f"{name}.npy"
        result = run_cli_python(PREDICT, model, mnist_dir, out, env={"KERAS_BACKEND": name})
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().endswith(name)
        predictions[name] = np.load(out)
    assert predictions["jax"].shape == (500, 10)
    for name in ("torch", "tensorflow"):
        np.testing.assert_allclose(predictions[name], predictions["jax"], atol=1e-5, rtol=0)


def run_cli_python(code, *args, env):
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )


INTERRUPT_AFTER_FIRST_EPOCH = """
import sys
from mnist_mlp import train
from mnist_mlp.cli import main

save = train.Checkpoint.on_epoch_end

def save_then_stop(self, epoch, logs=None):
    save(self, epoch, logs)
    raise KeyboardInterrupt  # Ctrl-C once epoch 1 is checkpointed

train.Checkpoint.on_epoch_end = save_then_stop
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("name", ["torch", "tensorflow"])
def test_an_interrupted_run_resumes_to_the_same_result_on_other_backends(name, mnist_dir, tmp_path):
    """The checkpoint (variables, optimizer, NumPy's RNG) round-trips on every backend's Keras fit."""
    argv = [
        "train",
        "--backend",
        name,
        "--epochs",
        "3",
        "--train-samples",
        "1000",
        "--set",
        "train.checkpoint_seconds=0",
        "--cache-dir",
        str(mnist_dir),
    ]
    whole = run_cli(*argv, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    stopped = run_cli_python(
        INTERRUPT_AFTER_FIRST_EPOCH, *argv, "--out", tmp_path / "stopped", env={"KERAS_BACKEND": name}
    )  # train imports Keras before main picks one
    assert stopped.returncode == 130 and f"--resume {tmp_path / 'stopped'}" in stopped.stderr, stopped.stderr[
        -2000:
    ]
    resumed = run_cli("train", "--resume", str(tmp_path / "stopped"), "--cache-dir", str(mnist_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (tmp_path / "stopped" / "history.csv").read_text() == (
        tmp_path / "whole" / "history.csv"
    ).read_text()
