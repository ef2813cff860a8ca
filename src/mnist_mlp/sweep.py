"""Hyperparameter sweeps on Optuna: trials are normal runs validated on held-out training images, pruned
on per-epoch validation accuracy; the storage URL (SQLite file by default, PostgreSQL across machines)
decides who shares the study. The best trial is re-trained and scored on the test set once."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import optuna

from mnist_mlp import outputs, runs
from mnist_mlp.backend import BackendChoice
from mnist_mlp.config import Config, config_from_toml, config_to_toml
from mnist_mlp.errors import Interrupted, UserError, pip_install
from mnist_mlp.plots import save_axes
from mnist_mlp.space import LAYER_KEYS, SweepSpace, load_space, with_values, without
from mnist_mlp.train import TrainResult, train

STUDY_DB = "study.db"  # the default SQLite storage, in the sweep folder
HEARTBEAT_S = 10  # a worker marks its running trial alive this often
GRACE_S = 60  # a running trial whose worker has been silent this long is failed and its place re-run
UNSHARED = {"train.validation", "train.checkpoint_seconds"}  # settings a continued study may change


@dataclass(frozen=True)
class SweepResult:
    study: optuna.Study
    best: TrainResult | None  # the best trial re-trained and scored on the test set here; else None
    running: tuple[int, ...] = ()  # trials still running on other workers (or on one that was stopped)


def suggest(trial: optuna.Trial, space: SweepSpace, base: Config) -> Config:
    """The base config with this trial's choices; validation always on held-out training images."""
    values = {}
    for name, spec in space.params.items():
        if "int" in spec:
            values[name] = trial.suggest_int(name, *spec["int"])
        elif "float" in spec:
            values[name] = trial.suggest_float(name, *spec["float"], log=bool(spec.get("log")))
        else:
            values[name] = trial.suggest_categorical(name, spec["choice"])
    return with_values(values, base)


class PruneOnValidation(keras.callbacks.Callback):
    """Report each epoch's val_accuracy to Optuna; stop training when the trial should be pruned."""

    def __init__(self, trial: optuna.Trial):
        super().__init__()
        self.trial, self.pruned, self.last = trial, False, float("nan")

    def on_epoch_end(self, epoch, logs=None):
        self.last = float(logs["val_accuracy"])
        self.trial.report(self.last, epoch)
        if self.trial.should_prune():
            self.pruned = True
            self.model.stop_training = True


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
    for attempt in range(
        5
    ):  # workers starting together race to create the tables and the study; losers retry
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
                if (
                    storage is None
                ):  # our SQLite file in --out: say what is wrong with it, not with a --storage
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


def sweep(
    space: SweepSpace | str | Path | None,
    sweep_dir: str | Path,
    backend: BackendChoice,
    *,
    base: Config | None = None,
    study_name: str | None = None,
    storage: str | None = None,
    trials: int | None = None,
    data_dir: str | Path | None = None,
    fixed: list[str] = (),
    log=lambda text: None,
) -> SweepResult:
    """Run trials until the study holds `trials` finished-or-pruned ones (counting every worker's), then
    re-train the best as best/ in the study's folder (study_folder) and score it on the test set. Keys in
    `fixed` (given by --set) keep the base config's value instead of being searched."""
    if trials is not None and trials < 1:
        raise UserError(f"--trials {trials} must be >= 1")
    base = base or Config()
    # A file, or a preset
    space = space if isinstance(space, SweepSpace) else load_space(space, base, list(fixed))
    searched = without(space, list(fixed))
    if searched.params != space.params:
        log(
            f"Not searched (fixed by --set): {', '.join(k for k in space.params if k not in searched.params)}"
        )
    space = searched
    sweep_dir = Path(sweep_dir)
    made = [
        p for p in (sweep_dir, *sweep_dir.parents) if not p.exists()
    ]  # removed again if the study fails to open
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot use {sweep_dir} for the sweep ({e.strerror}); choose another --out"
        ) from None
    total = trials or space.trials
    folder, settings = (
        study_folder(sweep_dir, study_name),
        _settings(base, space),
    )  # a bad name: before the study
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial's end is said by `log`, not a traceback
    name = study_name or named(sweep_dir)
    others = _other_studies(sweep_dir, name) if storage is None and folder == sweep_dir else []
    if others and any(
        sweep_dir.glob("trial-*")
    ):  # a renamed sweep folder: a new study here would train over its runs
        raise UserError(
            f"{sweep_dir / STUDY_DB} holds study {', '.join(others)}, not {name}, and its trial runs "
            f"are here (was the folder renamed or copied?); continue it in a folder of its name, e.g. "
            f"`mv {outputs.shell_path(sweep_dir)} {outputs.shell_path(sweep_dir.parent / others[0])}` if "
            "there "
            "is none, or choose another --out"
        )
    try:
        study = open_study(sweep_dir, name, storage, space, base.train.seed)
    except UserError:  # a wrong --storage left an empty runs/sweep/ behind
        for folder_made in made:
            with contextlib.suppress(OSError):
                folder_made.rmdir()
        raise
    _same_settings(study, settings)
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    over = []

    def objective(trial: optuna.Trial) -> float:
        # Again: workers starting together each recorded theirs, the last stays
        _same_settings(study, settings)
        counted = states + (optuna.trial.TrialState.RUNNING,)
        ahead = [t for t in study.get_trials(deepcopy=False, states=counted) if t.number < trial.number]
        if len(ahead) >= total:  # another worker took the last place first
            over.append(trial.number)
            trial.set_user_attr("over_budget", True)
            raise OverBudget()
        config = suggest(trial, space, base)
        trial.set_user_attr("config", config_to_toml(config))  # the best is re-trained from this, as it ran
        pruning, run_dir = PruneOnValidation(trial), folder / f"trial-{trial.number:04d}"
        _not_in_the_way(run_dir)
        try:
            train(
                config,
                run_dir,
                backend,
                overwrite=True,
                data_dir=data_dir,
                verbose=0,
                callbacks=(pruning,),
                score_test=False,
            )
        except KeyboardInterrupt:  # the trial is failed, so its half-trained run is of no use: ours, removed
            runs.remove_run(run_dir)
            raise
        log(f"trial {trial.number}: val_accuracy {pruning.last:.4f}{' (pruned)' if pruning.pruned else ''}")
        if pruning.pruned:
            raise optuna.TrialPruned()
        return pruning.last

    while not over and len(study.get_trials(deepcopy=False, states=states)) < total:
        study.optimize(objective, n_trials=1, catch=(OverBudget,))
    for failed in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.FAIL,)
    ):  # a killed worker's, say
        runs.remove_run(folder / f"trial-{failed.number:04d}")
    running = tuple(
        t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    )
    if running:
        return SweepResult(study, None, running)  # the worker that finishes the last trial re-trains the best
    best_dir = folder / "best"
    recorded = study.best_trial.user_attrs.get("config")  # absent in studies from before it was recorded
    best = (
        config_from_toml(recorded)
        if recorded
        else suggest(optuna.trial.FixedTrial(study.best_params), space, base)
    )
    if (best_dir / runs.METRICS).exists() and _same_config(best_dir, best):
        return SweepResult(study, None)  # already re-trained (a continued study may have found a better one)
    _not_in_the_way(best_dir)
    log(
        f"re-training the best trial ({study.best_trial.number}, val_accuracy {study.best_value:.4f}) into "
        f"{best_dir}"
    )
    try:
        return SweepResult(
            study, train(best, best_dir, backend, overwrite=True, data_dir=data_dir, verbose=0)
        )
    except KeyboardInterrupt:  # the trials are done: only this is left to do
        raise Interrupted(
            "interrupted while re-training the best trial; the same command re-trains it"
        ) from None
    except UserError:
        if runs.in_use(best_dir):  # a worker that finished at the same moment is re-training it
            log(f"another worker is re-training it into {best_dir}")
            return SweepResult(study, None)
        raise


def named(sweep_dir: str | Path) -> str:
    """The study a sweep folder holds by default: the folder's name (`--out .` names the folder it is in; it
    was a study called '')."""
    return Path(os.path.abspath(sweep_dir)).name or "sweep"


def _not_in_the_way(run_dir: Path) -> None:
    """A UserError if `run_dir` holds what mnist-mlp did not write (train's advice, another --out such as
    trial-0000-2, would start a new study inside the old one)."""
    if (
        run_dir.exists()
        and not (run_dir / runs.MARKER).is_file()
        and (not run_dir.is_dir() or any(run_dir.iterdir()))
    ):
        raise UserError(
            f"{run_dir} is in the sweep's way (mnist-mlp did not write it, so it neither trains into it "
            "nor deletes it); move or rename it, or give the sweep another --out"
        )


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


def _settings(base: Config, space: SweepSpace) -> dict:
    """What a study's trials share: the searched space and every setting it does not search, as "section.key"
    -> value (not the backend, as in _same_config, nor how often checkpoints are saved; validation is always
    the held-out split). Where the space searches one of hidden_layers and hidden_width, the other is a
    setting."""
    flat = {
        f"{section}.{key}": list(value) if isinstance(value, tuple) else value
        for section, values in dataclasses.asdict(base).items()
        if isinstance(values, dict)
        for key, value in values.items()
    }
    if set(LAYER_KEYS) & set(space.params):
        units = flat.pop("model.hidden_units")
        flat.update({"hidden_layers": len(units), "hidden_width": units[0]})
    return {"space": space.params, **{k: v for k, v in flat.items() if k not in set(space.params) | UNSHARED}}


def _same_settings(study: optuna.Study, settings: dict) -> None:
    """A study is continued with the settings it started with: trials run otherwise would be ranked together
    (and fed to the sampler) as if they had. A study with no trial begun (or from before this was recorded)
    takes this command's. A setting newer than the study's record is compared with its default."""
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
    default = _settings(Config(), SweepSpace(0, 0, {}))

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


def _same_config(run_dir: Path, config: Config) -> bool:
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


def report(
    sweep_dir: str | Path, study_name: str | None = None, storage: str | None = None, top: int = 10
) -> dict:
    """Leaderboard, parameter importances, and Optuna's optimisation-history and parallel-coordinate PNGs."""
    sweep_dir = Path(sweep_dir)
    if storage is None and not (sweep_dir / STUDY_DB).is_file():
        raise UserError(
            f"no sweep has run in {sweep_dir} (no {STUDY_DB} there); start one with `mnist-mlp sweep "
            f"--out {outputs.shell_path(sweep_dir)}`, or point --out (or --storage) at one that has"
        )
    storage = storage_url(sweep_dir, storage)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        study = optuna.load_study(study_name=study_name or named(sweep_dir), storage=storage)
    except KeyError:
        others = optuna.study.get_all_study_names(storage=storage)
        what = f"it holds {', '.join(others)}: give --study {others[0]}" if others else "run the sweep first"
        raise UserError(
            f"no study {study_name or named(sweep_dir)} in {storage.split('@')[-1]}; {what}"
        ) from None
    except Exception as e:  # sqlalchemy: no such database file, refused connection, missing driver
        raise UserError(
            f"cannot open the study at {storage.split('@')[-1]} ({type(e).__name__}); run the sweep "
            "first or check --out and --storage"
        ) from None
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise UserError("the study has no finished trial yet")
    leaders = sorted(done, key=lambda t: t.value, reverse=True)[:top]
    importances = optuna.importance.get_param_importances(study) if len(done) > 1 else {}
    from optuna.visualization import matplotlib as optuna_plots  # after plots: matplotlib on Agg, quiet

    folder, written, unwritten = study_folder(sweep_dir, study_name), [], ""
    try:  # a read-only sweep folder (a shared one) still gets its leaderboard
        folder.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # matplotlib's, for a parameter every trial took one value of
            warnings.filterwarnings("ignore", "Attempting to set identical low and high", UserWarning)
            for plot, name in (
                (optuna_plots.plot_optimization_history, "optimization_history.png"),
                (optuna_plots.plot_parallel_coordinate, "parallel_coordinate.png"),
            ):
                written.append(save_axes(plot(study), folder / name))
    except OSError as e:
        unwritten = (
            f"cannot write the plots in {folder} ({e.strerror}); copy the sweep folder somewhere writable"
        )
    except UserError as e:
        unwritten = str(e)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return {
        "study": study.study_name,
        "finished": len(done),
        "pruned": pruned,
        "leaders": [{"trial": t.number, "val_accuracy": t.value, "params": t.params} for t in leaders],
        "importances": importances,
        "plots": [str(p) for p in written],
        "unwritten": unwritten,
    }


def describe(
    result: SweepResult, sweep_dir: str | Path, study_name: str | None = None, storage: str | None = None
) -> str:
    study = result.study
    lines = [f"best trial {study.best_trial.number}: val_accuracy {study.best_value:.4f} {study.best_params}"]
    if result.best is not None:
        lines.append(
            f"re-trained as {result.best.run_dir}: test accuracy {result.best.test_accuracy:.4f} (scored "
            "once)"
        )
    elif result.running:
        lines.append(
            f"trial(s) {', '.join(map(str, result.running))} still running elsewhere: the worker that "
            f"finishes last re-trains the best (if a worker was stopped, run this again after {GRACE_S} s)"
        )
    where = "".join(
        f" --{flag} {outputs.shell_path(value)}"
        for flag, value in (("study", study_name), ("storage", storage))
        if value
    )
    return "\n".join(lines + [f"next: mnist-mlp sweep --out {outputs.shell_path(sweep_dir)}{where} --report"])


def describe_report(found: dict) -> str:
    lines = [
        f"study {found['study']}: {found['finished']} finished, {found['pruned']} pruned",
        "",
        "rank  trial  val_accuracy  params",
    ]
    for rank, leader in enumerate(found["leaders"], 1):
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in leader["params"].items()
        )
        lines.append(f"{rank:>4}  {leader['trial']:>5}  {leader['val_accuracy']:>12.4f}  {params}")
    if found["importances"]:
        lines += [
            "",
            "parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in found["importances"].items()),
        ]
    return "\n".join(lines + (["", "Wrote " + " and ".join(found["plots"])] if found["plots"] else []))
