"""Digits that are not MNIST's, to see how a model reads what users give it: digits printed in the fonts
matplotlib ships ("fonts") or in 30 handwriting typefaces fetched with npm ("handfonts", see handfonts.py),
digits drawn with the draw-a-digit page's pen along the strokes of Hershey's single-stroke fonts ("pen"), real
handwriting from UCI's optdigits test set, 13 writers scanned at 8x8 ("uci", via scikit-learn if installed),
or a folder of your own labelled images (FOLDER/0/*.png ... FOLDER/9/*.png). Each image is read as `predict`
reads a file (to_mnist), so the score is the one a user's own digits would get."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_mlp import handfonts
from mnist_mlp.errors import UserError, pip_install
from mnist_mlp.imagefiles import folder_images, left_out, read_files
from mnist_mlp.predict import FORMAT_NAMES, NO_DIGIT, SPECKS, to_mnist

SOURCES = ("fonts", "handfonts", "pen", "uci")  # or a folder
# Upright and italic, serif, sans and monospaced; not cmmi10, whose digits are old-style (they drop below the
# line).
FONTS = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSans-BoldOblique",
    "DejaVuSerif",
    "DejaVuSerif-Bold",
    "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "STIXGeneral",
    "STIXGeneralBol",
    "STIXGeneralItalic",
    "STIXGeneralBolIta",
    "cmr10",
    "cmb10",
    "cmss10",
    "cmtt10",
    "cmti10",
)
ANGLES = (-8, 0, 8)  # degrees: a printed digit photographed a little askew
# Hershey's pen-plotter fonts hold six designs of the digits besides the gothic one (which no one writes):
# simplex, duplex and triplex roman, complex roman, complex and triplex italic. Their digits are strokes, as a
# hand draws them on the page, not filled outlines; duplex and triplex draw parallel strokes, as a pen pressed
# harder.
PEN_FONTS = ("futural", "futuram", "rowmant", "timesr", "scripts", "timesib")
PEN_HEIGHTS = (0.7, 0.4)  # the digit's height as a share of the pad: drawn to fill it, and drawn small
PEN_SLANTS = (-0.25, 0.0, 0.25)  # horizontal shear: leaning left, upright, leaning right
PAD, PEN = 280, 18  # the page's drawing pad and its pen's width, in the pad's pixels (static/index.html)
SUPERSAMPLE = 4  # drawn 4x larger and averaged down: anti-aliased edges, as the browser's canvas draws them


def load(
    source: str, cache_dir: str | Path | None = None
) -> tuple[list[np.ndarray], np.ndarray, list[str], list[str]]:
    """MNIST-style uint8 (28, 28) images and their int labels from a source name or a folder; for a folder, an
    error line for each image that could not be read and a line for each with no digit found (neither
    scored). `cache_dir`: where handfonts keeps its typefaces (the MNIST cache's)."""
    if source == "handfonts":
        return *printed(handfonts.font_files(cache_dir)), [], []
    if source in SOURCES:
        check(source)
        return *{"fonts": fonts, "pen": pen, "uci": uci}[source](), [], []
    return folder(Path(source))  # its own checks, without check's notes (the command printed them)


def check(source: str, cache_dir: str | Path | None = None) -> list[str]:
    """A UserError now, before Keras starts, if `source` cannot be read: scikit-learn missing for "uci",
    Hershey-Fonts for "pen", handfonts' typefaces not fetched, a folder without digit subfolders. For a
    folder, a note on each of its folders that holds what will not be read (imagefiles.left_out)."""
    if source == "handfonts":
        handfonts.font_files(cache_dir)  # fetched now, if missing
    elif source == "uci":
        try:
            import sklearn.datasets  # noqa: F401
        except ImportError:
            raise UserError(
                "--on uci reads UCI's handwritten digits from scikit-learn; install it with "
                f"{pip_install('mnist-mlp[uci]')}, or use --on fonts, handfonts, pen or FOLDER"
            ) from None
    elif source == "pen":
        try:
            import HersheyFonts  # noqa: F401
        except ImportError:
            raise UserError(
                "--on pen draws the strokes of Hershey's fonts, and this install lacks them: "
                f"{pip_install('Hershey-Fonts')} (a dependency of mnist-mlp)"
            ) from None
    elif source not in SOURCES:
        path = Path(source)
        _labelled(path)
        digits = [path / str(d) for d in range(10) if (path / str(d)).is_dir()]
        top = left_out(
            path, digits, folders="only folders 0 to 9 are read", images=f"move each into {path}/<digit>/"
        )
        inside = (
            left_out(digit, folders="folders are not searched: move their images up") for digit in digits
        )
        return [note for note in (top, *inside) if note]
    return []


def fonts() -> tuple[list[np.ndarray], np.ndarray]:
    """Each digit in each of matplotlib's fonts at each angle, black on white as printed, 570 in all."""
    from mnist_mlp.plots import matplotlib  # quiet about a read-only HOME

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return printed([ttf / f"{name}.ttf" for name in FONTS])


def printed(files: list[Path]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each digit in each font file at each angle, black on white as printed (a page with room for a
    handwriting font's wide strokes)."""
    images, labels = [], []
    for file in files:
        font = ImageFont.truetype(str(file), 96)
        for digit in range(10):
            for angle in ANGLES:
                page = Image.new("L", (200, 200), 255)
                ImageDraw.Draw(page).text((100, 100), str(digit), font=font, fill=0, anchor="mm")
                page = page.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
                images.append(to_mnist(np.asarray(page, np.float32))[0])
                labels.append(digit)
    return images, np.array(labels)


def pen() -> tuple[list[np.ndarray], np.ndarray]:
    """Each digit in each Hershey style, drawn large and small, upright and leaning either way, 360 in all:
    the PNG the page would send had it been drawn there (white on black, the page's pen), read as the server
    reads it."""
    images, labels = [], []
    for font in PEN_FONTS:
        for digit in range(10):
            for height in PEN_HEIGHTS:
                for slant in PEN_SLANTS:
                    drawn = draw(pen_strokes(font, digit, height, slant))
                    images.append(to_mnist(np.asarray(drawn, np.float32))[0])
                    labels.append(digit)
    return images, np.array(labels)


def pen_strokes(font: str, digit: int, height: float, slant: float) -> list[list[tuple[float, float]]]:
    """The digit's strokes in a Hershey font as points in the page's pad, `height` of it tall, sheared by
    `slant` (x moves by slant times the height above the digit's middle), centred."""
    strokes = [
        np.array(stroke, np.float64) for stroke in _hershey(font).strokes_for_text(str(digit)) if len(stroke)
    ]
    points = np.concatenate(strokes)
    low, high = points.min(axis=0), points.max(axis=0)
    scale = height * PAD / (high[1] - low[1])  # Hershey's y grows downward, as the pad's does
    middle = (low + high) / 2
    placed = []
    for stroke in strokes:
        x, y = (stroke[:, 0] - middle[0]) * scale, (stroke[:, 1] - middle[1]) * scale
        placed.append([(float(PAD / 2 + a - slant * b), float(PAD / 2 + b)) for a, b in zip(x, y)])
    return placed


@functools.cache
def _hershey(font: str):
    """A loaded Hershey font (loading one takes 0.03 s: it unpacks them all)."""
    from HersheyFonts import HersheyFonts

    hershey = HersheyFonts()
    hershey.load_default_font(font)
    return hershey


def draw(strokes: list[list[tuple[float, float]]]) -> Image.Image:
    """The pad after these strokes: white on black, the page's pen (round caps and joins), anti-aliased."""
    big = Image.new("L", (PAD * SUPERSAMPLE, PAD * SUPERSAMPLE), 0)
    ink = ImageDraw.Draw(big)
    radius = PEN * SUPERSAMPLE / 2
    for stroke in strokes:
        points = [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in stroke]
        if len(points) > 1:
            ink.line(points, fill=255, width=PEN * SUPERSAMPLE)
        for x, y in points:  # round caps and joins
            ink.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return big.resize((PAD, PAD), Image.Resampling.BOX)


def uci() -> tuple[list[np.ndarray], np.ndarray]:
    """The 1,797 handwritten digits of UCI's optdigits test set (13 writers) as scikit-learn bundles them
    (8x8, 17 gray levels), dark on light, smoothly enlarged and on a margin of paper, as a scan of them would
    be."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for image in digits.images:
        scan = Image.fromarray((255 - image * 255 / 16).astype(np.uint8)).resize(
            (32, 32), Image.Resampling.BILINEAR
        )
        page = Image.new("L", (56, 56), 255)
        page.paste(scan, (12, 12))
        images.append(to_mnist(np.asarray(page, np.float32))[0])
    return images, digits.target.astype(np.int64)


def folder(path: Path) -> tuple[list[np.ndarray], np.ndarray, list[str], list[str]]:
    """Your labelled digits: the images in path/0/ ... path/9/ (any subfolders may be missing), read as
    predict reads a folder; an error line for each that could not be read, and a line for each in which no
    digit was found (a blank photo): neither is scored, as a blank one would score a lucky guess."""
    labelled = dict((file, digit) for digit, file in _labelled(path))
    files, prepared, errors = read_files(list(labelled))
    found = [(file, image) for file, (image, note) in zip(files, prepared) if note not in (NO_DIGIT, SPECKS)]
    blank = [(file, note) for file, (_, note) in zip(files, prepared) if note in (NO_DIGIT, SPECKS)]
    if not found:
        raise UserError(
            f"no digit found in any of {path}'s {len(files)} readable images ({blank[0][0]}: "
            f"{blank[0][1].removeprefix('no digit found: ')}); photograph each digit written dark, "
            "filling most of the picture"
        )
    return (
        [image for _, image in found],
        np.array([labelled[file] for file, _ in found]),
        errors,
        [f"{file}: {note}" for file, note in blank],
    )


def _labelled(path: Path) -> list[tuple[int, Path]]:
    """(digit, file) for each image in path/0/ ... path/9/ (imagefiles.folder_images)."""
    if not path.is_dir():
        raise UserError(
            f"--on {path}: not mnist, {', '.join(SOURCES)} nor a folder; give a folder holding "
            "subfolders 0 to 9 of your digit images"
        )
    labelled = [
        (digit, file)
        for digit in range(10)
        if (path / str(digit)).is_dir()
        for file in folder_images(path / str(digit))
    ]
    if not labelled and any((path / str(digit)).is_dir() for digit in range(10)):
        raise UserError(f"{path}'s folders 0 to 9 hold no {FORMAT_NAMES} images; save photos as JPEG")
    if not labelled:
        raise UserError(
            f"{path} has no subfolders 0 to 9 of images; put each digit's images in {path}/<digit>/"
        )
    return labelled
