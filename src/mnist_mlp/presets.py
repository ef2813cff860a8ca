"""Configs by name: the presets shipped with the package, a file of the working folder that shadows one,
and what a command prints about the config it read ("Config: PATH") and records of it (its name)."""

from __future__ import annotations

from pathlib import Path

from mnist_mlp.outputs import shell_path


def presets() -> dict[str, Path]:
    """The configs shipped with the package, by name: default, fast, ... (sweep is a sweep space)."""
    folder = Path(__file__).parent / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def config_line(given: str | Path) -> str:
    """Which file `--config given` reads, as the commands print it; where a file of the working folder shadows
    a shipped preset of its name, the preset's path too."""
    path, text = find_preset(given), str(given)
    bare = Path(text).parent == Path(".") and not text.startswith("./") and not text.endswith("/")
    shadowed = presets().get(Path(text).name.removesuffix(".toml")) if bare else None  # runs/fast/ is a path
    if shadowed and path.resolve() != shadowed.resolve():
        preset = shell_path(shadowed)
        return f"Config: {path} (a file here; the shipped preset of that name is --config {preset})"
    return f"Config: {path}"


def config_name(given: str | Path | None) -> str:
    """What a run's config is called, for people: the preset or file's stem ("handwriting"), a run folder's
    name for its config.toml; "classic" without --config."""
    if not given:
        return "classic"
    path = find_preset(given)
    if path.is_dir() or path.name == "config.toml":
        return (path if path.is_dir() else path.parent).resolve().name
    return path.stem


def find_preset(name: str | Path) -> Path:
    """`name` as a path if that file is there, and a bare name also as NAME.toml in the working folder (a
    teacher's handout before a shipped preset of that name); else the shipped preset of that name (`fast`,
    `fast.toml`); else `name`, which is not there. `./NAME` and `NAME/` are always paths."""
    path = Path(name)
    if path.is_file() or path.parent != Path(".") or str(name).startswith("./") or str(name).endswith("/"):
        return path
    if path.suffix != ".toml" and Path(f"{name}.toml").is_file():
        return Path(f"{name}.toml")
    return presets().get(path.stem if path.suffix == ".toml" else path.name, path)
