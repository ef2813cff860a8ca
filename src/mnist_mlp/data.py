"""MNIST in its cache: the four IDX files, verified by SHA-256, imported from the user's files or fetched
(sources.py); `load_data()` as Keras returns it; one `preprocess()` for training, evaluation and
prediction. NumPy and stdlib only."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_mlp.errors import UserError, write_failed

FILES = {  # key -> (canonical file name, SHA-256 of the uncompressed IDX content)
    "train-images": ("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels": ("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "test-images": ("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "test-labels": ("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
NPZ_KEYS = {"x_train": "train-images", "y_train": "train-labels", "x_test": "test-images", "y_test": "test-labels"}
SOURCE_FILE = "source.json"  # records where each cached file came from
VALIDATION_SIZE = 10_000  # images held out from the end of the training set by --validation split


@dataclass(frozen=True)
class FileInfo:
    key: str
    path: Path
    present: bool
    verified: bool  # SHA-256 of the content matches FILES
    source: str  # where it came from, "" if unknown


@dataclass(frozen=True)
class DataInfo:
    cache_dir: Path
    files: tuple[FileInfo, ...]

    @property
    def complete(self) -> bool:
        return all(f.verified for f in self.files)


def cache_dir(path: str | Path | None = None) -> Path:
    """The cache folder: `path`, else $MNIST_MLP_CACHE, else $XDG_CACHE_HOME/mnist-mlp, else ~/.cache/mnist-mlp."""
    if path:
        return Path(path).expanduser()
    if os.environ.get("MNIST_MLP_CACHE"):
        return Path(os.environ["MNIST_MLP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist-mlp"


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def decompress(raw: bytes, origin: str) -> bytes:
    """Return the content of an IDX or IDX.gz file."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise UserError(f"{origin} is a truncated or corrupt .gz ({e}); download it again") from None


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
        raise UserError(f"{origin} is truncated or padded ({len(content) - offset} bytes of data, "
                        f"{size} expected); download it again")
    return np.frombuffer(content, dtype=np.uint8, offset=offset).reshape(shape).copy()


def to_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array, as in the original MNIST files."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def verify(key: str, content: bytes, origin: str) -> bytes:
    """`content` if its SHA-256 is that of MNIST file `key`; else a UserError naming `origin`."""
    want = FILES[key][1]
    got = sha256(content)
    if got != want:
        raise UserError(f"{origin}: SHA-256 {got[:12]}... is not that of MNIST {key} ({want[:12]}...); "
                        "the file is corrupt or not MNIST, get it again")
    return content


def identify(path: Path) -> str | None:
    """The FILES key of an IDX(.gz) file name, accepting 'train-images.idx3-ubyte' spellings too."""
    name = path.name.removesuffix(".gz").replace(".", "-")
    return next((key for key, (canonical, _) in FILES.items() if name == canonical), None)


def store(directory: Path, contents: dict[str, bytes], source: str) -> None:
    """Write verified contents into the cache (atomically) and record where they came from. A write that
    fails (read-only, disk full, a folder in the way) is one WriteFailed; the cache stays as it was."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_failed(directory, e, _CACHE_ADVICE) from None
    for key, content in contents.items():
        _write_atomic(directory / FILES[key][0], content)
    sources = _read_sources(directory)
    sources.update({key: source for key in contents})
    _write_atomic(directory / SOURCE_FILE, json.dumps(sources, indent=2).encode())


_CACHE_ADVICE = "free some space or give a writable folder with --cache-dir (or MNIST_MLP_CACHE)"


def _write_atomic(path: Path, content: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(content)
        os.replace(tmp, path)
    except OSError as e:
        raise write_failed(path, e, _CACHE_ADVICE) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _read_sources(directory: Path) -> dict:
    try:
        return json.loads((directory / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def read_verified(directory: Path, key: str) -> bytes | None:
    """The cached content of `key` if present and intact, else None."""
    try:
        content = (directory / FILES[key][0]).read_bytes()
    except OSError:
        return None
    return content if sha256(content) == FILES[key][1] else None


def data_info(directory: str | Path | None = None) -> DataInfo:
    """Where each file is, where it came from, and whether its SHA-256 checks."""
    directory = cache_dir(directory)
    sources = _read_sources(directory)
    files = []
    for key, (name, _) in FILES.items():
        path = directory / name
        files.append(FileInfo(key, path, path.exists(), read_verified(directory, key) is not None,
                              sources.get(key, "")))
    return DataInfo(directory, tuple(files))


def import_data(paths: list[str | Path], directory: str | Path | None = None) -> DataInfo:
    """Verify and copy IDX, IDX.gz or Keras mnist.npz files (or folders of them) into the cache."""
    directory = cache_dir(directory)
    found: dict[str, tuple[bytes, str]] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path} does not exist; give MNIST IDX/.gz files, a folder of them, or mnist.npz")
        candidates = sorted(path.iterdir()) if path.is_dir() else [path]
        for file in candidates:
            if file.suffix == ".npz":
                found.update({k: (v, f"import: {file.resolve()}") for k, v in npz_contents(file).items()})
            elif (key := identify(file)) is not None:
                origin = str(file)
                content = verify(key, decompress(file.read_bytes(), origin), origin)
                found[key] = (content, f"import: {file.resolve()}")
            elif not path.is_dir():
                raise UserError(f"{file} is not an MNIST file name (e.g. train-images-idx3-ubyte[.gz] or "
                                "mnist.npz); rename it or give the folder")
    if not found:
        raise UserError(f"no MNIST files found in {', '.join(map(str, paths))}; expected "
                        "train-images-idx3-ubyte[.gz] and the other three, or mnist.npz")
    for key, (content, source) in found.items():
        store(directory, {key: content}, source)
    return data_info(directory)


def npz_contents(path: str | Path) -> dict[str, bytes]:
    """The four IDX contents inside a Keras-style mnist.npz, each verified."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in NPZ_KEYS if name not in npz.files]
            if missing:
                raise UserError(f"{path} is missing arrays {', '.join(missing)}; expected x_train, y_train, "
                                "x_test, y_test as in Keras' mnist.npz")
            arrays = {name: npz[name] for name in NPZ_KEYS}
    except (OSError, ValueError, zlib.error, EOFError) as e:
        raise UserError(f"{path} is not a readable .npz ({e}); give Keras' mnist.npz") from None
    return {key: verify(key, to_idx(arrays[name]), f"{path}[{name}]") for name, key in NPZ_KEYS.items()}


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
            from mnist_mlp.sources import fetch  # the network sources, only when the cache lacks a file

            fetch(directory)
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
    """An image as the walk-through prints it: 28 rows of zero-padded 3-digit values, each followed by a space."""
    return "".join("".join(f"{v:03d} " for v in row) + "\n" for row in image)


def format_one_hot(vector: np.ndarray) -> str:
    """A one-hot vector as the walk-through prints it: [0.000000 ... 1.000000 ... ]."""
    return "[" + "".join(f"{v:f} " for v in vector) + "]"
