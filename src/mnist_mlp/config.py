"""Configuration: frozen dataclasses whose defaults are the classic example, loaded from TOML and
overridden by `--set section.key=value`. Unknown keys, wrong types and out-of-range values are
UserErrors that name the key."""

from __future__ import annotations

import codecs
import copy
import dataclasses
import math
import shlex
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from mnist_mlp.errors import UserError
from mnist_mlp.outputs import read_capped, shell_path
from mnist_mlp.presets import find_preset, presets

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "elu", "selu", "silu", "softplus", "linear")
OPTIMIZERS = ("rmsprop", "adam", "adamw", "sgd", "nadam", "adamax", "adagrad", "adadelta")
LOSSES = ("categorical_crossentropy",)
SCHEDULES = ("constant", "cosine")  # cosine: from learning_rate down to 0 over all the run's steps
ENGINES = ("auto", "compiled", "fit")  # auto: compiled on JAX, Keras fit elsewhere
# bfloat16: the products' inputs only (model.BFloat16Dense); auto: bfloat16 where this machine multiplies it
# fast, else float32 (backend.choose_precision; the run records which)
PRECISIONS = ("float32", "bfloat16", "auto")
# test: the classic examples' choice; split: the last 10,000 train images; none: nothing held out or
# validated, and the test set scored once, at the end (a final run whose recipe was chosen on "split")
VALIDATIONS = ("test", "split", "none")
BACKENDS = ("auto", "jax", "torch", "tensorflow")
MAX_TEXT = 2**20  # bytes a config or sweep space may hold (the presets: ~2 KB)
TRAIN_IMAGES = 60_000  # MNIST's training set
HELD_OUT = 10_000  # the last training images, held out by validation = "split"
SAVING_ONLY = {
    "train.checkpoint_seconds"
}  # keys that say when a run saves, not what it learns: a resume may change them


@dataclass(frozen=True)
class ModelConfig:
    hidden_units: tuple[int, ...] = (512, 512)  # one Dense layer per entry
    activation: str = "relu"
    dropout: float = 0.2  # after each hidden layer

    def __post_init__(self):
        check_key(len(self.hidden_units) > 0, "model.hidden_units", "needs at least one layer")
        check_key(all(u > 0 for u in self.hidden_units), "model.hidden_units", "units must be > 0")
        _check_choice(self.activation, ACTIVATIONS, "model.activation")
        check_key(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "rmsprop"
    learning_rate: float = 0.001  # Keras' RMSprop default
    lr_schedule: str = "constant"
    loss: str = "categorical_crossentropy"
    batch_size: int = 128
    epochs: int = 20
    seed: int = 20160715  # the 2016 walk-through's seed
    validation: str = "test"
    engine: str = "auto"
    train_samples: int = 0  # 0: all; N: only the first N training images (quick tries, tests)
    precision: str = "float32"  # "bfloat16": products from bfloat16 inputs, float32 sums and weights (JAX)
    checkpoint_seconds: float = (
        10.0  # the resume checkpoint: after an epoch this long after the last (0: each)
    )

    def __post_init__(self):
        _check_choice(self.optimizer, OPTIMIZERS, "train.optimizer")
        check_key(self.learning_rate > 0, "train.learning_rate", "must be > 0")
        _check_choice(self.lr_schedule, SCHEDULES, "train.lr_schedule")
        _check_choice(self.loss, LOSSES, "train.loss")
        check_key(self.batch_size > 0, "train.batch_size", "must be > 0")
        check_key(self.epochs > 0, "train.epochs", "must be > 0")
        check_key(0 <= self.seed < 2**32, "train.seed", "must be in [0, 2**32)")
        _check_choice(self.validation, VALIDATIONS, "train.validation")
        check_key(self.train_samples >= 0, "train.train_samples", "must be >= 0 (0 means all)")
        _check_choice(self.engine, ENGINES, "train.engine")
        _check_choice(self.precision, PRECISIONS, "train.precision")
        check_key(
            self.checkpoint_seconds >= 0, "train.checkpoint_seconds", "must be >= 0 (0: after every epoch)"
        )


@dataclass(frozen=True)
class AugmentConfig:
    """Random deformations of the training images, drawn afresh for every image at every step (compiled
    engine). All 0: off, the classic recipe."""

    rotation: float = 0.0  # degrees, drawn from [-rotation, rotation]
    scale: float = 0.0  # fraction, each axis drawn from [1 - scale, 1 + scale]
    shear: float = 0.0  # degrees
    translation: float = 0.0  # pixels, each axis
    elastic_alpha: float = 0.0  # pixels per unit of smoothed field (Simard 2003: 34; Ciresan 2010: 36-38)
    elastic_sigma: float = 5.0  # pixels, the Gaussian that smooths the field (Ciresan 2010: 5-6)
    stroke: float = 0.0  # pixels a stroke grows or thins, drawn from [-stroke, stroke] (pens, fonts)

    def __post_init__(self):  # what any run may hold; check_deformations bounds what is trained from now on
        for key in ("rotation", "scale", "shear", "translation", "elastic_alpha", "stroke"):
            check_key(getattr(self, key) >= 0, f"augment.{key}", "must be >= 0 (0: off)")
        check_key(self.scale < 1, "augment.scale", "must be < 1 (a digit scaled by 1 - scale can vanish)")
        check_key(self.shear < 60, "augment.shear", "must be < 60 degrees")
        check_key(self.rotation <= 180, "augment.rotation", "must be <= 180 degrees")
        check_key(0 < self.elastic_sigma <= 28, "augment.elastic_sigma", "must be in (0, 28] pixels")
        check_key(
            self.translation <= 14, "augment.translation", "must be <= 14 pixels (beyond, the digit leaves)"
        )
        check_key(
            self.elastic_alpha <= 200, "augment.elastic_alpha", "must be <= 200 (beyond, the digit leaves)"
        )
        check_key(
            self.stroke <= 1, "augment.stroke", "must be <= 1 pixel (a 3x3 grey-level dilation or erosion)"
        )

    @property
    def active(self) -> bool:
        return any((self.rotation, self.scale, self.shear, self.translation, self.elastic_alpha, self.stroke))


@dataclass(frozen=True)
class Config:
    backend: str = "auto"  # auto: KERAS_BACKEND, else ~/.keras/keras.json, else jax
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        _check_choice(self.backend, BACKENDS, "backend")


class ConfigError(UserError):
    """A config key's value that cannot be used: `key` and `why`, for a message that names the file to fix."""

    def __init__(self, key: str, why: str):
        super().__init__(f"config key {key} {why}; fix it in the config file or with --set {key}=...")
        self.key, self.why = key, why


def check_key(ok: bool, key: str, why: str) -> None:
    """A ConfigError for `key` unless `ok`."""
    if not ok:
        raise ConfigError(key, why)


def _check_choice(value, choices: typing.Sequence[str], key: str) -> None:
    check_key(value in choices, key, f"must be one of {', '.join(choices)} (got {value!r})")


def read_toml(path: Path, what: str) -> dict:
    """TOML file `path` as a dict, or a UserError that says what is wrong with `what` (e.g. "config file").
    Its text may be UTF-8 (with or without the byte-order mark Notepad writes) or UTF-16 with its mark (what
    Windows PowerShell's `>` writes). FileNotFoundError is left to the caller."""
    try:
        raw = read_capped(path, MAX_TEXT, what, "give a TOML file")
    except IsADirectoryError:
        inside = (
            f", e.g. {shell_path(path / 'config.toml')}"
            if what == "config file" and (path / "config.toml").is_file()
            else ""
        )  # a run's config.toml, which is no sweep space
        raise UserError(f"{what} {path} is a folder; give a TOML file{inside}") from None
    except FileNotFoundError:
        raise
    except OSError as e:
        raise UserError(f"{what} {path} is unreadable ({e.strerror or e}); give a TOML file") from None
    try:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return tomllib.loads(raw.decode("utf-16"))
        if b"\0" in raw:
            raise UserError(f"{what} {path} is not a text file; give a TOML file")
        return tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text; save it as UTF-8 (a TOML file)") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{what} {path} is not valid TOML ({e}); fix the syntax") from None


def load_config(
    path: str | Path | None = None, overrides: typing.Sequence[str] = (), then: typing.Sequence[str] = ()
) -> Config:
    """Defaults, then the TOML file at `path` or the preset of that name (if any), then `section.key=value`
    overrides, then `then` (train's shortcut flags: --epochs 3). The file is read once (it may be a pipe), and
    the overrides are checked before `then`, so a bad --set is refused where a flag replaces its value."""
    data: dict = {}
    if path is not None:
        given, path = path, find_preset(path)
        try:
            data = read_toml(path, "config file")
        except FileNotFoundError:
            names = ", ".join(name for name in presets() if name != "sweep")
            raise UserError(
                f"config file {given} not found; give an existing .toml file or a preset by name (without "
                f"./): {names}"
            ) from None
    for item in overrides:
        _apply_override(data, item)
    if then:
        config_from_dict(copy.deepcopy(data))
        for item in then:
            _apply_override(data, item)
    return config_from_dict(data)


def flag_overrides(**flags) -> list[str]:
    """`--set` items for the shortcut flags given (None: not given), e.g. epochs=3 -> "train.epochs=3"."""
    keys = {
        "epochs": "train.epochs",
        "batch_size": "train.batch_size",
        "seed": "train.seed",
        "validation": "train.validation",
        "engine": "train.engine",
        "train_samples": "train.train_samples",
        "backend": "backend",
    }
    return [
        f"{keys[flag]}={tomli_w.dumps({'v': value})[4:].strip()}"
        for flag, value in flags.items()
        if value is not None
    ]


def _apply_override(data: dict, item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {item!r} is not key=value; write e.g. --set train.epochs=3")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as adam (" adam" from --set "train.optimizer = adam")
    *sections, last = key.strip().split(".")
    node, cls = data, Config  # walked beside the schema, so a wrong path is named by the --set that gave it
    for i, name in enumerate(sections):
        cls = typing.get_type_hints(cls).get(name)
        if not dataclasses.is_dataclass(cls):
            known = [k for k, v in typing.get_type_hints(Config).items() if dataclasses.is_dataclass(v)]
            raise UserError(
                f"--set {item}: {'.'.join(sections[: i + 1])} is not a section; the sections are "
                f"{', '.join(known)}"
            )
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise UserError(
                f"config key {'.'.join(sections[: i + 1])} must be a table; fix it in the config file"
            )
    section = typing.get_type_hints(cls).get(last)
    if dataclasses.is_dataclass(section):
        example = dataclasses.fields(section)[0]
        value = str(_to_plain(getattr(section(), example.name))).replace(" ", "")
        raise UserError(
            f"--set {item}: {key.strip()} is a section; set one of its keys, e.g. --set "
            f"{shlex.quote(f'{key.strip()}.{example.name}={value}')}"
        )
    node[last] = value


def config_from_toml(text: str) -> Config:
    """A Config from TOML text, as config_to_toml writes it."""
    return config_from_dict(tomllib.loads(text))


def config_from_dict(data: dict) -> Config:
    """Build a Config from nested dicts as read from TOML, checking every key and type."""
    return _build(Config, data, "")


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise UserError(
            f"config key {prefix.rstrip('.')} must be a table; see `mnist-mlp train --help` and the default "
            "preset"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise UserError(f"unknown config key {prefix}{key}; known keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value, hint, key: str):
    """Check `value` against a field type: int, float (ints allowed), str or tuple[int, ...]."""
    if typing.get_origin(hint) is tuple:
        check_key(
            isinstance(value, list) and all(is_whole(v) for v in value),
            key,
            f"must be a list of integers, e.g. [512, 512]; got {value!r}",
        )
        return tuple(value)
    if hint is float and (is_whole(value) or isinstance(value, float)):
        check_key(math.isfinite(value), key, f"must be a finite number; got {value!r}")
        return float(value)
    check_key(
        (hint is int and is_whole(value)) or (hint is str and isinstance(value, str)),
        key,
        f"must be {'a number' if hint is float else hint.__name__}; got {value!r}",
    )
    return value


def is_whole(value) -> bool:
    """A TOML integer (not true or false, which Python counts as ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def config_to_toml(config: Config) -> str:
    """The resolved config as TOML; `load_config` reads it back to an equal Config."""
    return tomli_w.dumps(_to_plain(dataclasses.asdict(config)))


def _to_plain(value):
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value


def flat_config(config: Config) -> dict[str, object]:
    """{"model.dropout": 0.2, ...}: every config key with its value."""
    flat = {}
    for section, value in dataclasses.asdict(config).items():
        if isinstance(value, dict):
            flat.update({f"{section}.{key}": v for key, v in value.items()})
        else:
            flat[section] = value
    return flat


def edits(trained: dict[str, object], config: Config) -> list[str]:
    """ "key old -> new" for each key of `config` (but SAVING_ONLY) that differs from the flat config a run
    was trained with."""
    return [
        f"{key} {trained[key]!r} -> {value!r}"
        for key, value in flat_config(config).items()
        if trained.get(key) != value and key not in SAVING_ONLY
    ]


def lower_rate(rate: float) -> float:
    """The learning rate a diverged run is advised: the classic 0.001, or a tenth where it was at most so."""
    return 0.001 if rate > 0.001 else rate / 10
