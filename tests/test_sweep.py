"""Sweeps: a tiny study on SQLite (trials, pruning, the best run), continuing it, the report, and two
worker processes sharing one study on a real PostgreSQL server."""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from conftest import run_cli

from mnist_mlp import advice, folders, runs, studies
from mnist_mlp.cli import main
from mnist_mlp.errors import UserError
from mnist_mlp.space import SweepSpace

TINY = """
[sweep]
trials = 6
prune_after = 1
[space]
hidden_layers = { int = [1, 2] }
hidden_width = { choice = [32, 64] }
"train.learning_rate" = { choice = [0.00001, 0.003] }  # 1e-5 learns almost nothing in 2 epochs
"train.epochs" = { int = [2, 3] }
"""
SMALL = ["--set", "train.train_samples=2000"]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def sqlite_sweep(space, mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweeps") / "tiny"
    assert (
        main(["sweep", "--space", str(space), "--out", str(out), *SMALL, "--cache-dir", str(mnist_dir)]) == 0
    )
    return out


TINY_TRIAL = [
    "--set",
    "train.train_samples=512",
    "--set",
    "train.epochs=1",
    "--set",
    "model.hidden_units=[16]",
]


def _sweep_args(space, out, cache_dir, trials: int = 1, sets=TINY_TRIAL) -> list[str]:
    """A sweep's command line; by default its trials take a second: one epoch of 16 units on 512 images."""
    return [
        "sweep",
        "--space",
        str(space),
        "--out",
        str(out),
        "--trials",
        str(trials),
        *sets,
        "--cache-dir",
        str(cache_dir),
    ]


def _study(out, name=None, storage=None):
    return optuna.load_study(study_name=name or out.name, storage=storage or f"sqlite:///{out / 'study.db'}")


def test_sqlite_sweep_trials_pruning_and_best_run(sqlite_sweep):
    study = _study(sqlite_sweep)
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == 6
    pruned = [t for t in finished if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the median rule pruned no trial"
    for trial in pruned:  # stopped at a step where it was below the other trials' median, so below the best
        assert max(trial.intermediate_values.values()) < study.best_value
    for trial in finished:  # every trial is a normal run, validated on held-out training images, test unseen
        run = runs.load_run(sqlite_sweep / f"trial-{trial.number:04d}")
        assert run.config.train.validation == "split" and run.metrics["test_accuracy"] is None
    best = runs.load_run(sqlite_sweep / "best")
    assert best.metrics["test_accuracy"] > 0.8 and best.config.train.validation == "split"
    assert best.config.train.learning_rate == study.best_params["train.learning_rate"]
    assert (
        list(best.config.model.hidden_units)
        == [study.best_params["hidden_width"]] * study.best_params["hidden_layers"]
    )


def test_running_again_continues_the_study(sqlite_sweep, space, mnist_dir):
    assert main(_sweep_args(space, sqlite_sweep, mnist_dir, trials=8, sets=SMALL)) == 0
    study = _study(sqlite_sweep)
    trials = sorted(study.get_trials(states=FINISHED), key=lambda t: t.number)
    assert [t.number for t in trials] == list(range(8))
    # a fresh draw: the same seed made the continuing process suggest trials 0 and 1 again
    assert [t.params for t in trials[6:]] != [t.params for t in trials[:2]]
    best = runs.load_run(sqlite_sweep / "best").config  # re-trained if a new trial is now the best
    assert best == runs.load_run(sqlite_sweep / f"trial-{study.best_trial.number:04d}").config


def test_report(sqlite_sweep, capsys):
    assert main(["sweep", "--out", str(sqlite_sweep), "--report"]) == 0
    out = capsys.readouterr().out
    assert "pruned" in out and "parameter importances" in out
    ranks = [line.split() for line in out.splitlines() if line[:4].strip().isdigit()]
    values = [float(r[2]) for r in ranks]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(
        _study(sqlite_sweep).best_value, abs=1e-4
    )
    for name in ("optimization_history.png", "parallel_coordinate.png"):
        assert (sqlite_sweep / name).read_bytes()[:4] == b"\x89PNG"


def test_a_report_on_a_parameter_of_one_value_prints_no_warning(tmp_path, capsys):
    """matplotlib warned 'Attempting to set identical low and high ylims' (twice, with its file path) for the
    parallel-coordinate plot of a parameter every trial took the same value of."""
    import warnings

    out = tmp_path / "one"
    out.mkdir()
    study = optuna.create_study(
        study_name="one", storage=f"sqlite:///{out / studies.STUDY_DB}", direction="maximize"
    )
    for value in (0.5, 0.6):
        study.add_trial(
            optuna.trial.create_trial(
                params={"hidden_width": 64},
                value=value,
                distributions={"hidden_width": optuna.distributions.CategoricalDistribution([32, 64])},
            )
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["sweep", "--out", str(out), "--report"]) == 0
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []


@pytest.mark.parametrize(
    "text, said",
    [
        ('"train.epochs" = { between = [1, 2] }', "train.epochs needs one of int = [low, high]"),
        (
            '"model.dropout" = { float = [0.4, 0.0] }',
            "model.dropout needs float = [low, high] with two numbers, low <= high",
        ),
        (
            '"train.learning_rate" = { float = [0.0, 0.01], log = true }',
            "train.learning_rate on a log scale needs low > 0, not 0.0",
        ),
        ('"model.dropout" = { float = ["a", "b"] }', "model.dropout needs float = [low, high]"),
        ('"model.activation" = { choice = [] }', "model.activation needs at least one value"),
        ('"model.dropout" = 0.3', "model.dropout needs one of int"),
        ('hidden_layers = { choice = ["two"] }', "hidden_layers takes whole numbers >= 1"),
        (
            '"model.activation" = { choice = ["relu", "swishy"] }',
            "model.activation value 'swishy': model.activation must be one of",
        ),
        (
            '"train.batch_size" = { choice = [128, 4096] }\n"train.epochs" = { int = [1, 2] }',
            "train.batch_size value 4096: train.batch_size 4096 is larger than the 2,000 training images",
        ),
        ('"model.depth" = { int = [1, 2] }', "model.depth value 1: unknown config key model.depth"),
        ('"train.epochs" = { float = [4, 12] }', "train.epochs value 4.0: train.epochs must be int"),
        ("hidden_width = { float = [64, 512] }", "hidden_width takes whole numbers >= 1"),
        ('sweep = 3\n[space]\n"train.epochs" = { int = [1, 2] }', "[sweep] and [space] must be tables"),
        ('"depth" = { int = [1, 2] }', "depth is not model.KEY, train.KEY, hidden_layers or hidden_width"),
        ("", "[space] searches nothing (a training config is not a space)"),
        (
            '[sweep]\ntrials = "many"\n[space]\n"train.epochs" = { int = [1, 2] }',
            "[sweep] trials must be a whole number >= 1, not 'many'",
        ),
        (
            '[sweep]\ntrials = 0\n[space]\n"train.epochs" = { int = [1, 2] }',
            "[sweep] trials must be a whole number >= 1",
        ),
        (
            '[sweep]\nprune_after = 0\n[space]\n"train.epochs" = { int = [1, 2] }',
            "[sweep] prune_after must be",
        ),
        (
            '[sweep]\ntrails = 2\n[space]\n"train.epochs" = { int = [1, 2] }',
            "[sweep] takes trials and prune_after, not trails",
        ),
        (
            '[spaces]\n"train.epochs" = { int = [1, 2] }',
            "a space file holds a [sweep] table and a [space] table only, not spaces",
        ),
    ],
)
def test_a_space_file_is_checked_before_anything_is_made(text, said, tmp_path, capsys):
    """Mistakes in a space file gave tracebacks (low > high, log from 0, an empty choice, trials = 0), were
    ignored (trails =, [spaces]: 20 identical trials), or failed at the trial that drew the value, leaving a
    study that refused the fix."""
    bad = tmp_path / "bad.toml"
    bad.write_text(text if text.startswith(("[", "sweep =")) else f"[space]\n{text}\n")
    assert (
        main(
            ["sweep", "--space", str(bad), "--out", str(tmp_path / "s"), "--set", "train.train_samples=2000"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"sweep space {bad}: {said}" in err and "fix it there" in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()


def test_a_space_is_checked_only_where_it_searches_and_the_base_config_for_itself(tmp_path):
    from mnist_mlp.config import load_config
    from mnist_mlp.space import load_space

    path = tmp_path / "space.toml"
    path.write_text(
        '[space]\n"train.batch_size" = { choice = [128, 4096] }\n"train.epochs" = { int = [1, 2] }\n'
    )
    small = load_config(None, ["train.train_samples=2000"])
    with pytest.raises(UserError, match="train.batch_size value 4096"):
        load_space(path, small)
    assert load_space(path, small, ["train.batch_size"]).params  # --set train.batch_size=128 fixes it
    with pytest.raises(
        UserError
    ) as error:  # the base's own problem (trials hold out 10,000 images), said as such
        load_space(path, load_config(None, ["train.train_samples=55000"]))
    assert "train.train_samples 55000 is more than the 50,000" in str(error.value)
    assert "sweep space" not in str(error.value)


def test_sweep_errors(tmp_path, capsys):
    assert main(["sweep", "--out", str(tmp_path / "none"), "--report"]) == 2
    assert (
        f"no sweep has run in {tmp_path / 'none'} (no study.db there); start one with `mnist-mlp sweep --out "
        f"{tmp_path / 'none'}`"
        in capsys.readouterr().err
        and not (tmp_path / "none").exists()
    )
    assert (
        main(
            ["sweep", "--storage", "postgresql://nobody@127.0.0.1:1/none", "--out", str(tmp_path / "p" / "s")]
        )
        == 2
    )
    assert "cannot open the study" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()  # the folders it made for the sweep, removed again


def test_a_sweep_in_the_working_folder_is_named_after_it(tmp_path, monkeypatch):
    """`--out .` (or '') made a study called '' (and `--report` looked for that)."""

    (tmp_path / "my sweeps").mkdir()
    monkeypatch.chdir(tmp_path / "my sweeps")
    assert studies.named(".") == studies.named("") == "my sweeps" and studies.named("runs/sweep") == "sweep"
    assert studies.study_folder(".", None) == Path(".") and studies.study_folder(".", "my sweeps") == Path(
        "."
    )


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on a free local port, in a temporary data folder."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert bins, "PostgreSQL server missing: `make test` installs it (apt-get install postgresql)"
    folder = Path(tempfile.mkdtemp(prefix="mnist-mlp-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *cmd: subprocess.run([*as_postgres, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(f"{bins[-1]}/initdb", "-D", str(folder / "data"), "-U", "postgres", "-A", "trust")
    run(
        f"{bins[-1]}/pg_ctl",
        "-D",
        str(folder / "data"),
        "-l",
        str(folder / "log"),
        "-w",
        "start",
        "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
    )
    try:
        run(f"{bins[-1]}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "sweeps")
        yield f"postgresql://postgres@127.0.0.1:{port}/sweeps"
    finally:
        run(f"{bins[-1]}/pg_ctl", "-D", str(folder / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(postgres, space, mnist_dir, tmp_path):
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_mlp",
                "sweep",
                "--space",
                str(space),
                "--study",
                "shared",
                "--storage",
                postgres,
                "--trials",
                "8",
                "--out",
                str(tmp_path / f"worker-{i}"),
                *SMALL,
                "--cache-dir",
                str(mnist_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in (0, 1)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=postgres)
    finished = study.get_trials(states=FINISHED)
    numbers = [t.number for t in finished]
    assert len(finished) == 8 and len(set(numbers)) == 8  # exactly the requested trials, none repeated
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))  # none left hanging (lost)
    folders = {
        i: tmp_path / f"worker-{i}" / "shared" for i in (0, 1)
    }  # a study not named after --out: its folder
    ran_by = {i: {int(p.name.split("-")[1]) for p in folders[i].glob("trial-*")} for i in (0, 1)}
    assert ran_by[0] and ran_by[1], "both workers ran trials"
    over = {
        t.number
        for t in study.get_trials(states=(optuna.trial.TrialState.FAIL,))
        if t.user_attrs.get("over_budget")
    }
    assert ran_by[0] | ran_by[1] == set(numbers) and not ran_by[0] & ran_by[1]  # each trial run once
    for number in over:  # a trial started past the budget (workers raced) trains nothing
        assert not any((folders[i] / f"trial-{number:04d}").exists() for i in (0, 1))
    for i, found in ran_by.items():  # each finished trial has its run directory where its worker ran it
        for number in found:
            assert (folders[i] / f"trial-{number:04d}" / "metrics.json").is_file()


RACE = """
import sys, time, types
from pathlib import Path
from mnist_mlp.studies import open_study
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
open_study(Path("."), "race", sys.argv[1], types.SimpleNamespace(prune_after=1), 0)
"""


@pytest.mark.slow
def test_workers_starting_together_on_a_fresh_postgresql_database_all_open_the_study(postgres):
    """The first workers on an empty database race to create Optuna's tables and the study; every one of
    them must open it, whichever process wins."""
    import psycopg

    server = postgres.rsplit("/", 1)[0]
    for round_ in range(3):
        with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE race{round_}")
        start = f"{time.time() + 4:.3f}"
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", RACE, f"{server}/race{round_}", start],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [w.communicate(timeout=120)[0] for w in workers]
        assert [w.returncode for w in workers] == [0] * 4, outputs
        assert len(optuna.get_all_study_names(f"{server}/race{round_}")) == 1


def test_a_table_created_by_another_worker_mid_open_is_retried(tmp_path, monkeypatch):
    """PostgreSQL reports the creation race as ProgrammingError too (DuplicateTable, or a table not there
    yet)."""
    import types

    import sqlalchemy

    real, calls = optuna.storages.RDBStorage, []

    class Flaky(real):
        def __init__(self, url, **kwargs):
            calls.append(url)
            if len(calls) == 1:
                raise sqlalchemy.exc.ProgrammingError(
                    "CREATE TABLE studies", {}, Exception("relation exists")
                )
            super().__init__(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", Flaky)
    study = studies.open_study(tmp_path, "s", None, types.SimpleNamespace(prune_after=1), 0)
    assert study.study_name == "s" and len(calls) == 2


def _heartbeats(db: Path) -> int:
    """Heartbeats recorded in a study's SQLite file (Optuna's table; a trial without one never turns
    stale)."""
    if not db.exists():
        return 0
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(db)) as connection:
        try:
            return connection.execute("SELECT count(*) FROM trial_heartbeats").fetchone()[0]
        except sqlite3.OperationalError:  # the tables are not there yet
            return 0


def test_a_killed_workers_trial_is_failed_and_another_worker_finishes_the_study(
    space, mnist_dir, tmp_path, monkeypatch, capsys
):

    out = tmp_path / "killed"
    args = _sweep_args(space, out, mnist_dir, trials=2, sets=SMALL)
    worker = subprocess.Popen(
        [sys.executable, "-m", "mnist_mlp", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not _heartbeats(out / "study.db"):  # the worker is inside its first trial and has said so once
        assert worker.poll() is None and time.time() < deadline, "the worker never started a trial"
        time.sleep(0.02)
    worker.kill()
    worker.wait()
    killed = time.time()
    assert [t.state for t in _study(out).trials] == [
        optuna.trial.TrialState.RUNNING
    ]  # left by the dead worker
    # Within the grace period its trial counts as running: this worker runs one trial, then leaves the last
    # place (and re-training the best) to it, and says what to do.
    assert main(args) == 0
    assert "0 still running elsewhere" in capsys.readouterr().out and not (out / "best").exists()
    assert len(_study(out).get_trials(states=FINISHED)) == 1
    monkeypatch.setattr(studies, "GRACE_S", 1)  # instead of a minute
    time.sleep(max(0.0, killed + 3 - time.time()))  # past it, at the database clock's one-second resolution
    assert main(args) == 0
    study = _study(out)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert len(study.get_trials(states=FINISHED)) == 2  # its place was run again
    assert (out / "best" / "metrics.json").is_file()
    assert not (out / "trial-0000").exists()  # the killed worker's half run: ours, of no use, removed


def test_a_failed_trials_half_run_is_removed_if_ours(tmp_path):
    """A worker killed mid-trial left its trial-0001/ for good (the trial failed, its run never finished)."""
    from mnist_mlp import runs

    with folders.claim(tmp_path / "trial-0001"):
        (tmp_path / "trial-0001" / runs.PARTIAL_HISTORY).write_text("epoch,loss\n")
    with folders.claim(tmp_path / "trial-0002"):
        (tmp_path / "trial-0002" / "notes.txt").write_text("a user's")
    (tmp_path / "trial-0003").mkdir()
    (tmp_path / "trial-0003" / "x.txt").write_text("not ours")
    for name in ("trial-0001", "trial-0002", "trial-0003", "trial-0004"):
        folders.remove_run(tmp_path / name)
    assert not (tmp_path / "trial-0001").exists()
    assert sorted(p.name for p in (tmp_path / "trial-0002").iterdir()) == [
        runs.MARKER,
        "notes.txt",
    ]  # the user's kept
    assert (tmp_path / "trial-0003" / "x.txt").is_file() and not (tmp_path / "trial-0004").exists()


def test_the_next_step_names_the_study_and_storage(tmp_path):
    from mnist_mlp import sweep

    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.9))
    assert "best trial 0: val_accuracy 0.9000" in sweep.describe(sweep.SweepResult(study, None))
    assert advice.sweep_report(tmp_path / "my sweep", "mlp-2026", "postgresql://u@db/s") == (
        f"mnist-mlp sweep --out '{tmp_path / 'my sweep'}' --study mlp-2026 "
        "--storage postgresql://u@db/s --report"
    )


def test_a_key_fixed_by_set_is_not_searched(space, synthetic_dir, tmp_path, capsys):
    out = tmp_path / "fixed"
    assert main(_sweep_args(space, out, synthetic_dir, trials=2)) == 0
    assert (
        "Not searched (fixed by --set): hidden_layers, hidden_width, train.epochs" in capsys.readouterr().out
    )
    study = _study(out)
    for trial in study.get_trials(states=FINISHED):
        assert set(trial.params) == {"train.learning_rate"}
        run = runs.load_run(out / f"trial-{trial.number:04d}")
        assert run.config.train.epochs == 1 and run.config.model.hidden_units == (16,)
        assert "hidden_units = [\n    16,\n]" in trial.user_attrs["config"]  # recorded as it ran
    # the best is re-trained from the config its trial recorded, whatever --set a later command gives
    assert (
        runs.load_run(out / "best").config
        == runs.load_run(out / f"trial-{study.best_trial.number:04d}").config
    )


def test_a_renamed_sweep_folder_is_not_started_over(space, synthetic_dir, tmp_path, capsys):
    """A copied or renamed sweep folder started a new study of the new name in the same file, training over
    the old study's trial runs and best/."""
    assert main(_sweep_args(space, tmp_path / "s1", synthetic_dir)) == 0
    shutil.copytree(tmp_path / "s1", tmp_path / "moved")
    trained = (tmp_path / "moved" / "trial-0000" / runs.MODEL).read_bytes()
    capsys.readouterr()
    assert main(_sweep_args(space, tmp_path / "moved", synthetic_dir)) == 2
    assert (
        f"{tmp_path / 'moved' / 'study.db'} holds study s1, not moved, and its trial runs are here (was the "
        f"folder renamed or copied?); continue it in a folder of its name, e.g. `mv {tmp_path / 'moved'} "
        f"{tmp_path / 's1'}` if there is none, or choose another --out"
    ) in capsys.readouterr().err
    assert main(["sweep", "--out", str(tmp_path / "moved"), "--report"]) == 2
    err = capsys.readouterr().err
    assert "no study moved in " in err and err.endswith("; it holds s1: give --study s1\n"), err
    assert (tmp_path / "moved" / "trial-0000" / runs.MODEL).read_bytes() == trained
    assert optuna.study.get_all_study_names(f"sqlite:///{tmp_path / 'moved' / 'study.db'}") == ["s1"]
    # Report's advice
    assert main(["sweep", "--out", str(tmp_path / "moved"), "--study", "s1", "--report"]) == 0
    shutil.rmtree(tmp_path / "moved" / "s1")
    (tmp_path / "moved" / "s1").write_text("in the way of the plots")  # as a read-only sweep folder would be
    capsys.readouterr()
    assert main(["sweep", "--out", str(tmp_path / "moved"), "--study", "s1", "--report"]) == 2
    out, err = capsys.readouterr()
    # The leaderboard all the same
    assert "study s1: 1 finished" in out and "rank  trial  val_accuracy" in out
    assert err.startswith(
        f"mnist-mlp: error: cannot write the plots in {tmp_path / 'moved' / 's1'} (File exists)"
    )
    (tmp_path / "moved" / "s1").unlink()
    shutil.rmtree(tmp_path / "s1")
    # The sweep's advice, followed: the study goes on in its folder
    (tmp_path / "moved").rename(tmp_path / "s1")
    assert main(_sweep_args(space, tmp_path / "s1", synthetic_dir, trials=2)) == 0
    assert len(_study(tmp_path / "s1").trials) == 2 and (tmp_path / "s1" / "trial-0001").is_dir()


def test_a_users_folder_where_a_trial_goes_is_named_with_advice_for_a_sweep(
    space, synthetic_dir, tmp_path, capsys
):
    """train's advice (another --out, e.g. mine/trial-0000-2) would start a new study inside the old one."""
    (tmp_path / "mine" / "trial-0000").mkdir(parents=True)
    (tmp_path / "mine" / "trial-0000" / "notes.txt").write_text("my own")
    assert main(_sweep_args(space, tmp_path / "mine", synthetic_dir)) == 2
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'mine' / 'trial-0000'} is in the sweep's way" in err and "move or rename it" in err
    ), err
    assert (
        "trial-0000-2" not in err and (tmp_path / "mine" / "trial-0000" / "notes.txt").read_text() == "my own"
    )


@pytest.mark.parametrize(
    "make, said",
    [
        (lambda db: db.mkdir(), "it is a folder"),
        (lambda db: db.write_text("a user's notes"), "it is not an SQLite file"),
    ],
)
def test_a_study_file_that_cannot_be_one_is_named_with_what_is_wrong(make, said, tmp_path, capsys):
    (tmp_path / "s").mkdir()
    make(tmp_path / "s" / "study.db")
    assert main(["sweep", "--out", str(tmp_path / "s"), "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        f"cannot open the sweep's {tmp_path / 's' / 'study.db'}: {said} (" in err and "--storage" not in err
    ), err


def test_best_is_re_trained_only_when_it_is_not_the_best_trials_config(tmp_path, synthetic_dir):
    """A continued study can find a new best; best/ is compared with the best trial's config, backend
    aside."""
    from mnist_mlp.config import Config, load_config

    assert (
        main(
            [
                "train",
                "--train-samples",
                "512",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "best"),
                "--cache-dir",
                str(synthetic_dir),
            ]
        )
        == 0
    )
    trained = load_config(None, ["train.train_samples=512", "train.epochs=1"])
    assert studies.same_config(tmp_path / "best", trained)
    assert not studies.same_config(
        tmp_path / "best", load_config(None, ["train.train_samples=512", "train.epochs=2"])
    )
    assert not studies.same_config(tmp_path / "nothing", Config())
    auto = [
        "train.train_samples=512",
        "train.epochs=1",
        "train.precision=auto",
    ]  # a sweep of record-cpu re-trained
    assert (
        main(
            [
                "train",
                "--set",
                auto[2],
                "--train-samples",
                "512",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "auto"),
                "--cache-dir",
                str(synthetic_dir),
            ]
        )
        == 0
    )  # its best at every run: config.toml records auto's choice
    assert studies.same_config(tmp_path / "auto", load_config(None, auto))
    assert not studies.same_config(
        tmp_path / "best",
        load_config(None, ["train.train_samples=512", "train.epochs=1", "train.precision=bfloat16"]),
    )


@pytest.mark.slow
def test_a_study_is_continued_only_with_the_settings_it_started_with(space, synthetic_dir, tmp_path, capsys):
    """Trials of other settings would be ranked (and sampled from) as if alike; a new study name is the
    way."""
    out, common = tmp_path / "settings", ["--space", str(space), "--cache-dir", str(synthetic_dir)]
    first = ["--set", "train.train_samples=512", "--set", "model.hidden_units=[16]"]
    assert (
        main(["sweep", *common, "--out", str(out), "--trials", "1", *first, "--set", "train.epochs=1"]) == 0
    )
    refused = run_cli("sweep", *common, "--out", str(out), "--trials", "2", *first, "--set", "train.epochs=2")
    assert refused.returncode == 2 and refused.stderr == (  # one line: no Optuna log or warning before it
        "mnist-mlp: error: study settings was started with other settings (train.epochs was 1, now 2); "
        "continue it "
        "with its own --config, --set and --space, or start another with --study NAME or another --out\n"
    )
    narrower = tmp_path / "narrower.toml"
    narrower.write_text(TINY.replace('"train.learning_rate" = { choice = [0.00001, 0.003] }', ""))
    assert (
        main(
            [
                "sweep",
                *common,
                "--space",
                str(narrower),
                "--out",
                str(out),
                "--trials",
                "2",
                *first,
                "--set",
                "train.epochs=1",
            ]
        )
        == 2
    )
    assert (
        "started with other settings (the searched space (--space), train.learning_rate was searched, "
        "now 0.001)" in capsys.readouterr().err
    )
    assert len(_study(out).trials) == 1  # nothing ran
    # the advice works: another study in the same folder keeps its runs apart, and the first continues
    assert (
        main(
            [
                "sweep",
                *common,
                "--out",
                str(out),
                "--study",
                "two",
                "--trials",
                "1",
                *first,
                "--set",
                "train.epochs=2",
            ]
        )
        == 0
    )
    assert runs.load_run(out / "two" / "trial-0000").config.train.epochs == 2
    assert runs.load_run(out / "trial-0000").config.train.epochs == 1 and (out / "best").is_dir()
    assert (
        main(
            [
                "sweep",
                *common,
                "--out",
                str(out),
                "--trials",
                "2",
                *first,
                "--set",
                "train.epochs=1",
                "--set",
                "train.checkpoint_seconds=0",
            ]
        )
        == 0
    )
    assert len(_study(out).get_trials(states=FINISHED)) == 2
    assert main(["sweep", *common, "--out", str(out), "--study", "../elsewhere"]) == 2
    assert "names a folder in --out too" in capsys.readouterr().err and not (tmp_path / "elsewhere").exists()
    # Refused before made
    assert "../elsewhere" not in optuna.get_all_study_names(f"sqlite:///{out / 'study.db'}")


def test_a_study_whose_first_trial_failed_takes_the_settings_that_fix_it(
    space, synthetic_dir, tmp_path, capsys
):
    """The first command's error advises another --set; following it must not be refused as other settings."""
    out, common = (
        tmp_path / "fixed",
        _sweep_args(space, tmp_path / "fixed", synthetic_dir),
    )
    assert main([*common, "--set", "train.batch_size=1000"]) == 2
    assert "--set train.batch_size=" in capsys.readouterr().err
    assert main([*common, "--set", "train.batch_size=256"]) == 0
    assert _study(out).user_attrs["settings"]["train.batch_size"] == 256


def test_settings_newer_than_a_study_and_a_fixed_layer_count_or_width():
    from mnist_mlp.config import load_config

    layers_only = SweepSpace(1, 1, {"hidden_layers": {"int": [1, 2]}})
    wide, narrow = (
        studies.shared_settings(load_config(None, [f"model.hidden_units={u}"]), layers_only)
        for u in ("[512]", "[32,32]")
    )
    assert wide["hidden_width"] == 512 and narrow["hidden_width"] == 32 and "model.hidden_units" not in wide
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.9))
    # An older version's
    study.set_user_attr("settings", {k: v for k, v in wide.items() if k != "train.precision"})
    studies.same_settings(study, wide)  # the setting it lacks is at its default: the same study
    with pytest.raises(UserError, match=r"\(hidden_width was 512, now 32\)"):
        studies.same_settings(study, narrow)
    with pytest.raises(UserError, match='train.precision was "float32", now "bfloat16"'):
        studies.same_settings(study, {**wide, "train.precision": "bfloat16"})


def test_an_interrupted_sweep_says_how_to_go_on_and_leaves_no_half_trial(
    space, synthetic_dir, tmp_path, capsys, monkeypatch
):
    from mnist_mlp import sweep

    out = tmp_path / "stopped"
    argv = _sweep_args(space, out, synthetic_dir)
    real = sweep.train

    def ctrl_c_mid_trial(config, run_dir, *args, **kwargs):
        real(config, run_dir, *args, **kwargs)  # a run's files, as a trial has when Ctrl-C comes
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(sweep, "train", ctrl_c_mid_trial)
        assert main(argv) == 130
    assert capsys.readouterr().err == (
        "mnist-mlp: interrupted; the same command continues the study (the "
        "unfinished trial counts as failed and another takes its place)\n"
    )
    assert not (out / "trial-0000").exists()  # ours, and of no use to the study
    assert main(argv) == 0  # the advice, followed
    assert [t.state for t in _study(out).trials] == [
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.COMPLETE,
    ]
    capsys.readouterr()

    def ctrl_c_in_best(config, run_dir, *args, **kwargs):
        if Path(run_dir).name == "best":
            raise KeyboardInterrupt
        return real(config, run_dir, *args, **kwargs)

    argv[argv.index("--trials") + 1] = "2"
    (out / "best").rename(tmp_path / "old-best")  # so that it is re-trained at the end
    with monkeypatch.context() as patch:
        patch.setattr(sweep, "train", ctrl_c_in_best)
        assert main(argv) == 130
    assert capsys.readouterr().err.endswith(
        "mnist-mlp: interrupted while re-training the best trial; the same command re-trains it\n"
    )  # not "another trial takes its place"
    assert main(argv) == 0 and (out / "best" / "metrics.json").is_file()  # the advice, followed


@pytest.mark.slow
def test_workers_starting_together_on_a_new_sqlite_file_all_open_the_study(tmp_path):
    """SQLite says the table already exists (an OperationalError) to the workers that lose the race."""
    for round_ in range(3):
        url, start = f"sqlite:///{tmp_path / f'race{round_}.db'}", time.time() + 3
        workers = [
            subprocess.Popen([sys.executable, "-c", RACE, url, str(start)], stderr=subprocess.PIPE, text=True)
            for _ in range(6)
        ]
        errors = [w.communicate(timeout=120)[1] for w in workers]
        assert [w.returncode for w in workers] == [0] * 6, errors


def test_a_worker_finding_best_being_re_trained_by_another_leaves_it_to_that_one(
    space, synthetic_dir, tmp_path, capsys
):
    """Two workers finishing the last trials together both went to re-train best/; one was refused 'in
    use'."""
    out = tmp_path / "together"
    argv = _sweep_args(space, out, synthetic_dir)
    assert main(argv) == 0
    shutil.rmtree(out / "best")
    with folders.claim(out / "best"):  # the other worker, re-training it
        assert main(argv) == 0
    assert "another worker is re-training it into" in capsys.readouterr().out


def test_the_default_space_is_the_shipped_one_whatever_is_in_the_working_folder(tmp_path, monkeypatch):
    """`mnist-mlp sweep` without --space took a sweep.toml in the working folder (a run's config.toml saved
    as sweep.toml, say), and its errors called that file "the shipped" example."""
    from mnist_mlp.presets import presets
    from mnist_mlp.space import load_space

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.toml").write_text("[train]\nepochs = 1\n")
    assert load_space() == load_space(presets()["sweep"])
    with pytest.raises(
        UserError, match=r"\[space\] table only, not train; fix it there \(an example: .*configs/sweep"
    ):
        load_space("sweep.toml")
