"""Resume: a training process killed mid-run continues from its last completed epoch with a continuous
history and the same final result as an uninterrupted run of the same seed (both engines, JAX)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli, terminal_signals

from mnist_mlp import checkpoint, runs
from mnist_mlp.cli import main
from mnist_mlp.errors import UserError

pytestmark = pytest.mark.slow

ARGS = [
    "--train-samples",
    "12000",
    "--epochs",
    "12",
    "--backend",
    "jax",  # seconds of epochs left to kill in
    "--set",
    "train.checkpoint_seconds=0",
]  # a checkpoint each epoch


def _kill_after_epoch(out, mnist_dir, engine, sig, epoch=2):
    """Start a real training process and send it `sig` once `epoch` epochs are checkpointed; its stderr."""
    with terminal_signals():
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_mlp",
                "train",
                *ARGS,
                "--engine",
                engine,
                "--out",
                str(out),
                "--cache-dir",
                str(mnist_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if checkpoint.completed_epochs(out) >= epoch:
                break
        except UserError:
            pass
        time.sleep(0.02)
    assert process.poll() is None, "training ended before it could be killed"
    os.kill(process.pid, sig)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode != 0, f"training finished before the signal arrived: {sorted(os.listdir(out))}"
    if sig in (signal.SIGTERM, signal.SIGHUP):  # stopped as by Ctrl-C, then ended by the signal, as a killed
        assert process.returncode == -sig  # process is
    return stderr


@pytest.fixture(scope="module")
def uninterrupted(mnist_dir, tmp_path_factory):
    """engine -> the run folder of ARGS trained without interruption (once per engine for all the kills)."""
    made = {}

    def whole(engine: str):
        if engine not in made:
            out = tmp_path_factory.mktemp("whole") / engine
            done = run_cli(
                "train", *ARGS, "--engine", engine, "--out", str(out), "--cache-dir", str(mnist_dir)
            )
            assert done.returncode == 0, done.stderr[-2000:]
            made[engine] = out
        return made[engine]

    return whole


@pytest.mark.parametrize(
    "engine, sig",
    [
        ("compiled", signal.SIGINT),
        ("fit", signal.SIGINT),
        ("fit", signal.SIGKILL),
        ("compiled", signal.SIGTERM),
        ("fit", signal.SIGHUP),
    ],
)
def test_killed_run_resumes_to_the_same_result(engine, sig, mnist_dir, uninterrupted, tmp_path):
    whole = uninterrupted(engine)

    killed = tmp_path / "killed"
    stderr = _kill_after_epoch(killed, mnist_dir, engine, sig)
    if sig != signal.SIGKILL:  # Ctrl-C, or `kill`: one line that says how to continue
        assert (
            f"interrupted; continue with `mnist-mlp train --cache-dir {mnist_dir} --resume {killed}`"
            in stderr
        )
        assert "Traceback" not in stderr
    assert not (killed / "metrics.json").exists() and not (killed / "history.csv").exists()
    resumed = run_cli("train", "--resume", str(killed), "--cache-dir", str(mnist_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming" in resumed.stdout

    assert (killed / "history.csv").read_bytes() == (whole / "history.csv").read_bytes()
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (killed, whole))
    assert ours["test_accuracy"] == theirs["test_accuracy"] and ours["test_loss"] == theirs["test_loss"]
    assert ours["epochs_this_process"] < 12
    assert not (killed / runs.CHECKPOINT).exists()


def test_resume_refuses_finished_and_fresh_runs(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.toml").write_text("")
    assert main(["train", "--resume", str(tmp_path / "r")]) == 2
    assert "no completed epoch" in capsys.readouterr().err
    (tmp_path / "r" / "metrics.json").write_text("{}")
    assert main(["train", "--resume", str(tmp_path / "r")]) == 2
    assert "has finished" in capsys.readouterr().err
