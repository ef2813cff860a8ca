"""The web API through FastAPI's TestClient: every endpoint, every upload form and every error case."""

import asyncio
import io
import json
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_predict import _png, _render

from mnist_mlp import serve
from mnist_mlp.cli import main


@pytest.fixture(scope="module")
def client(trained):
    model, run = trained
    return TestClient(serve.create_app(run, model=model))


def test_page_health_model_and_docs(client, trained):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "api/predict" in page.text
    assert client.get("/api/health").json() == {"status": "ok"}
    info = client.get("/api/model").json()
    assert info["backend"] == "jax" and 0.9 < info["test_accuracy"] < 1
    assert info["config_name"] == "classic"  # trained without --config; the page shows it
    assert info["config"]["model"]["hidden_units"] == [512, 512]
    assert client.get("/docs").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def test_predict_an_uploaded_image_and_a_pixel_array(client, mnist):
    (_, _), (x_test, _) = mnist
    response = client.post(
        "/api/predict", content=_png(_render(x_test[0])), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200
    result = response.json()
    assert result["digit"] == 7 and len(result["probabilities"]) == 10
    assert abs(sum(result["probabilities"]) - 1) < 1e-4
    assert np.array(result["image"]).shape == (28, 28)
    by_pixels = client.post("/api/predict", json={"pixels": x_test[1].tolist()})
    assert by_pixels.status_code == 200 and by_pixels.json()["digit"] == 2
    flat = client.post("/api/predict", json={"pixels": (x_test[1].ravel() / 255).tolist()})
    assert flat.json()["digit"] == 2


def test_blank_paper_has_no_digit_in_the_api(client):
    """`"digit": 5` beside `unsure: true`: a client that reads only `digit` showed a 5 for blank paper."""
    paper = _png(np.full((60, 80), 250, np.uint8))
    blank = client.post("/api/predict", content=paper, headers={"Content-Type": "image/png"})
    assert blank.status_code == 200
    result = blank.json()
    assert result["digit"] is None and result["unsure"] and result["reason"].startswith("no digit found")
    assert len(result["probabilities"]) == 10  # the model's guess at black, for whoever wants it
    schema = client.get("/openapi.json").json()["components"]["schemas"]["PredictionOut"]["properties"]
    assert {"type": "null"} in schema["digit"]["anyOf"]


@pytest.mark.parametrize(
    "body, headers, status, message",
    [
        (b"", {"Content-Type": "image/png"}, 400, "empty body"),
        (b"not an image at all", {"Content-Type": "image/png"}, 400, "not a readable image"),
        (b"x" * (2 * 1024 * 1024 + 1), {"Content-Type": "image/png"}, 413, "larger than 2 MB"),
        (json.dumps({"pixels": [1, 2, 3]}).encode(), {"Content-Type": "application/json"}, 400, "784 values"),
        (b"{not json", {"Content-Type": "application/json"}, 400, "JSON must be"),
    ],
)
def test_bad_requests_get_json_errors(client, body, headers, status, message):
    response = client.post("/api/predict", content=body, headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_a_body_without_content_length_is_counted_as_it_arrives(client):
    sent = []

    def chunks():  # no Content-Length: httpx sends it chunked
        for _ in range(8):
            sent.append(1)
            yield b"x" * 1024 * 1024

    response = client.post("/api/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert response.status_code == 413 and "larger than 2 MB" in response.json()["error"]
    assert response.headers["connection"] == "close"


def test_decompression_bomb_is_refused_and_the_server_lives_on(client, mnist):
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, format="PNG")  # 144 MP that compresses to a few kB
    assert len(buffer.getvalue()) < 2 * 1024 * 1024
    response = client.post("/api/predict", content=buffer.getvalue(), headers={"Content-Type": "image/png"})
    assert response.status_code == 413 and "more than" in response.json()["error"]
    assert client.get("/api/health").status_code == 200


def test_the_model_is_loaded_once(trained, monkeypatch):
    model, run = trained
    from mnist_mlp import runs

    calls = []
    monkeypatch.setattr(runs, "load_model", lambda r: calls.append(r) or model)
    client = TestClient(serve.create_app(run))
    for _ in range(3):
        client.post("/api/predict", json={"pixels": np.zeros(784).tolist()})
    assert len(calls) == 1


def _png_header_only(width, height):
    """A PNG that declares width x height 8-bit gray pixels and holds none (a 'bomb' of a few bytes)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _blp_unsupported():
    """A Blizzard BLP file (a format Pillow knows, not one we list) whose decoder raises
    NotImplementedError."""
    return b"BLP1" + struct.pack("<iIIIii", 7, 0, 8, 8, 5, 0) + bytes(16 * 4 * 2 + 64)


def _tiff(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF")
    return buffer.getvalue()


def test_multipart_upload_as_curl_and_forms_send_it(client, mnist):
    (_, _), (x_test, _) = mnist
    png = _png(_render(x_test[0]))
    for field in ("file", "image", "upload"):  # the field's name is the sender's choice
        response = client.post("/api/predict", files={field: ("digit.png", png, "image/png")})
        assert response.status_code == 200, response.text
        assert response.json()["digit"] == 7
    with_text = client.post(
        "/api/predict", files={"file": ("digit.png", png, "image/png")}, data={"note": "hi"}
    )
    assert with_text.status_code == 200 and with_text.json()["digit"] == 7


def _multipart(*parts):
    """A multipart/form-data body from (name, filename or None, bytes) parts, and its Content-Type."""
    body = b"".join(
        b'--xyz\r\nContent-Disposition: form-data; name="%s"%s\r\n\r\n%s\r\n'
        % (name.encode(), b'; filename="%s"' % filename.encode() if filename else b"", data)
        for name, filename, data in parts
    )
    return body + b"--xyz--\r\n", "multipart/form-data; boundary=xyz"


@pytest.mark.parametrize(
    "parts, message",
    [
        ([("note", None, b"no file here")], "no file field"),
        ([("a", "a.png", b"x"), ("b", "b.png", b"y")], "multipart upload"),
        ([("file", "notes.txt", b"hello")], "not a readable image"),
        ([("file", "digit.png", b"")], "the uploaded file is empty"),  # a form sent with no file chosen
    ],
)
def test_bad_multipart_uploads_get_400(client, parts, message):
    body, content_type = _multipart(*parts)
    response = client.post("/api/predict", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_a_content_type_it_does_not_take_gets_415_naming_those_it_does(client):
    response = client.post("/api/predict", content=b"hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    error = response.json()["error"]
    assert "text/plain" in error and "multipart/form-data" in error and "image/png" in error
    assert "application/json" in response.headers["accept-post"]


@pytest.mark.parametrize(
    "body, headers, status, message",
    [
        (b"[" * 5000 + b"]" * 5000, {"Content-Type": "application/json"}, 400, "JSON must be"),
        (b'{"pixels": [' + b"1" * 400 + b"]}", {"Content-Type": "application/json"}, 400, "JSON must be"),
        (
            json.dumps({"pixels": [float("nan")] * 784}).encode(),
            {"Content-Type": "application/json"},
            400,
            "NaN",
        ),
        (json.dumps({"pixels": [300] * 784}).encode(), {"Content-Type": "application/json"}, 400, "0..255"),
        (
            json.dumps({"pixels": [None] * 784}).encode(),
            {"Content-Type": "application/json"},
            400,
            "must be numbers",
        ),
        (
            json.dumps({"pixels": ["255"] * 784}).encode(),
            {"Content-Type": "application/json"},
            400,
            "must be numbers",
        ),
        (
            json.dumps({"pixels": [True] * 784}).encode(),
            {"Content-Type": "application/json"},
            400,
            "must be numbers",
        ),
        (b"{}", {"Content-Type": "application/json"}, 400, "JSON must be"),
        (_blp_unsupported(), {"Content-Type": "image/png"}, 400, "not a readable image"),
        (
            _png(np.zeros((28, 28), np.uint8), format="PPM"),
            {"Content-Type": "image/png"},
            400,
            "not a readable image",
        ),
        (_tiff(np.full((40, 40), np.nan, np.float32)), {"Content-Type": "image/tiff"}, 400, "NaN"),
        (_png_header_only(50_000, 50_000), {"Content-Type": "image/png"}, 413, "more than 25,000,000"),
    ],
)
def test_hostile_bodies_get_json_4xx_never_500(client, body, headers, status, message):
    response = client.post("/api/predict", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_the_predict_command_refuses_an_unlisted_format_in_one_line(trained, tmp_path, capsys):
    _, run = trained
    (tmp_path / "odd.png").write_bytes(_blp_unsupported())
    assert main(["predict", str(run), str(tmp_path / "odd.png")]) == 2
    err = capsys.readouterr().err
    assert "not a readable image" in err and "Traceback" not in err


def test_openapi_documents_every_status_and_requires_pixels(client):
    document = client.get("/openapi.json").json()
    post = document["paths"]["/api/predict"]["post"]
    assert {"200", "400", "413", "415"} <= set(post["responses"])
    for status in ("400", "413", "415"):
        schema = post["responses"][status]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/ErrorOut")
    assert document["components"]["schemas"]["ErrorOut"]["required"] == ["error"]
    content = post["requestBody"]["content"]
    assert content["application/json"]["schema"]["required"] == ["pixels"]
    assert content["multipart/form-data"]["schema"]["required"] == ["file"]
    assert {"image/png", "image/jpeg", "application/octet-stream"} <= set(content)


def test_concurrent_requests_share_batches_of_one_compiled_call(trained, mnist):
    import httpx

    model, run = trained
    (_, _), (x_test, y_test) = mnist
    app = serve.create_app(run, model=model, max_wait=0.05)  # a long wait, so the batches are sure to form

    async def send_all():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await asyncio.gather(
                *(http.post("/api/predict", json={"pixels": x_test[i].tolist()}) for i in range(48))
            )

    responses = asyncio.run(send_all())
    from mnist_mlp.predict import predict_arrays

    assert [r.json()["digit"] for r in responses] == [
        p.digit for p in predict_arrays(model, list(x_test[:48]))
    ]
    assert app.state.batcher.images == 48 and app.state.batcher.batches < 48 / 4
    assert np.mean([r.json()["digit"] for r in responses] == y_test[:48]) > 0.9


def test_the_compiled_forward_pass_matches_keras_predict_at_every_batch_size(trained, mnist):
    from mnist_mlp.batcher import forward_pass
    from mnist_mlp.data import preprocess

    model, _ = trained
    (_, _), (x_test, _) = mnist
    forward = forward_pass(model)
    for n in (1, 3, 64, 100, 128):
        x = preprocess(x_test[:n])
        np.testing.assert_allclose(forward(x), model.predict(x, verbose=0), atol=1e-5)


def test_serve_on_a_bad_port_is_one_line_and_exit_2(trained, capsys):
    _, run = trained
    assert main(["serve", str(run), "--port", "70000"]) == 2
    assert "out of range" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", str(run), "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use" in err and "--port" in err


@pytest.mark.slow
def test_the_server_process_a_teacher_runs(trained, tmp_path):
    """`mnist-mlp serve` as a process: a second server on the same port, started while the first loads, is
    refused in one line; "Serving on" comes once requests are answered; a client gone mid-upload leaves no
    traceback; Ctrl-C stops it within the grace period even while an upload never finishes."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    _, run = trained
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "mnist_mlp", "serve", str(run), "--port", str(port)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert first.stdout.readline().startswith("Loading")
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "in use" in second.stderr and second.stderr.count("\n") == 1
        serving = first.stdout.readline()
        assert serving.startswith(f"Serving on http://127.0.0.1:{port}/"), serving
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as response:
            assert response.status == 200  # answered at once: the line came when the server was ready
        upload = (
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port)) as gone:
            gone.sendall(upload + b"\x89PNG" * 250)  # a tab closed mid-upload
            time.sleep(0.5)
        hanging = socket.create_connection(("127.0.0.1", port))
        hanging.sendall(upload + b"\x89PNG")
        time.sleep(0.5)
        started = time.monotonic()
        first.send_signal(signal.SIGINT)
        output = first.communicate(timeout=30)[0]
        assert time.monotonic() - started < serve.SHUTDOWN_GRACE + 5
        assert "Traceback" not in output and "ClientDisconnect" not in output, output
        hanging.close()
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
@pytest.mark.parametrize("signals", [("SIGHUP",), ("SIGINT", "SIGINT"), ("nohup", "SIGHUP", "SIGINT")])
def test_a_closed_terminal_or_a_second_ctrl_c_stops_the_server_in_one_line(signals, trained):
    """A closed terminal's SIGHUP (uvicorn handles only SIGINT and SIGTERM) and a second Ctrl-C while an
    upload held the shutdown printed a traceback (asyncio's CancelledError) before "interrupted". Under
    nohup (SIGHUP ignored) the server outlives the terminal, as before."""
    import signal
    import subprocess
    import sys
    import urllib.request

    from conftest import terminal_signals

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with terminal_signals():
        if signals[0] == "nohup":
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # restored by terminal_signals
        server = subprocess.Popen(
            [sys.executable, "-m", "mnist_mlp", "serve", str(trained[1]), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        assert server.stdout.readline().startswith("Loading") and server.stdout.readline().startswith(
            "Serving"
        )
        with socket.create_connection(("127.0.0.1", port)) as hanging:  # an upload that never ends
            hanging.sendall(
                b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 1000\r\n\r\n\x89PNG"
            )
            time.sleep(0.3)  # taken in
            for name in signals[signals[0] == "nohup" :]:
                if name == "SIGINT" and signals[0] == "nohup":  # the terminal closed: still serving
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as response:
                        assert response.status == 200 and server.poll() is None
                server.send_signal(getattr(signal, name))
                time.sleep(0.3)
            output = server.communicate(timeout=30)[0]
        assert output.strip().endswith("mnist-mlp: interrupted") and "Traceback" not in output, output
        assert server.returncode == (-signal.SIGHUP if signals == ("SIGHUP",) else 130)
    finally:
        server.kill()
        server.wait()


def test_a_ctrl_c_dropped_while_the_model_loads_still_stops_the_server(trained, monkeypatch):
    """Ctrl-C at the right moment of loading landed where Keras or JAX drop it: the server then came up and
    ran on (one of 12 presses here). The command's handler remembers it (signals.interrupt)."""
    import signal

    import uvicorn

    from mnist_mlp import signals

    started = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: started.append(True))
    monkeypatch.setattr(signals, "received", signal.SIGINT)
    with socket.create_server(("127.0.0.1", 0)) as sock, pytest.raises(KeyboardInterrupt):
        serve.serve(trained[1], sock=sock, ready=lambda: started.append("ready"))
    assert not started


def test_for_every_interface_the_addresses_printed_are_ones_a_browser_can_use():
    assert serve.urls("127.0.0.1", 8000) == ["http://127.0.0.1:8000/"]
    assert serve.urls("::1", 8000) == ["http://[::1]:8000/"]
    for host in ("0.0.0.0", "::"):
        here, *others = serve.urls(host, 8000)
        assert here == "http://127.0.0.1:8000/" and all(
            "0.0.0.0" not in u and "[::]" not in u for u in others
        )


def test_a_small_file_of_many_pixels_is_decoded_on_the_photos_thread(trained):
    """The drawings' thread takes small bodies, but a 35 KB PNG can hold 25 megapixels (1.5 s to decode):
    its header sends it to the photos' thread, so drawings never wait behind it."""

    class Pool:
        def __init__(self):
            self.jobs = []

        def submit(self, *job):
            self.jobs.append(job)

    drawing = _png(np.zeros((280, 280), np.uint8))
    for body, moved in ((_png_header_only(5000, 5000), True), (drawing, False), (b"not an image", False)):
        photos = Pool()
        batcher = Pool()  # stands in for the batcher: the decoded image is submitted to it
        loop = asyncio.new_event_loop()
        try:
            serve._decode_and_queue(batcher, "image", body, loop.create_future(), loop, photos)
        finally:
            loop.close()
        assert len(photos.jobs) == moved and len(body) <= serve.SMALL_BODY


def test_a_wrong_path_or_method_is_a_json_error_too(client):
    for method, path, status in (
        ("GET", "/api/nothing", 404),
        ("GET", "/api/predict", 405),
        ("DELETE", "/", 405),
    ):
        response = client.request(method, path)
        assert response.status_code == status and path in response.json()["error"], response.text
    assert client.head("/").status_code == 200  # link checkers and `curl -I` ask so


def test_serve_stopped_in_process_leaves_the_callers_handlers_in_charge(trained, monkeypatch):
    """serve() called from Python (a notebook) and stopped by Ctrl-C set the command's global 'interrupted'
    mark, so the caller's next serve() or train() stopped at once."""
    import signal

    import uvicorn

    from mnist_mlp import signals

    monkeypatch.setattr(signals, "received", 0)
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: setattr(self, "stopped_by", signal.SIGINT)
    )
    with socket.create_server(("127.0.0.1", 0)) as sock, pytest.raises(KeyboardInterrupt):
        serve.serve(trained[1], sock=sock)  # Python's own Ctrl-C handler raises it here
    assert signals.received == 0


def test_health_answers_while_a_photo_is_being_decoded(trained, monkeypatch):
    """A photo decodes on its own thread, not on the event loop: while its decoding is held, /api/health
    answers, and the photo's answer comes once it is let go."""
    model, run = trained
    started, let_go, to_mnist = threading.Event(), threading.Event(), serve.to_mnist

    def held(image):
        started.set()
        let_go.wait(60)
        return to_mnist(image)

    monkeypatch.setattr(serve, "to_mnist", held)
    sheet = np.full((1200, 1200), 255, np.uint8)  # a photo's size (SMALL_PIXELS), not a drawing's
    sheet[300:900, 580:620] = 0  # a 1
    photo = _png(sheet)
    assert len(photo) > serve.SMALL_BODY or serve._declared_pixels(photo) > serve.SMALL_PIXELS
    with TestClient(serve.create_app(run, model=model)) as client, ThreadPoolExecutor(2) as pool:
        answer = pool.submit(
            client.post, "/api/predict", content=photo, headers={"Content-Type": "image/png"}
        )
        try:
            assert started.wait(60)
            health = pool.submit(client.get, "/api/health")
            assert health.result(timeout=20).status_code == 200  # on the event loop: it would wait for let_go
        finally:
            let_go.set()
        assert answer.result(timeout=60).json()["digit"] == 1
