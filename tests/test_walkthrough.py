"""examples/walkthrough.py, the file a learner reads first: run as a script in a new user's shell (fresh HOME,
no KERAS_BACKEND, outside the repository) on JAX and on PyTorch, executed as a notebook by a real Jupyter
kernel, and its notebook checked against it cell by cell."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_mlp import cache

EXAMPLES = Path(__file__).parent.parent / "examples"
SCRIPT, NOTEBOOK = EXAMPLES / "walkthrough.py", EXAMPLES / "walkthrough.ipynb"
BIN = Path(sys.executable).parent
PICTURES = ("walkthrough-curves.png", "walkthrough-weights.png", "walkthrough-wrong.png")


def test_the_notebook_holds_the_scripts_cells():
    """One source: `make notebook` builds the .ipynb from the .py; an edit to one alone fails here."""
    import jupytext
    import nbformat

    def cells(notebook):
        return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]

    script, notebook = jupytext.read(SCRIPT), nbformat.read(NOTEBOOK, as_version=4)
    assert cells(notebook) == cells(script), (
        "examples/walkthrough.ipynb differs from the .py: run `make notebook`"
    )
    assert all(not cell.get("outputs") for cell in notebook.cells)  # shipped without outputs
    assert notebook.metadata["kernelspec"]["name"] == "python3"


def test_the_script_is_short_and_marks_its_cells():
    lines = SCRIPT.read_text().splitlines()
    code = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 80
    assert sum(line.startswith("# %%") for line in lines) >= 10
    imports = [line for line in code if re.match(r"(from|import) ", line)]
    assert [line for line in imports if "mnist_mlp" in line] == ["from mnist_mlp.data import load_data"]


@pytest.fixture(scope="module")
def learner(tmp_path_factory, mnist_dir):
    """run(backend or None): the walkthrough in a fresh shell, from a folder outside the repository, with one
    epoch; HOME's cache holds MNIST, as after `mnist-mlp data fetch`. Returns (process, its folder)."""
    home = tmp_path_factory.mktemp("home")
    (home / ".cache" / "mnist-mlp").mkdir(parents=True)
    for name, _ in cache.FILES.values():
        shutil.copy(mnist_dir / name, home / ".cache" / "mnist-mlp" / name)
    env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "EPOCHS": "1"}

    def run(backend=None):
        folder = tmp_path_factory.mktemp(f"learner-{backend or 'default'}")
        done = subprocess.run(
            [str(BIN / "python"), str(SCRIPT)],
            capture_output=True,
            text=True,
            cwd=folder,
            env={**env, **({"KERAS_BACKEND": backend} if backend else {})},
            timeout=600,
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, (
            done.stdout[-2000:],
            done.stderr[-3000:],
        )
        return done, folder

    run.env = env
    return run


def _test_accuracy(out: str) -> float:
    return float(re.search(r"^Test accuracy: ([0-9.]+)$", out, re.M).group(1))


@pytest.mark.slow
def test_the_script_runs_on_jax_in_a_new_users_shell_and_prints_what_inspect_prints(learner):
    done, folder = learner()
    inspect = subprocess.run(
        [str(BIN / "mnist-mlp"), "inspect"], capture_output=True, text=True, env=learner.env, timeout=120
    )
    assert inspect.returncode == 0 and inspect.stdout.count("\n") == 30
    # The 28 rows, "first sample is 5" and the one-hot vector, as printed
    assert inspect.stdout in done.stdout
    assert (
        "on jax" in done.stdout and "Total params: 669,706" in done.stdout and "val_accuracy" in done.stdout
    )
    assert 0.9 < _test_accuracy(done.stdout) < 1
    assert all((folder / name).stat().st_size > 10_000 for name in PICTURES)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="PyTorch is an extra (make test installs it)"
)
def test_the_script_runs_on_the_backend_keras_backend_names(learner):
    done, folder = learner("torch")
    assert "on torch" in done.stdout and "Total params: 669,706" in done.stdout
    assert 0.9 < _test_accuracy(done.stdout) < 1
    assert all((folder / name).is_file() for name in PICTURES)


@pytest.mark.slow
def test_the_notebook_runs_in_a_jupyter_kernel(learner, tmp_path):
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute(env=learner.env)
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", ())]
    printed = "".join(
        output.get("text", "") + output.get("data", {}).get("text/plain", "") for output in outputs
    )
    printed = re.sub(r"\x1b\[[0-9;]*m", "", printed)  # the summary's colours
    assert "first sample is 5" in printed and "Total params: 669,706" in printed
    assert 0.9 < _test_accuracy(printed) < 1
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(figures) == 3  # the curves, the weights and the mistakes, shown in the notebook
    assert all((tmp_path / name).is_file() for name in PICTURES)
