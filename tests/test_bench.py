"""The benchmark: FLOP accounting, the report table, and a real two-epoch run of two variants."""

import json
import os
import re
import subprocess
import sys

import pytest

from mnist_mlp import bench, peers
from mnist_mlp.cli import main
from mnist_mlp.config import Config
from mnist_mlp.errors import UserError


def test_flop_count_by_hand():
    forward = 2 * (784 * 512 + 512 * 512 + 512 * 10)  # multiply-adds of the three Dense layers
    input_grads = 2 * (512 * 512 + 512 * 10)  # the first layer needs no input gradient
    assert bench.TRAIN_FLOP == 2 * forward + input_grads == 3_209_216
    assert bench.epoch_flop() == 60000 * 3_209_216 + 10000 * forward


def test_markdown_ratios_against_ours():
    row = dict(
        first_epoch_s=3.0,
        steady_epoch_s=1.5,
        test_accuracy=0.98,
        peak_memory_mb=900,
        gflops=100.0,
        epoch_end_s=[],
        epoch_accuracy=[],
        note="",
    )
    report = {
        "machine": "test CPU",
        "peak_gflops": 200.0,
        "floor_epoch_s": 1.0,
        "matmul_epoch_s": 1.2,
        "epochs": 20,
        "skipped": ["keras-torch"],
        "results": [
            {**row, "variant": "ours", "total_s": 30.0},
            {**row, "variant": "torch", "total_s": 75.0, "steady_epoch_s": 3.3},
        ],
    }
    table = bench.markdown(report)
    assert "| ours | 3.00 | 1.5 | 30.0 | 0.9800 | 900 | 100 | 50% | 1.00x | 1.00x |" in table
    assert "| torch | 3.00 | 3.3 | 75.0 | 0.9800 | 900 | 100 | 50% | 2.20x | 2.50x |" in table
    assert "Skipped (package not installed): keras-torch" in table


def test_markdown_says_where_a_jax_variants_first_epoch_went():
    row = dict(
        first_epoch_s=5.0,
        steady_epoch_s=1.5,
        total_s=30.0,
        test_accuracy=0.98,
        peak_memory_mb=900,
        gflops=100.0,
        epoch_end_s=[],
        epoch_accuracy=[],
        note="",
        variant="ours",
        start_s=2.0,
        compiling={
            "seconds": 2.5,
            "programs": 22,
            "from_cache": 0,
            "longest": [["run_chunk", 1.9, 2, [1.2, 0.5]], ["evaluate", 0.2, 1, [0.15]]],
        },
    )
    report = {
        "machine": "test CPU",
        "peak_gflops": 200.0,
        "floor_epoch_s": 1.0,
        "matmul_epoch_s": 1.2,
        "epochs": 2,
        "skipped": [],
        "compile_cache": "cold",
        "results": [row, {**row, "variant": "torch", "start_s": None, "compiling": None}],
    }
    lines = bench.markdown(report).splitlines()
    assert "Where the first epoch went (JAX's compile cache: cold):" in lines
    assert (
        "- ours: 2.00 s from process start to training, 3.00 s in epoch 1; compiling until its end 2.50 s "
        "(summed over threads), "
        "22 programs (0 from the cache), longest: run_chunk 1.90 s (2; XLA 1.20, 0.50 s), evaluate 0.20 s (1)"
    ) in lines
    assert not any(line.startswith("- torch") for line in lines)


@pytest.mark.slow
def test_compile_log_counts_programs_and_the_ones_loaded_from_the_cache(tmp_path):
    code = f"""
import json, time, jax, numpy as np
from mnist_mlp.peers import CompileLog
from mnist_mlp.engine import enable_compile_cache
log = CompileLog(time.time())
a = np.ones(3, np.float32)
enable_compile_cache({str(tmp_path)!r})
def twice_sum(a):
    return (2 * a).sum()
jax.jit(twice_sum)(a).block_until_ready()
first = log.summary(until=1e9)
jax.clear_caches()  # in memory only: the program now comes from the cache folder
jax.jit(twice_sum)(a).block_until_ready()
print(json.dumps([first, log.summary(until=1e9), log.summary(until=-1)]))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert done.returncode == 0, done.stderr
    first, both, none = json.loads(done.stdout.splitlines()[-1])
    assert (first["programs"], first["from_cache"]) == (1, 0) and first["seconds"] > 0
    assert first["longest"][0][:1] == ["twice_sum"]
    assert (both["programs"], both["from_cache"]) == (2, 1)
    assert both["longest"][0][0] == "twice_sum" and both["longest"][0][2] == len(both["longest"][0][3]) == 2
    assert none == {"seconds": 0, "programs": 0, "from_cache": 0, "longest": []}


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["bench", "--variants", "ours,caffe"], "unknown bench variant caffe"),
        (["bench", "--epochs", "1"], "--epochs >= 2"),
        (["bench", "--time-to", "98.2"], "an accuracy between 0 and 1"),
        (["bench", "--serve", "runs/x", "--cold"], "--cold is for training"),
        (["bench", "--epochs", "0"], "--epochs >= 2"),  # 0 ran the full 20-epoch bench of every variant
        (["bench", "--variants="], "--variants is empty"),  # so did an empty list
        (["bench", "--connections", "5"], "are for --serve"),  # and a load-test flag without --serve
        (["bench", "--time-to", "0.9", "--duration", "3"], "are for --serve"),
        (["bench", "--give-up", "60"], "--give-up is for --time-to"),
        (["bench", "--time-to", "0.9", "--give-up", "0"], "--give-up 0.0: give more than 0 seconds"),
        (["bench", "--time-to", "0.9", "--give-up", "nan"], "--give-up nan: give more than 0 seconds"),
        (["bench", "--serve", "runs/x", "--give-up", "5"], "--give-up is for --time-to"),
        (["bench", "--time-to", "0.9", "0.9"], "names an accuracy twice; give each once"),
    ],
)
def test_bad_bench_arguments(argv, expected, capsys):
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_bench_without_a_gpu_says_so(capsys):
    if bench._jax_platform(True) != "cpu":
        pytest.skip("JAX sees a GPU on this machine")
    for argv in (["--variants", "ours"], ["--time-to", "0.9"]):  # the side-by-side bench, and time-to
        assert main(["bench", "--gpu", *argv]) == 2
        assert "JAX finds no GPU here" in capsys.readouterr().err


@pytest.mark.slow
def test_two_epoch_bench_of_ours_and_plain_torch(mnist_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--epochs", "2", "--variants", "ours,torch", "--cold", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| ours (cpu) |" in table and re.search(r"\| torch \(\d+ threads, cpu\) \|", table)
    assert "- ours: " in table and "- torch" not in table
    report = json.loads(out.read_text())
    assert report["peak_gflops"] > 1
    # the epoch's matmuls do the floor's FLOPs (less the last partial batch): they cannot run far below it
    assert 0.5 * report["floor_epoch_s"] < report["matmul_epoch_s"] < 20
    for result in report["results"]:
        assert len(result["epoch_end_s"]) == 2 and result["epoch_end_s"][0] < result["epoch_end_s"][1]
        assert result["first_epoch_s"] > 0 and result["steady_epoch_s"] > 0 and result["peak_memory_mb"] > 50
        assert result["test_accuracy"] > 0.95  # two full epochs of the classic model
    ours, torch = report["results"]
    assert 0 < ours["start_s"] < ours["first_epoch_s"] and torch["start_s"] is None is torch["compiling"]
    compiling = ours["compiling"]  # --cold: every program compiled, none loaded, the epoch's scan among them
    # Seconds summed over up to 3 threads at once:
    assert compiling["programs"] > 3 and compiling["from_cache"] == 0
    assert 0 < compiling["seconds"] < 3 * ours["first_epoch_s"]
    assert report["made_by"] == "mnist-mlp"  # so a second --json there may replace it
    assert "run_chunk" in [name for name, *_ in compiling["longest"]]


def test_the_pytorch_variant_is_built_from_the_config():
    torch = pytest.importorskip("torch")
    from mnist_mlp.config import load_config
    from mnist_mlp.model import build_model

    config = load_config(
        None,
        [
            "model.hidden_units=[64, 32]",
            "model.activation=tanh",
            "model.dropout=0",
            "train.optimizer=adam",
            "train.learning_rate=0.003",
        ],
    )
    model, optimizer = peers.torch_recipe(config, torch)
    assert sum(p.numel() for p in model.parameters()) == build_model(config.model).count_params()
    assert [type(m).__name__ for m in model] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert type(optimizer).__name__ == "Adam" and optimizer.defaults["lr"] == 0.003
    classic, rmsprop = peers.torch_recipe(load_config(), torch)
    assert sum(p.numel() for p in classic.parameters()) == 669_706 and rmsprop.defaults["alpha"] == 0.9
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.2 for m in classic) == 2
    with pytest.raises(UserError, match="leave torch out"):
        peers.torch_recipe(load_config(None, ["train.optimizer=nadam"]), torch)


def test_stock_variants_train_float32_where_ours_trains_the_presets_precision():
    # The preset's (made concrete in the child)
    assert peers.config_for(2, "record-cpu").train.precision == "auto"
    for variant in ("keras-jax", "keras-torch", "torch"):
        config = peers.config_for(2, "record-cpu", variant)
        assert config.train.precision == "float32" and config.train.epochs == 2 and config.augment.active


def test_keras_augmentation_layers_deform_in_training_only():
    import keras
    import numpy as np

    from mnist_mlp.config import AugmentConfig

    images = np.zeros((8, 28, 28), np.float32)
    images[:, 10:18, 12:16] = 1.0  # a bar in the middle of each
    images = images.reshape(8, 784)
    config = AugmentConfig(rotation=12, scale=0.12, shear=8, translation=2, elastic_alpha=34, elastic_sigma=5)
    stack = keras.Sequential([keras.Input((784,)), *peers.keras_augmentation(config)])
    moved = keras.ops.convert_to_numpy(stack(images, training=True))
    assert moved.shape == (8, 784) and moved.min() >= 0 and moved.max() <= 1
    assert np.abs(moved - images).sum(axis=1).min() > 1  # every image moved, each its own way
    assert len({row.tobytes() for row in np.round(moved, 3)}) == 8
    # Off when scoring
    assert np.array_equal(keras.ops.convert_to_numpy(stack(images, training=False)), images)
    assert [type(layer).__name__ for layer in stack.layers][1:-1] == [
        "RandomRotation",
        "RandomZoom",
        "RandomShear",
        "RandomTranslation",
        "RandomElasticTransform",
    ]


TINY_DEFORM = (
    "[model]\nhidden_units = [64]\n[train]\ntrain_samples = 3000\nepochs = 5\n"
    "[augment]\nrotation = 10.0\nelastic_alpha = 34.0\n"
)


@pytest.mark.slow
def test_time_to_runs_keras_fit_with_keras_layers_beside_ours_and_stops_when_reached(
    mnist_dir, tmp_path, capsys
):
    preset = tmp_path / "tiny-deform.toml"
    preset.write_text(TINY_DEFORM)
    out = tmp_path / "bench.json"
    assert main(["bench", "--time-to", "0.5", "0.6", "--config", str(preset), "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert list(results) == ["classic", "tiny-deform", "tiny-deform, Keras fit + Keras layers"]
    for found in results.values():  # 60% comes in the first epoch: each stops there, not after 5 (or 20)
        assert found["epochs"] == [1, 1] and found["ran"][0] == 1 and found["best_accuracy"] >= 0.6
        assert 0 < found["seconds"][0] == found["seconds"][1] < 600
    assert "Keras fit + Keras layers" in capsys.readouterr().out


@pytest.mark.slow
def test_time_to_gives_up_at_the_first_epoch_past_the_limit(mnist_dir, tmp_path, capsys):
    """A target out of reach (Keras fit with its layers took 27 minutes short of 99% here) ends in bounded
    time."""
    preset = tmp_path / "tiny-deform.toml"
    preset.write_text(TINY_DEFORM)
    out = tmp_path / "bench.json"
    assert (
        main(
            ["bench", "--time-to", "0.9999", "--give-up", "0.5", "--config", str(preset), "--json", str(out)]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["give_up"] == 0.5 and len(report["results"]) == 3
    for found in report["results"].values():  # each epoch ends past 0.5 s: one each, not 5 (or 20)
        assert found["seconds"] == [None] and found["ran"][0] == 1 and found["ran"][1] >= 0.5
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Config: {preset}"  # which file --config read, as every command says
    assert lines[1].endswith("(JAX's compile cache: shared; --give-up 0.5 s):")
    assert sum("0.9999: not reached (stopped after 1 epoch, " in line for line in lines) == 3


def test_time_to_reports_each_accuracy_where_it_was_first_reached(monkeypatch):
    """Several targets in one run: each variant trains once, stopping at the highest; each target gets its
    own first epoch, and one not reached says where the run stopped."""
    curves = {  # each variant's test accuracy after each epoch, as a child process would report it
        "classic": [0.97, 0.98, 0.9852],
        "record-cpu": [0.98, 0.991, 0.993, 0.9953],
    }
    asked = []

    def run_variant(variant, epochs, path, gpu, stop_at=None, cold=False, give_up=None):
        asked.append((variant, path, stop_at))
        accuracy = curves["classic" if path is None else path]
        ends = [10.0 * (i + 1) for i in range(len(accuracy))]
        return bench.VariantResult(variant, 10.0, 10.0, ends[-1], accuracy[-1], 0, 0, ends, accuracy, "cpu")

    monkeypatch.setattr(bench, "run_variant", run_variant)
    monkeypatch.setattr(bench.peers, "config_for", lambda epochs, path, variant="ours": Config())
    report = bench.time_to([0.99, 0.995], ["record-cpu"])
    assert asked == [("ours", None, 0.995), ("ours", "record-cpu", 0.995)]
    assert report["time_to"] == [0.99, 0.995]
    assert report["results"]["record-cpu"]["seconds"] == [20.0, 40.0]
    assert report["results"]["record-cpu"]["epochs"] == [2, 4]
    assert report["results"]["classic"]["seconds"] == [None, None]
    lines = bench.describe_time_to(report).splitlines()
    assert lines[0].startswith("Seconds from process start to the first epoch with test accuracy >= 0.99 and")
    assert lines[1] == (
        "  classic      0.99: not reached, 0.995: not reached (stopped after 3 epochs, 30.0 s); "
        "best 0.9852 (cpu)"
    )
    assert lines[2] == "  record-cpu   0.99: 20.0 s (epoch 2), 0.995: 40.0 s (epoch 4); best 0.9953 (cpu)"
