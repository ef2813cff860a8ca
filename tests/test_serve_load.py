"""The server as a real process (`mnist-mlp serve` on a free port): a 1 GB chunked upload leaves its
memory flat, large uploads decode off the event loop, and `bench --serve` runs end to end with wrk."""

import io
import json
import shutil
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from mnist_mlp import loadtest
from mnist_mlp.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(trained):
    _, run = trained
    process, url = loadtest.start_server(run)
    yield process, url
    process.terminate()
    process.wait(timeout=30)


def test_a_1_gb_chunked_upload_is_cut_off_at_the_cap_and_memory_stays_flat(server):
    process, url = server
    before = loadtest.rss_mb(process.pid)[0]
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(loadtest.rss_mb(process.pid)[0])
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        status, sent = loadtest.chunked_upload(url, 1 << 30)
    finally:
        done.set()
        sampler.join()
    print(
        f"1 GB chunked upload: {status} after {sent / 2**20:.0f} MB; server RSS {before:.0f} MB, "
        f"peak {max(samples):.0f} MB"
    )
    assert status in (413, None)  # None: the connection was cut before the answer could be read
    assert sent < 64 * 2**20  # the server stopped reading at 2 MB (the rest: socket buffers)
    assert max(samples) - before < 32  # MB
    assert urllib.request.urlopen(url + "/api/health", timeout=10).status == 200


def _big_png():
    sheet = np.full((5000, 5000), 255, np.uint8)  # 25 MP, the most we take: a few hundred ms to decode
    sheet[1500:3500, 2400:2600] = 0  # a 1
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="PNG")
    return buffer.getvalue()


def test_large_uploads_decode_off_the_event_loop(server):
    _, url = server
    body, finished, health_at = _big_png(), [], []

    def upload():
        request = urllib.request.Request(
            url + "/api/predict", data=body, headers={"Content-Type": "image/png"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            finished.append((time.monotonic(), json.loads(response.read())["digit"]))

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # the uploads are in
    assert urllib.request.urlopen(url + "/api/health", timeout=60).status == 200
    health_at.append(time.monotonic())
    for thread in threads:
        thread.join()
    assert [digit for _, digit in finished] == [1] * 8
    # the event loop answered health while most uploads were still being decoded (on today's main it
    # could only answer once they were done, one after another)
    assert sum(at > health_at[0] for at, _ in finished) >= 6


def test_bench_serve_reports_the_load(trained, tmp_path, capsys):
    assert shutil.which("wrk"), "wrk missing: `make test` installs it (apt-get install wrk)"
    _, run = trained
    out = tmp_path / "serve.json"
    assert (
        main(["bench", "--serve", str(run), "--connections", "16", "--duration", "2", "--json", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    assert "predictions/s" in text and "health p50 / p99" in text and "1 GB chunked upload" in text
    result = json.loads(out.read_text())
    assert (
        result["errors"] == 0 and result["predictions_per_s"] > 0 and result["upload_status"] in (413, None)
    )
