"""What a `train` command line asks for, checked before Keras starts: the config (file or preset, --set, the
shortcut flags), or with --resume the interrupted run's own, and the run folder (a new one by default,
removed again if the run leaves nothing in it). The command layer's; the library takes what it decides."""

from __future__ import annotations

import time
from pathlib import Path

from mnist_mlp.checkpoint import resume_config, resume_group
from mnist_mlp.config import Config, flag_overrides, load_config
from mnist_mlp.errors import UserError
from mnist_mlp.fits import check_fits
from mnist_mlp.folders import remove_unused
from mnist_mlp.outputs import output
from mnist_mlp.runs import GROUP, in_use

TRAIN_FLAGS = (
    "epochs",
    "batch-size",
    "seed",
    "validation",
    "engine",
    "train-samples",
    "backend",
    "overwrite",
)


def plan(
    config_path: str | None,
    overrides: list[str],
    flags: dict,
    resume: str | None,
    out: str | None,
    seeds: int = 0,
    side_by_side: bool = False,
) -> tuple[Config, Path | None]:
    """The config and run folder a `train` command line asks for, checked before Keras starts: the config file
    or preset, then --set, then the shortcut flags (`flags`: --flag name -> value, None if not given); or,
    with `resume`, the interrupted run's own config (other flags are refused, not ignored). The folder is
    None without --out (default_out)."""
    if seeds < 0:
        raise UserError(f"--seeds {seeds} must be >= 1 (0: one run with the config's seed)")
    if side_by_side and seeds < 2 and not resume:
        raise UserError(
            "--side-by-side trains the runs of --seeds N together; add --seeds N (N >= 2), or leave "
            "--side-by-side out"
        )
    if resume:
        given = [
            f"--{flag}"
            for flag, value in {
                "config": config_path,
                "set": overrides,
                "seeds": seeds,
                "side-by-side": side_by_side,
                "out": out,
                **flags,
            }.items()
            if value
        ]
        if given:
            raise UserError(
                f"--resume continues a run with its own config.toml, so {', '.join(given)} would be "
                "ignored; leave them out, or start a new run"
            )
        folder = Path(resume)
        if in_use(folder):  # before its first checkpoint it read as a run stopped early, advising --overwrite
            raise UserError(
                f"{folder} is in use: another mnist-mlp process is training into it; wait for it to finish"
            )
        config = resume_group(folder)[0] if (folder / GROUP).is_file() else resume_config(folder)
    else:
        shortcuts = flag_overrides(**{k.replace("-", "_"): v for k, v in flags.items() if k != "overwrite"})
        config, folder = load_config(config_path, overrides, then=shortcuts), Path(out) if out else None
    check_fits(config)  # before anything is allocated
    return config, folder


def default_out(config: str | Path | None) -> Path:
    """runs/<preset or file stem>-<date>-<time>: where `train` without --out puts its run (see output)."""
    return Path("runs") / f"{Path(config).stem if config else 'classic'}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_folder(given: str | Path | None, config: str | Path | None):
    """Where `train` writes: `given` (--out) as it is, else a new folder default_out(config), removed again if
    the run left nothing in it (see outputs.output)."""
    return output(given, default_out(config), folder=True, remove_unused=remove_unused)
