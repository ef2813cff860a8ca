"""The package as a user installs it: the wheel built from this tree, installed into a fresh venv, run
from an empty folder elsewhere. Its presets travel inside it (`--config fast`, the sweep space); the
third-party packages are borrowed from this environment (a .pth line), so only our wheel is under test."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent


def _run(*argv, cwd, env=None):
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )
    assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The `mnist-mlp` script of a fresh venv holding only our wheel (and pip)."""
    root = tmp_path_factory.mktemp("install")
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        root / "dist",
        ROOT,
        cwd=root,
    )
    wheel = next((root / "dist").glob("mnist_mlp-*.whl"))
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=root)
    _run(venv / "bin" / "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=root)
    site = Path(
        subprocess.check_output(
            [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin" / "mnist-mlp"


def test_the_installed_wheel_runs_its_presets_from_any_folder(installed, mnist_dir, tmp_path):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    where = subprocess.check_output(
        [installed.parent / "python", "-c", "import mnist_mlp; print(mnist_mlp.__file__)"],
        text=True,
        cwd=empty,
    )
    assert "site-packages" in where and str(ROOT) not in where  # ours from the wheel, not the source tree
    cache = ["--cache-dir", str(mnist_dir)]
    trained = _run(
        installed, "train", "--config", "fast", "--epochs", "1", "--train-samples", "1000", *cache, cwd=empty
    )
    assert "Test accuracy:" in trained and (empty / "runs").is_dir()
    run = next((empty / "runs").glob("fast-*"))
    assert 'optimizer = "adam"' in (run / "config.toml").read_text()  # the fast preset, not the classic one
    swept = _run(
        installed,
        "sweep",
        "--trials",
        "1",
        "--set",
        "train.train_samples=500",
        "--set",
        "train.epochs=1",
        *cache,
        cwd=empty,
    )
    assert "best trial 0" in swept and (empty / "runs" / "sweep" / "best" / "metrics.json").is_file()
