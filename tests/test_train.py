"""Training, the run directory, evaluate and plot, on the real data at toy size (JAX, in process)."""

import json

import keras
import numpy as np
import pytest

from mnist_mlp import cache, data, outputs, plots, runs
from mnist_mlp.cli import main
from mnist_mlp.config import ModelConfig
from mnist_mlp.errors import UserError
from mnist_mlp.model import build_model

SMALL = ["--train-samples", "2000", "--epochs", "2"]


@pytest.fixture(scope="module")
def small_run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "small"
    assert main(["train", *SMALL, "--out", str(out), "--cache-dir", str(mnist_dir)]) == 0
    return out


def test_parameter_count_is_the_classic_one():
    assert build_model(ModelConfig()).count_params() == 669_706
    assert build_model(ModelConfig(hidden_units=(100,), dropout=0)).count_params() == 784 * 100 + 100 + 1010
    assert len(build_model(ModelConfig(dropout=0)).layers) == 6  # no Dropout layers when the rate is 0


def test_train_prints_the_walk_through(mnist_dir, tmp_path, capsys):
    assert main(["train", *SMALL, "--out", str(tmp_path / "r"), "--cache-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    for expected in (
        "Backend: jax",
        "Total params: 669,706",
        "Epoch 1/2",
        "Epoch 2/2",
        "val_accuracy",
        "Validating on the 10,000 test images",
        "Test loss: ",
        "Test accuracy: ",
        "95% interval",
    ):
        assert expected in out


@pytest.mark.parametrize(
    "correct, total, low, high",
    [
        (9, 10, 0.59585, 0.98212),
        (0, 10, 0.0, 0.27753),
        (9855, 10000, 0.98296, 0.98766),
        (10000, 10000, 0.99962, 1.0),
    ],
)
def test_the_test_score_interval_is_wilsons(correct, total, low, high):
    """Wilson's 95% interval at values worked by hand from its formula; the normal approximation gives
    0.714-1.086 for 9 of 10, 0-0 for 0 of 10 and 0.98316-0.98784 for 9855 of 10,000."""
    from mnist_mlp.stats import wilson_interval

    assert wilson_interval(correct, total) == pytest.approx((low, high), abs=1e-5)


def test_run_directory_holds_every_file(small_run):
    assert sorted(p.name for p in small_run.iterdir()) == sorted(
        [runs.MARKER, runs.CONFIG, runs.HISTORY, runs.METRICS, runs.MODEL, runs.CURVES]
    )  # no temporary files left
    run = runs.load_run(small_run)
    assert run.config.train.epochs == 2
    assert list(run.history) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert run.history["epoch"] == [0, 1]
    metrics = run.metrics
    low, high = metrics["test_accuracy_ci95"]
    assert low < metrics["test_accuracy"] < high and high - low < 0.03
    assert metrics["backend"] == "jax" and metrics["versions"]["keras"] == keras.__version__
    assert metrics["data_sha256"]["train-images"] == cache.FILES["train-images"][1]
    assert len(metrics["epoch_seconds"]) == 2 and metrics["train_samples"] == 2000
    assert (small_run / runs.CURVES).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_model_loads_in_stock_keras_and_scores_as_recorded(small_run, mnist):
    model = keras.saving.load_model(small_run / runs.MODEL)
    (_, _), (x_test, y_test) = mnist
    accuracy = (model.predict(data.preprocess(x_test), verbose=0).argmax(axis=1) == y_test).mean()
    metrics = json.loads((small_run / runs.METRICS).read_text())
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert 0.75 < accuracy < 1  # 2 epochs on 2000 images: ~0.84


def test_same_seed_same_history_other_seed_other_history(small_run, mnist_dir, tmp_path):
    assert main(["train", *SMALL, "--out", str(tmp_path / "again"), "--cache-dir", str(mnist_dir)]) == 0
    assert (tmp_path / "again" / runs.HISTORY).read_text() == (small_run / runs.HISTORY).read_text()
    assert (
        main(
            ["train", *SMALL, "--seed", "1", "--out", str(tmp_path / "other"), "--cache-dir", str(mnist_dir)]
        )
        == 0
    )
    assert (tmp_path / "other" / runs.HISTORY).read_text() != (small_run / runs.HISTORY).read_text()


def test_validation_split_keeps_the_test_set_out(mnist_dir, tmp_path, capsys):
    out = tmp_path / "split"
    assert (
        main(
            [
                "train",
                "--train-samples",
                "1000",
                "--epochs",
                "1",
                "--validation",
                "split",
                "--out",
                str(out),
                "--cache-dir",
                str(mnist_dir),
            ]
        )
        == 0
    )
    assert "last 10,000 training images" in capsys.readouterr().out
    run = runs.load_run(out)
    assert run.metrics["validation"] == "split"
    assert run.history["val_accuracy"][-1] != pytest.approx(run.metrics["test_accuracy"], abs=1e-9)


def test_existing_output_is_refused_unless_overwrite(small_run, mnist_dir, tmp_path, capsys):
    before = (small_run / runs.HISTORY).read_text()
    assert main(["train", *SMALL, "--out", str(small_run), "--cache-dir", str(mnist_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (small_run / runs.HISTORY).read_text() == before
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    assert main(["train", *SMALL, "--out", str(stranger), "--overwrite", "--cache-dir", str(mnist_dir)]) == 2
    assert (stranger / "keep.txt").read_text() == "mine"
    copy = tmp_path / "copy"
    assert main(["train", "--train-samples", "512", "--epochs", "1", "--out", str(copy)]) == 0
    assert main(["train", "--train-samples", "512", "--epochs", "1", "--out", str(copy), "--overwrite"]) == 0


def test_evaluate_writes_diagnosis(small_run, mnist, capsys):
    assert main(["evaluate", str(small_run)]) == 0
    out = capsys.readouterr().out
    assert "confusion matrix" in out and "precision" in out
    evaluation = json.loads((small_run / runs.EVALUATION).read_text())
    confusion = np.array(evaluation["confusion"])
    (_, _), (_, y_test) = mnist
    assert confusion.sum() == 10000 and confusion.sum(axis=1).tolist() == np.bincount(y_test).tolist()
    assert np.trace(confusion) / 10000 == pytest.approx(evaluation["test_accuracy"])
    metrics = json.loads((small_run / runs.METRICS).read_text())
    assert evaluation["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert evaluation["test_loss"] == pytest.approx(metrics["test_loss"], abs=1e-4)
    assert evaluation["recall"][3] == pytest.approx(confusion[3, 3] / confusion[3].sum())
    wrong = evaluation["misclassified"]
    assert len(wrong) == 25 and all(isinstance(i, int) for i in wrong)
    for name in (runs.CONFUSION, runs.MISCLASSIFIED):
        assert (small_run / name).read_bytes()[:4] == b"\x89PNG"


def test_incomplete_run_and_corrupt_model_are_user_errors(small_run, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(small_run, broken)
    (broken / runs.MODEL).write_bytes(b"not a keras file")
    assert main(["evaluate", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "model.keras is not the model this run saved" in err and err.count("\n") == 1
    metrics = json.loads((broken / runs.METRICS).read_text())
    del metrics["model_sha256"]  # as in a run trained before the hash was recorded
    (broken / runs.METRICS).write_text(json.dumps(metrics))
    assert main(["evaluate", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "model.keras" in err and "corrupt" in err and err.count("\n") == 1
    (broken / runs.METRICS).unlink()
    assert main(["evaluate", str(broken)]) == 2
    assert "incomplete run (missing metrics.json)" in capsys.readouterr().err


def test_plot_overlays_runs_with_their_names(small_run, mnist_dir, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train", "--train-samples", "512", "--epochs", "2", "--out", str(other)]) == 0
    out = tmp_path / "both.png"
    assert main(["plot", str(small_run), str(other), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    histories = {run.name: run.history for run in map(runs.load_run, (small_run, other))}
    figure = plots.curves_figure(histories)
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == ["small training", "small validation", "other training", "other validation"]


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "history.csv"
    with pytest.raises(KeyboardInterrupt), outputs.atomic(target) as tmp:
        tmp.write_text("epoch,loss\n0,")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_keras_json_floatx_or_epsilon_does_not_change_the_recipe(synthetic_dir):
    """Keras reads floatx and epsilon from ~/.keras/keras.json; a float16 floatx trained a small model to 61%
    instead of 67% in one epoch, recorded nowhere. The recipe sets Keras' defaults itself."""
    from mnist_mlp import recipe
    from mnist_mlp.config import load_config

    keras.config.set_floatx("float16")  # as a keras.json with "floatx": "float16", "epsilon": 0.1 leaves them
    keras.config.set_epsilon(0.1)
    try:
        config = load_config(None, ["train.train_samples=100"])
        setup = recipe.prepare(config, keras.backend.backend(), synthetic_dir)
        assert {str(w.dtype) for w in setup.model.weights} == {"float32"}
        assert keras.config.floatx() == "float32" and keras.config.epsilon() == 1e-7
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_epsilon(1e-7)


def test_plot_weights_draws_each_first_layer_unit_as_a_28x28_tile(small_run, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "weights.png"
    assert main(["plot", str(small_run), "--weights", "--out", str(out)]) == 0
    assert f"Wrote {out}" in capsys.readouterr().out
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert image.shape == (16 * 60, 32 * 60, 3)  # 32 x 16 tiles, each 28x28 drawn 2x inside a white line
    tiles = image.reshape(16, 60, 32, 60, 3).swapaxes(1, 2)[:, :, 2:58:2, 2:58:2]  # (16, 32, 28, 28, 3)
    assert (tiles != 255).any(axis=(2, 3, 4)).sum() == 512  # one drawn tile per unit
    kernel = runs.load_model(runs.load_run(small_run)).layers[0].get_weights()[0]
    for unit in (0, 100, 511):  # red where the weight is positive, blue where it is negative
        weights = kernel[:, unit].reshape(28, 28)
        strong = np.abs(weights) > 0.3 * np.abs(weights).max()
        tile = tiles[unit // 32, unit % 32]
        redder = tile[..., 0] > tile[..., 2]
        assert (redder[strong] == (weights[strong] > 0)).all()


def test_plot_weights_goes_into_the_run_and_refuses_a_model_that_does_not_read_pixels(
    small_run, tmp_path, capsys
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    assert main(["plot", str(run), "--weights"]) == 0
    assert (run / runs.WEIGHTS).is_file() and f"Wrote {run / runs.WEIGHTS}" in capsys.readouterr().out
    other = keras.Sequential([keras.Input(shape=(100,)), keras.layers.Dense(10)])  # not 784 wide
    other.save(run / runs.MODEL)
    metrics = json.loads((run / runs.METRICS).read_text())
    metrics["model_sha256"] = cache.file_sha256(run / runs.MODEL)  # as if the run had saved it
    (run / runs.METRICS).write_text(json.dumps(metrics))
    (run / runs.WEIGHTS).unlink()
    assert main(["plot", str(run), "--weights"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "takes 100 inputs, not the 784 pixels" in err and "Traceback" not in err
    assert not (run / runs.WEIGHTS).exists()
    assert main(["plot", str(run), str(small_run), "--weights"]) == 2
    assert "give one run folder" in capsys.readouterr().err


def test_train_records_the_config_name_for_the_page(small_run, tmp_path):
    from mnist_mlp.presets import config_name

    assert json.loads((small_run / runs.METRICS).read_text())["config_name"] == "classic"
    assert config_name("handwriting") == "handwriting" and config_name(None) == "classic"
    assert config_name(str(small_run)) == "small" and config_name(str(small_run / runs.CONFIG)) == "small"
    (tmp_path / "lesson.toml").write_text("")
    assert config_name(str(tmp_path / "lesson.toml")) == "lesson"


@pytest.mark.parametrize("engine", ["compiled", "fit"])
def test_a_diverged_run_says_so_in_one_line_without_kerass_lines(engine, synthetic_dir, tmp_path, capsys):
    """Keras' TerminateOnNaN printed "Batch 12: Invalid loss, terminating training" 4 times before ours."""
    argv = ["train", "--epochs", "2", "--engine", engine, "--set", "train.train_samples=2048"]
    diverging = [
        "--set",
        "train.learning_rate=1e30",
        "--set",
        "train.optimizer=sgd",
        "--set",
        "model.activation=linear",
    ]
    assert main([*argv, *diverging, "--out", str(tmp_path / "r"), "--cache-dir", str(synthetic_dir)]) == 2
    captured = capsys.readouterr()
    assert "Invalid loss" not in captured.out + captured.err
    assert captured.err.count("\n") == 1 and "training diverged" in captured.err


def test_validation_none_trains_on_every_image_and_scores_the_test_set_once(synthetic_dir, tmp_path, capsys):
    """A final run whose recipe was chosen on the split: all training images train, nothing is validated
    (history.csv holds no val_ columns, Keras' CSVLogger's "NA" ones dropped), the test set is scored at the
    end, and the run reads back for plot and evaluate."""
    out = tmp_path / "r"
    argv = [
        "train",
        "--epochs",
        "2",
        "--validation",
        "none",
        "--batch-size",
        "125",  # the 12,000 synthetic images in 96 batches: one program shape to compile, not two
        "--out",
        str(out),
        "--cache-dir",
        str(synthetic_dir),
    ]
    assert main(argv) == 0
    assert "No validation" in capsys.readouterr().out
    history, metrics = runs.read_history(out / runs.HISTORY), json.loads((out / runs.METRICS).read_text())
    assert sorted(history) == ["accuracy", "epoch", "loss"]
    every = len(data.load_split("train", synthetic_dir)[1])
    assert metrics["train_samples"] == every and metrics["final_val_accuracy"] is None
    assert 0 < metrics["test_accuracy"] <= 1
    assert main(["plot", str(out), "--out", str(tmp_path / "c.png")]) == 0
    assert main(["evaluate", str(out), "--cache-dir", str(synthetic_dir)]) == 0


def test_several_runs_are_scored_as_a_committee_and_nothing_is_written(synthetic_dir, tmp_path, capsys):
    """`evaluate A B`: the mean of the two models' probabilities, scored on the test set; neither run gets
    files (a committee is no one run's result)."""
    from conftest import TINY

    folders = [tmp_path / "a", tmp_path / "b"]
    for seed, folder in zip(("1", "2"), folders):
        assert (
            main(["train", *TINY, "--seed", seed, "--out", str(folder), "--cache-dir", str(synthetic_dir)])
            == 0
        )
    before = [sorted(folder.iterdir()) for folder in folders]
    capsys.readouterr()
    assert main(["evaluate", *map(str, folders), "--cache-dir", str(synthetic_dir)]) == 0
    out = capsys.readouterr().out
    images, labels = data.load_split("test", synthetic_dir)
    x = data.preprocess(images)
    mean = np.mean([runs.load_model(runs.load_run(f)).predict(x, verbose=0) for f in folders], axis=0)
    loss = -np.log(np.clip(mean[np.arange(len(labels)), labels], 1e-7, 1 - 1e-7)).mean()
    wrong = int((mean.argmax(axis=1) != labels).sum())
    assert out.startswith("A committee of 2 runs (the mean of their probabilities; nothing written):\n")
    assert (
        f"Test loss: {loss:.4f}\n" in out and f"{wrong} of {len(labels)} wrong" in out and "Wrote" not in out
    )
    assert [sorted(folder.iterdir()) for folder in folders] == before
    assert main(["evaluate", str(folders[0]), f"{folders[0]}/"]) == 2  # one run twice is no committee of two
    assert "is named twice; a committee counts each run once" in capsys.readouterr().err
    from mnist_mlp.evaluate import evaluate

    with pytest.raises(UserError, match="is named twice"):  # the library's path: a loaded run and its folder
        evaluate([runs.load_run(folders[1]), folders[1]], synthetic_dir)
