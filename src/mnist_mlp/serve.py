"""The draw-a-digit web page and its JSON API (FastAPI): bounded uploads in every common form, decoding on
a small thread pool, inference micro-batched by batcher.py. The model is loaded once, at start."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import io
import json
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from mnist_mlp import runs, signals
from mnist_mlp.api import (
    ERRORS,
    IMAGE_TYPES,
    MAX_UPLOAD,
    REQUEST_BODY,
    TAKEN,
    HealthOut,
    ModelOut,
    PredictionOut,
    prediction_json,
)
from mnist_mlp.batcher import MAX_WAIT, Batcher, forward_pass
from mnist_mlp.errors import UserError
from mnist_mlp.predict import FORMATS, ImageTooLarge, open_image, prediction, to_mnist

BACKLOG = 2048  # connections waiting to be accepted (uvicorn's default): a class opening the page at once
SHUTDOWN_GRACE = 3  # seconds Ctrl-C waits for requests in flight before it stops the server
# Bytes; larger uploads (photos) decode on their own thread, so drawn digits never wait behind them
SMALL_BODY = 64 * 1024
SMALL_PIXELS = 1_000_000  # ...as do small files of many pixels (the page's drawing: 78,400)


class UploadTooLarge(UserError):
    """The body passed MAX_UPLOAD (413; the rest is not read)."""


class UnsupportedType(UserError):
    """A Content-Type the API does not take (415)."""


def create_app(run_dir: str | Path, model=None, max_wait: float = MAX_WAIT) -> FastAPI:
    """The app for one finished run; `model` (already loaded) skips loading it again."""
    run = runs.load_run(run_dir)
    if model is None:
        model = runs.load_model(run)
    batcher = Batcher(forward_pass(model), max_wait=max_wait)  # compiles every batch size now
    # one thread each: more only contend for the GIL with the event loop (health's p99 under load: 15 ms with
    # one, ~50 ms with two), and at most two images are decoded at once (25 MP: 25 MB each, as 8-bit gray)
    decoders = ThreadPoolExecutor(1, thread_name_prefix="mnist-mlp-decode")
    photo_decoders = ThreadPoolExecutor(1, thread_name_prefix="mnist-mlp-decode-photo")
    page = HTMLResponse(resources.files("mnist_mlp").joinpath("static/index.html").read_text())
    info = ModelOut(
        run=run.name,
        config_name=run.metrics.get("config_name"),
        config=dataclasses.asdict(run.config),
        test_accuracy=run.metrics.get("test_accuracy"),
        backend=run.metrics.get("backend"),
    ).model_dump()
    app = FastAPI(title="mnist-mlp", description="Draw a digit; the classic MNIST MLP reads it.")
    app.state.model, app.state.batcher = model, batcher

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        """404, 405 and the like as every other error: {"error": ...}."""
        return JSONResponse(
            {"error": f"{e.detail}: {request.method} {request.url.path}"},
            status_code=e.status_code,
            headers=e.headers,
        )

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index():
        return page

    @app.get("/api/health", response_model=HealthOut)
    async def health():
        return JSONResponse({"status": "ok"})

    @app.get("/api/model", response_model=ModelOut)
    async def model_info():
        return JSONResponse(info)

    @app.post(
        "/api/predict",
        responses={200: {"model": PredictionOut}, **ERRORS},
        openapi_extra={"requestBody": REQUEST_BODY},
    )
    async def predict(request: Request) -> Response:
        """A digit image (PNG, JPEG, GIF, BMP, TIFF, WebP) as the raw body or as the one file of a
        multipart form, or JSON {"pixels": 28x28 or 784 numbers} -> the digit, its probabilities and
        what the model saw."""
        return await _predict(request, batcher, decoders, photo_decoders)

    return app


async def _predict(request: Request, batcher, decoders, photo_decoders) -> Response:
    """The body read within its cap, decoded on a thread (a drawing on `decoders`, a photo on
    `photo_decoders`), the digit read in the batcher's next batch."""
    try:
        body = await _read_capped(request)
        kind = _kind(request.headers.get("content-type"))
        if kind == "multipart":
            body = await _multipart_file(request.headers, body)
    except UserError as e:
        return _error(e)
    except ClientDisconnect:  # a closed tab or a lost phone mid-upload: no one to answer, nothing to log
        return Response(status_code=400)
    except asyncio.CancelledError:  # Ctrl-C's grace ran out while this upload was still arriving
        return Response(status_code=503)
    loop = asyncio.get_running_loop()
    future = loop.create_future()  # one wake-up: the decoder hands the image to the batcher, not back here
    if len(body) <= SMALL_BODY:  # a drawing, most likely: its own thread, unless its header says a photo's
        decoders.submit(_decode_and_queue, batcher, kind, body, future, loop, photo_decoders)
    else:
        photo_decoders.submit(_decode_and_queue, batcher, kind, body, future, loop)
    outcome = await future
    if isinstance(outcome, UserError):
        return _error(outcome)
    return Response(outcome, media_type="application/json")


def _error(e: UserError) -> JSONResponse:
    status = {UploadTooLarge: 413, ImageTooLarge: 413, UnsupportedType: 415}.get(type(e), 400)
    headers = {"Connection": "close"} if isinstance(e, UploadTooLarge) else {}  # the unread rest: drop it
    if isinstance(e, UnsupportedType):
        headers["Accept-Post"] = ", ".join(TAKEN)
    return JSONResponse({"error": str(e)}, status_code=status, headers=headers)


async def _read_capped(request: Request) -> bytes:
    """The body, counted as it arrives: UploadTooLarge as soon as it passes MAX_UPLOAD."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_UPLOAD:
        raise UploadTooLarge(
            f"upload larger than {MAX_UPLOAD // 2**20} MB ({int(declared):,} bytes declared)"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD:
            raise UploadTooLarge(f"upload larger than {MAX_UPLOAD // 2**20} MB")
        chunks.append(chunk)
    if not size:
        raise UserError(
            'empty body: send an image, a multipart form with one file, or JSON {"pixels": [...]}'
        )
    return b"".join(chunks)


def _kind(content_type: str | None) -> str:
    media = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return "multipart"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media in IMAGE_TYPES or media in ("image/jpg", "image/x-ms-bmp"):
        return "image"
    raise UnsupportedType(
        f"Content-Type {media} is not taken; send an image as the body (Content-Type "
        f"{', '.join(IMAGE_TYPES)}), multipart/form-data with one file field "
        '(curl -F file=@digit.png), or application/json {"pixels": [...]}'
    )


async def _multipart_file(headers: Headers, body: bytes) -> bytes:
    """The one file of a multipart/form-data body (already capped), whatever its field's name."""

    async def stream():
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=1, max_fields=16).parse()
    except MultiPartException as e:
        raise UserError(
            f"multipart upload: {e.message}; send one file field (curl -F file=@digit.png)"
        ) from None
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise UserError("multipart upload has no file field; send one (curl -F file=@digit.png)")
        content = await files[0].read()
        if not content:
            raise UserError("the uploaded file is empty (was a file chosen?); send a digit image")
        return content
    finally:
        await form.close()


def _decode_and_queue(
    batcher: Batcher,
    kind: str,
    body: bytes,
    future: asyncio.Future,
    loop,
    photo_decoders: ThreadPoolExecutor | None = None,
) -> None:
    """On a decoder thread: the MNIST-style 28x28 goes to the batcher, whose thread settles `future` with
    the response's JSON bytes; a bad upload settles it with its UserError. A small body whose header
    declares more than SMALL_PIXELS (a blank 5000x5000 PNG is 35 KB) moves to `photo_decoders` first."""
    if photo_decoders is not None and kind != "json" and _declared_pixels(body) > SMALL_PIXELS:
        photo_decoders.submit(_decode_and_queue, batcher, kind, body, future, loop)
        return
    try:
        image, note = to_mnist(open_image(_pixels(body) if kind == "json" else body, "upload"))
    except Exception as e:  # noqa: BLE001  a UserError is answered 4xx; anything else is a bug and a 500
        loop.call_soon_threadsafe(_settle, future, e)
        return
    batcher.submit(
        image, future, loop, lambda row: json.dumps(prediction_json(prediction(image, note, row))).encode()
    )


def _declared_pixels(body: bytes) -> int:
    """Width x height as the image's header declares them (Pillow reads only the header); 0 if unreadable."""
    try:
        with Image.open(io.BytesIO(body), formats=FORMATS) as image:
            return image.width * image.height
    except Exception:  # noqa: BLE001  the decoder thread reports it properly
        return 0


def _settle(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_result(error) if isinstance(error, UserError) else future.set_exception(error)


def _pixels(body: bytes) -> np.ndarray:
    try:
        given = json.loads(body)["pixels"]
        pixels = np.asarray(given, dtype=np.float64)  # float64: 1e300 is out of range, not inf
    except (ValueError, KeyError, TypeError, IndexError, RecursionError, OverflowError):
        raise UserError('JSON must be {"pixels": [...]} with 28x28 or 784 numbers') from None
    if pixels.size != 784 or pixels.shape not in ((784,), (28, 28)):
        raise UserError(f"pixels must be 28x28 or 784 values; got shape {pixels.shape}")
    if any(type(v) not in (int, float) for v in np.asarray(given, dtype=object).flat):
        raise UserError("pixels must be numbers, not null, true, false or strings")
    if not np.isfinite(pixels).all():
        raise UserError("pixels has NaN or infinite values")
    if pixels.min() < 0 or pixels.max() > 255:
        raise UserError(f"pixels must lie in 0..255; got {pixels.min():g}..{pixels.max():g}")
    return pixels.reshape(28, 28).astype(np.float32)


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A socket bound to host:port, or a UserError that says why not (checked before the model loads)."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port {port} is out of range; give 1..65535 (default 8000)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)  # now: a second server fails here, and browsers wait while the model loads
    except OSError as e:
        hint = {
            errno.EADDRINUSE: "another server has it; stop it or pick another --port",
            errno.EACCES: "ports below 1024 need root; pick another --port, e.g. 8000",
            errno.EADDRNOTAVAIL: "that address is not this machine's; use 127.0.0.1 or 0.0.0.0",
        }
        raise UserError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; "
            f"{hint.get(e.errno, 'check --host and --port')}"
        ) from None
    return sock


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    sock: socket.socket | None = None,
    ready: Callable[[], None] = lambda: None,
) -> None:
    """Run the app with uvicorn until interrupted, on `sock` if given (see bind) or on host:port; `ready` is
    called once the model is loaded, just before requests are answered. Ctrl-C waits up to
    SHUTDOWN_GRACE seconds for requests in flight (an upload that never ends included), then stops."""
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, stopped by every stop signal (signals.serving); the one that stopped it is raised
        again once the loop has ended, to the command's handler, not inside the loop as uvicorn raises it."""

        stopped_by = 0

        def handle_exit(self, sig, frame):
            self.stopped_by = self.stopped_by or sig
            super().handle_exit(sig, frame)

        def capture_signals(self):
            return signals.serving(self.handle_exit)

    sock = sock or bind(host, port)
    app = create_app(run_dir)
    server = Server(
        uvicorn.Config(
            app,
            log_level="warning",
            backlog=BACKLOG,
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
            lifespan="off",
        )
    )  # the app has no start-up or shutdown of its own
    gc.collect()
    # A full collection walked the ~250k objects Keras and JAX leave (147 ms): health's p99 under load.
    gc.freeze()
    if signals.received:  # Ctrl-C while the model loaded, where Keras or JAX dropped it: the server ran on
        raise KeyboardInterrupt
    ready()
    server.run(sockets=[sock])
    if server.stopped_by:
        signal.raise_signal(server.stopped_by)


def urls(host: str, port: int) -> list[str]:
    """Where a browser reaches the server: `host`; for every interface ("0.0.0.0", "::"), this machine and
    its address on the network (the one a route out would use; no packet is sent), for other machines."""

    def url(name: str) -> str:
        return f"http://[{name}]:{port}/" if ":" in name else f"http://{name}:{port}/"

    if host not in ("0.0.0.0", "::", ""):
        return [url(host)]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # a documentation address (RFC 5737): only the route is looked up
            lan = probe.getsockname()[0]
    except OSError:
        lan = socket.gethostname()
    return [url("127.0.0.1")] + ([url(lan)] if lan != "127.0.0.1" else [])
