"""The shipped presets as they stand: each trains a tiny run."""

import json

import pytest

from mnist_mlp import runs
from mnist_mlp.cli import main


@pytest.mark.parametrize("preset", ["fast", "record-cpu", "handwriting"])  # default: as most tests train
def test_every_preset_trains_a_tiny_run(preset, synthetic_dir, tmp_path):
    """Each shipped recipe (its deformations, precision, schedule, validation) for one epoch of 512 images, on
    a toy-sized model (the presets' own widths only cost compile time): it trains, saves and scores."""
    out = tmp_path / preset
    argv = ["train", "--config", preset, "--epochs", "1", "--train-samples", "512", "--out", str(out)]
    argv += ["--set", "model.hidden_units=[32]"]
    assert main([*argv, "--cache-dir", str(synthetic_dir)]) == 0
    metrics = json.loads((out / runs.METRICS).read_text())
    assert metrics["config_name"] == preset and metrics["train_samples"] == 512
    assert 0 <= metrics["test_accuracy"] <= 1
