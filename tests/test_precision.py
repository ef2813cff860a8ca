"""train.precision = "bfloat16": each product within bfloat16's rounding bound of float32's, forward and
backward; training that follows float32's closely; a saved model that loads and scores the same; and a
one-line refusal where it cannot run."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_mlp import runs
from mnist_mlp.backend import cpu_bfloat16
from mnist_mlp.cli import main
from mnist_mlp.config import TrainConfig
from mnist_mlp.model import _bf16_matmul
from mnist_mlp.train import precision_note

# Rounding to bfloat16 (8 significant bits) moves a number by at most 2**-9 of itself, so a product of two
# rounded inputs is within (1 + 2**-9)**2 - 1 < 2**-7.9 of the exact one; summed in float32, the error of
# x @ w is at most that times |x| @ |w|, plus float32's own (far smaller) rounding.
BOUND = 2**-7.9
SMALL = [
    "--train-samples",
    "2048",
    "--epochs",
    "4",
    "--set",
    "model.hidden_units=[64,64]",
    "--batch-size",
    "64",
]


def _rounding_bound(a, b):
    return BOUND * (np.abs(a) @ np.abs(b)) + 1e-5 * (1 + np.abs(a @ b))


def test_the_product_and_its_gradients_are_within_bfloat16_rounding():
    rng = np.random.default_rng(0)
    x, w, g = rng.normal(size=(64, 300)), rng.normal(size=(300, 50)), rng.normal(size=(64, 50))
    x, w, g = (a.astype(np.float32) for a in (x, w, g))
    matmul = _bf16_matmul()
    y, pullback = jax.vjp(matmul, jnp.asarray(x), jnp.asarray(w))
    dx, dw = pullback(jnp.asarray(g))
    for got, a, b in ((y, x, w), (dx, g, w.T), (dw, x.T, g)):
        assert got.dtype == np.float32 and got.shape == (a.shape[0], b.shape[1])  # float32 out, as float32 in
        got = np.asarray(got, np.float64)
        error = np.abs(got - a.astype(np.float64) @ b.astype(np.float64))
        assert np.all(error <= _rounding_bound(a, b))
        assert error.max() > 1e-4  # rounded for real: float32 alone would be ~1e-5 here


def test_bfloat16_training_follows_float32_within_the_seed_to_seed_spread(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    """Rounding the products' inputs perturbs every step a little, so the bfloat16 run must end closer to
    the float32 run than another seed's float32 run does: the noise a user already lives with. On a CPU
    without bfloat16 instructions (as here, said so) the bfloat16 run says float32 is faster."""
    monkeypatch.setattr("mnist_mlp.train.cpu_bfloat16", lambda: False)
    cache = ["--cache-dir", str(synthetic_dir)]
    out = {}
    for name, extra in (
        ("f32", []),
        ("bf16", ["--set", "train.precision=bfloat16"]),
        ("seed", ["--seed", "7"]),
    ):
        assert main(["train", *SMALL, *extra, "--out", str(tmp_path / name), *cache]) == 0
        out[name] = capsys.readouterr().out
    assert "--set train.precision=float32" in out["bf16"] and "bfloat16 instructions" not in out["f32"]
    history = {name: runs.read_history(tmp_path / name / runs.HISTORY) for name in ("f32", "bf16", "seed")}
    for key in ("loss", "val_loss"):
        ours = np.abs(np.subtract(history["bf16"][key], history["f32"][key]))
        seed = np.abs(np.subtract(history["seed"][key], history["f32"][key]))
        assert ours[-1] < seed[-1] and np.all(ours > 0)  # different (rounded), but within the spread
    run = runs.load_run(tmp_path / "bf16")
    assert run.config.train.precision == "bfloat16"
    assert {type(layer).__name__ for layer in runs.load_model(run).layers} >= {"BFloat16Dense"}
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "bf16"), *cache]) == 0  # reloaded, it scores what training scored
    assert f"Test accuracy: {run.metrics['test_accuracy']:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "precision, device, fast, said",
    [
        ("bfloat16", "cpu", False, True),
        ("bfloat16", "cpu", True, False),
        ("bfloat16", "cpu", None, False),
        ("bfloat16", "gpu NVIDIA H200", False, False),
        ("float32", "cpu", False, False),
    ],
)
def test_train_says_float32_is_faster_only_on_a_cpu_known_to_lack_bfloat16(precision, device, fast, said):
    note = precision_note(TrainConfig(precision=precision), device, fast)
    assert bool(note) == said and "\n" not in note


def test_cpu_flags_say_whether_bfloat16_is_fast(tmp_path):
    """/proc/cpuinfo's flags: AMD Zen 4 and Intel Sapphire Rapids list avx512_bf16 (and amx_bf16); Zen 2
    neither; an ARM CPU has no "flags" line at all."""
    cases = {
        "flags\t\t: fpu avx2 avx512f avx512_bf16 sha_ni\n": True,
        "flags\t: fpu avx2 amx_bf16 amx_tile\n": True,
        "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n": False,
        "Features\t: fp asimd bf16\n": None,
    }
    for i, (text, fast) in enumerate(cases.items()):
        (tmp_path / str(i)).write_text(text)
        assert cpu_bfloat16(tmp_path / str(i)) is fast
    assert cpu_bfloat16(tmp_path / "missing") is None


@pytest.mark.slow
def test_bfloat16_on_another_backend_is_refused_in_one_line(synthetic_dir, tmp_path):
    pytest.importorskip("torch")
    argv = [
        "train",
        *SMALL,
        "--set",
        "train.precision=bfloat16",
        "--backend",
        "torch",
        "--out",
        str(tmp_path / "r"),
        "--cache-dir",
        str(synthetic_dir),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "mnist_mlp", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2 and not (tmp_path / "r").exists()
    assert done.stderr.startswith("mnist-mlp: error: train.precision = bfloat16 runs on JAX")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "fast, device, backend, chosen, why",
    [
        (True, "cpu", "jax", "bfloat16", "this CPU has bfloat16 instructions"),
        (False, "cpu", "jax", "float32", "this CPU has no bfloat16 instructions"),
        (None, "cpu", "jax", "float32", "this CPU's instructions are unknown"),
        (
            False,
            ("gpu", "NVIDIA H200", "9.0"),
            "jax",
            "bfloat16",
            "this NVIDIA H200 multiplies bfloat16 fast",
        ),
        (
            False,
            ("gpu", "Tesla T4", "7.5"),
            "jax",
            "float32",
            "this Tesla T4 (compute capability 7.5) has no fast bfloat16",
        ),
        (True, "cpu", "torch", "float32", "bfloat16 products are JAX's here, not torch's"),
    ],
)
def test_auto_precision_is_bfloat16_only_where_it_multiplies_fast(
    fast, device, backend, chosen, why, monkeypatch
):
    """The presets said bfloat16, which trained the handwriting preset 1.5-2.3x slower on CPUs without
    bfloat16 instructions (most laptops'); "auto" picks per machine and says why."""
    from types import SimpleNamespace

    from mnist_mlp import backend as backends

    platform, kind, capability = device if isinstance(device, tuple) else ("cpu", "cpu", None)
    monkeypatch.setattr(backends, "cpu_bfloat16", lambda: fast)
    monkeypatch.setattr(
        backends,
        "jax_device",
        lambda: SimpleNamespace(platform=platform, device_kind=kind, compute_capability=capability),
    )
    assert backends.choose_precision("auto", backend) == (chosen, why)
    # As given: refused elsewhere, or noted
    assert backends.choose_precision("bfloat16", backend)[0] == "bfloat16"


def test_an_auto_run_records_what_it_trained_so_a_resume_elsewhere_trains_the_same(
    synthetic_dir, tmp_path, capsys, monkeypatch
):
    from types import SimpleNamespace

    from mnist_mlp import backend as backends

    monkeypatch.setattr(backends, "jax_device", lambda: SimpleNamespace(platform="cpu", device_kind="cpu"))
    monkeypatch.setattr(backends, "cpu_bfloat16", lambda: True)
    argv = [
        "train",
        *SMALL,
        "--epochs",
        "1",
        "--set",
        "train.precision=auto",
        "--backend",
        "jax",
        "--cache-dir",
        str(synthetic_dir),
    ]
    assert main([*argv, "--out", str(tmp_path / "fast")]) == 0
    assert (
        "Precision: bfloat16 (train.precision = auto: this CPU has bfloat16 instructions)"
        in capsys.readouterr().out
    )
    assert runs.load_run(tmp_path / "fast").config.train.precision == "bfloat16"  # config.toml: the choice
    monkeypatch.setattr(backends, "cpu_bfloat16", lambda: False)
    assert main([*argv, "--out", str(tmp_path / "slow")]) == 0
    assert (
        "Precision: float32 (train.precision = auto: this CPU has no bfloat16 instructions)"
        in capsys.readouterr().out
    )
    assert runs.load_run(tmp_path / "slow").config.train.precision == "float32"


def test_machine_names_the_cpu_and_its_bfloat16_for_reports(tmp_path):
    """bench and the load test both report the machine (from backend, so neither imports the other)."""
    import os

    from mnist_mlp.backend import machine

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert machine(cpuinfo) == f"AMD EPYC 9R14, {os.cpu_count()} CPUs, bfloat16 instructions"
    assert machine(tmp_path / "missing") == f"unknown CPU, {os.cpu_count()} CPUs"
