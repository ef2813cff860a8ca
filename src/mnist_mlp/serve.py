"""The draw-a-digit web page and its JSON API (FastAPI). The model is loaded once, at start."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from mnist_mlp import runs
from mnist_mlp.errors import UserError
from mnist_mlp.predict import ImageTooLarge, Prediction, predict_arrays, predict_image

MAX_UPLOAD = 2 * 1024 * 1024  # bytes; larger uploads get 413


def prediction_json(prediction: Prediction) -> dict:
    return {"digit": prediction.digit, "probabilities": list(prediction.probabilities),
            "unsure": prediction.unsure, "reason": prediction.reason, "image": prediction.image.tolist()}


def create_app(run_dir: str | Path, model=None) -> FastAPI:
    """The app for one finished run; `model` (already loaded) skips loading it again."""
    run = runs.load_run(run_dir)
    if model is None:
        from mnist_mlp.evaluate import load_model

        model = load_model(run)
    predict_arrays(model, [np.zeros((28, 28), np.uint8)])  # compile once, before the first user
    page = resources.files("mnist_mlp").joinpath("static/index.html").read_text()
    app = FastAPI(title="mnist-mlp", description="Draw a digit; the classic MNIST MLP reads it.")
    app.state.model = model

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return page

    @app.get("/api/health")
    def health():
        return {"status": "ok"}

    @app.get("/api/model")
    def model_info():
        return {"run": run.name, "config": dataclasses.asdict(run.config),
                "test_accuracy": run.metrics.get("test_accuracy"), "backend": run.metrics.get("backend")}

    @app.post("/api/predict", openapi_extra={"requestBody": {"content": {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object", "properties": {"pixels": {"type": "array"}}}}}}})
    async def predict(request: Request):
        """An image (PNG, JPEG, ... as the raw body) or JSON {"pixels": 28x28 or 784 numbers} -> prediction."""
        if int(request.headers.get("content-length") or 0) > MAX_UPLOAD:
            return error(413, f"upload larger than {MAX_UPLOAD // 1024 // 1024} MB")
        body = await request.body()
        if len(body) > MAX_UPLOAD:
            return error(413, f"upload larger than {MAX_UPLOAD // 1024 // 1024} MB")
        if not body:
            return error(400, "empty body: send an image or JSON {\"pixels\": [...]}")
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                source = _pixels(body)
            else:
                source = body
            return prediction_json(predict_image(app.state.model, source, "upload"))
        except UserError as e:
            return error(413 if isinstance(e, ImageTooLarge) else 400, str(e))

    return app


def _pixels(body: bytes):
    try:
        pixels = np.asarray(json.loads(body)["pixels"], dtype=np.float32)
    except (ValueError, KeyError, TypeError):
        raise UserError('JSON must be {"pixels": [...]} with 28x28 or 784 numbers') from None
    if pixels.size != 784:
        raise UserError(f"pixels must hold 784 values (28x28); got {pixels.size}")
    return pixels.reshape(28, 28)


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(run_dir), host=host, port=port, log_level="warning")
