"""The Optuna study that a sweep's workers share, kept consistent: where it is stored, opening it while other
workers race to create it, a study per folder (a renamed folder is not a new study), the settings a
continued study must keep, and the trial places that workers take (no more trials than asked for)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import time
import warnings
from pathlib import Path

import optuna

from mnist_mlp import folders, outputs, runs
from mnist_mlp.config import Config, flat_config
from mnist_mlp.errors import UserError, pip_install
from mnist_mlp.space import LAYER_KEYS, SweepSpace

STUDY_DB = "study.db"  # the default SQLite storage, in the sweep folder
HEARTBEAT_S = 10  # a worker marks its running trial alive this often
GRACE_S = 60  # a running trial whose worker has been silent this long is failed and its place re-run
UNSHARED = {"train.validation", "train.checkpoint_seconds"}  # settings a continued study may change


# What a worker sees when another creates the same table, type or row at the same moment on PostgreSQL
# (a duplicate key: IntegrityError; DuplicateTable, or a table not yet there: ProgrammingError); on SQLite,
# an OperationalError saying the table already exists.
RACE_ERRORS = ("IntegrityError", "ProgrammingError")


class OverBudget(Exception):
    """This trial was started after the study already held its number of trials (workers raced)."""


def storage_url(sweep_dir: str | Path, storage: str | None) -> str:
    """The study's storage: the URL given, else the SQLite file in the sweep folder."""
    return storage or f"sqlite:///{(Path(sweep_dir) / STUDY_DB).resolve()}"


def open_study(
    sweep_dir: Path, study_name: str, storage: str | None, space: SweepSpace, seed: int
) -> optuna.Study:
    url = storage_url(sweep_dir, storage)
    where = url.split("@")[-1]
    # Heartbeats: one line out
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Workers starting together race to create the tables and the study; losers retry
    for attempt in range(5):
        try:
            # heartbeats: a trial whose worker was killed turns FAIL after the grace period, so it is re-run
            rdb = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
            study = optuna.create_study(
                study_name=study_name,
                storage=rdb,
                load_if_exists=True,
                direction="maximize",
                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=space.prune_after - 1),
            )
            # A process continuing a study draws afresh: seeded by how many trials it holds (the same seed
            # drew the same first trials again); on a shared server each worker by chance (workers starting
            # together drew alike, and machines share process ids).
            worker = secrets.randbits(31) if storage else 0
            study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials) + worker)
            return study
        except ImportError as e:
            raise UserError(
                f"the storage {url.split(':')[0]} needs a driver ({e}); for PostgreSQL: "
                f"{pip_install('mnist-mlp[postgres]')}"
            ) from None
        except Exception as e:  # sqlalchemy: unreachable or refused database, or the creation race
            error = type(e).__name__
            raced = error in RACE_ERRORS or any(
                text in str(e) for text in ("already exists", "database is locked")
            )
            if not raced and not isinstance(e, optuna.exceptions.DuplicatedStudyError):
                # Our SQLite file in --out: say what is wrong with it, not with a --storage
                if storage is None:
                    raise UserError(
                        f"cannot open the sweep's {_sqlite_problem(sweep_dir / STUDY_DB)} ({error}); "
                        "choose another --out"
                    ) from None
                raise UserError(
                    f"cannot open the study at {where} ({error}); check the --storage URL"
                ) from None
            time.sleep(0.5 * (attempt + 1))
    raise UserError(f"could not create or load study {study_name} at {where} ({error}); try again")


def _other_studies(sweep_dir: Path, name: str) -> list[str]:
    """The studies in the sweep folder's SQLite file, if it has some and not `name`."""
    if not (sweep_dir / STUDY_DB).is_file():
        return []
    try:
        names = optuna.study.get_all_study_names(storage=storage_url(sweep_dir, None))
    except Exception:  # noqa: BLE001  not a study file: open_study says what is wrong with it
        return []
    return [] if name in names else names


def _sqlite_problem(db: Path) -> str:
    """What keeps SQLite from opening or writing `db`, as a phrase naming it."""
    if db.is_dir():
        return f"{db}: it is a folder"
    if db.exists() and not os.access(db, os.R_OK | os.W_OK):
        return f"{db}: it cannot be written"
    if not os.access(db.parent, os.W_OK | os.X_OK):
        return f"{db}: its folder cannot be written"
    if db.exists():
        with open(db, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                return f"{db}: it is not an SQLite file"
    return str(db)


def named(sweep_dir: str | Path) -> str:
    """The study a sweep folder holds by default: the folder's name (`--out .` names the folder it is in; it
    was a study called '')."""
    return Path(os.path.abspath(sweep_dir)).name or "sweep"


def study_folder(sweep_dir: str | Path, study_name: str | None) -> Path:
    """Where a study's trial runs, best/ and plots go: --out for the study named after it (the default), else
    a folder of the study's name inside --out (two studies in one folder replaced each other's trial-0000)."""
    sweep_dir = Path(sweep_dir)
    if study_name is None or study_name == named(sweep_dir):
        return sweep_dir
    if not re.fullmatch(r"\w[\w.-]*", study_name):
        raise UserError(
            f"--study {study_name!r} names a folder in --out too: use letters, digits, '-', '_', '.'"
        )
    return sweep_dir / study_name


SEARCHED = "searched"  # how a searched key shows where a setting's value would


def shared_settings(base: Config, space: SweepSpace) -> dict:
    """What a study's trials share: the searched space and every setting it does not search, as "section.key"
    -> value (not the backend, as in same_config, nor how often checkpoints are saved; validation is always
    the held-out split). Where the space searches one of hidden_layers and hidden_width, the other is a
    setting."""
    flat = {
        key: list(value) if isinstance(value, tuple) else value for key, value in flat_config(base).items()
    }
    del flat["backend"]  # where a worker trains, not what
    if set(LAYER_KEYS) & set(space.params):
        units = flat.pop("model.hidden_units")
        flat.update({"hidden_layers": len(units), "hidden_width": units[0]})
    return {"space": space.params, **{k: v for k, v in flat.items() if k not in set(space.params) | UNSHARED}}


def same_settings(study: optuna.Study, settings: dict) -> None:
    """A study is continued with the settings it started with: trials run otherwise would be ranked together
    (and fed to the sampler) as if they had. A study with no trial begun takes this command's. A setting newer
    than the study's record is compared with its default."""
    started = study.user_attrs.get("settings")
    begun = study.get_trials(
        deepcopy=False,
        states=(
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.RUNNING,
        ),
    )
    if started is None or not begun:
        study.set_user_attr("settings", settings)
        return
    searched = set(started["space"]) | (
        {"model.hidden_units"} if set(LAYER_KEYS) & set(started["space"]) else set()
    )
    default = shared_settings(Config(), SweepSpace(0, 0, {}))

    def then(key: str):
        if key in started or key in searched:
            return started.get(key, SEARCHED)
        units = started.get("model.hidden_units")  # hidden_layers or hidden_width, fixed then by hidden_units
        if key in LAYER_KEYS and units:
            return len(units) if key == "hidden_layers" else units[0]
        return default.get(key)

    changed = [key for key, value in settings.items() if then(key) != value]
    if changed:

        def show(value) -> str:
            return value if value is SEARCHED else json.dumps(value)

        said = ", ".join(
            "the searched space (--space)"
            if k == "space"
            else f"{k} was {show(then(k))}, now {show(settings[k])}"
            for k in changed
        )
        raise UserError(
            f"study {study.study_name} was started with other settings ({said}); continue it with its "
            "own --config, --set and --space, or start another with --study NAME or another --out"
        )


def same_config(run_dir: Path, config: Config) -> bool:
    """Whether the run in `run_dir` trained `config` (but for what train resolves and records: the backend,
    and the precision "auto" chose)."""
    try:
        trained = runs.load_run(run_dir).config
    except UserError:
        return False
    precision = config.train.precision if config.train.precision == "auto" else trained.train.precision
    return (
        dataclasses.replace(
            trained, backend=config.backend, train=dataclasses.replace(trained.train, precision=precision)
        )
        == config
    )


def open_here(
    sweep_dir: Path, study_name: str | None, storage: str | None, space: SweepSpace, seed: int
) -> tuple[optuna.Study, Path]:
    """The study of `sweep_dir` (made where missing) and the folder its runs go in. A UserError, leaving no
    folder it made, where the study cannot be opened, and where the folder holds another study's trial runs
    (renamed or copied: a new study there would train over them)."""
    made = [p for p in (sweep_dir, *sweep_dir.parents) if not p.exists()]
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot use {sweep_dir} for the sweep ({e.strerror}); choose another --out"
        ) from None
    folder, name = study_folder(sweep_dir, study_name), study_name or named(sweep_dir)
    others = _other_studies(sweep_dir, name) if storage is None and folder == sweep_dir else []
    if others and any(sweep_dir.glob("trial-*")):
        move = f"mv {outputs.shell_path(sweep_dir)} {outputs.shell_path(sweep_dir.parent / others[0])}"
        raise UserError(
            f"{sweep_dir / STUDY_DB} holds study {', '.join(others)}, not {name}, and its trial runs are "
            f"here (was the folder renamed or copied?); continue it in a folder of its name, e.g. `{move}` "
            "if there is none, or choose another --out"
        )
    try:
        return open_study(sweep_dir, name, storage, space, seed), folder
    except UserError:  # a wrong --storage left an empty runs/sweep/ behind
        for folder_made in made:
            with contextlib.suppress(OSError):
                folder_made.rmdir()
        raise


DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def take_place(study: optuna.Study, trial: optuna.Trial, total: int) -> None:
    """OverBudget if `total` trials were begun before this one: another worker took the last place first."""
    begun = DONE + (optuna.trial.TrialState.RUNNING,)
    if len([t for t in study.get_trials(deepcopy=False, states=begun) if t.number < trial.number]) >= total:
        trial.set_user_attr("over_budget", True)
        raise OverBudget()


def run_trials(study: optuna.Study, objective, total: int) -> None:
    """`objective`'s trials, one at a time, until the study holds `total` finished or pruned ones (every
    worker's counted) or this worker's trial found no place left; then the runs of failed trials (a killed
    worker's) are removed."""
    over = []

    def counted(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except OverBudget:
            over.append(trial.number)
            raise

    while not over and len(study.get_trials(deepcopy=False, states=DONE)) < total:
        study.optimize(counted, n_trials=1, catch=(OverBudget,))


def remove_failed(study: optuna.Study, folder: Path) -> None:
    """The run folders of failed trials (a killed worker's, say): theirs is no result."""
    for failed in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        folders.remove_run(folder / f"trial-{failed.number:04d}")


def running(study: optuna.Study) -> tuple[int, ...]:
    """Trials still running on other workers (or on one that was stopped, until its heartbeat runs out)."""
    return tuple(
        t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    )
