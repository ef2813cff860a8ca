"""Advice that works: every error that suggests a command is followed here, and the command must succeed.
Also the values that cannot train: non-finite numbers, batches larger than the data, models larger than
the machine, and a loss that becomes NaN."""

import contextlib
import json
import os
import re
import shlex
import signal

import pytest
from conftest import TINY, ctrl_c_after_epoch, one_line_error

from mnist_mlp import advice, callbacks, checkpoint, experiments, folders, runs, train
from mnist_mlp.cli import main
from mnist_mlp.errors import Fix


def _advice(capsys, *expected) -> list[str]:
    """The one-line error's suggested command (in backticks), as argv for main()."""
    err = one_line_error(capsys, *expected)
    commands = re.findall(r"`mnist-mlp ([^`]+)`", err)
    assert commands, f"no command suggested: {err}"
    return shlex.split(commands[-1])


def _follow(capsys, synthetic_dir, *expected) -> list[str]:
    """Run the advice as written: it carries the --cache-dir the failed command was given (without it, the
    command would look in the default cache). Returns it without that flag."""
    argv = _advice(capsys, *expected)
    at = (
        argv.index("--cache-dir")
        if "--cache-dir" in argv
        else pytest.fail(f"advice without --cache-dir: {argv}")
    )
    assert argv[at + 1] == str(synthetic_dir), argv
    assert main(argv) == 0, capsys.readouterr().err
    return argv[:at] + argv[at + 2 :]


def test_ctrl_c_in_the_first_epoch_advises_a_fresh_start_that_works(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"

    def interrupt(self, epoch, logs=None):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train.Checkpoint, "on_epoch_end", interrupt)
        assert main(["train", *TINY, "--out", str(out), "--cache-dir", str(synthetic_dir)]) == 130
    argv = _follow(
        capsys, synthetic_dir, "interrupted; ", "stopped after 1 epoch(s), before its first checkpoint"
    )
    assert "--overwrite" in argv and "--resume" not in argv
    assert runs.load_run(out).config.train.train_samples == 512  # the same config, from config.toml


def _stop_after_first_epoch(out, synthetic_dir, monkeypatch):
    """Train TINY into `out` and press Ctrl-C just after the first epoch's checkpoint is saved."""
    with monkeypatch.context() as patch:
        patch.setattr(train.Checkpoint, "on_epoch_end", ctrl_c_after_epoch(0))
        assert main(["train", *TINY, "--out", str(out), "--cache-dir", str(synthetic_dir)]) == 130


def test_ctrl_c_after_an_epoch_advises_resume_that_works(synthetic_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    _stop_after_first_epoch(out, synthetic_dir, monkeypatch)
    assert _follow(capsys, synthetic_dir, "interrupted; continue with") == ["train", "--resume", str(out)]
    assert runs.load_run(out).history["epoch"] == [0, 1]


@pytest.mark.parametrize("damage", ["a value", "removed", "emptied"])
def test_a_damaged_history_is_refused_before_training_with_advice_that_works(
    damage, synthetic_dir, tmp_path, capsys, monkeypatch
):
    """A resume whose history lacks the checkpoint's epochs trained to the end and then failed (a value), or
    finished with a history short of epochs (removed, emptied); it is refused at once, and the advice
    works."""
    out = tmp_path / "run"
    _stop_after_first_epoch(out, synthetic_dir, monkeypatch)
    capsys.readouterr()
    partial = out / runs.PARTIAL_HISTORY
    if damage == "a value":
        partial.write_text(
            partial.read_text().replace(partial.read_text().splitlines()[1].split(",")[1], "abc", 1)
        )
    elif damage == "removed":
        partial.unlink()
    else:
        partial.write_text("")
    assert main(["train", "--resume", str(out), "--cache-dir", str(synthetic_dir)]) == 2
    argv = _follow(capsys, synthetic_dir, "lacks some of the 1 epoch(s)")
    assert "--overwrite" in argv and runs.load_run(out).history["epoch"] == [0, 1]


def test_checkpoints_keep_their_interval_and_resume_from_an_older_one(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    """Epochs of 4 s on a fake clock and a checkpoint every 10 s: Ctrl-C after epoch 5 finds one saved after
    epoch 3 (12 s), none after 1, 2, 4 or 5; the resume from it gives an uninterrupted run's history."""
    argv = [
        "--train-samples",
        "512",
        "--epochs",
        "7",
        "--set",
        "train.checkpoint_seconds=10",
        "--cache-dir",
        str(synthetic_dir),
    ]
    assert main(["train", *argv, "--out", str(tmp_path / "whole")]) == 0
    now, saved = [0.0], []
    original, save = train.Checkpoint.on_epoch_end, checkpoint.save_checkpoint

    def four_seconds_then_ctrl_c_after_5(self, epoch, logs=None):
        now[0] += 4
        original(self, epoch, logs)
        if epoch == 4:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(callbacks, "monotonic", lambda: now[0])
        patch.setattr(
            callbacks,
            "save_checkpoint",
            lambda path, epoch, arrays: (saved.append(epoch), save(path, epoch, arrays)),
        )
        patch.setattr(train.Checkpoint, "on_epoch_end", four_seconds_then_ctrl_c_after_5)
        assert main(["train", *argv, "--out", str(tmp_path / "stopped")]) == 130
    assert saved == [3] and checkpoint.completed_epochs(tmp_path / "stopped") == 3
    assert _follow(capsys, synthetic_dir, "interrupted; continue with") == [
        "train",
        "--resume",
        str(tmp_path / "stopped"),
    ]
    assert (tmp_path / "stopped" / runs.HISTORY).read_bytes() == (
        tmp_path / "whole" / runs.HISTORY
    ).read_bytes()


def test_ctrl_c_before_the_first_checkpoint_says_so_and_advises_a_fresh_start(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    out, argv = (
        tmp_path / "run",
        ["--train-samples", "512", "--epochs", "4", "--cache-dir", str(synthetic_dir)],
    )
    with monkeypatch.context() as patch:
        patch.setattr(callbacks, "monotonic", lambda: 0.0)  # no time passes: no checkpoint is due
        patch.setattr(train.Checkpoint, "on_epoch_end", ctrl_c_after_epoch(1))
        assert main(["train", *argv, "--out", str(out)]) == 130
    stopped = (
        "stopped after 2 epoch(s), before its first checkpoint (one is saved once train.checkpoint_seconds"
    )
    assert f"interrupted; {out} {stopped}" in capsys.readouterr().err  # Ctrl-C says why there is no --resume
    assert main(["train", "--resume", str(out), "--cache-dir", str(synthetic_dir)]) == 2
    _follow(capsys, synthetic_dir, stopped)
    assert runs.load_run(out).history["epoch"] == [0, 1, 2, 3]


def test_a_new_checkpoint_interval_is_not_an_edit_that_stops_a_resume(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    _stop_after_first_epoch(out, synthetic_dir, monkeypatch)
    config = (out / runs.CONFIG).read_text()
    (out / runs.CONFIG).write_text(config.replace("checkpoint_seconds = 0.0", "checkpoint_seconds = 60.0"))
    assert main(["train", "--resume", str(out), "--cache-dir", str(synthetic_dir)]) == 0, (
        capsys.readouterr().err
    )
    assert runs.load_run(out).config.train.checkpoint_seconds == 60.0  # and the finished run loads


@pytest.mark.parametrize(
    "engine, where",
    [("compiled", "on_train_batch_end"), ("fit", "on_train_batch_end"), ("fit", "on_train_end")],
)
def test_ctrl_c_stops_training_even_where_keras_swallows_it(
    engine, where, synthetic_dir, tmp_path, capsys, monkeypatch
):
    """Keras' pythonify_logs catches every exception, KeyboardInterrupt too: a Ctrl-C landing there must still
    stop the run, in a batch or after the last epoch (it trained on, 8 times in 8 with --engine fit)."""
    pressed, out = [], tmp_path / "run"

    def ctrl_c_that_keras_swallows(self, *args, **kwargs):
        if not pressed:
            pressed.append(args)
            with contextlib.suppress(BaseException):  # as pythonify_logs does
                signal.raise_signal(signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as patch:
        patch.setattr(train.Checkpoint, where, ctrl_c_that_keras_swallows, raising=False)
        code = main(
            ["train", *TINY, "--engine", engine, "--out", str(out), "--cache-dir", str(synthetic_dir)]
        )
        assert code == 130, (pressed, handler, signal.pthread_sigmask(signal.SIG_BLOCK, []), train.Checkpoint)
    assert len(pressed) == 1 and "interrupted; " in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own again
    assert not (out / runs.METRICS).exists()
    if where == "on_train_end":  # after the last epoch's checkpoint: the resume only finishes the run
        assert checkpoint.completed_epochs(out) == 2
        assert main(["train", "--resume", str(out), "--cache-dir", str(synthetic_dir)]) == 0
        assert runs.load_run(out).history["epoch"] == [0, 1]
    else:  # in the first batch: nothing to resume
        with pytest.raises(checkpoint.NoCheckpoint, match="has no completed epoch"):
            checkpoint.completed_epochs(out)


def test_incomplete_runs_advise_what_works(synthetic_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(
            train.Checkpoint, "on_epoch_end", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
        )
        assert main(["train", *TINY, "--out", str(out), "--cache-dir", str(synthetic_dir)]) == 130
    capsys.readouterr()
    assert main(["evaluate", str(out), "--cache-dir", str(synthetic_dir)]) == 2
    _follow(capsys, synthetic_dir, "incomplete run")
    assert main(["train", "--resume", str(out), "--cache-dir", str(synthetic_dir)]) == 2  # finished now
    _follow(capsys, synthetic_dir, "has finished")
    assert main(["evaluate", str(out), "--cache-dir", str(synthetic_dir)]) == 0


def test_a_folder_that_is_not_a_run_advises_a_free_name(synthetic_dir, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.toml").write_text("")  # an empty config: the classic one
    assert main(["train", "--resume", str(mine)]) == 2
    assert _advice(capsys, "no completed epoch")[-2:] == ["--out", str(tmp_path / "mine-2")]
    assert main(["train", *TINY, "--out", str(mine), "--overwrite", "--cache-dir", str(synthetic_dir)]) == 2
    err = capsys.readouterr().err
    assert "did not write" in err and err.count("\n") == 1
    suggested = err.strip().rsplit("e.g. ", 1)[1]
    assert main(["train", *TINY, "--out", suggested, "--cache-dir", str(synthetic_dir)]) == 0
    assert runs.load_run(tmp_path / "mine-2") and sorted(p.name for p in mine.iterdir()) == ["config.toml"]


def test_an_edited_config_or_a_swapped_model_is_detected(synthetic_dir, tmp_path, capsys):
    out, other = tmp_path / "run", tmp_path / "other"
    assert main(["train", *TINY, "--out", str(out), "--cache-dir", str(synthetic_dir)]) == 0
    assert (
        main(
            [
                "train",
                *TINY,
                "--set",
                "model.hidden_units=[32]",
                "--out",
                str(other),
                "--cache-dir",
                str(synthetic_dir),
            ]
        )
        == 0
    )
    config = (out / runs.CONFIG).read_text()
    (out / runs.CONFIG).write_text(
        config.replace("hidden_units = [\n    512,\n    512,\n]", "hidden_units = [\n    256,\n]")
    )
    capsys.readouterr()
    for argv in (
        ["runs", "show", str(out)],
        ["evaluate", str(out)],
        ["predict", str(out), str(out / runs.CURVES)],
    ):
        assert main(argv) == 2
        _advice(capsys, "config.toml was edited after training", "model.hidden_units (512, 512) -> (256,)")
    (out / runs.CONFIG).write_text(config)
    (out / runs.MODEL).write_bytes((other / runs.MODEL).read_bytes())  # another run's model
    assert main(["evaluate", str(out), "--cache-dir", str(synthetic_dir)]) == 2
    _follow(capsys, synthetic_dir, "is not the model this run saved")
    assert main(["evaluate", str(out), "--cache-dir", str(synthetic_dir)]) == 0


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--set", "train.learning_rate=inf"], "train.learning_rate must be a finite number"),
        (["--set", "train.learning_rate=nan"], "train.learning_rate must be a finite number"),
        (["--set", "model.dropout=-inf"], "model.dropout must be a finite number"),
        (["--batch-size", str(2**63 - 1)], "larger than the 60,000 training images"),
        (["--batch-size", "50001", "--validation", "split"], "larger than the 50,000 training images"),
        (["--batch-size", "501", "--train-samples", "500"], "larger than the 500 training images"),
        (
            ["--set", "model.hidden_units=[100000, 100000, 100000]"],
            "GiB (model.hidden_units [100000, 100000, 100000]",
        ),
    ],
)
def test_values_that_cannot_train_are_refused_before_anything_starts(argv, expected, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_loss_that_becomes_nan_stops_the_run_unsaved(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "diverged"
    assert (
        main(
            [
                "train",
                *TINY,
                "--set",
                "train.learning_rate=1e30",
                "--out",
                str(out),
                "--cache-dir",
                str(synthetic_dir),
            ]
        )
        == 2
    )
    argv = _advice(capsys, "training diverged", "not a finished run")
    assert not (out / runs.METRICS).exists() and not (out / runs.MODEL).exists()
    history = (out / runs.PARTIAL_HISTORY).read_text().splitlines()
    assert len(history) <= 3 and "nan" in history[-1]  # stopped in the epoch it diverged
    assert experiments.list_runs(tmp_path) == []  # not listed as a finished run
    for later in (
        ["evaluate", str(out)],
        ["train", "--resume", str(out)],
    ):  # they repeat the advice, not resume
        assert main([*later, "--cache-dir", str(synthetic_dir)]) == 2
        assert _advice(capsys, "training diverged") == argv
    assert main(argv) == 0  # the advice (a lower learning rate), with the --cache-dir each command was given
    run = runs.load_run(out)
    assert (
        run.config.train.learning_rate == 0.001
        and json.loads((out / runs.METRICS).read_text())["test_accuracy"] > 0.5
    )


@pytest.mark.parametrize("edit", [("epochs = 2", "epochs = 1"), ("dropout = 0.2", "dropout = 0.3")])
def test_resume_refuses_a_config_edited_since_the_run_started(
    edit, synthetic_dir, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    _stop_after_first_epoch(out, synthetic_dir, monkeypatch)
    capsys.readouterr()
    config = (out / runs.CONFIG).read_text()
    assert edit[0] in config
    (out / runs.CONFIG).write_text(config.replace(*edit))
    assert main(["train", "--resume", str(out), "--cache-dir", str(synthetic_dir)]) == 2
    _advice(capsys, "was edited after training started")
    (out / runs.CONFIG).write_text(config)  # undone: resumes
    assert main(["train", "--resume", str(out), "--cache-dir", str(synthetic_dir)]) == 0


def test_a_bad_value_in_a_runs_config_names_that_file(synthetic_dir, tmp_path, capsys, monkeypatch):
    """--resume, evaluate and predict take no --set: the advice is the run's own file."""
    out = tmp_path / "run"
    _stop_after_first_epoch(out, synthetic_dir, monkeypatch)
    config = (out / runs.CONFIG).read_text()
    capsys.readouterr()
    for argv in (["train", "--resume", str(out)], ["evaluate", str(out)]):  # interrupted, then finished
        (out / runs.CONFIG).write_text(config.replace("epochs = 2", "epochs = 0"))
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{out / runs.CONFIG}: config key train.epochs must be > 0; fix it in that file" in err, err
        assert "--set" not in err
        (out / runs.CONFIG).write_text(config)  # fixed: it works
        assert main([*argv, "--cache-dir", str(synthetic_dir)]) == 0


def test_advice_survives_paths_with_a_space_or_a_leading_dash(synthetic_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("my run", "-dash"):
        assert (
            main(
                [
                    "train",
                    *TINY,
                    "--set",
                    "train.learning_rate=1e30",
                    f"--out={name}",
                    "--cache-dir",
                    str(synthetic_dir),
                ]
            )
            == 2
        )
        argv = _advice(capsys, "training diverged")
        assert argv[argv.index("--cache-dir") + 1] == str(synthetic_dir), argv
        assert main(argv) == 0, capsys.readouterr().err
        next_step = capsys.readouterr().out.strip().splitlines()[-1]
        command = re.search(r"next: mnist-mlp (.+)\)$", next_step).group(1)
        assert "--cache-dir" in command and main(shlex.split(command)) == 0


def test_dot_and_slash_as_a_run_are_one_line_and_resuming_from_inside_a_run_advises_another_folder(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    """`.` and `/` name no folder (Path.with_name failed on them: a traceback); a finished run resumed from
    inside itself cannot be retrained in place (the working folder is never deleted), so: a free name."""
    monkeypatch.chdir(tmp_path)
    for folder in (".", "/"):
        assert main(["evaluate", folder]) == 2
        assert "is not a run folder" in capsys.readouterr().err
    assert main(["train", *TINY, "--out", "done", "--cache-dir", str(synthetic_dir)]) == 0
    monkeypatch.chdir(tmp_path / "done")
    assert main(["train", "--resume", ".", "--cache-dir", str(synthetic_dir)]) == 2
    argv = _follow(capsys, synthetic_dir, "has finished")
    assert argv[-2:] == ["--out", str(tmp_path / "done-2")]


def test_an_interrupted_seed_group_resumes_keeping_its_finished_seeds(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    """Ctrl-C in seed 2's second epoch: the advice was a fresh start with --overwrite (losing seed 1). Now
    --resume GROUP keeps seed 1, resumes seed 2 from its checkpoint and trains seed 3; the group's histories
    are those of an uninterrupted group."""
    argv = ["train", *TINY, "--seeds", "3", "--cache-dir", str(synthetic_dir)]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    calls = []
    save = train.Checkpoint.on_epoch_end

    def ctrl_c_in_seed_2(self, epoch, logs=None):
        save(self, epoch, logs)
        calls.append(epoch)
        if len(calls) == 3:  # seed 1's two epochs, then seed 2's first
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train.Checkpoint, "on_epoch_end", ctrl_c_in_seed_2)
        assert main([*argv, "--out", str(tmp_path / "group")]) == 130
    finished = (tmp_path / "group" / "seed-20160715" / runs.METRICS).read_bytes()
    assert _follow(capsys, synthetic_dir, "finished seeds are kept") == [
        "train",
        "--resume",
        str(tmp_path / "group"),
    ]
    assert (
        tmp_path / "group" / "seed-20160715" / runs.METRICS
    ).read_bytes() == finished  # kept, not retrained
    group, loaded = runs.load_group(tmp_path / "group")
    whole = runs.load_group(tmp_path / "whole")[1]
    assert group["complete"] and [r.history for r in loaded] == [r.history for r in whole]
    assert main(["train", "--resume", str(tmp_path / "group")]) == 2
    assert "has finished" in capsys.readouterr().err


def test_a_signal_dropped_outside_training_still_stops_the_next_seed(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    """Ctrl-C while a seed scores the test set lands where Keras drops it (pythonify_logs), or at start-up in
    a garbage-collector callback: the command's handler remembers it, so the next seed does not start."""
    from mnist_mlp import signals

    finish, out = train.finish_run, tmp_path / "group"
    with monkeypatch.context() as patch:

        def pressed_while_scoring(*args, **kwargs):
            result = finish(*args, **kwargs)
            # The KeyboardInterrupt itself was dropped
            patch.setattr(signals, "received", signal.SIGINT)
            return result

        patch.setattr(train, "finish_run", pressed_while_scoring)
        assert (
            main(["train", *TINY, "--seeds", "3", "--out", str(out), "--cache-dir", str(synthetic_dir)])
            == 130
        )
    assert _follow(capsys, synthetic_dir, "interrupted; ") == ["train", "--resume", str(out)]
    assert (out / "seed-20160715" / runs.METRICS).is_file()  # finished before the press, and kept


DROPPED = """
import signal, sys
from mnist_mlp import cli, signals

class Collected:
    def __del__(self):  # as JAX's garbage-collector callback: an exception raised here cannot propagate
        signals.interrupt(signal.SIGINT, None)

def main():
    Collected()
    print("stopped by callbacks.CtrlC:", signals.received == signal.SIGINT)
    return 130

cli.main = main
cli.console_main()
"""


@pytest.mark.slow
def test_a_signal_python_cannot_raise_prints_no_traceback(tmp_path):
    """kill at start-up landed in JAX's garbage-collector callback and printed Python's 'Exception ignored in'
    traceback above the command's own line; the signal is remembered, so the traceback is only noise."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", DROPPED], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and "stopped by callbacks.CtrlC: True" in done.stdout, done
    assert done.stderr == "", done.stderr


def test_a_folder_in_use_advises_only_waiting_where_nothing_else_works(synthetic_dir, tmp_path, capsys):
    """--resume takes no --out, and a group still training cannot be resumed: both advised once."""
    out = tmp_path / "group"
    assert main(["train", *TINY, "--seeds", "2", "--out", str(out), "--cache-dir", str(synthetic_dir)]) == 0
    (out / runs.GROUP).write_text(json.dumps({"planned": [20160715, 20160716], "complete": False}))
    with folders.claim(out, resume=True):  # another process training into it
        assert main(["train", "--resume", str(out)]) == 2
        assert capsys.readouterr().err == (
            f"mnist-mlp: error: {out} is in use: another mnist-mlp process is "
            "training into it; wait for it to finish\n"
        )
        assert main(["plot", str(out)]) == 2
        assert (
            capsys.readouterr().err == f"mnist-mlp: error: {out} is still training in another process; wait "
            "for it to finish\n"
        )


def test_evaluate_writes_nothing_when_the_run_is_trained_again_meanwhile(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    """`evaluate RUN` and `train --out RUN --overwrite` at once: the old model's scores landed in the new
    run."""
    from mnist_mlp import evaluate

    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "--cache-dir", str(synthetic_dir)]) == 0
    load = evaluate.load_model

    def trained_again_while_loading(run):
        model = load(run)
        replaced = out / "model.new"  # as train saves a model: a new file renamed into place
        replaced.write_bytes((out / runs.MODEL).read_bytes())
        os.replace(replaced, out / runs.MODEL)
        return model

    with monkeypatch.context() as patch:
        patch.setattr(evaluate, "load_model", trained_again_while_loading)
        assert main(["evaluate", str(out), "--cache-dir", str(synthetic_dir)]) == 2
    argv = _advice(capsys, "was trained again while it was being evaluated, so nothing was written")
    assert not (out / runs.EVALUATION).exists() and not (out / runs.CONFUSION).exists()
    assert argv == ["evaluate", "--cache-dir", str(synthetic_dir), str(out)]
    assert main(argv) == 0 and (out / runs.EVALUATION).is_file()


def test_after_a_failed_write_only_a_full_disk_is_told_to_free_space(tmp_path):
    """A model.keras that was a folder (EISDIR) got "free some space, then continue with ...": followed, it
    failed the same way again."""
    import errno

    for number, says in ((errno.ENOSPC, "free some space, then "), (errno.EISDIR, "once that is mended, ")):
        assert advice.words(Fix("go-on", tmp_path, number)).startswith(says)
        assert advice.words(Fix("evaluate-again", tmp_path, number)).startswith(says)


def test_data_info_on_another_cache_advises_commands_for_that_cache(tmp_path, capsys):
    """`data info --cache-dir X` on an incomplete cache advised `mnist-mlp data fetch`, which fetches into the
    default cache, not X."""
    assert main(["data", "info", "--cache-dir", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    assert f"`mnist-mlp data fetch --cache-dir {tmp_path / 'empty'}`" in out, out
