"""The command line through main(argv): output, exit codes and one-line errors."""

import os
import subprocess
import sys

import pytest
from conftest import one_line_error

from mnist_mlp.cli import main

ROW_5 = "000 " * 12 + "003 018 018 018 126 136 175 026 166 255 247 127 " + "000 " * 4
ONE_HOT_5 = "[0.000000 0.000000 0.000000 0.000000 0.000000 1.000000 0.000000 0.000000 0.000000 0.000000 ]"


def test_inspect_reproduces_the_walk_through(mnist_dir, capsys):
    assert main(["inspect", "--cache-dir", str(mnist_dir)]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 28 + 2 + 1 and lines[-1] == ""
    assert lines[5] == ROW_5
    assert all(len(line) == 28 * 4 and line.endswith(" ") for line in lines[:28])
    assert lines[28] == "first sample is 5"
    assert lines[29] == ONE_HOT_5


def test_inspect_other_split_and_index(mnist_dir, capsys):
    assert main(["inspect", "--split", "test", "--index", "1", "--cache-dir", str(mnist_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[28] == "#1 test sample is 2"
    assert lines[29].strip("[] ").split().index("1.000000") == 2


@pytest.mark.parametrize("argv", [["inspect"], ["data", "info"], ["--help"], ["train", "--help"]])
def test_light_commands_never_import_keras_or_jax(argv, mnist_dir):
    code = (
        "import sys; from mnist_mlp.cli import main; main(sys.argv[1:]); "
        "assert not {'keras', 'jax', 'torch', 'tensorflow'} & set(sys.modules), 'heavy import'"
    )
    env = {**os.environ, "MNIST_MLP_CACHE": str(mnist_dir)}
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout


@pytest.mark.slow
def test_a_bad_sweep_space_is_said_before_keras_loads(tmp_path):
    (tmp_path / "space.toml").write_text('[space]\n"model.dropout" = { float = [0.4, 0.0] }\n')
    code = (
        "import sys; from mnist_mlp.cli import main; assert main(sys.argv[1:]) == 2; "
        "assert not {'keras', 'jax', 'optuna'} & set(sys.modules), 'heavy import'"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "sweep",
            "--space",
            str(tmp_path / "space.toml"),
            "--out",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "model.dropout needs float = [low, high]" in done.stderr and not (tmp_path / "s").exists()


def test_output_into_a_closed_pipe_stops_quietly(mnist_dir):
    """`mnist-mlp data info | head -0`: the reader is gone before the command writes."""
    read, write = os.pipe()
    os.close(read)
    try:
        env = {
            k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"
        }  # buffered, as in a user's shell
        done = subprocess.run(
            [sys.executable, "-m", "mnist_mlp", "data", "info", "--cache-dir", str(mnist_dir)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=env,
        )
    finally:
        os.close(write)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_data_info_and_fetch(mnist_dir, capsys):
    assert main(["data", "info", "--cache-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    assert str(mnist_dir) in out and out.count("ok (SHA-256 verified)") == 4
    assert main(["data", "fetch", "--cache-dir", str(mnist_dir)]) == 0


def test_data_info_on_an_empty_cache_says_what_to_do(tmp_path, capsys):
    assert main(["data", "info", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("missing") == 4 + 1 and "mnist-mlp data fetch" in out


def _one_line_error(capsys, argv, *expected):
    assert main(argv) == 2
    return one_line_error(capsys, *expected)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--set", "train.epoch=3"], "unknown config key train.epoch"),
        (["train", "--set", "train.epochs=0"], "train.epochs must be > 0"),
        (["train", "--set", "model.dropout=1.5"], "model.dropout must be in [0, 1)"),
        (["train", "--set", "train.batch_size=big"], "train.batch_size must be int"),
        (["train", "--backend", "theano"], "invalid choice: 'theano'"),
        (["train", "--set", "backend=theano"], "config key backend"),
        (["train", "--config", "nope.toml"], "nope.toml not found"),
        (["inspect", "--index", "60000"], "out of range"),
        (["frobnicate"], "invalid choice"),
        (["evaluate", "no/such/run"], "run directory no/such/run not found"),
        (["plot", "no/such/run"], "not found"),
        (["plot", "notes.txt"], "notes.txt is a file, not a run folder"),
        (
            ["inspect", "--augment", "--index", "3"],
            "--split and --index pick the digit to print; --augment draws",
        ),
        (
            ["sweep", "--report", "--trials", "5"],
            "--report reads the study as it is; --trials would shape a sweep",
        ),
        (
            ["sweep", "--set", "hidden_width=256"],
            "--set hidden_width: hidden_layers and hidden_width are keys of the space",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, expected, capsys, mnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a user's notes")
    if argv[0] == "inspect":
        argv = [*argv, "--cache-dir", str(mnist_dir)]
    _one_line_error(capsys, argv, expected)
    assert not (tmp_path / "runs").exists()  # nothing written on bad input


def test_import_of_bad_files_is_one_line_and_exit_2(mnist_dir, tmp_path, capsys):
    truncated = tmp_path / "train-labels-idx1-ubyte"
    truncated.write_bytes((mnist_dir / "train-labels-idx1-ubyte").read_bytes()[:1000])
    cache = tmp_path / "cache"
    _one_line_error(capsys, ["data", "import", str(truncated), "--cache-dir", str(cache)], "SHA-256")
    stranger = tmp_path / "digits.bin"
    stranger.write_bytes(b"hello")
    _one_line_error(
        capsys, ["data", "import", str(stranger), "--cache-dir", str(cache)], "not an MNIST file name"
    )
    assert not cache.exists() or not any(cache.iterdir())


def test_import_rejects_a_gz_with_the_wrong_content(mnist_dir, tmp_path, capsys):
    import gzip

    wrong = tmp_path / "t10k-labels-idx1-ubyte.gz"
    wrong.write_bytes(gzip.compress((mnist_dir / "train-labels-idx1-ubyte").read_bytes()))
    _one_line_error(
        capsys,
        ["data", "import", str(wrong), "--cache-dir", str(tmp_path / "c")],
        "not that of MNIST test-labels",
    )


def _parsers(parser):
    """Every parser under `parser`, with its command path."""
    import argparse

    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_option_of_every_command_states_its_default(capsys):
    import argparse

    from mnist_mlp.arguments import Help, build_parser

    checked = 0
    for prog, parser in _parsers(build_parser()):
        assert main([*prog.split()[1:], "--help"]) == 0
        assert "(default: None)" not in capsys.readouterr().out, prog
        for action in parser._actions:
            if action.option_strings and not isinstance(
                action, (argparse._HelpAction, argparse._VersionAction, argparse._StoreTrueAction)
            ):
                assert "default" in Help(prog)._get_help_string(action), f"{prog} {action.option_strings}"
                checked += 1
    assert checked > 40
    assert "--epochs EPOCHS       epochs of each variant (default: 20)" in _help(["bench"])
    assert "--index INDEX         which image (default: 0)" in _help(["inspect"])
    assert "(default: 127.0.0.1)" in _help(["serve"]) and "(default: 8000)" in _help(["serve"])
    assert "(default: runs/<config>-<date>-<time>)" in _help(["train"])


def _help(argv):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--help"]) == 0
    return out.getvalue()


@pytest.mark.slow  # another process
def test_python_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "mnist_mlp", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("mnist-mlp ")


def test_every_command_line_in_the_readme_and_guide_parses():
    """The README's and docs/guide.md's code blocks hold commands a reader copies: each must parse as
    written."""
    import re
    import shlex
    from pathlib import Path

    from mnist_mlp.arguments import build_parser

    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text() + (root / "docs" / "guide.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("mnist-mlp ")]
    assert len(commands) > 20
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README: `mnist-mlp {shlex.join(argv)}` does not parse")


@pytest.mark.slow
@pytest.mark.parametrize("code", [0, 2, 130])
def test_an_interrupted_command_ends_without_finalizing_the_interpreter(code):
    """Ctrl-C while serve loaded its model printed "interrupted", then crashed in 4 of 12 presses here (a
    segmentation fault, exit 139): Python's finalization met JAX's threads mid-work. An interrupted command
    now ends at once (its files are safe by then); others end as usual."""
    program = (
        "import atexit, mnist_mlp.cli as cli; atexit.register(print, 'finalized'); "
        f"cli.main = lambda: print('ran') or {code}; cli.console_main()"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert done.stdout == ("ran\n" if code == 130 else "ran\nfinalized\n"), done.stdout


def test_a_file_that_shadows_a_preset_is_named_with_the_preset_beside_it(
    synthetic_dir, tmp_path, monkeypatch, capsys
):
    """A file `fast` in the working folder took the place of the preset fast without a word."""
    from mnist_mlp.config import load_config
    from mnist_mlp.presets import config_line, presets

    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").write_text("[train]\nepochs = 1\n")
    assert main(["inspect", "--augment", "--config", "fast"]) == 2  # deforms nothing: after the line
    line = capsys.readouterr().out.strip()
    assert (
        line == f"Config: fast (a file here; the shipped preset of that name is --config {presets()['fast']})"
    )
    assert load_config(line.rsplit("--config ", 1)[1].rstrip(")")) == load_config(
        presets()["fast"]
    )  # the advice
    (tmp_path / "runs" / "fast").mkdir(parents=True)  # a folder path is a path, shadowing nothing
    (tmp_path / "runs" / "fast" / "config.toml").write_text("")
    assert config_line("runs/fast/") == "Config: runs/fast"
    argv = ["train", "--config", "fast", "--set", "train.train_samples=512", "--out", str(tmp_path / "r")]
    assert main([*argv, "--cache-dir", str(synthetic_dir)]) == 0
    assert capsys.readouterr().out.startswith("Config: fast (a file here; the shipped preset")
