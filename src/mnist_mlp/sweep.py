"""Hyperparameter sweeps on Optuna: trials are normal runs validated on held-out training images, pruned
on per-epoch validation accuracy; the storage URL (SQLite file by default, PostgreSQL across machines)
decides who shares the study. The best trial is re-trained and scored on the test set once."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import optuna

from mnist_mlp import folders, runs, studies
from mnist_mlp.backend import BackendChoice
from mnist_mlp.config import Config, config_from_toml, config_to_toml
from mnist_mlp.errors import Fix, Interrupted, UserError
from mnist_mlp.plots import save_axes
from mnist_mlp.space import SweepSpace, load_space, with_values, without
from mnist_mlp.train import TrainResult, train


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
    re-train the best as best/ in the study's folder (studies.study_folder) and score it on the test set. Keys
    in `fixed` (given by --set) keep the base config's value instead of being searched."""
    if trials is not None and trials < 1:
        raise UserError(f"--trials {trials} must be >= 1")
    base = base or Config()
    space = _searched(space, base, fixed, log)
    total, settings = trials or space.trials, studies.shared_settings(base, space)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial's end is said by `log`, not a traceback
    study, folder = studies.open_here(Path(sweep_dir), study_name, storage, space, base.train.seed)
    studies.same_settings(study, settings)

    def objective(trial: optuna.Trial) -> float:
        studies.same_settings(study, settings)  # again: workers starting together each recorded theirs
        studies.take_place(study, trial, total)
        config = suggest(trial, space, base)
        trial.set_user_attr("config", config_to_toml(config))  # the best is re-trained from this, as it ran
        return _run_trial(trial, config, folder / f"trial-{trial.number:04d}", backend, data_dir, log)

    studies.run_trials(study, objective, total)
    studies.remove_failed(study, folder)
    if running := studies.running(study):
        return SweepResult(study, None, running)  # the worker that finishes the last trial re-trains the best
    return SweepResult(study, _retrain_best(study, folder / "best", backend, data_dir, log))


def _searched(space: SweepSpace | str | Path | None, base: Config, fixed, log) -> SweepSpace:
    """The space file (or preset) without the keys that --set fixes, said when there are some."""
    space = space if isinstance(space, SweepSpace) else load_space(space, base, list(fixed))
    searched = without(space, list(fixed))
    if searched.params != space.params:
        log(
            f"Not searched (fixed by --set): {', '.join(k for k in space.params if k not in searched.params)}"
        )
    return searched


def _run_trial(trial: optuna.Trial, config: Config, run_dir: Path, backend, data_dir, log) -> float:
    """One trial as a normal run, validated on held-out training images and pruned by Optuna: its last
    val_accuracy. A trial stopped by Ctrl-C is failed, and its half-trained run removed."""
    pruning = PruneOnValidation(trial)
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
    except KeyboardInterrupt:
        folders.remove_run(run_dir)
        raise
    log(f"trial {trial.number}: val_accuracy {pruning.last:.4f}{' (pruned)' if pruning.pruned else ''}")
    if pruning.pruned:
        raise optuna.TrialPruned()
    return pruning.last


def _retrain_best(study: optuna.Study, best_dir: Path, backend, data_dir, log) -> TrainResult | None:
    """The best trial's config re-trained into `best_dir` and scored on the test set; None where that is done
    (a continued study may have found a better one since) or another worker is doing it."""
    best = config_from_toml(study.best_trial.user_attrs["config"])
    if (best_dir / runs.METRICS).exists() and studies.same_config(best_dir, best):
        return None
    _not_in_the_way(best_dir)
    log(
        f"re-training the best trial ({study.best_trial.number}, val_accuracy {study.best_value:.4f}) into "
        f"{best_dir}"
    )
    try:
        return train(best, best_dir, backend, overwrite=True, data_dir=data_dir, verbose=0)
    except KeyboardInterrupt:  # the trials are done: only this is left to do
        raise Interrupted(
            "interrupted while re-training the best trial; the same command re-trains it"
        ) from None
    except UserError:
        if runs.in_use(best_dir):  # a worker that finished at the same moment is re-training it
            log(f"another worker is re-training it into {best_dir}")
            return None
        raise


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


def report(
    sweep_dir: str | Path, study_name: str | None = None, storage: str | None = None, top: int = 10
) -> dict:
    """Leaderboard, parameter importances, and Optuna's optimisation-history and parallel-coordinate PNGs."""
    sweep_dir = Path(sweep_dir)
    if storage is None and not (sweep_dir / studies.STUDY_DB).is_file():
        raise UserError(
            f"no sweep has run in {sweep_dir} (no {studies.STUDY_DB} there)", Fix("sweep", sweep_dir)
        )
    storage = studies.storage_url(sweep_dir, storage)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        study = optuna.load_study(study_name=study_name or studies.named(sweep_dir), storage=storage)
    except KeyError:
        others = optuna.study.get_all_study_names(storage=storage)
        what = f"it holds {', '.join(others)}: give --study {others[0]}" if others else "run the sweep first"
        raise UserError(
            f"no study {study_name or studies.named(sweep_dir)} in {storage.split('@')[-1]}; {what}"
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

    folder, written, unwritten = studies.study_folder(sweep_dir, study_name), [], ""
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


def describe(result: SweepResult) -> str:
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
            "finishes last re-trains the best (if a worker was stopped, run this again after "
            f"{studies.GRACE_S} s)"
        )
    return "\n".join(lines)


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
