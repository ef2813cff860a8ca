"""Run folders the tool owns: --overwrite deletes only what mnist-mlp wrote, never a user's folder, the
working folder or a link; two processes racing for one folder never mix their files."""

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import one_line_error

from mnist_mlp import cache, folders, outputs, planning, runs
from mnist_mlp.cli import main

TINY = ["--train-samples", "512", "--epochs", "1"]


def test_overwrite_never_deletes_a_folder_the_tool_did_not_make(synthetic_dir, tmp_path, capsys):
    project = tmp_path / "p"
    (project / "src").mkdir(parents=True)
    (project / "config.toml").write_text("x = 1\n")  # looks like a run to a name check
    (project / "src" / "main.py").write_text("keep\n")
    assert (
        main(["train", *TINY, "--out", str(project), "--overwrite", "--cache-dir", str(synthetic_dir)]) == 2
    )
    one_line_error(capsys, "did not write", "--overwrite included")
    assert (project / "src" / "main.py").read_text() == "keep\n" and (
        project / "config.toml"
    ).read_text() == "x = 1\n"
    assert not (project / runs.MARKER).exists()


@pytest.mark.parametrize("out", [".", "..", "sub/.."])
def test_the_working_folder_and_its_parents_are_refused(out, synthetic_dir, tmp_path, monkeypatch, capsys):
    here = tmp_path / "work"
    (here / "sub").mkdir(parents=True)
    (here / "notes.txt").write_text("mine")
    monkeypatch.chdir(here)
    assert main(["train", *TINY, "--out", out, "--overwrite", "--cache-dir", str(synthetic_dir)]) == 2
    one_line_error(capsys, "working folder")
    assert (here / "notes.txt").read_text() == "mine" and (here / "sub").is_dir()
    assert sorted(p.name for p in here.iterdir()) == ["notes.txt", "sub"]


def test_a_symlinked_run_folder_is_refused_and_its_target_kept(synthetic_dir, tmp_path, capsys):
    real = tmp_path / "real"
    assert main(["train", *TINY, "--out", str(real), "--cache-dir", str(synthetic_dir)]) == 0
    before = sorted(p.name for p in real.iterdir())
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    capsys.readouterr()
    assert main(["train", *TINY, "--out", str(link), "--overwrite", "--cache-dir", str(synthetic_dir)]) == 2
    one_line_error(capsys, "symbolic link")
    assert sorted(p.name for p in real.iterdir()) == before
    runs.load_run(real)


def test_overwrite_replaces_only_what_the_tool_wrote(synthetic_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--cache-dir", str(synthetic_dir)]) == 0
    (run / "my-notes.md").write_text("why I ran this")
    (run / "plots").mkdir()
    (run / "plots" / "mine.png").write_bytes(b"png")
    first = json.loads((run / runs.METRICS).read_text())
    assert (
        main(
            [
                "train",
                *TINY,
                "--seed",
                "3",
                "--out",
                str(run),
                "--overwrite",
                "--cache-dir",
                str(synthetic_dir),
            ]
        )
        == 0
    )
    assert (run / "my-notes.md").read_text() == "why I ran this" and (run / "plots" / "mine.png").exists()
    second = runs.load_run(run)
    assert second.config.train.seed == 3 and second.metrics["model_sha256"] != first["model_sha256"]


def test_overwrite_of_a_seed_group_keeps_the_users_files(synthetic_dir, tmp_path, capsys):
    group = tmp_path / "group"
    assert main(["train", *TINY, "--seeds", "2", "--out", str(group), "--cache-dir", str(synthetic_dir)]) == 0
    (group / "seed-20160715" / "note.txt").write_text("mine")
    assert (
        main(
            [
                "train",
                *TINY,
                "--seeds",
                "1",
                "--out",
                str(group),
                "--overwrite",
                "--cache-dir",
                str(synthetic_dir),
            ]
        )
        == 0
    )
    assert (group / "seed-20160715" / "note.txt").read_text() == "mine"
    assert not (group / "seed-20160716").exists()  # the tool's own seed run, gone with --overwrite
    info, loaded = runs.load_group(group)
    assert info["seeds"] == [20160715] and len(loaded) == 1


RACER = """
import os, sys, time
from mnist_mlp.backend import use_backend
use_backend("jax")
import keras, mnist_mlp.train  # everything heavy before the start line
from mnist_mlp.cli import main
print("ready", flush=True)
start = float(sys.stdin.readline())  # the same instant for both, sent once both are ready
while time.time() < start:
    pass
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [False, True])
def test_two_processes_released_together_never_mix_one_folder(overwrite, mnist_dir, tmp_path):
    out = tmp_path / "race"
    if overwrite:  # the folder already holds a run of ours: both may replace it, only one may
        assert main(["train", *TINY, "--out", str(out), "--cache-dir", str(mnist_dir)]) == 0
    argv = [
        "train",
        "--train-samples",
        "2000",
        "--epochs",
        "3",
        "--out",
        str(out),
        "--cache-dir",
        str(mnist_dir),
        *(["--overwrite"] if overwrite else []),
    ]
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, *argv, "--seed", str(seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    assert [p.stdout.readline() for p in racers] == ["ready\n", "ready\n"]  # both at the start line
    start = time.time() + 0.5  # released at the same instant
    for p in racers:
        p.stdin.write(f"{start}\n")
        p.stdin.close()
    done = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in racers]
    codes = sorted(code for code, _, _ in done)
    assert codes == [0, 2], done
    loser_err = next(err for code, _, err in done if code == 2)
    assert "Traceback" not in loser_err and loser_err.count("\n") == 1
    assert "in use" in loser_err or (not overwrite and "already holds a run" in loser_err)
    winner_seed = [1, 2][[code for code, _, _ in done].index(0)]
    run = runs.load_run(out)  # config, history, metrics and model all of the winner's run
    assert run.config.train.seed == winner_seed and run.metrics["config"]["train"]["seed"] == winner_seed
    assert run.history["epoch"] == [0, 1, 2]
    assert cache.file_sha256(run.model_path) == run.metrics["model_sha256"]
    assert not (out / runs.PARTIAL_HISTORY).exists() and not (out / runs.CHECKPOINT).exists()


def test_a_folder_being_trained_is_locked(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "busy"
    with folders.claim(out):
        assert runs.in_use(out)
        assert (
            main(["train", *TINY, "--out", str(out), "--overwrite", "--cache-dir", str(synthetic_dir)]) == 2
        )
        one_line_error(capsys, "in use")
        assert main(["evaluate", str(out)]) == 2
        one_line_error(capsys, "still training in another process")
        # Its first epoch, before a checkpoint: it read as a run stopped early
        (out / runs.CONFIG).write_text("")
        (out / runs.PARTIAL_HISTORY).write_text("epoch,loss\n0,1.0\n")
        assert main(["train", "--resume", str(out)]) == 2
        one_line_error(
            capsys, "is in use: another mnist-mlp process is training into it; wait for it to finish"
        )
    assert not runs.in_use(out)


def test_write_errors_are_one_line(synthetic_dir, tmp_path, capsys):
    long_name = tmp_path / ("x" * 300)
    assert main(["train", *TINY, "--out", str(long_name), "--cache-dir", str(synthetic_dir)]) == 2
    one_line_error(capsys, "File name too long")
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    assert main(["train", *TINY, "--out", str(a_file), "--cache-dir", str(synthetic_dir)]) == 2
    one_line_error(capsys, "not a folder")
    assert a_file.read_text() == "mine"


def test_predict_csv_into_a_missing_folder_is_one_line(synthetic_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--cache-dir", str(synthetic_dir)]) == 0
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(image)
    capsys.readouterr()
    assert main(["predict", str(run), str(image), "--csv", str(tmp_path / "no" / "such" / "out.csv")]) == 2
    one_line_error(capsys, "cannot write", "out.csv", "No such file or directory", "make its folder first")
    # A folder where a file should be
    assert main(["predict", str(run), str(image), "--csv", str(tmp_path)]) == 2
    one_line_error(capsys, "is not a CSV that predict wrote")
    assert sorted(os.listdir(tmp_path)) == ["digit.png", "run"]


def test_predict_csv_quotes_a_path_with_a_comma(synthetic_dir, tmp_path, capsys):
    import csv

    from PIL import Image

    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--cache-dir", str(synthetic_dir)]) == 0
    image = tmp_path / "digits, mine.png"
    Image.new("L", (28, 28)).save(image)
    out = tmp_path / "out.csv"
    assert main(["predict", str(run), str(image), "--csv", str(out)]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["file"] for row in rows] == [str(image)] and len(rows[0]) == 3 + 10 + 1  # and the reason


def test_a_seed_group_is_not_taken_for_one_run(synthetic_dir, tmp_path, capsys):
    group = tmp_path / "group"
    assert main(["train", *TINY, "--seeds", "2", "--out", str(group), "--cache-dir", str(synthetic_dir)]) == 0
    capsys.readouterr()
    for argv in (["evaluate", str(group)], ["runs", "show", str(group)]):
        assert main(argv) == 2
        one_line_error(capsys, "is a seed group, not one run", "seed-20160715", f"mnist-mlp plot {group}")
    assert runs.load_group(group)[0]["complete"]  # nothing was touched


def test_overwrite_leaves_other_runs_inside_a_run_folder(synthetic_dir, tmp_path):
    outer, inner = tmp_path / "outer", tmp_path / "outer" / "my-other-run"
    assert main(["train", *TINY, "--out", str(outer), "--cache-dir", str(synthetic_dir)]) == 0
    assert main(["train", *TINY, "--out", str(inner), "--cache-dir", str(synthetic_dir)]) == 0
    assert main(["train", *TINY, "--out", str(outer), "--overwrite", "--cache-dir", str(synthetic_dir)]) == 0
    runs.load_run(inner)  # a run of its own, not one of outer's seeds: kept whole


def test_a_full_disk_while_marking_the_folder_is_one_line(synthetic_dir, tmp_path, capsys, monkeypatch):
    import errno

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runs.os, "write", full)
    assert main(["train", *TINY, "--out", str(tmp_path / "r"), "--cache-dir", str(synthetic_dir)]) == 2
    one_line_error(capsys, "No space left on device", "choose another --out")


def test_resume_refuses_flags_it_would_ignore(synthetic_dir, tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "r"), "--epochs", "5", "--set", "model.dropout=0"]) == 2
    one_line_error(capsys, "--set, --epochs would be ignored")


def test_a_path_too_long_to_read_is_one_line(tmp_path, capsys):
    long_name = str(tmp_path / ("x" * 300))
    for argv in (
        ["evaluate", long_name],
        ["runs", "show", long_name],
        ["train", "--config", long_name + ".toml"],
        ["train", "--resume", long_name],
    ):
        assert main(argv) == 2
        one_line_error(capsys, "File name too long")


def test_predict_never_writes_its_csv_over_an_input_image(synthetic_dir, tmp_path, capsys):
    from PIL import Image

    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--cache-dir", str(synthetic_dir)]) == 0
    image = tmp_path / "d8.png"
    Image.new("L", (28, 28)).save(image)
    before = image.read_bytes()
    capsys.readouterr()
    assert main(["predict", str(run), str(image), "--csv", str(image)]) == 2
    one_line_error(capsys, "is one of the images read")
    assert image.read_bytes() == before


def test_an_output_name_of_255_bytes_is_written(tmp_path):
    for name in ("x" * 251 + ".csv", "é" * 125 + "x.png"):  # the longest names the file system allows
        assert len(name.encode()) == 255
        outputs.write_text(tmp_path / name, "kept")
        assert (tmp_path / name).read_text() == "kept"
    assert len(list(tmp_path.iterdir())) == 2  # no temporary file left


def test_default_outputs_never_replace_a_users_file(synthetic_dir, tmp_path, capsys, monkeypatch):
    """plot and runs compare (and inspect --augment, bench) write a default name into the working folder:
    a file of the user's there keeps its bytes, and the output takes the next free name."""
    monkeypatch.chdir(tmp_path)
    for name in ("curves.png", "compare.png", "compare-2.png"):
        (tmp_path / name).write_text("mine")
    for out in ("a", "b"):
        assert main(["train", *TINY, "--out", out, "--cache-dir", str(synthetic_dir)]) == 0
    capsys.readouterr()
    assert main(["plot", "a", "b"]) == 0 and "Wrote curves-2.png" in capsys.readouterr().out
    assert main(["runs", "compare", "a", "b"]) == 0 and "Wrote compare-3.png" in capsys.readouterr().out
    assert all(
        (tmp_path / name).read_text() == "mine" for name in ("curves.png", "compare.png", "compare-2.png")
    )
    assert (tmp_path / "curves-2.png").read_bytes()[:4] == b"\x89PNG"
    assert str(outputs.free_name("bench.json", ".json")) == "bench.json"


@pytest.mark.parametrize("seeds, damaged", [([], False), (["--seeds", "2"], False), ([], True)])
def test_a_train_that_cannot_get_the_data_leaves_no_run_folder(seeds, damaged, tmp_path, capsys, monkeypatch):
    """It made the folder (marker, config.toml) and then failed, so the same command was then refused as
    'already holds a run'; the data is now fetched before the folder is made, also when a cached file is
    damaged."""
    from mnist_mlp import cache, sources
    from mnist_mlp.errors import UserError

    def offline(directory):
        raise UserError("could not get MNIST from any source")

    monkeypatch.setattr(sources, "fetch", offline)
    monkeypatch.chdir(tmp_path)
    if damaged:  # all four there, none of them what its SHA-256 says
        (tmp_path / "empty").mkdir()
        for name, _ in cache.FILES.values():
            (tmp_path / "empty" / name).write_bytes(b"truncated")
    assert main(["train", *TINY, *seeds, "--out", "run", "--cache-dir", str(tmp_path / "empty")]) == 2
    assert "could not get MNIST" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def _taken_meanwhile(monkeypatch, make):
    """free_name as two commands at once see it: the first look finds the name free, then another command
    takes it (`make`) before this one writes."""
    real, looks = outputs.free_name, []

    def free_name(path, *args):
        looks.append(path)
        name = real(path, *args)
        if len(looks) == 1:
            make(name)
        return name

    monkeypatch.setattr(outputs, "free_name", free_name)


def test_two_trains_without_out_in_one_second_take_a_folder_each(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    """Both took runs/classic-<second>, free when each looked, and the second was refused ('in use' or
    'already holds a run'); the name is now taken by making the folder, so the second takes -2."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(planning, "default_out", lambda config: runs.Path("runs") / "classic-20261129-120000")

    def other_command(name):
        name.mkdir(parents=True)
        (name / runs.MARKER).write_text("")

    _taken_meanwhile(monkeypatch, other_command)
    assert main(["train", *TINY, "--cache-dir", str(synthetic_dir)]) == 0, capsys.readouterr().err
    assert "runs/classic-20261129-120000-2" in capsys.readouterr().out
    assert (tmp_path / "runs" / "classic-20261129-120000-2" / runs.METRICS).is_file()
    assert [p.name for p in (tmp_path / "runs" / "classic-20261129-120000").iterdir()] == [runs.MARKER]


def test_two_default_plots_at_once_keep_both(synthetic_dir, tmp_path, capsys, monkeypatch):
    """runs compare twice at once both wrote compare.png (free when each looked), one replacing the other."""
    monkeypatch.chdir(tmp_path)
    for out in ("a", "b"):
        assert main(["train", *TINY, "--out", out, "--cache-dir", str(synthetic_dir)]) == 0
    capsys.readouterr()
    _taken_meanwhile(monkeypatch, lambda name: name.write_text("the other command's plot"))
    assert main(["runs", "compare", "a", "b"]) == 0 and "Wrote compare-2.png" in capsys.readouterr().out
    assert (tmp_path / "compare.png").read_text() == "the other command's plot"
    assert (tmp_path / "compare-2.png").read_bytes()[:4] == b"\x89PNG"


def test_a_default_output_that_fails_leaves_nothing(synthetic_dir, tmp_path, capsys, monkeypatch):
    """A default name is made before it is written: a train stopped before its folder holds anything, or a
    plot that cannot be written, removes what it made (runs/ too, if it made that)."""
    from mnist_mlp import plots, train

    monkeypatch.chdir(tmp_path)
    for out in ("a", "b"):
        assert main(["train", *TINY, "--out", out, "--cache-dir", str(synthetic_dir)]) == 0
    (tmp_path / "keep").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    with monkeypatch.context() as patch:  # stopped with the folder claimed (its marker made), nothing written
        patch.setattr(train, "_train", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        assert main(["train", *TINY, "--cache-dir", str(synthetic_dir)]) == 130
    assert "interrupted before training began; the same command starts again" in capsys.readouterr().err
    with monkeypatch.context() as patch:
        patch.setattr(plots, "_save", lambda fig, path: (_ for _ in ()).throw(runs.UserError("disk full")))
        assert main(["runs", "compare", "a", "b"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_folder_holding_only_the_marker_is_trained_into(synthetic_dir, tmp_path, capsys):
    """A train stopped after claiming its folder and before writing into it left only the marker, and the same
    command was then refused as 'already holds a run'."""
    out = tmp_path / "run"
    with folders.claim(out):
        pass
    assert main(["train", *TINY, "--out", str(out), "--cache-dir", str(synthetic_dir)]) == 0
    assert (out / runs.METRICS).is_file()


def test_a_default_output_name_is_one_line_advice_with_the_commands_own_flag(tmp_path, monkeypatch):
    """bench writes with --json, not --out; an empty --out or --json means the default, not the working
    folder."""
    (tmp_path / "file").write_text("a file where a folder would go")
    with (
        pytest.raises(runs.UserError, match="choose where to write with --json$"),
        outputs.output(None, tmp_path / "file" / "bench.json", ".json", flag="--json"),
    ):
        pass
    monkeypatch.chdir(tmp_path)
    with outputs.output("", "compare.png", ".png") as out:
        assert out == runs.Path("compare.png") and out.is_file()
        out.write_bytes(b"\x89PNG")
    assert (tmp_path / "compare.png").read_bytes() == b"\x89PNG"


def test_an_interrupt_before_a_run_is_replaced_says_to_run_the_same_command(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    """Ctrl-C while Keras loads, before `--overwrite` touched the old run: its config.toml is there, so the
    advice was about the old run ('has finished; nothing to resume')."""
    from mnist_mlp import cli

    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "--cache-dir", str(synthetic_dir)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(cli, "use_backend", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["train", *TINY, "--out", str(out), "--overwrite", "--cache-dir", str(synthetic_dir)]) == 130
    assert (
        capsys.readouterr().err
        == "mnist-mlp: interrupted before training began; the same command starts again\n"
    )
    assert (out / runs.METRICS).is_file()  # the old run, untouched
