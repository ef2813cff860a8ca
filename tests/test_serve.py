"""The web API through FastAPI's TestClient: every endpoint and every error case."""

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnist_mlp import serve
from test_predict import _png, _render, trained  # noqa: F401  (the shared trained-model fixture)


@pytest.fixture(scope="module")
def client(trained):  # noqa: F811
    model, run = trained
    return TestClient(serve.create_app(run, model=model))


def test_page_health_model_and_docs(client, trained):  # noqa: F811
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "api/predict" in page.text
    assert client.get("/api/health").json() == {"status": "ok"}
    info = client.get("/api/model").json()
    assert info["backend"] == "jax" and 0.9 < info["test_accuracy"] < 1
    assert info["config"]["model"]["hidden_units"] == [512, 512]
    assert client.get("/docs").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def test_predict_an_uploaded_image_and_a_pixel_array(client, mnist):
    (_, _), (x_test, _) = mnist
    response = client.post("/api/predict", content=_png(_render(x_test[0])), headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    result = response.json()
    assert result["digit"] == 7 and len(result["probabilities"]) == 10
    assert abs(sum(result["probabilities"]) - 1) < 1e-4
    assert np.array(result["image"]).shape == (28, 28)
    by_pixels = client.post("/api/predict", json={"pixels": x_test[1].tolist()})
    assert by_pixels.status_code == 200 and by_pixels.json()["digit"] == 2
    flat = client.post("/api/predict", json={"pixels": (x_test[1].ravel() / 255).tolist()})
    assert flat.json()["digit"] == 2


@pytest.mark.parametrize("body, headers, status, message", [
    (b"", {"Content-Type": "image/png"}, 400, "empty body"),
    (b"not an image at all", {"Content-Type": "image/png"}, 400, "not a readable image"),
    (b"x" * (2 * 1024 * 1024 + 1), {"Content-Type": "image/png"}, 413, "larger than 2 MB"),
    (json.dumps({"pixels": [1, 2, 3]}).encode(), {"Content-Type": "application/json"}, 400, "784 values"),
    (b"{not json", {"Content-Type": "application/json"}, 400, "JSON must be"),
])
def test_bad_requests_get_json_errors(client, body, headers, status, message):
    response = client.post("/api/predict", content=body, headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_decompression_bomb_is_refused_and_the_server_lives_on(client, mnist):
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, format="PNG")  # 144 MP that compresses to a few kB
    assert len(buffer.getvalue()) < 2 * 1024 * 1024
    response = client.post("/api/predict", content=buffer.getvalue(), headers={"Content-Type": "image/png"})
    assert response.status_code == 413 and "more than" in response.json()["error"]
    assert client.get("/api/health").status_code == 200


def test_the_model_is_loaded_once(trained, monkeypatch):  # noqa: F811
    model, run = trained
    from mnist_mlp import evaluate

    calls = []
    monkeypatch.setattr(evaluate, "load_model", lambda r: calls.append(r) or model)
    client = TestClient(serve.create_app(run))
    for _ in range(3):
        client.post("/api/predict", json={"pixels": np.zeros(784).tolist()})
    assert len(calls) == 1
