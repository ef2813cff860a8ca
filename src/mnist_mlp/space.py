"""The search space of a sweep: its TOML file (the shipped preset `sweep`, or --space FILE) with [sweep]
trials and prune_after and a [space] of keys to search, checked whole before a study starts, and the config
a trial's values make. Neither Keras nor Optuna: a bad file is said before they load."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from mnist_mlp.config import (
    Config,
    ConfigError,
    config_from_dict,
    is_whole,
    read_toml,
)
from mnist_mlp.errors import UserError
from mnist_mlp.fits import check_fits
from mnist_mlp.presets import find_preset, presets

LAYER_KEYS = ("hidden_layers", "hidden_width")  # sweep-only keys that build model.hidden_units


@dataclass(frozen=True)
class SweepSpace:
    trials: int
    prune_after: int
    params: dict  # name -> {"int": [lo, hi]} | {"float": [lo, hi], "log": bool} | {"choice": [...]}


def load_space(
    path: str | Path | None = None, base: Config | None = None, fixed: list[str] = ()
) -> SweepSpace:
    """The search space in TOML at `path`, or the shipped preset of that name (default: `sweep`), every entry
    checked now, before a study or folder is made: its shape, and each value a trial may take against `base`'s
    config (one bad choice failed the sweep at the trial that drew it, after a study that then refused the
    fix)."""
    shipped = presets()["sweep"]
    path = find_preset(path) if path else shipped  # not a sweep.toml that happens to be in the working folder
    try:
        data = read_toml(path, "sweep space")
    except FileNotFoundError:
        raise UserError(
            f"sweep space {path} not found; give a TOML file like the shipped {shipped}"
        ) from None

    def bad(what: str) -> UserError:
        return UserError(f"sweep space {path}: {what}; fix it there (an example: {shipped})")

    sweep, params = data.get("sweep", {}), data.get("space", {})
    unknown = sorted(set(data) - {"sweep", "space"})
    if unknown:
        raise bad(f"a space file holds a [sweep] table and a [space] table only, not {', '.join(unknown)}")
    if not isinstance(sweep, dict) or not isinstance(params, dict):
        raise bad("[sweep] and [space] must be tables")
    if set(sweep) - {"trials", "prune_after"}:
        raise bad(
            "[sweep] takes trials and prune_after, not "
            f"{', '.join(sorted(set(sweep) - {'trials', 'prune_after'}))}"
        )
    counts = {key: sweep.get(key, default) for key, default in (("trials", 20), ("prune_after", 2))}
    for key, value in counts.items():
        if not is_whole(value) or value < 1:
            raise bad(f"[sweep] {key} must be a whole number >= 1, not {value!r}")
    if not params:
        raise bad("[space] searches nothing (a training config is not a space); add keys to search")
    for name, spec in params.items():
        section, _, key = name.partition(".")
        if name not in LAYER_KEYS and (section not in ("model", "train") or not key):
            raise bad(f"{name} is not model.KEY, train.KEY, hidden_layers or hidden_width")
        problem = _spec_problem(spec)
        if not problem and name in LAYER_KEYS and not all(is_whole(v) and v >= 1 for v in _values(spec)):
            problem = "takes whole numbers >= 1"
        if problem:
            raise bad(f"{name} {problem}")
    base = base or Config()
    # The base config's own problem (as trials run it) is its own, not a space value's
    check_fits(with_values({}, base))
    searched = without(SweepSpace(0, 0, params), list(fixed)).params
    for name, spec in searched.items():  # each value a trial may take, alone on the base config
        for value in _values(spec):
            try:
                config = with_values({name: value}, base)
                check_fits(config)
            except ConfigError as e:
                raise bad(f"{name} value {value!r}: {e.key} {e.why}") from None
            except UserError as e:
                raise bad(f"{name} value {value!r}: {e}") from None
    return SweepSpace(counts["trials"], counts["prune_after"], params)


def _values(spec: dict) -> list:
    """The choices, or the bounds, of one entry of [space] (a float range's as floats: a trial draws
    203.7)."""
    if "float" in spec:
        return [float(v) for v in spec["float"]]
    return next(spec[kind] for kind in ("int", "choice") if kind in spec)


def _spec_problem(spec) -> str:
    """What is wrong with one entry of [space] ("" if nothing)."""
    shapes = "needs one of int = [low, high], float = [low, high] (log = true: a log scale), choice = [...]"
    kinds = [k for k in ("int", "float", "choice") if isinstance(spec, dict) and k in spec]
    if len(kinds) != 1 or set(spec) - {kinds[0], *(["log"] if kinds == ["float"] else [])}:
        return shapes
    kind, values = kinds[0], spec[kinds[0]]
    if kind == "choice":
        return "" if isinstance(values, list) and values else "needs at least one value in choice = [...]"
    number = (
        is_whole if kind == "int" else (lambda v: is_whole(v) or isinstance(v, float) and math.isfinite(v))
    )
    if not (
        isinstance(values, list) and len(values) == 2 and all(map(number, values)) and values[0] <= values[1]
    ):
        numbers = "whole numbers" if kind == "int" else "numbers"
        return f"needs {kind} = [low, high] with two {numbers}, low <= high"
    if not isinstance(spec.get("log", False), bool):
        return "log must be true or false"
    if spec.get("log") and values[0] <= 0:
        return f"on a log scale needs low > 0, not {values[0]}"
    return ""


def without(space: SweepSpace, keys: list[str]) -> SweepSpace:
    """The space less the keys fixed by --set (model.hidden_units fixes hidden_layers and hidden_width)."""
    fixed = set(keys) | (set(LAYER_KEYS) if "model.hidden_units" in keys else set())
    return dataclasses.replace(space, params={k: v for k, v in space.params.items() if k not in fixed})


def with_values(values: dict, base: Config) -> Config:
    """The base config with these space keys' values (validation always on held-out training images)."""
    values, data = dict(values), dataclasses.asdict(base)
    if any(key in values for key in LAYER_KEYS):
        layers = values.pop("hidden_layers", len(base.model.hidden_units))
        width = values.pop("hidden_width", base.model.hidden_units[0])
        data["model"]["hidden_units"] = [width] * layers
    for key, value in values.items():
        section, _, name = key.partition(".")
        if section not in ("model", "train") or not name:
            raise UserError(
                f"sweep space key {key} is not model.KEY, train.KEY, hidden_layers or hidden_width"
            )
        data[section][name] = value
    data["train"]["validation"] = "split"
    data["model"]["hidden_units"] = list(data["model"]["hidden_units"])
    return config_from_dict(data)
