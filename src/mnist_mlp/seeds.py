"""Seed groups (`train --seeds N`): one run folder per seed under the group's, trained one after another (or
side by side in one compiled program, on JAX), resumed seed by seed, and the test accuracy over the seeds in
group.json."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from mnist_mlp import data, folders, outputs, runs, stats
from mnist_mlp.backend import BackendChoice
from mnist_mlp.callbacks import CtrlC
from mnist_mlp.checkpoint import resume_config, resume_group
from mnist_mlp.config import Config, config_to_toml
from mnist_mlp.errors import Fix, UserError, WriteFailed, write_failed
from mnist_mlp.train import (
    Diverged,
    TrainResult,
    check_engine,
    check_finite,
    choose_engine,
    finish_run,
    resolved,
    start_run,
    train,
)


@dataclass(frozen=True)
class SeedsResult:
    group_dir: Path
    results: tuple[TrainResult, ...]  # one per seed, in order
    seeds: tuple[int, ...]
    accuracy: stats.Spread  # test accuracy over the seeds


def train_seeds(
    config: Config,
    group_dir: str | Path,
    backend: BackendChoice,
    seeds: int,
    *,
    overwrite: bool = False,
    side_by_side: bool = False,
    **kwargs,
) -> SeedsResult:
    """Train `config` with `seeds` consecutive seeds from its own, a run directory each under `group_dir`,
    and write the accuracy statistics to group.json. `side_by_side`: all in one compiled program (JAX), meant
    for a GPU, which one small model uses only a part of."""
    chosen = tuple(config.train.seed + i for i in range(seeds))
    config = resolved(config, backend, kwargs.get("log", lambda text: None))
    check_engine(config, backend)
    if side_by_side and choose_engine(config.train.engine, backend.name) != "compiled":
        raise UserError(
            "--side-by-side trains in the compiled engine, on JAX: add --backend jax --engine compiled, "
            "or leave --side-by-side out"
        )
    configs = [
        dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed)) for seed in chosen
    ]
    data.ensure(kwargs.get("data_dir"))
    with folders.claim(group_dir, overwrite=overwrite) as group_dir:
        outputs.write_text(group_dir / runs.CONFIG, config_to_toml(config))  # what advice.train_again repeats
        outputs.write_json(
            group_dir / runs.GROUP, {"planned": list(chosen), "side_by_side": side_by_side, "complete": False}
        )
        try:
            if side_by_side:
                results = _side_by_side(configs, group_dir, backend, **kwargs)
            else:
                results = [
                    train(c, group_dir / f"seed-{c.train.seed}", backend, overwrite=True, **kwargs)
                    for c in configs
                ]
        except Diverged as e:  # the advice is for the whole group, not one seed
            lead = "try a lower learning rate for the group:"
            raise Diverged(str(e), Fix("lower-rate", group_dir, lead=lead)) from None
        return _finish_group(group_dir, chosen, side_by_side, results)


def resume_seeds(group_dir: str | Path, backend: BackendChoice, **kwargs) -> SeedsResult:
    """Continue an interrupted seed group (one after another): its finished seeds kept, the interrupted one
    resumed from its checkpoint (or started again if it saved none), the rest trained."""
    config, group = resume_group(group_dir)
    chosen = tuple(group["planned"])
    config = dataclasses.replace(config, backend=backend.name)
    check_engine(config, backend)
    with folders.claim(group_dir, resume=True) as group_dir:
        results = []
        for seed in chosen:
            run_dir = group_dir / f"seed-{seed}"
            if (run_dir / runs.METRICS).is_file():
                results.append(_finished(runs.load_run(run_dir)))
                continue
            try:
                seeded, resume = resume_config(run_dir), True  # its checkpoint's config, checked for edits
            except (
                UserError
            ) as e:  # not started, no checkpoint yet, or its history damaged: trained from the start
                if (run_dir / runs.DIVERGED).is_file():
                    raise
                if run_dir.exists():  # why, without the advice to start it again: that is done here
                    why = str(e)
                    kwargs.get("log", lambda text: None)(f"{why}; training seed {seed} from the start")
                seeded, resume = (
                    dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed)),
                    False,
                )
            results.append(train(seeded, run_dir, backend, overwrite=not resume, resume=resume, **kwargs))
        return _finish_group(group_dir, chosen, False, results)


def _side_by_side(
    configs, group_dir: Path, backend, data_dir=None, verbose="auto", log=lambda text: None, config_name=None
):
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        run_dirs = [
            stack.enter_context(folders.claim(group_dir / f"seed-{c.train.seed}", overwrite=True))
            for c in configs
        ]
        try:
            return _train_side_by_side(
                configs, run_dirs, backend, data_dir, verbose, log, started, config_name
            )
        except WriteFailed as e:
            raise WriteFailed(str(e), e.errno, fix=Fix("go-on", group_dir, e.errno)) from None
        except OSError as e:
            raise write_failed(group_dir, e, fix=Fix("go-on", group_dir, e.errno)) from None


def _train_side_by_side(
    configs, run_dirs, backend, data_dir, verbose, log, started, config_name
) -> list[TrainResult]:
    """The seeds' runs trained together by the compiled engine (engine.fit_side_by_side), then each finished
    as a lone run is; none is finished if any diverged."""
    from mnist_mlp.engine import fit_side_by_side

    started_runs = [
        dataclasses.replace(
            start_run(c, d, backend, False, data_dir, log if i == 0 else lambda text: None, ()),
            side_by_side=len(configs),
        )
        for i, (c, d) in enumerate(zip(configs, run_dirs))
    ]
    log(
        f"{len(configs)} seeds side by side in one program (the progress bar is seed "
        f"{configs[0].train.seed}'s; "
        f"each seed's history goes to its run folder)"
    )
    first, tc = started_runs[0], configs[0].train
    with CtrlC() as ctrl_c:
        fit_side_by_side(
            [r.setup.model for r in started_runs],
            first.setup.x_train,
            first.setup.y_train,
            batch_size=tc.batch_size,
            epochs=tc.epochs,
            verbose=verbose,
            validation_data=first.setup.validation,
            initial_epoch=first.initial_epoch,
            callbacks=[[*r.callbacks, ctrl_c] for r in started_runs],
            seeds=[c.train.seed for c in configs],
            augment=first.config.augment,
        )
    for run in started_runs:
        check_finite(run)
    return [finish_run(run, backend, True, started, config_name) for run in started_runs]


def _finished(run: runs.Run) -> TrainResult:
    """A finished run's result, read back from its metrics.json."""
    m = run.metrics
    ci95 = m.get("test_accuracy_ci95")
    return TrainResult(
        run.path,
        m.get("test_loss"),
        m.get("test_accuracy"),
        tuple(ci95) if ci95 else None,
        m.get("seconds_per_epoch", 0.0),
        m.get("wall_seconds", 0.0),
        m.get("backend", ""),
    )


def _finish_group(group_dir: Path, chosen: tuple[int, ...], side_by_side: bool, results: list) -> SeedsResult:
    """group.json with each seed's test accuracy and their mean ± std, marked complete."""
    accuracies = [r.test_accuracy for r in results]
    spread = stats.spread(accuracies)
    outputs.write_json(
        group_dir / runs.GROUP,
        {
            "planned": list(chosen),
            "side_by_side": side_by_side,
            "seeds": list(chosen),
            "runs": [f"seed-{s}" for s in chosen],
            "test_accuracy": accuracies,
            "mean": spread.mean,
            "std": spread.std,
            "min": spread.low,
            "max": spread.high,
            "complete": True,
        },
    )
    return SeedsResult(group_dir, tuple(results), chosen, spread)


def describe_seeds(group: SeedsResult, next_step: str) -> str:
    lines = [
        f"seed {seed}: test accuracy {r.test_accuracy:.4f}  ({r.run_dir})"
        for seed, r in zip(group.seeds, group.results)
    ]
    a = group.accuracy
    lines.append(
        f"Test accuracy over {len(group.seeds)} seeds: {a.mean:.4f} ± {a.std:.4f} "
        f"(mean ± std; min {a.low:.4f}, max {a.high:.4f})"
    )
    lines.append(f"Runs saved in {group.group_dir}/ (next: {next_step})")
    return "\n".join(lines)
