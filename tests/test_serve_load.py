"""The server as a real process (`mnist-mlp serve` on a free port): a 1 GB chunked upload leaves its
memory flat, and `bench --serve` runs end to end with wrk."""

import json
import shutil
import threading
import time
import urllib.request

import pytest

from mnist_mlp import loadtest
from mnist_mlp.api import MAX_UPLOAD
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
    assert MAX_UPLOAD < sent < 64 * 2**20  # past the cap, then the server stopped reading (the rest: buffers)
    assert max(samples) - before < 32  # MB
    assert urllib.request.urlopen(url + "/api/health", timeout=10).status == 200


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
