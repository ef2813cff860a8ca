"""Your own handwriting: any common image -> the 28x28 MNIST would have made of it -> a Prediction.
MNIST digits are white on black, scaled to fit a 20x20 box keeping their aspect ratio, and placed in
28x28 with their centre of mass at the centre; this module does the same to a user's image."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_mlp.data import preprocess
from mnist_mlp.errors import UserError

MAX_PIXELS = 25_000_000  # larger images are refused (decompression bombs); a phone photo is ~12 MP
INK_FLOOR = 0.2  # ink fainter than this fraction of the strongest ink is noise
UNSURE_BELOW = 0.6  # top probability under which the prediction is flagged as unsure
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageTooLarge(UserError):
    """More pixels than MAX_PIXELS (the web API answers 413)."""


@dataclass(frozen=True)
class Prediction:
    digit: int
    probabilities: tuple[float, ...]  # for digits 0..9
    image: np.ndarray  # uint8 (28, 28): what the model saw, white on black
    unsure: bool
    reason: str  # why unsure, "" otherwise

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(int(d), float(self.probabilities[d])) for d in order]


def open_image(source: str | Path | bytes | np.ndarray, name: str = "image") -> np.ndarray:
    """Grayscale float32 (h, w) in 0..255 from a path, bytes or array: EXIF orientation applied, the first
    frame of an animation, 16-bit and palette modes scaled, and transparency turned into ink."""
    if isinstance(source, np.ndarray):
        return _array_to_gray(source, name)
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        if image.width * image.height > MAX_PIXELS:
            raise ImageTooLarge(f"{name} is {image.width}x{image.height} pixels, more than {MAX_PIXELS:,}; "
                            "send a smaller image")
        image.seek(0)
        image = ImageOps.exif_transpose(image)
        image.load()
    except FileNotFoundError:
        raise UserError(f"{name} not found; give an image file") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{name} is not a readable image ({type(e).__name__}); give a PNG, JPEG, BMP, GIF "
                        "or TIFF") from None
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        gray = np.asarray(image, dtype=np.float32)
        return gray * (255 / 65535) if image.mode != "F" and gray.max() > 255 else gray
    if image.mode == "P" and "transparency" in image.info or image.mode in ("RGBA", "LA", "PA"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3]
        if alpha.min() < 250:  # drawn on a transparent sheet: the opaque strokes are the ink
            return alpha
    return np.asarray(image.convert("L"), dtype=np.float32)


def _array_to_gray(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 1 and array.size == 784:
        array = array.reshape(28, 28)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].mean(axis=-1)
    if array.ndim != 2 or min(array.shape) < 1:
        raise UserError(f"{name} must be a 2-D grayscale array (e.g. 28x28 or 784 values); got shape {array.shape}")
    if not np.isfinite(array).all():
        raise UserError(f"{name} has NaN or infinite values")
    return array * 255 if array.max() <= 1 else array


def to_mnist(gray: np.ndarray) -> tuple[np.ndarray, str]:
    """MNIST-style uint8 (28, 28) and a note ("" if fine): white ink on black, noise removed, cropped to
    the ink, scaled to fit 20x20 keeping the aspect ratio, centred by mass in 28x28."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    ink = gray - background if background < 128 else background - gray  # dark or light background
    ink = np.clip(ink, 0, None)
    if ink.max() <= 0:
        return np.zeros((28, 28), np.uint8), "no ink found: the image is blank"
    ink = ink / ink.max()
    ink[ink < INK_FLOOR] = 0
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = ink.shape
    scale = 20 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.LANCZOS))
    digit = np.clip(digit, 0, 1)
    canvas = np.zeros((28, 28), np.float32)
    total = digit.sum()
    if total > 0:
        ys, xs = np.indices(digit.shape)
        centre_y, centre_x = (ys * digit).sum() / total, (xs * digit).sum() / total
    else:
        centre_y, centre_x = (digit.shape[0] - 1) / 2, (digit.shape[1] - 1) / 2
    top = int(np.clip(round(14 - centre_y), 0, 28 - digit.shape[0]))  # MNIST: centre of mass at (14, 14)
    left = int(np.clip(round(14 - centre_x), 0, 28 - digit.shape[1]))
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    note = ""
    if (digit > 0.5).mean() > 0.85 and min(height, width) > 3:
        note = "the ink fills its whole box: this does not look like a single digit"
    return np.round(canvas * 255).astype(np.uint8), note


def predict_arrays(model, images: list[np.ndarray], notes: list[str] | None = None) -> list[Prediction]:
    """Predictions for MNIST-style uint8 (28, 28) images with one model call."""
    notes = notes or [""] * len(images)
    probabilities = np.asarray(model.predict(preprocess(np.stack(images)), verbose=0), dtype=np.float64)
    found = []
    for image, note, p in zip(images, notes, probabilities):
        digit = int(p.argmax())
        reason = note or (f"low confidence: top probability {p[digit]:.0%}" if p[digit] < UNSURE_BELOW else "")
        found.append(Prediction(digit, tuple(float(v) for v in p), image, bool(reason), reason))
    return found


def predict_image(model, source, name: str = "image") -> Prediction:
    """Predict one image (path, bytes or array) with a loaded Keras model."""
    image, note = to_mnist(open_image(source, name))
    return predict_arrays(model, [image], [note])[0]


def image_files(paths: list[str | Path]) -> list[Path]:
    """The image files named, folders expanded (sorted, by suffix)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.exists():
            found.append(path)
        else:
            raise UserError(f"{path} not found; give image files or folders of them")
    if not found:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found
