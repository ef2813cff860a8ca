"""Experiments: seed groups with statistics checked by hand, run listing and comparison."""

import json
import shlex
import shutil
import statistics

import numpy as np
import pytest

from mnist_mlp import advice, experiments, runs
from mnist_mlp.cli import main

QUICK = ["--train-samples", "1000", "--epochs", "2"]


@pytest.fixture(scope="module")
def group(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments") / "group"
    assert (
        main(
            ["train", *QUICK, "--seeds", "3", "--seed", "7", "--out", str(out), "--cache-dir", str(mnist_dir)]
        )
        == 0
    )
    return out


def test_seed_statistics_match_the_runs_metrics(group, capsys):
    info = json.loads((group / runs.GROUP).read_text())
    assert info["seeds"] == [7, 8, 9] and info["complete"]
    accuracies = [
        json.loads((group / f"seed-{s}" / runs.METRICS).read_text())["test_accuracy"] for s in (7, 8, 9)
    ]
    assert info["test_accuracy"] == accuracies
    assert info["mean"] == pytest.approx(sum(accuracies) / 3)
    by_hand = (sum((a - sum(accuracies) / 3) ** 2 for a in accuracies) / 2) ** 0.5  # sample std, n - 1
    assert info["std"] == pytest.approx(by_hand) and info["std"] > 0
    assert (info["min"], info["max"]) == (min(accuracies), max(accuracies))
    for seed in (7, 8, 9):
        assert runs.load_run(group / f"seed-{seed}").config.train.seed == seed


def test_group_plot_draws_mean_and_band(group, capsys):
    assert main(["plot", str(group)]) == 0
    assert "mean ± std over seeds 7, 8, 9" in capsys.readouterr().out
    assert (group / runs.CURVES).read_bytes()[:4] == b"\x89PNG"
    _, loaded = runs.load_group(group)
    values = np.array([run.history["val_accuracy"] for run in loaded])
    assert values.shape == (3, 2) and statistics.stdev(values[:, -1]) > 0


def test_runs_list_show_and_compare(group, tmp_path, capsys, monkeypatch):
    assert main(["runs", "list", "--root", str(group)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all(f"seed={s}" in out[i + 1] for i, s in enumerate((7, 8, 9)))
    assert main(["runs", "show", str(group / "seed-8")]) == 0
    assert "train.seed             8" in capsys.readouterr().out
    other = tmp_path / "adam"
    assert (
        main(
            [
                "train",
                "--train-samples",
                "1000",
                "--epochs",
                "2",
                "--set",
                "train.optimizer=adam",
                "--set",
                "train.checkpoint_seconds=5",
                "--out",
                str(other),
            ]
        )
        == 0
    )
    capsys.readouterr()
    png = tmp_path / "cmp.png"
    assert main(["runs", "compare", str(group / "seed-7"), str(other), "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "train.optimizer: rmsprop | adam" in out and "train.seed: 7 | 20160715" in out
    assert "checkpoint_seconds" not in out  # when a run saves is no difference in what it learned
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert experiments.config_differences([runs.load_run(group / "seed-7")] * 2) == {}
    shutil.copytree(group / "seed-7", tmp_path / "seed-7")
    # Each run: where it leaves the classic recipe
    assert main(["runs", "list", "--root", str(tmp_path)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "optimizer=adam" in rows[str(other)] and "seed=" not in rows[str(other)]
    assert "seed=7" in rows[str(tmp_path / "seed-7")] and "optimizer=" not in rows[str(tmp_path / "seed-7")]


def test_a_run_with_odd_metrics_or_history_is_skipped_by_list_and_refused_by_plot(group, tmp_path, capsys):
    """metrics.json holding a JSON list was an AttributeError traceback in `runs list` (on any root holding
    one); a history.csv without a loss column, a KeyError in plot and compare."""
    for seed in (7, 8, 9):
        shutil.copytree(group / f"seed-{seed}", tmp_path / f"seed-{seed}")
    (tmp_path / "seed-7" / runs.METRICS).write_text("[1, 2]\n")
    (tmp_path / "seed-8" / runs.HISTORY).write_text("epoch,score\n0,0.5\n")
    assert main(["runs", "list", "--root", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert str(tmp_path / "seed-9") in out and "seed-7" not in out and "seed-8" not in out
    assert f"{tmp_path / 'seed-7' / runs.METRICS} is not a run's metrics (JSON of one object)" in err
    assert (
        f"{tmp_path / 'seed-8' / runs.HISTORY} is not a valid history (no loss and accuracy columns)" in err
    )
    metrics = json.loads((tmp_path / "seed-9" / runs.METRICS).read_text())
    for seconds in (0.0, None):  # resumed after its last epoch (none timed), or an older run's metrics
        (tmp_path / "seed-9" / runs.METRICS).write_text(json.dumps({**metrics, "seconds_per_epoch": seconds}))
        assert main(["runs", "list", "--root", str(tmp_path)]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if "seed-9" in line)
        assert " - " in row and "0.00" not in row, row
    (tmp_path / "seed-9" / runs.METRICS).write_text(json.dumps(metrics))
    (tmp_path / "link.png").symlink_to(tmp_path / "target.png")
    # One run's plot too
    assert main(["plot", str(tmp_path / "seed-9"), "--out", str(tmp_path / "link.png")]) == 2
    assert "is a symbolic link, which writing would replace" in capsys.readouterr().err
    assert (tmp_path / "link.png").is_symlink() and not (tmp_path / "target.png").exists()
    for argv in (
        ["plot", str(tmp_path / "seed-8")],
        ["runs", "compare", str(tmp_path / "seed-8"), str(tmp_path / "seed-9")],
        ["runs", "show", str(tmp_path / "seed-7")],
    ):
        assert main(argv) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_runs_errors(tmp_path, capsys):
    assert main(["runs", "compare", str(tmp_path)]) == 2
    assert main(["train", "--seeds", "-1"]) == 2
    assert "--seeds -1" in capsys.readouterr().err
    assert main(["runs", "list", "--root", str(tmp_path)]) == 0
    assert "No finished runs" in capsys.readouterr().out


@pytest.mark.skipif(__import__("keras").backend.backend() != "jax", reason="the compiled engine is JAX-only")
def test_side_by_side_trains_each_seed_as_it_would_alone(group, mnist_dir, tmp_path, capsys):
    together = tmp_path / "together"
    assert (
        main(
            [
                "train",
                *QUICK,
                "--seeds",
                "3",
                "--seed",
                "7",
                "--side-by-side",
                "--out",
                str(together),
                "--cache-dir",
                str(mnist_dir),
            ]
        )
        == 0
    )
    assert "3 seeds side by side" in capsys.readouterr().out
    info = json.loads((together / runs.GROUP).read_text())
    assert info["complete"] and info["side_by_side"] and info["seeds"] == [7, 8, 9]
    assert runs.load_run(together / "seed-8").metrics["side_by_side"] == 3
    assert runs.load_run(group / "seed-8").metrics["side_by_side"] == 1
    for seed in (7, 8, 9):
        alone, beside = runs.load_run(group / f"seed-{seed}"), runs.load_run(together / f"seed-{seed}")
        assert beside.config == alone.config
        # The same seed's shuffles, dropout masks and initial weights: the same run (bit for bit on this CPU;
        # the tolerance allows other kernels elsewhere), far inside the gap between two seeds (checked below).
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(beside.history[key], alone.history[key], atol=1e-5)
        assert abs(beside.metrics["test_accuracy"] - alone.metrics["test_accuracy"]) <= 0.001
    losses = [runs.load_run(group / f"seed-{s}").history["loss"][-1] for s in (7, 8, 9)]
    assert (
        min(abs(a - b) for a, b in [(losses[0], losses[1]), (losses[1], losses[2]), (losses[0], losses[2])])
        > 2e-3
    )


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--side-by-side"], "add --seeds N (N >= 2)"),
        (["--side-by-side", "--seeds", "1"], "add --seeds N (N >= 2)"),
        (["--side-by-side", "--seeds", "2", "--engine", "fit"], "add --backend jax --engine compiled"),
        (["--side-by-side", "--resume", "somewhere"], "--side-by-side would be ignored"),
    ],
)
def test_side_by_side_refusals(argv, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *argv, "--out", "g"] if "--resume" not in argv else ["train", *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()  # refused before anything is written


def test_a_side_by_side_groups_fresh_start_keeps_the_flag(tmp_path):
    group = tmp_path / "g"
    group.mkdir()
    (group / runs.MARKER).write_text("made by mnist-mlp\n")
    (group / runs.GROUP).write_text(
        json.dumps({"planned": [1, 2, 3], "side_by_side": True, "complete": False})
    )
    assert "--seeds 3 --side-by-side --out" in advice.train_again(group)
    # Made before the flag
    (group / runs.GROUP).write_text(json.dumps({"planned": [1, 2, 3], "complete": False}))
    assert "--seeds 3 --out" in advice.train_again(group)


def test_a_damaged_groups_fresh_start_counts_its_seed_folders(group, mnist_dir, tmp_path, capsys):
    """With group.json damaged the advice dropped --seeds: followed, it trained one run over a group."""
    shutil.copytree(group, tmp_path / "g")
    (tmp_path / "g" / runs.GROUP).write_text("{")
    assert main(["plot", str(tmp_path / "g")]) == 2
    advice = capsys.readouterr().err.split("`")[1]
    assert advice.endswith(f"--seeds 3 --out {tmp_path / 'g'} --overwrite"), advice
    assert main(shlex.split(advice)[1:] + ["--cache-dir", str(mnist_dir)]) == 0  # followed: the group again
    assert (
        json.loads((tmp_path / "g" / runs.GROUP).read_text())["complete"]
        and main(["plot", str(tmp_path / "g")]) == 0
    )
