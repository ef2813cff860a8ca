"""MNIST as arrays: the user's files imported into the verified cache (cache.py), fetched there when missing
(sources.py); `load_data()` as Keras returns it; one `preprocess()` for training, evaluation and
prediction; the walk-through's printout of a digit. NumPy and stdlib only."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np

from mnist_mlp import sources
from mnist_mlp.cache import (
    FILES,
    DataInfo,
    cache_dir,
    data_info,
    decompress,
    identify,
    is_verified,
    npz_contents,
    read_user_file,
    read_verified,
    store,
    verify,
)
from mnist_mlp.errors import UserError

log = logging.getLogger(__name__)

VALIDATION_SIZE = 10_000  # images held out from the end of the training set by --validation split


def parse_idx(content: bytes, origin: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes (magic 0x0000080N, N big-endian uint32 dims, uint8 data) into a writable array."""
    if len(content) < 4 or content[:3] != b"\x00\x00\x08" or not 1 <= content[3] <= 3:
        raise UserError(f"{origin} is not a uint8 IDX file (bad magic number); give the MNIST IDX files")
    ndim = content[3]
    if len(content) < 4 + 4 * ndim:
        raise UserError(f"{origin} is truncated (header cut short); download it again")
    shape = struct.unpack(f">{ndim}I", content[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    size = int(np.prod(shape))
    if len(content) != offset + size:
        raise UserError(
            f"{origin} is truncated or padded ({len(content) - offset} bytes of data, "
            f"{size} expected); download it again"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=offset).reshape(shape).copy()


def import_data(paths: list[str | Path], directory: str | Path | None = None) -> DataInfo:
    """Verify and copy IDX, IDX.gz or Keras mnist.npz files (or folders of them) into the cache."""
    directory = cache_dir(directory)
    found: dict[str, tuple[bytes, str]] = {}
    passed = []  # a folder's .npz files that are not MNIST (a Downloads folder holds other people's)
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(
                f"{path} does not exist; give MNIST IDX/.gz files, a folder of them, or mnist.npz"
            )
        candidates = sorted(path.iterdir()) if path.is_dir() else [path]
        for file in candidates:
            if file.suffix == ".npz":
                try:
                    found.update({k: (v, f"import: {file.resolve()}") for k, v in npz_contents(file).items()})
                except UserError as e:
                    if not path.is_dir():
                        raise
                    passed.append(str(e))
            elif (key := identify(file)) is not None:
                origin = str(file)
                content = verify(key, decompress(read_user_file(file), origin), origin)
                found[key] = (content, f"import: {file.resolve()}")
            elif not path.is_dir():
                raise UserError(
                    f"{file} is not an MNIST file name (e.g. train-images-idx3-ubyte[.gz] or "
                    "mnist.npz); rename it or give the folder"
                )
    if not found:
        raise UserError(
            f"no MNIST files found in {', '.join(map(str, paths))}; expected "
            "train-images-idx3-ubyte[.gz] and the other three, or mnist.npz"
            + (f" (passed over: {'; '.join(passed)})" if passed else "")
        )
    for reason in passed if len(found) < len(FILES) else []:  # half of MNIST imported: say what was not
        log.info(f"passed over {reason}")
    for key, (content, source) in found.items():
        store(directory, {key: content}, source)
    return data_info(directory)


def ensure(directory: str | Path | None = None) -> None:
    """MNIST fetched into the cache now if a file is missing: train calls this before it makes a run folder,
    so a failed fetch leaves no empty run behind (load_split still verifies each file as it reads it)."""
    directory = cache_dir(directory)
    if not all(is_verified(directory, key) for key in FILES):  # missing, truncated or damaged
        sources.fetch(directory)


def load_split(split: str = "train", directory: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 28, 28), labels uint8 (n,)) of "train" (n=60000) or "test" (n=10000),
    fetched into the cache first when missing."""
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}; use train or test")
    directory = cache_dir(directory)
    arrays = []
    for kind in ("images", "labels"):
        key = f"{split}-{kind}"
        content = read_verified(directory, key)
        if content is None:
            sources.fetch(directory)
            content = read_verified(directory, key)
        arrays.append(parse_idx(content, str(directory / FILES[key][0])))
    return arrays[0], arrays[1]


def load_data(directory: str | Path | None = None):
    """Exactly what `keras.datasets.mnist.load_data()` returns.

    Returns:
        ((x_train, y_train), (x_test, y_test)): uint8 arrays of shapes (60000, 28, 28), (60000,),
        (10000, 28, 28), (10000,); pixels 0..255, labels 0..9.
    """
    return load_split("train", directory), load_split("test", directory)


def load_arrays(directory: str | Path | None = None):
    """`load_data()` ready to train on: float32 (n, 784) images in [0, 1] and one-hot float32 labels."""
    (x_train, y_train), (x_test, y_test) = load_data(directory)
    return (preprocess(x_train), to_one_hot(y_train)), (preprocess(x_test), to_one_hot(y_test))


def preprocess(x: np.ndarray) -> np.ndarray:
    """uint8 images (n, 28, 28) or (n, 784) -> float32 (n, 784) in [0, 1]."""
    x = np.asarray(x)
    out = x.reshape(len(x), -1).astype("float32")
    out /= 255  # in place: one 188 MB array for the training set, not two
    return out


def to_one_hot(y: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Labels (n,) -> one-hot (n, num_classes) float32, as `keras.utils.to_categorical`."""
    y = np.asarray(y, dtype="int64").ravel()
    one_hot = np.zeros((len(y), num_classes), dtype="float32")
    one_hot[np.arange(len(y)), y] = 1
    return one_hot


def split_validation(x: np.ndarray, y: np.ndarray, size: int = VALIDATION_SIZE):
    """Hold out the last `size` examples: ((x_fit, y_fit), (x_val, y_val))."""
    return (x[:-size], y[:-size]), (x[-size:], y[-size:])


def format_digit(image: np.ndarray) -> str:
    """An image as the walk-through prints it: 28 rows of zero-padded 3-digit values, each followed by a
    space."""
    return "".join("".join(f"{v:03d} " for v in row) + "\n" for row in image)


def format_one_hot(vector: np.ndarray) -> str:
    """A one-hot vector as the walk-through prints it: [0.000000 ... 1.000000 ... ]."""
    return "[" + "".join(f"{v:f} " for v in vector) + "]"


def show_sample(split: str = "train", index: int = 0, directory: str | Path | None = None) -> str:
    """Image `index` of `split` as the walk-through prints it: 28 rows of numbers, "first sample is 5",
    one-hot."""
    images, labels = load_split(split, directory)
    if not 0 <= index < len(images):
        raise UserError(f"--index {index} is out of range; the {split} split has 0..{len(images) - 1}")
    label = int(labels[index])
    which = "first" if index == 0 else f"#{index}"
    return (
        format_digit(images[index])
        + f"{which} {'' if split == 'train' else 'test '}sample is {label}\n"
        + format_one_hot(to_one_hot([label])[0])
    )
