"""The JSON API's document: the bodies /api/predict takes (an image in every common form, or JSON pixels) and
the models of its answers, which FastAPI publishes at /openapi.json and checks each answer against."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from mnist_mlp.predict import MAX_PIXELS

MAX_UPLOAD = 2 * 1024 * 1024  # bytes; counted as they arrive, whatever the framing; more gets 413


IMAGE_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/bmp",
    "image/tiff",
    "image/webp",
    "application/octet-stream",
)  # a raw image as the body (its bytes say which format)


TAKEN = (*IMAGE_TYPES, "multipart/form-data", "application/json")


BINARY = {"schema": {"type": "string", "format": "binary"}}


PIXELS_SCHEMA = {
    "type": "object",
    "required": ["pixels"],
    "properties": {
        "pixels": {
            "description": "28x28 or 784 gray levels, 0..255 (or 0..1), white ink on black as in MNIST",
            "oneOf": [
                {
                    "type": "array",
                    "minItems": 784,
                    "maxItems": 784,
                    "items": {"type": "number", "minimum": 0, "maximum": 255},
                },
                {
                    "type": "array",
                    "minItems": 28,
                    "maxItems": 28,
                    "items": {
                        "type": "array",
                        "minItems": 28,
                        "maxItems": 28,
                        "items": {"type": "number", "minimum": 0, "maximum": 255},
                    },
                },
            ],
        }
    },
}


REQUEST_BODY = {
    "required": True,
    "content": {
        **{t: BINARY for t in IMAGE_TYPES},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        },
        "application/json": {"schema": PIXELS_SCHEMA},
    },
}


class PredictionOut(BaseModel):
    digit: int | None = Field(ge=0, le=9, description="null where no digit was found (see reason)")
    probabilities: list[float] = Field(
        min_length=10,
        max_length=10,
        description="for digits 0..9 (with no digit: the model's guess at black)",
    )
    unsure: bool
    reason: str = Field(description='why unsure; "" otherwise')
    image: list[list[int]] = Field(description="the 28x28 the model saw, 0..255, white on black")


class ErrorOut(BaseModel):
    error: str = Field(description="what is wrong and what to send instead")


class HealthOut(BaseModel):
    status: Literal["ok"]


class ModelOut(BaseModel):
    run: str
    config_name: str | None = None  # the preset or file it was trained from ("handwriting"), where recorded
    config: dict[str, Any]
    test_accuracy: float | None
    backend: str | None


ERRORS = {
    400: {"model": ErrorOut, "description": "not a readable image, bad JSON pixels, or an empty body"},
    413: {
        "model": ErrorOut,
        "description": f"body over {MAX_UPLOAD // 2**20} MB or image over {MAX_PIXELS:,} pixels",
    },
    415: {"model": ErrorOut, "description": "a Content-Type the API does not take"},
}


def prediction_json(found) -> dict:
    return {
        "digit": None if found.blank else found.digit,  # a client reading only `digit` must not see a 5
        "probabilities": list(found.probabilities),
        "unsure": found.unsure,
        "reason": found.reason,
        "image": found.image.tolist(),
    }
