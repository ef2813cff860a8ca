"""Digits that are not MNIST's, to see how a model reads what users give it: digits printed in the fonts
matplotlib ships ("fonts"), real handwriting from UCI's optdigits test set, 13 writers scanned at 8x8 ("uci", via
scikit-learn if installed), or a folder of your own labelled images (FOLDER/0/*.png ... FOLDER/9/*.png). Each
image is read as `predict` reads a file (to_mnist), so the score is the one a user's own digits would get."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_mlp.errors import UserError
from mnist_mlp.predict import IMAGE_SUFFIXES, open_image, to_mnist

SOURCES = ("fonts", "uci")  # or a folder
# Upright and italic, serif, sans and monospaced; not cmmi10, whose digits are old-style (they drop below the line).
FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique", "DejaVuSerif",
         "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic", "DejaVuSansMono", "DejaVuSansMono-Bold",
         "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta", "cmr10", "cmb10", "cmss10",
         "cmtt10", "cmti10")
ANGLES = (-8, 0, 8)  # degrees: a printed digit photographed a little askew


def load(source: str) -> tuple[list[np.ndarray], np.ndarray]:
    """MNIST-style uint8 (28, 28) images and their int labels from a source name or a folder."""
    check(source)
    if source == "fonts":
        return fonts()
    if source == "uci":
        return uci()
    return folder(Path(source))


def check(source: str) -> None:
    """A UserError now, before Keras starts, if `source` cannot be read: scikit-learn missing for "uci",
    a folder without digit subfolders."""
    if source == "uci":
        try:
            import sklearn.datasets  # noqa: F401
        except ImportError:
            raise UserError("--on uci reads UCI's handwritten digits from scikit-learn; install it with "
                            "`pip install scikit-learn`, or use --on fonts or --on FOLDER") from None
    elif source != "fonts":
        _labelled(Path(source))


def fonts() -> tuple[list[np.ndarray], np.ndarray]:
    """Each digit in each font at each angle, black on white as printed, 570 in all."""
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    images, labels = [], []
    for name in FONTS:
        font = ImageFont.truetype(str(ttf / f"{name}.ttf"), 96)
        for digit in range(10):
            for angle in ANGLES:
                page = Image.new("L", (160, 160), 255)
                ImageDraw.Draw(page).text((80, 80), str(digit), font=font, fill=0, anchor="mm")
                page = page.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
                images.append(to_mnist(np.asarray(page, np.float32))[0])
                labels.append(digit)
    return images, np.array(labels)


def uci() -> tuple[list[np.ndarray], np.ndarray]:
    """The 1,797 handwritten digits of UCI's optdigits test set (13 writers) as scikit-learn bundles them (8x8,
    17 gray levels), dark on light, smoothly enlarged and on a margin of paper, as a scan of them would be."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for image in digits.images:
        scan = Image.fromarray((255 - image * 255 / 16).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR)
        page = Image.new("L", (56, 56), 255)
        page.paste(scan, (12, 12))
        images.append(to_mnist(np.asarray(page, np.float32))[0])
    return images, digits.target.astype(np.int64)


def folder(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Your labelled digits: the images in path/0/ ... path/9/ (any subfolders may be missing)."""
    labelled = _labelled(path)
    images = [to_mnist(open_image(file, str(file)))[0] for _, file in labelled]
    return images, np.array([digit for digit, _ in labelled])


def _labelled(path: Path) -> list[tuple[int, Path]]:
    """(digit, file) for each image in path/0/ ... path/9/; hidden files (.DS_Store, ._x.png) skipped."""
    if not path.is_dir():
        raise UserError(f"--on {path}: not {', '.join(SOURCES)} nor a folder; give a folder holding subfolders "
                        "0 to 9 of your digit images")
    labelled = [(digit, file) for digit in range(10) if (path / str(digit)).is_dir()
                for file in sorted((path / str(digit)).iterdir())
                if file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith(".")]
    if not labelled:
        raise UserError(f"{path} has no subfolders 0 to 9 of images; put each digit's images in {path}/<digit>/")
    return labelled
