"""Your own handwriting: any common image -> the 28x28 MNIST would have made of it -> a Prediction.
MNIST digits are white on black, scaled to fit a 20x20 box keeping their aspect ratio, and placed in
28x28 with their centre of mass at the centre; this module does the same to a user's image."""

from __future__ import annotations

import ctypes
import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage, stats

from mnist_mlp.data import preprocess
from mnist_mlp.errors import UserError

MAX_PIXELS = 25_000_000  # larger images, as decoded, are refused (decompression bombs); JPEGs decode smaller
INK_FLOOR = 0.2  # ink fainter than this fraction of the strongest ink is noise
MIN_CONTRAST = 16.0  # gray levels (of 255) ink must stand out from the paper to count as a mark
NO_DIGIT_SIGMAS = 8.0  # ...and by this many noise standard deviations (noise peaks reach ~5 on a photo)
NOISE_FLOOR_SIGMAS = 5.0  # ink weaker than this many noise deviations is dropped before cropping
MIN_SPAN = 0.04  # ink spanning less than this fraction of the image's long side is a speck, not a digit
MIN_FILL = 0.02  # ink covering less than this fraction of its box is scattered dust, not strokes
NO_DIGIT = "no digit found: the image is blank or its marks are too faint"
SPECKS = "no digit found: only specks, or marks too small for a digit (crop closer to a small digit)"
BLOCK_ASPECT = 0.4  # a filled box squarer than this (short side / long side) is a blot, not a 1
BLOT_FILL = (
    0.7  # ...when more of it than this is ink: a disc is ~0.75-0.8; it flags 2 of MNIST's 10,000 test digits
)
WORK_SIDE = 1024  # px; larger images are box-averaged down to this on their long side first
EVEN = 0.5  # one exact level over this share of the border and of the image, the rest ink: an even background
FIT_SIDE = 48  # px; the lighting surface is fitted on a copy this size on its long side
UNSURE_BELOW = 0.6  # top probability under which the prediction is flagged as unsure
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # Pillow decodes only these (the README's list)
FORMAT_NAMES = "PNG, JPEG, BMP, GIF, TIFF or WebP"


class ImageTooLarge(UserError):
    """More pixels than MAX_PIXELS (the web API answers 413)."""


@dataclass(frozen=True)
class Prediction:
    digit: int
    probabilities: tuple[float, ...]  # for digits 0..9
    image: np.ndarray  # uint8 (28, 28): what the model saw, white on black
    unsure: bool
    reason: str  # why unsure, "" otherwise

    @property
    def blank(self) -> bool:
        """No digit to read (blank paper, or specks): `digit` is only the model's guess at black."""
        return self.reason in (NO_DIGIT, SPECKS)

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(int(d), float(self.probabilities[d])) for d in order]


@functools.cache
def _quiet_libtiff() -> None:
    """Silence the libtiff inside Pillow, which writes its own line to stderr ("tempfile.tif: Using code not
    yet in table.") before Pillow raises for a damaged TIFF: the UserError is the one line. Where that library
    cannot be found (not Linux, another Pillow build), nothing changes."""
    try:
        with open("/proc/self/maps") as maps:
            found = sorted({line.split()[-1] for line in maps if "libtiff" in line and "/" in line})
        library = ctypes.CDLL(found[0])
    except (OSError, IndexError):
        return
    for setter in (library.TIFFSetWarningHandler, library.TIFFSetErrorHandler):
        setter.restype, setter.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
        setter(None)  # no handler: no output


def open_image(source: str | Path | bytes | np.ndarray, name: str = "image") -> np.ndarray:
    """Grayscale float32 (h, w) in 0..255 from a path, bytes or array: EXIF orientation applied, the first
    frame of an animation, 16-bit and palette modes scaled, and transparency turned into ink. Only FORMATS
    are decoded; anything else, and any failure inside a decoder, is a UserError."""
    if isinstance(source, np.ndarray):
        return _array_to_gray(source, name)
    _quiet_libtiff()
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=FORMATS)
        image.seek(0)
        # A JPEG decodes at 1/2, 1/4 or 1/8 scale, still >= WORK_SIDE
        image.draft("L", (WORK_SIDE, WORK_SIDE))
        if image.width * image.height > MAX_PIXELS:  # as decoded: a 48 MP phone JPEG decodes at 3 MP
            raise ImageTooLarge(
                f"{name} is {image.width}x{image.height} pixels, more than {MAX_PIXELS:,}; "
                "use a smaller image (a digit needs far fewer pixels)"
            )
        ImageOps.exif_transpose(image, in_place=True)
        gray = _image_to_gray(image)
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{name} not found; give an image file") from None
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours, refuses before we can look
        raise ImageTooLarge(f"{name} has more than {MAX_PIXELS:,} pixels; use a smaller image") from None
    except Exception as e:  # noqa: BLE001  decoders fail in many ways on hostile bytes; each is the file's fault
        raise UserError(
            f"{name} is not a readable image (damaged, or not a {FORMAT_NAMES}: {type(e).__name__}); "
            "open it and save it again as PNG or JPEG"
        ) from None
    if not np.isfinite(gray).all():
        raise UserError(f"{name} has NaN or infinite pixel values")
    return gray


def _image_to_gray(image: Image.Image) -> np.ndarray:
    """One gray channel, box-averaged down to WORK_SIDE before it becomes float (a 25 MP photo: 25 MB, not
    100)."""
    if image.mode in ("I;16", "I;16B", "I;16L"):
        image = image.convert("I")
    if image.mode in ("I", "F"):
        gray = image
    elif image.mode == "P" and "transparency" in image.info or image.mode in ("RGBA", "LA", "PA"):
        gray = _flatten(image.convert("RGBA"))
    else:
        gray = image.convert("L")
    factor = -(-max(gray.size) // WORK_SIDE)
    array = np.asarray(gray.reduce(factor) if factor > 1 else gray, dtype=np.float32)
    if image.mode == "I" and array.max() > 255:
        return array * (255 / 65535)
    return array * 255 if image.mode == "F" and array.max() <= 1 else array  # a float TIFF in 0..1, as arrays


def _flatten(rgba: Image.Image) -> Image.Image:
    """One gray channel of an image with transparency. The shape is in the alpha channel where most of the
    image is transparent (a digit drawn on a transparent sheet, its strokes of any colour) or where the opaque
    part is of one colour (a digit cut out of a sheet). Otherwise it is a page with some transparent parts (a
    margin, the corners a rotation leaves): those take the paper's level."""
    alpha = rgba.getchannel("A")
    if alpha.getextrema()[0] >= 250:
        return rgba.convert("L")
    a, gray = np.asarray(alpha), rgba.convert("L")
    opaque = np.asarray(gray)[a >= 128]
    opaque = opaque[:: max(1, opaque.size // 100_000)]  # a sample is enough for the levels
    if opaque.size * 2 < a.size or np.ptp(np.percentile(opaque, [1, 99])) < MIN_CONTRAST:
        return alpha
    return Image.composite(gray, Image.new("L", gray.size, int(np.median(opaque))), alpha)


def _array_to_gray(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 1 and array.size == 784:
        array = array.reshape(28, 28)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].mean(axis=-1)
    if array.ndim != 2 or min(array.shape) < 1:
        raise UserError(
            f"{name} must be a 2-D grayscale array (e.g. 28x28 or 784 values); got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise UserError(f"{name} has NaN or infinite values")
    return array * 255 if array.max() <= 1 else array


def to_mnist(gray: np.ndarray) -> tuple[np.ndarray, str]:
    """MNIST-style uint8 (28, 28) and a note ("" if fine): white ink on black, the paper's lighting and
    noise removed, cropped to the ink, scaled to fit 20x20 keeping the aspect ratio, centred by mass."""
    gray = _shrink(gray)
    ink, noise = _ink(gray)
    peak = float(ink.max())
    if peak < max(MIN_CONTRAST, NO_DIGIT_SIGMAS * noise):
        return np.zeros((28, 28), np.uint8), NO_DIGIT
    ink[ink < max(INK_FLOOR * peak, NOISE_FLOOR_SIGMAS * noise)] = 0
    ink /= peak
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = ink.shape
    if max(height, width) < MIN_SPAN * max(gray.shape) or ink.sum() < MIN_FILL * ink.size:
        return np.zeros((28, 28), np.uint8), SPECKS  # a speck, or specks scattered far apart: dust
    scale = 20 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.LANCZOS))
    digit = np.clip(digit, 0, 1)
    canvas = np.zeros((28, 28), np.float32)
    if digit.sum() > 0:
        centre_y, centre_x = ndimage.center_of_mass(digit)
    else:
        centre_y, centre_x = (digit.shape[0] - 1) / 2, (digit.shape[1] - 1) / 2
    top = int(np.clip(round(14 - centre_y), 0, 28 - digit.shape[0]))  # MNIST: centre of mass at (14, 14)
    left = int(np.clip(round(14 - centre_x), 0, 28 - digit.shape[1]))
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    note = ""
    # a filled box or disc that is roughly square is a blot; a filled thin bar is a straight 1
    if (
        (digit > 0.5).mean() > BLOT_FILL
        and min(height, width) > 3
        and min(height, width) > BLOCK_ASPECT * max(height, width)
    ):
        note = "the ink is one solid blot: this does not look like a digit"
    return np.round(canvas * 255).astype(np.uint8), note


def _shrink(gray: np.ndarray) -> np.ndarray:
    """Box-average a large image down to WORK_SIDE on its long side: a digit ends up 20 px tall anyway."""
    factor = -(-max(gray.shape) // WORK_SIDE)
    if factor <= 1:
        return np.asarray(gray, np.float32)
    return np.asarray(Image.fromarray(np.asarray(gray, np.float32)).reduce(factor), np.float32)


def _ink(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """Ink strength (h, w) >= 0 in gray levels above the paper's own lighting, and the noise's standard
    deviation in the same units (0 for a clean, evenly lit image such as a canvas)."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    levels, counts = np.unique(border, return_counts=True)
    level = float(levels[counts.argmax()])
    sign = -1.0 if level >= 128 else 1.0  # dark ink on light paper, or light ink on dark
    off = sign * (border - level)  # the border's other pixels, as ink strength
    if (
        counts.max() >= EVEN * border.size
        and np.all(off >= 0)
        and np.count_nonzero(gray == level) >= EVEN * gray.size
        and (not off.any() or np.median(off[off > 0]) >= 0.5 * np.max(sign * (gray - level)))
    ):
        # an even background (a canvas, a clean render), strokes perhaps touching the edge (a shadow on
        # clipped white paper is fainter than the ink: that goes to the fit): nothing to fit
        return np.clip(sign * (gray - level), 0, None), 0.0
    step = max(1, max(gray.shape) // 256)
    low, middle, high = np.percentile(gray[::step, ::step], [0.5, 50, 99.5])
    sign = -1.0 if middle - low > high - middle else 1.0  # the ink is the side that stands out further
    residual = sign * (gray - _paper(gray, sign, float(np.median(border))))
    residual = ndimage.uniform_filter(residual, size=3, mode="nearest")  # noise down ~3x; strokes are wider
    return np.clip(residual, 0, None), float(stats.median_abs_deviation(residual, axis=None, scale="normal"))


def _paper(gray: np.ndarray, sign: float, border_level: float) -> np.ndarray:
    """The paper's brightness under uneven lighting: a quadratic surface fitted, ink excluded, to a
    small copy of the image, evaluated at full size."""
    small_size = (
        max(2, round(gray.shape[1] * FIT_SIDE / max(gray.shape))),
        max(2, round(gray.shape[0] * FIT_SIDE / max(gray.shape))),
    )
    small = np.asarray(Image.fromarray(gray).resize(small_size, Image.Resampling.BOX), np.float64)
    v, u = np.meshgrid(np.linspace(-1, 1, small.shape[0]), np.linspace(-1, 1, small.shape[1]), indexing="ij")
    terms = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1).reshape(-1, 6)
    values = small.ravel()
    extreme = values.min() if sign < 0 else values.max()
    paper = sign * (values - (border_level + extreme) / 2) <= 0  # the paper's side of the midway level
    for _ in range(4):  # refit without the pixels that stand out from the last fit as ink
        coef = np.linalg.lstsq(terms[paper], values[paper], rcond=None)[0]
        residual = sign * (values - terms @ coef)
        sigma = 1.4826 * np.median(np.abs(residual[paper])) + 1.0  # +1: a clean fit still allows 1 level
        paper = residual < 3 * sigma
    y = np.linspace(-1, 1, gray.shape[0])[:, None]
    x = np.linspace(-1, 1, gray.shape[1])[None, :]
    return (coef[0] + coef[1] * x + coef[3] * x * x + (coef[2] + coef[4] * x) * y + coef[5] * y * y).astype(
        np.float32
    )


def predict_arrays(model, images: list[np.ndarray], notes: list[str] | None = None) -> list[Prediction]:
    """Predictions for MNIST-style uint8 (28, 28) images with one model call."""
    notes = notes or [""] * len(images)
    probabilities = model.predict(preprocess(np.stack(images)), verbose=0)
    return [prediction(image, note, p) for image, note, p in zip(images, notes, probabilities)]


def prediction(image: np.ndarray, note: str, probabilities: np.ndarray) -> Prediction:
    """The Prediction for one uint8 (28, 28) image, its note from to_mnist, and the model's (10,) output."""
    p = np.asarray(probabilities, dtype=np.float64)
    digit = int(p.argmax())
    reason = note or (f"low confidence: top probability {p[digit]:.0%}" if p[digit] < UNSURE_BELOW else "")
    return Prediction(digit, tuple(float(v) for v in p), image, bool(reason), reason)


def predict_image(model, source, name: str = "image") -> Prediction:
    """Predict one image (path, bytes or array) with a loaded Keras model."""
    image, note = to_mnist(open_image(source, name))
    return predict_arrays(model, [image], [note])[0]
