"""`mnist-mlp bench --serve`: a real `mnist-mlp serve` process loaded by wrk (a C load generator, so the
generator is not the bottleneck) posting a digit PNG on many connections, /api/health probed alongside,
the server's memory read from /proc, then one 1 GB chunked upload to show the cap holds memory flat."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_mlp.errors import UserError

WRK_SCRIPT = """
local f = io.open(os.getenv("MNIST_MLP_BODY"), "rb"); wrk.body = f:read("*all"); f:close()
wrk.method = "POST"; wrk.headers["Content-Type"] = "image/png"
done = function(s, latency, requests)
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n', s.requests, s.duration, s.errors.status,
    s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
HEALTH_EVERY = 0.02  # s between health probes while loaded (~50/s: a probe, not a second load)


@dataclass(frozen=True)
class LoadResult:
    connections: int
    duration_s: float
    image_bytes: int
    predictions_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    errors: int  # non-2xx answers and socket errors (connect, read, write, timeout)
    health_p50_ms: float
    health_p99_ms: float
    health_probes: int
    rss_idle_mb: float  # the server after start-up and warm-up
    rss_loaded_mb: float  # its peak (VmHWM) at the end of the load
    upload_rss_growth_mb: float  # its peak RSS during a 1 GB chunked upload, over the RSS before it
    upload_status: int | None  # what that upload got (413), None if the connection was cut first
    upload_sent_mb: float  # how much of it the server let in before stopping
    machine: str


def start_server(
    run: str | Path, port: int | None = None, timeout: float = 180
) -> tuple[subprocess.Popen, str]:
    """`python -m mnist_mlp serve RUN` on a free loopback port, once /api/health answers: (process, base
    URL)."""
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_mlp", "serve", str(run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/api/health", timeout=1)
            return process, url
        except OSError:
            if process.poll() is not None:
                raise UserError(f"the server stopped: {process.stdout.read().strip()}") from None
            time.sleep(0.2)
    process.kill()
    raise UserError(f"the server did not answer /api/health within {timeout:.0f} s")


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, MB (Linux /proc)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def chunked_upload(url: str, total: int, chunk: int = 1 << 20) -> tuple[int | None, int]:
    """POST `total` bytes with Transfer-Encoding: chunked (a generator body: no Content-Length) until the
    server stops taking them: (HTTP status, or None where the connection was cut first; bytes sent). httpx
    reads the answer when the server closes the connection mid-upload. A server that cannot be reached is an
    error, not a cut-off upload."""
    import httpx

    sent = 0

    def body():
        nonlocal sent
        block = bytes(chunk)
        while sent < total:
            yield block
            sent += chunk  # once taken

    with httpx.Client(trust_env=False, timeout=30) as client:  # loopback: no proxy from the environment
        try:
            answer = client.post(url + "/api/predict", content=body(), headers={"Content-Type": "image/png"})
        except httpx.TransportError:
            if sent == 0:
                raise
            return None, sent
    return answer.status_code, sent


def _wrk(url: str, body: Path, connections: int, duration: float, threads: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{duration:g}s",
                "--timeout",
                "10s",
                "-s",
                script.name,
                url + "/api/predict",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "MNIST_MLP_BODY": str(body)},
            timeout=duration + 60,
        )
    finally:
        os.unlink(script.name)
    line = next((line for line in out.stdout.splitlines() if line.startswith("WRKJSON ")), None)
    if line is None:
        raise UserError(f"wrk gave no result: {(out.stderr or out.stdout).strip()[-300:]}")
    return json.loads(line.removeprefix("WRKJSON "))


def _probe_health(url: str, stop: threading.Event, latencies: list) -> None:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    while not stop.is_set():
        start = time.perf_counter()
        connection.request("GET", "/api/health")
        connection.getresponse().read()
        latencies.append(time.perf_counter() - start)
        stop.wait(HEALTH_EVERY)
    connection.close()


def digit_png(cache_dir: str | None = None) -> bytes:
    """MNIST test image 0 (a 7) as a 28x28 PNG: the small digit a client sends."""
    from PIL import Image

    from mnist_mlp.data import load_data

    (_, _), (x_test, _) = load_data(cache_dir)
    buffer = io.BytesIO()
    Image.fromarray(x_test[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def load(
    run: str | Path,
    connections: int = 200,
    duration: float = 15,
    image: str | Path | None = None,
    threads: int = 2,
    cache_dir: str | None = None,
    upload_bytes: int = 1 << 30,
) -> LoadResult:
    """Start a server for `run`, warm it up, load it with wrk for `duration` s while probing health, then
    one chunked upload of `upload_bytes`."""
    from mnist_mlp.backend import machine

    _check(connections, duration, image)
    body = Path(image).read_bytes() if image else digit_png(cache_dir)
    process, url = start_server(run)
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "digit.png"
            path.write_bytes(body)
            # Warm-up: connections, caches, allocator
            _wrk(url, path, connections, min(3.0, duration), threads)
            rss_idle = rss_mb(process.pid)[0]
            latencies: list = []
            stop = threading.Event()
            prober = threading.Thread(target=_probe_health, args=(url, stop, latencies), daemon=True)
            prober.start()
            found = _wrk(url, path, connections, duration, threads)
            stop.set()
            prober.join(timeout=30)
        rss_loaded = rss_mb(process.pid)[1]
        status, sent, growth = _upload_beside_memory(process.pid, url, upload_bytes)
    finally:
        process.terminate()
        process.wait(timeout=30)
    ms = sorted(1000 * t for t in latencies)
    return LoadResult(
        connections,
        found["duration_us"] / 1e6,
        len(body),
        found["requests"] / (found["duration_us"] / 1e6),
        found["p50_us"] / 1000,
        found["p99_us"] / 1000,
        found["non2xx"] + found["socket_errors"],
        statistics.median(ms) if ms else float("nan"),
        float(np.percentile(ms, 99, method="nearest")) if ms else float("nan"),
        len(ms),
        rss_idle,
        rss_loaded,
        growth,
        status,
        sent / 2**20,
        machine(),
    )


def _upload_beside_memory(pid: int, url: str, upload_bytes: int) -> tuple[int | None, int, float]:
    """chunked_upload while the server's RSS is read every 10 ms: (status, bytes sent, MB it grew)."""
    before, samples, done = rss_mb(pid)[0], [], threading.Event()
    sampler = threading.Thread(target=_sample_rss, args=(pid, done, samples), daemon=True)
    sampler.start()
    try:
        status, sent = chunked_upload(url, upload_bytes)
    finally:
        done.set()
        sampler.join(timeout=10)
    return status, sent, max(samples, default=before) - before


def _check(connections: int, duration: float, image) -> None:
    if connections < 1 or not duration > 0:
        raise UserError(
            f"--connections must be >= 1 and --duration > 0 seconds; got {connections} and {duration}"
        )
    if image and not Path(image).is_file():
        raise UserError(f"--image {image} not found; give a PNG file")
    if shutil.which("wrk") is None:
        raise UserError(
            "wrk (the load generator) not found; install it: apt-get install wrk (Debian, Ubuntu) "
            "or brew install wrk (macOS)"
        )


def _sample_rss(pid: int, done: threading.Event, samples: list) -> None:
    while not done.is_set():
        samples.append(rss_mb(pid)[0])
        done.wait(0.01)
    samples.append(rss_mb(pid)[0])


def markdown(result: LoadResult) -> str:
    """The result as a Markdown table."""
    rows = [
        ("predictions/s", f"{result.predictions_per_s:,.0f}"),
        ("latency p50 / p99", f"{result.latency_p50_ms:.0f} / {result.latency_p99_ms:.0f} ms"),
        ("errors (non-2xx, socket)", f"{result.errors}"),
        (
            "health p50 / p99 while loaded",
            f"{result.health_p50_ms:.1f} / {result.health_p99_ms:.1f} ms ({result.health_probes} probes)",
        ),
        ("server RSS idle / peak under load", f"{result.rss_idle_mb:.0f} / {result.rss_loaded_mb:.0f} MB"),
        (
            "1 GB chunked upload",
            f"{result.upload_status or 'cut off'} after {result.upload_sent_mb:.0f} MB sent; "
            f"server RSS +{result.upload_rss_growth_mb:.1f} MB",
        ),
    ]
    head = (
        f"wrk, {result.connections} connections, {result.duration_s:.0f} s, POST /api/predict with a "
        f"{result.image_bytes:,}-byte PNG; machine: {result.machine} (wrk and the server share it)"
    )
    return "\n".join([head, "", "| measure | value |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)])
