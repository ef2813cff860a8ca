"""Disk errors on a real small disk (a tmpfs the test mounts; skipped where mounting is not allowed) and by
injected faults: one line naming the path and the cause, exit 2, no partial file, the cache as it was,
and a run folder that resumes from its last checkpoint."""

import contextlib
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import one_line_error

from mnist_mlp import checkpoint, outputs, runs
from mnist_mlp.cache import FILES
from mnist_mlp.cli import main
from mnist_mlp.errors import WriteFailed


@contextlib.contextmanager
def small_disk(path: Path, size: str = "1m", read_only: bool = False):
    """A tmpfs of `size` mounted at `path` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_import_into_a_full_cache_leaves_it_as_it_was(mnist_dir, tmp_path, capsys):
    with small_disk(tmp_path / "cache", "1m") as cache:
        (cache / "keep.txt").write_text("mine")
        assert main(["data", "import", str(mnist_dir), "--cache-dir", str(cache)]) == 2
        one_line_error(capsys, "cannot write", str(cache), "No space left on device", "--cache-dir")
        assert sorted(os.listdir(cache)) == ["keep.txt"]  # no temporary file left behind


def test_import_into_a_read_only_cache_is_one_line(mnist_dir, tmp_path, capsys):
    with small_disk(tmp_path / "cache", "1m", read_only=True) as cache:
        assert main(["data", "import", str(mnist_dir), "--cache-dir", str(cache)]) == 2
        one_line_error(capsys, "Read-only file system")
        assert main(["data", "import", str(mnist_dir), "--cache-dir", str(cache / "sub")]) == 2
        one_line_error(capsys, "Read-only file system")


def test_a_folder_named_like_an_idx_file_in_the_cache_is_one_line(mnist_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    (cache / FILES["train-labels"][0]).mkdir(parents=True)
    assert main(["data", "import", str(mnist_dir), "--cache-dir", str(cache)]) == 2
    one_line_error(capsys, "cannot write", FILES["train-labels"][0])


def test_a_failed_write_is_one_line_with_no_partial_file(mnist_dir, tmp_path, capsys, monkeypatch):
    """The same contract where no tmpfs can be mounted: the disk fills during the rename."""

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    assert (
        main(["data", "import", str(mnist_dir / "t10k-labels-idx1-ubyte"), "--cache-dir", str(tmp_path)]) == 2
    )
    one_line_error(capsys, "No space left on device")
    assert os.listdir(tmp_path) == []
    with pytest.raises(WriteFailed, match="No space left on device"):
        outputs.write_text(tmp_path / "a.txt", "x")
    assert os.listdir(tmp_path) == []


# Trains a small model into a run folder whose disk is filled at a given moment (stand-in for a disk that
# fills while training); in a subprocess, so a crash of the process (as h5py's was) shows as its exit code.
FILL = """
import sys
import keras
from mnist_mlp import plots
from mnist_mlp.cli import main

when, filler, argv = sys.argv[1], sys.argv[2], sys.argv[3:]

def fill():
    with open(filler, "wb") as f:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\\0" * size)
                    f.flush()
            except OSError:
                pass

original_epoch_end = keras.callbacks.CSVLogger.on_epoch_end
original_train_end = keras.callbacks.CSVLogger.on_train_end

def on_epoch_end(self, epoch, logs=None):
    if when == "epoch-2" and epoch == 1:
        fill()
    return original_epoch_end(self, epoch, logs)

def on_train_end(self, logs=None):
    if when == "end":
        fill()
    return original_train_end(self, logs)

original_curves = plots.plot_curves

def plot_curves(*args, **kwargs):  # during the final save: after the history is renamed, before metrics.json
    if when == "save":
        fill()
    return original_curves(*args, **kwargs)

keras.callbacks.CSVLogger.on_epoch_end, keras.callbacks.CSVLogger.on_train_end = on_epoch_end, on_train_end
plots.plot_curves = plot_curves
sys.exit(main(argv))
"""
SMALL_MODEL = [
    "--train-samples",
    "2000",
    "--epochs",
    "3",
    "--set",
    "model.hidden_units=[64]",
    "--backend",
    "jax",
]
EACH_EPOCH, NEVER = ["--set", "train.checkpoint_seconds=0"], ["--set", "train.checkpoint_seconds=1000"]


@pytest.mark.parametrize(
    "when, completed, every",
    [("epoch-2", 1, EACH_EPOCH), ("end", 3, EACH_EPOCH), ("save", 3, EACH_EPOCH), ("save", 3, NEVER)],
    ids=["epoch-2", "end", "save", "save-short-run"],
)  # shorter than the interval: the last epoch saved
def test_a_disk_that_fills_while_training_leaves_a_resumable_run(when, completed, every, mnist_dir, tmp_path):
    whole = tmp_path / "whole"
    argv = [*SMALL_MODEL, *every]
    assert main(["train", *argv, "--out", str(whole), "--cache-dir", str(mnist_dir)]) == 0
    with small_disk(tmp_path / "disk", "4m") as disk:
        out, filler = disk / "run", disk / "filler"
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                FILL,
                when,
                str(filler),
                "train",
                *argv,
                "--out",
                str(out),
                "--cache-dir",
                str(mnist_dir),
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2, done.stderr[-3000:]  # not a crash (h5py's checkpoint write segfaulted)
        err = done.stderr.strip().splitlines()
        assert len(err) == 1 and "No space left on device" in err[0], done.stderr[-3000:]
        assert (
            f"free some space, then continue with `mnist-mlp train --cache-dir {mnist_dir} --resume {out}`"
            in err[0]
        )
        assert checkpoint.completed_epochs(out) == completed  # the last good checkpoint survived
        assert not [p for p in os.listdir(out) if ".tmp" in p]
        filler.unlink()
        assert main(["train", "--resume", str(out), "--cache-dir", str(mnist_dir)]) == 0
        assert (out / runs.HISTORY).read_text() == (whole / runs.HISTORY).read_text()
        ours, theirs = (json.loads((d / runs.METRICS).read_text()) for d in (out, whole))
        assert ours["test_accuracy"] == theirs["test_accuracy"]


def _follow_shell(line: str, cache_dir) -> tuple[int, list[str]]:
    """Follow the one line's advice `SHELL && ... && mnist-mlp ARGS`: the shell part (a copy) as a shell runs
    it, then ARGS in process, which carry the failed command's `cache_dir`; (exit code, ARGS without it)."""
    import shlex

    command = line.split("`")[1]
    shell, args = command.rsplit(" && mnist-mlp ", 1)
    subprocess.run(["sh", "-c", shell], check=True)
    args = shlex.split(args)
    assert args[1:3] == ["--cache-dir", str(cache_dir)], args
    return main(args), args[:1] + args[3:]


def test_evaluate_on_a_read_only_run_prints_the_scores_and_advice_that_works(
    trained, mnist_dir, tmp_path, capsys, monkeypatch
):
    """A teacher's run shared read-only: the scores are shown, the line says the figures were not written,
    and its `cp -r` advice, followed, evaluates the copy."""
    import shutil

    _, run = trained
    with small_disk(tmp_path / "shared", "64m") as shared:
        shared_run = shared / "my classic"  # a name the advice must quote
        shutil.copytree(
            run,
            shared_run,
            ignore=shutil.ignore_patterns("confusion.png", "misclassified.png", "evaluation.json"),
        )
        subprocess.run(["mount", "-o", "remount,ro", str(shared)], check=True)
        monkeypatch.chdir(tmp_path)
        assert main(["evaluate", str(shared_run), "--cache-dir", str(mnist_dir)]) == 2
        captured = capsys.readouterr()
        assert "Test accuracy: 0.9" in captured.out and "Wrote" not in captured.out
        err = captured.err.strip().splitlines()
        assert (
            len(err) == 1 and "Read-only file system" in err[0] and "scores above are not saved" in err[0]
        ), err
        assert (
            err[0]
            .split("`")[1]
            .startswith(f"cp -r '{shared_run}' 'my classic' && chmod -R u+w 'my classic' && ")
        )
        code, args = _follow_shell(err[0], mnist_dir)  # the advice, followed
        assert code == 0 and args == ["evaluate", "my classic"]
        assert (tmp_path / "my classic" / "confusion.png").is_file() and "Wrote" in capsys.readouterr().out


def test_a_read_only_run_is_resumed_and_plotted_by_the_advice(synthetic_dir, tmp_path, capsys, monkeypatch):
    """An interrupted run on a read-only disk: `--resume` (which takes no --out) advises a copy to resume,
    and `plot` (whose curves go into the run) another --out; each, followed, succeeds."""
    import shlex
    import shutil

    from conftest import TINY, ctrl_c_after_epoch

    from mnist_mlp import train

    tiny = [*TINY, "--cache-dir", str(synthetic_dir)]
    with monkeypatch.context() as patch:
        patch.setattr(train.Checkpoint, "on_epoch_end", ctrl_c_after_epoch(0))
        assert main(["train", *tiny, "--out", str(tmp_path / "run")]) == 130
    assert main(["train", *tiny, "--out", str(tmp_path / "finished")]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    with small_disk(tmp_path / "shared", "16m") as shared:
        for name in ("run", "finished"):
            shutil.copytree(tmp_path / name, shared / name, ignore=shutil.ignore_patterns(runs.CURVES))
        subprocess.run(["mount", "-o", "remount,ro", str(shared)], check=True)
        assert main(["train", "--resume", str(shared / "run"), "--cache-dir", str(synthetic_dir)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Read-only file system" in err[0], err
        code, args = _follow_shell(err[0], synthetic_dir)
        assert code == 0 and args == ["train", "--resume", "run-2"]  # ./run is taken: the first free name
        assert runs.load_run(tmp_path / "run-2").history["epoch"] == [0, 1]

        assert main(["plot", str(shared / "finished")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Read-only file system" in err[0], err
        plot = shlex.split(err[0].split("`")[1])
        assert main(plot[1:]) == 0 and (tmp_path / plot[-1]).is_file()


def test_an_out_on_a_read_only_disk_is_told_where_else_to_write(synthetic_dir, tmp_path, capsys, monkeypatch):
    """plot, runs compare, inspect --augment and bench said only "cannot write X (Read-only file system)",
    bench after its whole run; each now says where else, and the advice, followed, writes."""
    run = tmp_path / "run"
    tiny = ["--train-samples", "512", "--epochs", "1", "--cache-dir", str(synthetic_dir)]
    assert main(["train", *tiny, "--out", str(run)]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    with small_disk(tmp_path / "shared", read_only=True) as shared:
        for argv in (
            ["plot", str(run), "--out", str(shared / "curves.png")],
            ["plot", str(run), "--weights", "--out", str(shared / "weights.png")],
            ["runs", "compare", str(run), str(run), "--out", str(shared / "compare.png")],
            ["inspect", "--augment", "--set", "augment.rotation=10", "--out", str(shared / "augment.png")],
            ["bench", "--json", str(shared / "bench.json")],  # refused before the bench runs
        ):
            assert main([*argv, "--cache-dir", str(synthetic_dir)] if argv[0] == "inspect" else argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "a writable place, e.g." in err, err
            flag, elsewhere = err.strip().rsplit(" ", 2)[-2:]
            followed = [*argv[:-1], elsewhere]
            if argv[0] == "bench":
                assert flag == "--json" and not Path(elsewhere).exists()  # the bench itself is not run here
                continue
            assert (
                main([*followed, "--cache-dir", str(synthetic_dir)] if argv[0] == "inspect" else followed)
                == 0
            )
            assert Path(elsewhere).is_file()
