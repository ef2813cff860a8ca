"""The verified cache: the four MNIST IDX files by name and SHA-256, where the cache folder is, storing
contents atomically with where they came from, and reading them back only if intact. What both data.py
(import, loading) and sources.py (fetching) build on. NumPy and stdlib only."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_mlp.errors import UserError, WriteFailed, write_failed
from mnist_mlp.outputs import atomic, check_readable, read_capped, stamp

FILES = {  # key -> (canonical file name, SHA-256 of the uncompressed IDX content)
    "train-images": (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train-labels": (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "test-images": (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "test-labels": (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}
MAX_FILE = 64 * 2**20  # bytes an MNIST file may hold (train-images: 47,040,016; Keras' mnist.npz: ~11 MB)
NPZ_KEYS = {
    "x_train": "train-images",
    "y_train": "train-labels",
    "x_test": "test-images",
    "y_test": "test-labels",
}
SOURCE_FILE = "source.json"  # records where each cached file came from


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
    """The cache folder: `path`, else $MNIST_MLP_CACHE, else $XDG_CACHE_HOME/mnist-mlp, else
    ~/.cache/mnist-mlp."""
    if path:
        return Path(path).expanduser()
    if os.environ.get("MNIST_MLP_CACHE"):
        return Path(os.environ["MNIST_MLP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist-mlp"


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file too large to hold twice (a model.keras), read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decompress(raw: bytes, origin: str) -> bytes:
    """The content of an IDX or IDX.gz file (a .gz that unpacks to more than MAX_FILE is no MNIST file)."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        unpacker = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip's framing
        content = unpacker.decompress(raw, MAX_FILE + 1)
    except zlib.error as e:
        raise UserError(f"{origin} is a truncated or corrupt .gz ({e}); download it again") from None
    if len(content) > MAX_FILE:
        raise UserError(
            f"{origin} unpacks to more than {MAX_FILE / 2**20:g} MB, so it is not MNIST; give the MNIST files"
        )
    if not unpacker.eof:
        raise UserError(f"{origin} is a truncated or corrupt .gz (it ends early); download it again")
    return content


def to_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array, as in the original MNIST files."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def verify(key: str, content: bytes, origin: str) -> bytes:
    """`content` if its SHA-256 is that of MNIST file `key`; else a UserError naming `origin`."""
    want = FILES[key][1]
    got = sha256(content)
    if got != want:
        raise UserError(
            f"{origin}: SHA-256 {got[:12]}... is not that of MNIST {key} ({want[:12]}...); "
            "the file is corrupt or not MNIST, get it again"
        )
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
        raise write_failed(directory, e, _cache_advice(e.errno)) from None
    for key, content in contents.items():
        write_file(directory / FILES[key][0], content)
    sources = _read_sources(directory)
    sources.update({key: source for key in contents})
    write_file(directory / SOURCE_FILE, json.dumps(sources, indent=2).encode())


def check_writable(directory: Path) -> None:
    """A WriteFailed now if the cache cannot take files (read-only, a file in its place): before a download,
    not after it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise write_failed(directory, e, _cache_advice(e.errno)) from None


def _cache_advice(number: int | None) -> str:
    """What to do when the cache cannot be written, by the cause (a file where its folder goes is no full
    disk)."""
    where = "give a writable folder with --cache-dir (or MNIST_MLP_CACHE)"
    if number in (errno.EEXIST, errno.ENOTDIR):
        return f"a file stands where the cache folder goes; {where}"
    if number == errno.EISDIR:  # an unpacked download's folder of a cache file's name
        return f"a folder has a cache file's name: move it out of the cache, or {where}"
    return f"free some space or {where}" if number in (errno.ENOSPC, errno.EDQUOT) else where


def write_file(path: Path, content: bytes) -> None:
    """`content` into the cache folder as `path`, through a temporary name; a failure says the cache's own
    mend (a folder of the file's name, a full disk, another --cache-dir)."""
    try:
        with atomic(path) as tmp:  # a temporary name of this process's own: two may write at once
            tmp.write_bytes(content)
    except WriteFailed as e:  # the cache's own advice, in place of any general one
        if e.errno is None:
            raise
        raise WriteFailed(
            f"cannot write {path} ({os.strerror(e.errno)}); {_cache_advice(e.errno)}", e.errno
        ) from None


def _read_sources(directory: Path) -> dict:
    try:
        return json.loads((directory / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return {}


# (path, size, mtime, SHA-256) of files this process has checked: not hashed again
_VERIFIED: set[tuple] = set()


def is_verified(directory: Path, key: str) -> bool:
    """Whether the cached file of `key` is present and intact; no reading when this process checked it as it
    is."""
    return _identity(directory, key) in _VERIFIED or read_verified(directory, key) is not None


def read_verified(directory: Path, key: str) -> bytes | None:
    """The cached content of `key` if present and intact, else None (hashed once per process while
    unchanged)."""
    # Before reading: a file replaced meanwhile is checked again next time
    identity = _identity(directory, key)
    try:
        content = (directory / FILES[key][0]).read_bytes()
    except OSError:
        return None
    if identity not in _VERIFIED:
        if sha256(content) != FILES[key][1]:
            return None
        _VERIFIED.add(identity)
    return content


def _identity(directory: Path, key: str) -> tuple | None:
    """The cached file of `key` as checked: which file it is (outputs.stamp) and the hash it must have."""
    found = stamp(directory / FILES[key][0])
    return None if found is None else (str(directory / FILES[key][0]), *found, FILES[key][1])


def data_info(directory: str | Path | None = None) -> DataInfo:
    """Where each file is, where it came from, and whether its SHA-256 checks."""
    directory = cache_dir(directory)
    sources = _read_sources(directory)
    files = []
    for key, (name, _) in FILES.items():
        path = directory / name
        files.append(
            FileInfo(
                key, path, path.exists(), read_verified(directory, key) is not None, sources.get(key, "")
            )
        )
    return DataInfo(directory, tuple(files))


GIVE_MNIST = "give the MNIST files (IDX, IDX.gz or mnist.npz)"


def read_user_file(path: Path) -> bytes:
    """An IDX or IDX.gz file the user named, read with a cap: not a device or a named pipe."""
    return read_capped(Path(path), MAX_FILE, "MNIST file", GIVE_MNIST)


def npz_contents(path: str | Path) -> dict[str, bytes]:
    """The four IDX contents inside a Keras-style mnist.npz, each verified."""
    try:
        check_readable(Path(path), "MNIST file", GIVE_MNIST)  # np.load reads only the arrays asked for
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in NPZ_KEYS if name not in npz.files]
            if missing:
                raise UserError(
                    f"{path} is missing arrays {', '.join(missing)}; expected x_train, y_train, "
                    "x_test, y_test as in Keras' mnist.npz"
                )
            arrays = {name: npz[name] for name in NPZ_KEYS}
    except UserError:
        raise
    except ValueError:  # numpy's "pickled (object) data" for anything that is not an archive of arrays
        raise UserError(f"{path} is not a NumPy .npz archive of arrays; give Keras' mnist.npz") from None
    except (OSError, zlib.error, EOFError) as e:
        raise UserError(
            f"{path} is not a readable .npz ({getattr(e, 'strerror', None) or e}); give Keras' mnist.npz"
        ) from None
    for name, array in arrays.items():  # a preprocessed copy (floats in 0..1) would only fail the hash
        if array.dtype != np.uint8:
            raise UserError(
                f"{path}[{name}] is {array.dtype}, not uint8 as in Keras' mnist.npz (a preprocessed "
                "copy?); give the original"
            )
    return {key: verify(key, to_idx(arrays[name]), f"{path}[{name}]") for name, key in NPZ_KEYS.items()}


def describe(info: DataInfo) -> str:
    """The cache as `mnist-mlp data` prints it: where, and each file's state and source."""
    lines = [f"MNIST cache: {info.cache_dir}"]
    for f in info.files:
        state = "ok (SHA-256 verified)" if f.verified else ("BAD SHA-256" if f.present else "missing")
        lines.append(f"  {f.key:<13} {f.path.name:<24} {state:<22} {f.source or '-'}")
    return "\n".join(lines)
