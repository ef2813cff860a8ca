"""Choose the Keras backend once, before Keras is imported: --backend (or the config), else
KERAS_BACKEND, else a keras.json the user edited, else JAX; and say whether this CPU multiplies bfloat16
fast. Stdlib only."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mnist_mlp.errors import UserError, pip_install

PACKAGES = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}  # backend -> module
INSTALL_HINTS = {
    "jax": pip_install("jax[cpu]"),
    "torch": pip_install("mnist-mlp[torch]"),  # the extra's pinned CPU build
    "tensorflow": pip_install("mnist-mlp[tensorflow]"),
}

REASON_VARIABLE = "MNIST_MLP_BACKEND_REASON"  # "name:why" when default_on_import set KERAS_BACKEND

# The keras.json that Keras writes by itself on first import (whatever backend is running) is no choice.
KERAS_AUTO_JSON = json.dumps(
    {"floatx": "float32", "epsilon": 1e-07, "backend": "tensorflow", "image_data_format": "channels_last"},
    indent=4,
)

BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions for bfloat16 products with float32 sums


def cpu_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU has bfloat16 product instructions (XLA's CPU backend runs train.precision = "bfloat16"
    ~1.4x faster than float32 with them, 1.2–2.3x slower without: docs/benchmarks.md); None where
    /proc/cpuinfo does not say (not Linux, or not x86)."""
    try:
        flags = next(
            (
                line.split(":", 1)[1].split()
                for line in Path(cpuinfo).read_text().splitlines()
                if line.startswith("flags")
            ),
            None,
        )
    except OSError:
        return None
    return None if flags is None else any(flag in flags for flag in BFLOAT16_FLAGS)


def machine(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """This machine in a few words, for reports: its CPU model, CPU count and bfloat16 instructions."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), ""
    )
    bfloat16 = {True: ", bfloat16 instructions", False: ", no bfloat16 instructions", None: ""}[
        cpu_bfloat16(cpuinfo)
    ]
    return f"{model or 'unknown CPU'}, {os.cpu_count()} CPUs{bfloat16}"


def choose_precision(requested: str, backend: str) -> tuple[str, str]:
    """train.precision for this machine, and why: "auto" is bfloat16 where the machine multiplies bfloat16
    fast (JAX on a CPU with bfloat16 instructions, a GPU of compute capability 8 or more (A100, H100, ...), a
    TPU), else float32 (also where the CPU does not say); others as given."""
    if requested != "auto":
        return requested, "as set"
    if backend != "jax":
        return "float32", f"bfloat16 products are JAX's here, not {backend}'s"
    device = jax_device()
    if device.platform == "cpu":
        fast = cpu_bfloat16()
        return (
            ("bfloat16", "this CPU has bfloat16 instructions")
            if fast
            else (
                "float32",
                "this CPU has no bfloat16 instructions"
                if fast is False
                else "this CPU's instructions are unknown",
            )
        )
    capability = getattr(device, "compute_capability", None)  # CUDA's, e.g. "9.0"; none on a TPU
    if capability is not None and float(capability) < 8:
        return "float32", f"this {device.device_kind} (compute capability {capability}) has no fast bfloat16"
    return "bfloat16", f"this {device.device_kind} multiplies bfloat16 fast"


def jax_device():
    """The device JAX trains on."""
    import jax

    return jax.devices()[0]


@dataclass(frozen=True)
class BackendChoice:
    name: str  # jax | torch | tensorflow
    reason: str  # where the choice came from, for the user and metrics.json


def choose_backend(requested: str = "auto", environ: dict | None = None) -> BackendChoice:
    """Resolve the backend name and say why; does not import anything."""
    environ = os.environ if environ is None else environ
    if requested != "auto":
        return BackendChoice(_known(requested, "--backend"), "--backend / config")
    if environ.get("KERAS_BACKEND"):
        name = _known(environ["KERAS_BACKEND"], "KERAS_BACKEND")
        ours, _, reason = environ.get(REASON_VARIABLE, "").partition(":")  # set by default_on_import
        return BackendChoice(name, reason if ours == name else "KERAS_BACKEND environment variable")
    keras_json = Path(environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    try:
        text = keras_json.read_text()
        name = None if text == KERAS_AUTO_JSON else json.loads(text).get("backend")
    except (OSError, ValueError, AttributeError):
        name = None
    if name:
        return BackendChoice(_known(name, str(keras_json)), str(keras_json))
    return BackendChoice("jax", "default")


def default_on_import() -> None:
    """Set KERAS_BACKEND by these rules when `import mnist_mlp` comes before Keras, so that a classic script
    importing us first and Keras next runs on JAX (Keras alone falls back to TensorFlow, which the base
    install lacks). Nothing changes where KERAS_BACKEND is set, Keras is imported or the choice is missing."""
    if os.environ.get("KERAS_BACKEND") or "keras" in sys.modules:
        return
    try:
        choice = choose_backend()
    except UserError:
        return  # an unknown name in keras.json: the command that needs Keras says so
    if importlib.util.find_spec(PACKAGES[choice.name]) is not None:
        os.environ["KERAS_BACKEND"] = choice.name
        os.environ[REASON_VARIABLE] = f"{choice.name}:{choice.reason}"


def _known(name: str, source: str) -> str:
    if name not in PACKAGES:
        raise UserError(f"unknown backend {name!r} (from {source}); use one of {', '.join(PACKAGES)}")
    return name


def activate(choice: BackendChoice) -> BackendChoice:
    """Make Keras use `choice` when it is imported; fail with an install hint if its package is missing."""
    if importlib.util.find_spec(PACKAGES[choice.name]) is None:
        raise UserError(
            f"backend {choice.name} is not installed; install it with: {INSTALL_HINTS[choice.name]}"
        )
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != choice.name:
            raise UserError(
                f"Keras is already running on {current} in this process; start a new one for {choice.name}"
            )
    os.environ["KERAS_BACKEND"] = choice.name
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices, when it is installed
    return choice


def use_backend(requested: str = "auto") -> BackendChoice:
    """Choose and activate in one call."""
    return activate(choose_backend(requested))


def device_name(backend: str) -> str:
    """The accelerator a Keras backend trains on, e.g. "gpu NVIDIA H200", or "cpu"."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return "cpu" if device.platform == "cpu" else f"{device.platform} {device.device_kind}"
    if backend == "torch":
        import torch

        return f"cuda {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
