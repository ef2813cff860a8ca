"""Every entry point as a new user's shell runs it: a subprocess in a fresh HOME with no KERAS_BACKEND and
nothing else of the harness's, on the base install's backends (TensorFlow and PyTorch hidden, as in a
plain `pip install mnist-mlp`). The in-process tests cannot see this: conftest picks the backend for them."""

import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
# The base install has neither TensorFlow nor PyTorch: importing them fails and find_spec finds nothing, as
# there. (None in sys.modules would do both, but libraries that look there, SciPy's array API, then break.)
HIDE_EXTRAS = """
import importlib.util, sys
HIDDEN = {"tensorflow", "torch"}

class NotInstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NotInstalled)
find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.partition(".")[0] in HIDDEN else find_spec(name, package)
)
"""
SPACE = """
[sweep]
trials = 1
[space]
"train.learning_rate" = { choice = [0.001] }
"""
CLASSIC_SCRIPT = """
import sys
from mnist_mlp.data import load_data  # the one line changed from the classic Keras script
import keras

(x_train, y_train), (x_test, y_test) = load_data(sys.argv[1])
model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")])
model.compile(loss="sparse_categorical_crossentropy", optimizer="rmsprop", metrics=["accuracy"])
model.fit(x_train[:512].reshape(-1, 784) / 255, y_train[:512], epochs=1, verbose=0)
print("backend", keras.backend.backend(), x_train.shape, x_train.dtype)
"""


@pytest.fixture(scope="module")
def shell(tmp_path_factory, mnist_dir):
    """run(*argv): `argv` in a fresh shell (HOME of its own, no KERAS_BACKEND); the completed process."""
    home = tmp_path_factory.mktemp("home")
    hide = tmp_path_factory.mktemp("base-install")
    (hide / "sitecustomize.py").write_text(HIDE_EXTRAS)
    env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(hide),
    }

    def run(*argv, timeout=300):
        return subprocess.run(list(argv), capture_output=True, text=True, env=env, cwd=home, timeout=timeout)

    run.home, run.env, run.cache = home, env, str(mnist_dir)
    return run


def _ok(done):
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr
    return done.stdout


def test_a_classic_keras_script_importing_us_first_runs_on_jax(shell):
    out = _ok(shell(str(BIN / "python"), "-c", CLASSIC_SCRIPT, shell.cache))
    assert "backend jax (60000, 28, 28) uint8" in out


def test_every_command_runs_in_a_fresh_shell(shell, tmp_path):
    cli, cache = str(BIN / "mnist-mlp"), ["--cache-dir", shell.cache]
    run, sweep, space = str(shell.home / "runs" / "first"), str(shell.home / "sweep"), tmp_path / "space.toml"
    space.write_text(SPACE)
    tiny = ["--set", "train.train_samples=500", "--set", "train.epochs=1"]
    with ThreadPoolExecutor(2) as two:  # two commands at a time, one per core: independent processes
        started = {
            "train": two.submit(shell, cli, "train", *tiny, "--out", run, *cache),
            "sweep": two.submit(shell, cli, "sweep", "--space", str(space), "--out", sweep, *tiny, *cache),
            "version": two.submit(shell, str(BIN / "python"), "-m", "mnist_mlp", "--version"),
            "inspect": two.submit(shell, cli, "inspect", *cache),
            "data": two.submit(shell, cli, "data", "info", *cache),
            "doctor": two.submit(shell, cli, "doctor", "--offline", *cache),
        }
        done = {name: _ok(future.result()) for name, future in started.items()}
        later = {  # on the trained run and the swept study
            "evaluate": two.submit(shell, cli, "evaluate", run, *cache),
            "fonts": two.submit(shell, cli, "evaluate", run, "--on", "fonts"),
            # npm fetches the typefaces on their first use
            "handfonts": two.submit(shell, cli, "evaluate", run, "--on", "handfonts", *cache),
            "plot": two.submit(shell, cli, "plot", run),
            "list": two.submit(shell, cli, "runs", "list", "--root", str(shell.home / "runs")),
            "show": two.submit(shell, cli, "runs", "show", run),
            "report": two.submit(shell, cli, "sweep", "--out", sweep, "--report"),
        }
        done |= {name: _ok(future.result()) for name, future in later.items()}
    assert "mnist-mlp " in done["version"]
    assert "first sample is 5" in done["inspect"]
    assert "ok (SHA-256 verified)" in done["data"]
    assert "jax (chosen by default)" in done["doctor"] and "tensorflow not installed" in done["doctor"]
    assert "Backend: jax (chosen by default)" in done["train"] and "Test accuracy:" in done["train"]
    assert "confusion matrix" in done["evaluate"]
    assert "Accuracy on fonts:" in done["fonts"]
    assert "Accuracy on handfonts:" in done["handfonts"]
    assert "curves.png" in done["plot"]
    assert ": " in _ok(shell(cli, "predict", run, str(Path(run) / "curves.png")))
    assert "first" in done["list"]
    assert "backend" in done["show"]
    assert "val_accuracy" in done["report"]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [cli, "serve", run, "--port", str(port)],
        env=shell.env,
        cwd=shell.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=2) as response:
                    assert b'"backend":"jax"' in response.read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_readme_python_block_runs_as_written(shell, tmp_path):
    import re

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    cache = shell.home / ".cache" / "mnist-mlp"  # the default cache of this HOME holds the verified files
    cache.parent.mkdir(exist_ok=True)
    if not cache.exists():
        cache.symlink_to(shell.cache, target_is_directory=True)
    script = block + "\nprint(x_train.shape, x_train.dtype, y_train.shape, y_test[:3])\n"
    out = _ok(shell(str(BIN / "python"), "-c", script))
    assert "(60000, 784) float32 (60000, 10) [7 2 1]" in out
