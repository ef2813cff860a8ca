"""The side-by-side benchmark: the classic config trained by stock Keras `fit` on each installed
backend, by a plain PyTorch loop (default threads and one thread) and by our compiled engine, each in
its own process, beside the machine's measured float32 matmul peak; for the JAX variants, what their first
epoch spent compiling (from JAX's own events; `cold`: from an empty compile cache)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mnist_mlp import peers
from mnist_mlp.backend import machine
from mnist_mlp.errors import UserError, pip_install

VARIANTS = ("ours", "keras-jax", "keras-tensorflow", "keras-torch", "torch", "torch-1thread")
NEEDS = {
    "ours": "jax",
    "keras-jax": "jax",
    "keras-tensorflow": "tensorflow",
    "keras-torch": "torch",
    "torch": "torch",
    "torch-1thread": "torch",
}
LAYERS = ((784, 512), (512, 512), (512, 10))
# FLOPs per training sample: forward and weight gradients 2*m*n each; input gradients for layers 2 and 3
TRAIN_FLOP = sum(4 * m * n for m, n in LAYERS) + sum(2 * m * n for m, n in LAYERS[1:])
EVAL_FLOP = sum(2 * m * n for m, n in LAYERS)  # per validation sample


@dataclass(frozen=True)
class VariantResult:
    variant: str
    first_epoch_s: float  # includes compiling
    steady_epoch_s: float  # median of the epochs after the first
    total_s: float  # process start to the last epoch's end
    test_accuracy: float
    peak_memory_mb: float
    gflops: float  # achieved in a steady epoch (training + validation FLOPs / seconds)
    epoch_end_s: list  # seconds from process start to the end of each epoch
    epoch_accuracy: list  # test accuracy after each epoch
    note: str = ""
    start_s: float | None = None  # process start to the start of training (imports, data, model)
    compiling: dict | None = None  # JAX variants: CompileLog.summary up to the end of the first epoch


def epoch_flop(train_samples: int = 60000, eval_samples: int = 10000) -> float:
    return TRAIN_FLOP * train_samples + EVAL_FLOP * eval_samples


def matmul_peak(seconds: float = 2.0, gpu: bool = False) -> float:
    """Best float32 GFLOP/s of jitted matmuls at the model's batch-128 shapes (fresh process)."""
    code = f"""
import time, jax, jax.numpy as jnp
best = 0.0
for m, n in {LAYERS[:2]!r}:
    a, b = jnp.ones((128, m), jnp.float32), jnp.ones((m, n), jnp.float32)
    @jax.jit
    def many(a, b):
        return jax.lax.fori_loop(0, 200, lambda i, acc: acc + (a + acc[0, 0] * 1e-9) @ b, jnp.zeros((128, n)))
    many(a, b).block_until_ready()
    end = time.perf_counter() + {seconds} / 2
    while time.perf_counter() < end:
        start = time.perf_counter(); many(a, b).block_until_ready()
        best = max(best, 200 * 2 * 128 * m * n / (time.perf_counter() - start) / 1e9)
print(best)
"""
    return float(_python(code, gpu))


def matmul_epoch(gpu: bool = False, repeats: int = 3) -> float:
    """Median seconds of an epoch that does nothing but the classic epoch's matmuls at their real shapes
    (fresh process): per batch of 128 the 3 forward, 2 input-gradient and 3 weight-gradient products,
    then the validation forward pass. What a training loop with free elementwise work would take."""
    code = f"""
import time, numpy as np, jax, jax.numpy as jnp
key = jax.random.key(0)
x, x_val = jax.random.normal(key, (60000, 784)), jax.random.normal(key, (10000, 784))
ws = tuple(jax.random.normal(key, s) * 0.03 for s in {LAYERS!r})
order = np.random.default_rng(0).permutation(60000)[:468 * 128]
index = jnp.asarray(order.reshape(468, 128).astype(np.int32))
def step(w, i):
    a0 = x[i]; a1 = a0 @ w[0]; a2 = a1 @ w[1]; a3 = a2 @ w[2]
    g2 = a3 @ w[2].T; g1 = g2 @ w[1].T
    return (w[0] - 1e-6 * (a0.T @ g1), w[1] - 1e-6 * (a1.T @ g2), w[2] - 1e-6 * (a2.T @ a3)), None
@jax.jit
def epoch(w, index):
    w = jax.lax.scan(step, w, index)[0]
    return w, ((x_val @ w[0]) @ w[1]) @ w[2]
jax.block_until_ready(epoch(ws, index))
times = []
for _ in range({repeats}):
    start = time.perf_counter()
    jax.block_until_ready(epoch(ws, index))
    times.append(time.perf_counter() - start)
print(sorted(times)[len(times) // 2])
"""
    return float(_python(code, gpu))


def _jax_platform(gpu: bool) -> str:
    """The platform JAX trains on in a bench child: "cpu", "gpu"/"cuda", ... (fresh process)."""
    return _python("import jax; print(jax.devices()[0].platform)", gpu)


def _python(code: str, gpu: bool) -> str:
    """The last line `code` prints, run by this Python in a fresh process with the bench's environment."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_child_env(gpu))
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(done.stderr[-2000:])
    return done.stdout.strip().splitlines()[-1]


def _child_env(gpu: bool = False) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if gpu:
        env["MNIST_MLP_BENCH_GPU"] = "1"
    else:
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _check_gpu(gpu: bool) -> None:
    if gpu and _jax_platform(gpu) == "cpu":
        raise UserError(
            "bench --gpu: JAX finds no GPU here (a GPU needs a CUDA build: "
            f"{pip_install('jax[cuda12]')}); "
            "run bench without --gpu"
        )


def run_variant(
    variant: str,
    epochs: int | None,
    config_path: str | None = None,
    gpu: bool = False,
    stop_at: float | None = None,
    cold: bool = False,
    give_up: float | None = None,
) -> VariantResult:
    """One variant in a fresh process; `cold`: JAX compiles every program (an empty compile cache of its
    own)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, compile_cache = Path(tmp) / "result.json", str(Path(tmp) / "xla") if cold else None
        t0 = time.time()
        code = (
            f"from mnist_mlp.peers import child; child({variant!r}, {epochs}, {config_path!r}, {t0!r}, "
            f"{str(out)!r}, {stop_at!r}, {compile_cache!r}, {give_up!r})"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=_child_env(gpu)
        )
        if done.returncode != 0:
            raise RuntimeError(f"{variant} failed: {done.stderr[-3000:]}")
        raw = json.loads(out.read_text())
    ends = raw["epoch_end_s"]
    durations = [b - a for a, b in zip(ends, ends[1:])]
    steady = statistics.median(durations) if durations else ends[0]
    threads = raw.get("threads")
    note = ", ".join(([f"{threads} thread{'s' * (threads != 1)}"] if threads else []) + [raw["device"]])
    return VariantResult(
        variant,
        ends[0],
        steady,
        ends[-1],
        raw["epoch_accuracy"][-1],
        raw["peak_memory_mb"],
        epoch_flop() / steady / 1e9,
        ends,
        raw["epoch_accuracy"],
        note,
        raw.get("start_s"),
        raw.get("compiling"),
    )


def installed(variant: str) -> bool:
    return importlib.util.find_spec(NEEDS[variant]) is not None


def bench(
    variants: tuple[str, ...] = VARIANTS,
    epochs: int = 20,
    gpu: bool = False,
    config_path: str | None = None,
    cold: bool = False,
) -> dict:
    """Run each installed variant in its own process (`cold`: JAX variants with an empty compile cache each);
    returns the peak and the per-variant results."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown bench variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if epochs < 2:
        raise UserError("bench needs --epochs >= 2 (the first epoch includes compiling)")
    _check_gpu(gpu)
    peak, matmuls = matmul_peak(gpu=gpu), matmul_epoch(gpu=gpu)
    results, skipped = [], []
    for variant in variants:
        if installed(variant):
            results.append(run_variant(variant, epochs, config_path, gpu, cold=cold))
        else:
            skipped.append(variant)
    return {
        "peak_gflops": peak,
        "floor_epoch_s": epoch_flop() / peak / 1e9,
        "matmul_epoch_s": matmuls,
        "epochs": epochs,
        "compile_cache": "cold" if cold else "shared",
        "results": [asdict(r) for r in results],
        "skipped": skipped,
        "machine": machine(),
    }


def time_to(
    accuracies: list[float],
    presets: list[str] | None = None,
    gpu: bool = False,
    cold: bool = False,
    give_up: float | None = None,
) -> dict:
    """Seconds from process start to the first epoch whose test accuracy reaches each of `accuracies`: the
    classic recipe and each preset (by name or path), each trained by our engine until it reaches the highest
    or ends its own number of epochs (or its first epoch that ends `give_up` seconds or more after its process
    started); a preset that deforms its digits also by stock Keras fit with Keras' own image layers
    (keras_augmentation); `cold`: JAX compiles every program in each (an empty compile cache of its own)."""
    for accuracy in accuracies:
        if not 0 < accuracy < 1:
            raise UserError(f"--time-to {accuracy} is an accuracy between 0 and 1, e.g. 0.982")
    if len(set(accuracies)) < len(accuracies):
        raise UserError(f"--time-to {' '.join(map(str, accuracies))} names an accuracy twice; give each once")
    if give_up is not None and not 0 < give_up < math.inf:
        raise UserError(
            f"--give-up {give_up}: give more than 0 seconds (each variant's limit from its start), e.g. 300"
        )
    for preset in presets or ():
        peers.config_for(None, preset)  # a missing or bad preset fails here, not after the classic run
    _check_gpu(gpu)
    found = {}
    runs = [("classic", "ours", None)]
    for path in presets or ():
        runs.append((Path(path).stem, "ours", path))
        if peers.config_for(None, path).augment.active:
            runs.append((f"{Path(path).stem}, Keras fit + Keras layers", "keras-jax", path))
    for name, variant, path in runs:
        result = run_variant(variant, None, path, gpu, stop_at=max(accuracies), cold=cold, give_up=give_up)
        first = [
            next((i for i, a in enumerate(result.epoch_accuracy) if a >= accuracy), None)
            for accuracy in accuracies
        ]
        found[name] = {  # for each accuracy in the order given
            "seconds": [None if i is None else result.epoch_end_s[i] for i in first],
            "epochs": [None if i is None else i + 1 for i in first],
            "best_accuracy": max(result.epoch_accuracy),
            "device": result.note,
            "ran": [len(result.epoch_end_s), result.epoch_end_s[-1]],
        }
    return {
        "time_to": list(accuracies),
        "results": found,
        "machine": machine(),
        "compile_cache": "cold" if cold else "shared",
        "give_up": give_up,
    }


def describe_time_to(report: dict) -> str:
    limit = f"; --give-up {report['give_up']:g} s" if report.get("give_up") else ""
    targets = " and ".join(f"{a:g}" for a in report["time_to"])
    lines = [
        f"Seconds from process start to the first epoch with test accuracy >= {targets} "
        f"(JAX's compile cache: {report.get('compile_cache', 'shared')}{limit}):"
    ]
    for name, found in report["results"].items():
        epochs, ran_s = found["ran"]
        reached = [
            f"{a:g}: not reached" if seconds is None else f"{a:g}: {seconds:.1f} s (epoch {epoch})"
            for a, seconds, epoch in zip(report["time_to"], found["seconds"], found["epochs"])
        ]
        stopped = (
            f" (stopped after {epochs} epoch{'s' * (epochs != 1)}, {ran_s:.1f} s)"
            if None in found["seconds"]
            else ""
        )
        best = f"best {found['best_accuracy']:.4f} ({found['device']})"
        lines.append(f"  {name:<12} {', '.join(reached)}{stopped}; {best}")
    return "\n".join(lines)


def run(
    variants: str | None = None,
    epochs: int | None = None,
    gpu: bool = False,
    time_to_accuracy: list[float] | None = None,
    presets: list[str] | None = None,
    serve: str | None = None,
    connections: int | None = None,
    duration: float | None = None,
    image: str | None = None,
    cold: bool = False,
    give_up: float | None = None,
) -> tuple[dict, str]:
    """`mnist-mlp bench`: the side-by-side bench, or --time-to, or --serve; (the report, its text)."""
    if serve and cold:
        raise UserError(
            "--cold is for training (the side-by-side bench or --time-to); --serve loads a trained run"
        )
    if not serve and (connections, duration, image) != (None, None, None):
        raise UserError("--connections, --duration and --image are for --serve RUN (the server under load)")
    if (time_to_accuracy is not None or serve) and (epochs is not None or variants is not None):
        raise UserError(
            "--epochs and --variants are for the side-by-side bench; --time-to trains each preset for "
            "its own epochs with our engine, --serve loads a server"
        )
    if variants is not None and not [name for name in variants.split(",") if name.strip()]:
        raise UserError(f"--variants is empty; give some of {','.join(VARIANTS)}, or leave it out for all")
    if give_up is not None and time_to_accuracy is None:
        raise UserError(
            "--give-up is for --time-to (each variant's time limit); add --time-to ACCURACY, or drop it"
        )
    if presets and time_to_accuracy is None:
        raise UserError(
            "--config names presets for --time-to; the side-by-side bench trains the classic config: "
            "add --time-to ACCURACY, or leave --config out"
        )
    if serve:
        from mnist_mlp import loadtest, runs

        runs.load_run(serve)
        result = loadtest.load(
            serve, 200 if connections is None else connections, 15 if duration is None else duration, image
        )
        return asdict(result), loadtest.markdown(result)
    if time_to_accuracy is not None:
        report = time_to(time_to_accuracy, presets, gpu, cold, give_up)
        return report, describe_time_to(report)
    report = bench(
        tuple((variants or ",".join(VARIANTS)).split(",")), 20 if epochs is None else epochs, gpu, cold=cold
    )
    return report, markdown(report)


def markdown(report: dict) -> str:
    """The report as a Markdown table, ratios against ours (steady epochs and totals)."""
    ours = next((r for r in report["results"] if r["variant"] == "ours"), None)
    lines = [
        f"Machine: {report['machine']}; float32 matmul peak {report['peak_gflops']:.0f} GFLOP/s; "
        f"epoch floor {report['floor_epoch_s']:.3g} s; the epoch's matmuls alone at their shapes "
        f"{report['matmul_epoch_s']:.3g} s; {report['epochs']} epochs",
        "",
        "| variant | first epoch s | steady epoch s | total s | test acc | peak MB | GFLOP/s | % of peak "
        "| steady vs ours | total vs ours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        steady = f"{r['steady_epoch_s'] / ours['steady_epoch_s']:.2f}x" if ours else "-"
        total = f"{r['total_s'] / ours['total_s']:.2f}x" if ours else "-"
        name = r["variant"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(
            f"| {name} | {r['first_epoch_s']:.2f} | {r['steady_epoch_s']:.3g} | {r['total_s']:.1f} | "
            f"{r['test_accuracy']:.4f} | {r['peak_memory_mb']:.0f} | {r['gflops']:.0f} | "
            f"{100 * r['gflops'] / report['peak_gflops']:.0f}% | {steady} | {total} |"
        )
    if report["skipped"]:
        lines.append(f"\nSkipped (package not installed): {', '.join(report['skipped'])}")
    compiled = [r for r in report["results"] if r.get("compiling")]
    if compiled:
        lines.append(
            f"\nWhere the first epoch went (JAX's compile cache: {report.get('compile_cache', 'shared')}):"
        )
    for r in compiled:
        c = r["compiling"]
        longest = ", ".join(
            f"{name} {seconds:.2f} s ({programs}"
            + (f"; XLA {', '.join(f'{b:.2f}' for b in each)} s)" if programs > 1 else ")")
            for name, seconds, programs, each in c["longest"]
        )
        lines.append(
            f"- {r['variant']}: {r['start_s']:.2f} s from process start to training, "
            f"{r['first_epoch_s'] - r['start_s']:.2f} s in epoch 1; compiling until its end "
            f"{c['seconds']:.2f} s (summed over threads), {c['programs']} programs ({c['from_cache']} from "
            f"the cache), longest: {longest}"
        )
    return "\n".join(lines)
