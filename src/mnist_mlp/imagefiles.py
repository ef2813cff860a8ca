"""Your own image files, for `mnist-mlp predict` and `evaluate --on FOLDER`: which files a folder holds (and
which it leaves out), reading each (one unreadable file does not cost the others), the CSV sheet a class's
photos go to, and the report."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mnist_mlp.data import format_digit
from mnist_mlp.errors import UserError
from mnist_mlp.outputs import atomic
from mnist_mlp.predict import FORMAT_NAMES, Prediction, open_image, predict_arrays, to_mnist

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def folder_images(folder: Path) -> list[Path]:
    """The images in `folder`, sorted: files with an image suffix, but not hidden ones (macOS' ._x.png) and
    not pipes or broken links."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def left_out(
    folder: Path,
    read: list[Path] | None = None,
    folders: str = "folders are not searched: give them too",
    images: str = "not plain files",
) -> str:
    """A note on what in `folder` is not `read` (by default folder_images), hidden files aside, each kind with
    what to do: subfolders (`folders`), image names not read (`images`), other files (an iPhone's .heic, a
    .txt); "" if nothing."""
    taken = set(folder_images(folder) if read is None else read)
    others = sorted(p for p in folder.iterdir() if p not in taken and not p.name.startswith("."))
    named = [p for p in others if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES]
    groups = [
        ([p for p in others if p.is_dir()], folders),
        (named, images),
        (
            [p for p in others if not p.is_dir() and p not in named],
            f"not {FORMAT_NAMES}: save photos as JPEG",
        ),
    ]
    parts = [f"{_first_names(paths)} ({why})" for paths, why in groups if paths]
    return f"{folder}: left out {'; '.join(parts)}" if parts else ""


def _first_names(paths: list[Path], shown: int = 5) -> str:
    names = ", ".join(p.name + "/" * p.is_dir() for p in paths[:shown])
    return names + (f" and {len(paths) - shown} more" if len(paths) > shown else "")


def image_files(paths: list[str | Path]) -> list[Path]:
    """The image files named, folders expanded (folder_images)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(folder_images(path))
        elif path.is_file():
            found.append(path)
        elif path.exists():  # a pipe or a device: reading it could wait forever
            raise UserError(f"{path} is not a file; give image files or folders of them")
        else:
            raise UserError(f"{path} not found; give image files or folders of them")
    if not found:
        raise UserError(
            f"no {FORMAT_NAMES} images in {', '.join(map(str, paths))}; save photos as JPEG, or name "
            "the image files"
        )
    return found


def read_files(files: list[Path]) -> tuple[list[Path], list[tuple[np.ndarray, str]], list[str]]:
    """Each image file read the MNIST way: (the files read, their (28x28, note), an error line per file not
    read); one unreadable file does not cost the others, but a UserError if none could be read."""
    read, prepared, errors = [], [], []
    for path in files:
        try:
            prepared.append(to_mnist(open_image(path, str(path))))
            read.append(path)
        except UserError as e:
            errors.append(str(e))
    if not read:
        raise UserError(
            errors[0]
            if len(errors) == 1
            else f"none of the {len(errors)} images could be read; the first: {errors[0]}"
        )
    return read, prepared, errors


def predict_files(model, files: list[Path]) -> list[Prediction]:
    """Each image file read the MNIST way and predicted, in one model call; the first unreadable one a
    UserError."""
    _, prepared, errors = read_files(files)
    if errors:
        raise UserError(errors[0])
    return predict_arrays(model, [image for image, _ in prepared], [note for _, note in prepared])


def as_rows(files: list[Path], predictions: list[Prediction]) -> list[dict]:
    """One JSON-ready row per image: file, digit (None where there is none to read), probabilities, unsure and
    why."""
    return [
        {
            "file": str(path),
            "digit": None if p.blank else p.digit,
            "probabilities": [round(v, 6) for v in p.probabilities],
            "unsure": p.unsure,
            "reason": p.reason,
        }
        for path, p in zip(files, predictions)
    ]


CSV_HEADER = ["file", "digit", "unsure", *(f"p{d}" for d in range(10)), "reason"]


def check_csv(path: str | Path, files: list[Path]) -> None:
    """A UserError if --csv `path` is one of the images or a file that is not a CSV predict wrote (an earlier
    --csv, or an empty file): a file of yours is never replaced."""
    if Path(path).resolve() in {Path(file).resolve() for file in files}:
        raise UserError(f"--csv {path} is one of the images read; give another file name for the CSV")
    if os.path.lexists(path) and not _our_csv(Path(path)):
        raise UserError(f"--csv {path} exists and is not a CSV that predict wrote; give another file name")


def write_csv(rows: list[dict], path: str | Path, unread: Sequence[tuple[Path, str]] = ()) -> None:
    """file, digit, unsure, p0..p9 and why unsure, per image (the csv module quotes paths with commas), and
    for each `unread` (file, error) its file, unsure and the error; atomically, where check_csv allows."""
    check_csv(path, [row["file"] for row in rows] + [file for file, _ in unread])
    advice = "" if Path(path).parent.is_dir() else "make its folder first, or give another --csv"
    with atomic(path, advice) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        writer.writerows(
            [
                r["file"],
                "" if r["digit"] is None else r["digit"],
                int(r["unsure"]),
                *(f"{v:.6f}" for v in r["probabilities"]),
                r["reason"],
            ]
            for r in rows
        )
        writer.writerows([str(file), "", 1, *[""] * 10, error] for file, error in unread)


def _our_csv(path: Path) -> bool:
    """Whether `path` is a plain file that is empty or starts as predict's CSVs do: not a link (replacing it
    would not write through it), a folder or a pipe (opening it would wait)."""
    try:
        if path.is_symlink() or not path.is_file():
            return False
        start = ",".join(CSV_HEADER)
        with open(path, newline="") as f:
            return f.read(len(start)) in (start, "")  # not a whole line: a large file of yours may have none
    except (OSError, UnicodeDecodeError):
        return False


def describe(files: list[Path], predictions: list[Prediction], show: bool = False) -> str:
    """A line per image, `path: digit [top 3]`, flagged when unsure; with `show`, the 28x28 the model saw."""
    lines = []
    for path, p in zip(files, predictions):
        top = ", ".join(f"{d}: {v:.1%}" for d, v in p.top(3))
        lines.append(
            f"{path}: {p.reason}"
            if p.blank
            # not the guess at blank black
            else f"{path}: {p.digit}   [{top}]" + (f"  (unsure: {p.reason})" if p.unsure else "")
        )
        if show:
            lines.append(format_digit(p.image).rstrip("\n"))
    return "\n".join(lines)
