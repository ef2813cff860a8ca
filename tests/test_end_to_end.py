"""The default model, one epoch on the full 60,000 images: the walk-through's accuracy in miniature."""

import json

import pytest

from mnist_mlp.cli import main

pytestmark = pytest.mark.slow


def test_default_model_one_epoch_reaches_95_percent(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                "configs/default.toml",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--cache-dir",
                str(mnist_dir),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_samples"] == 60000 and metrics["test_samples"] == 10000
    assert metrics["test_accuracy"] >= 0.95
    assert f"Test accuracy: {metrics['test_accuracy']:.4f}" in capsys.readouterr().out
