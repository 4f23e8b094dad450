"""Request and response bodies of the HTTP API (pydantic models; FastAPI builds the OpenAPI schema from them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorResponse(BaseModel):
    """Every error the API returns (4xx and 5xx) has this body."""

    error: str = Field(description="machine-readable code, e.g. 'unauthorized', 'image_too_large', 'overloaded'",
                       examples=["invalid_image"])
    detail: str = Field(description="what went wrong and what to do about it",
                        examples=["images[1] ('b.png'): not an image"])


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    model: str = Field(description="name of the loaded model")
    queued_images: int = Field(description="images waiting for a forward pass")
    version: str = Field(description="geovl version")


class ModelDescription(BaseModel):
    name: str = Field(description="what the server was asked to load (registry name, path or random:<arch>)")
    architecture: str
    dim: int = Field(description="embedding dimension D")
    image_size: int = Field(description="input side in pixels")
    device: str
    precision: str


class LabelSetDescription(BaseModel):
    name: str = Field(description="pass as label_set")
    classes: list[str] = Field(description="class names, as reported in predictions")


class ModelsResponse(BaseModel):
    models: list[ModelDescription] = Field(description="the loaded model (one per server)")
    label_sets: list[LabelSetDescription] = Field(description="named label sets a request can use")
    templates: list[str] = Field(description="prompt templates every class name is put into")


class ClassifyRequest(BaseModel):
    """JSON form of ``POST /v1/classify``; the multipart form has the same fields with file uploads as images."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(description="base64-encoded image files (JPEG, PNG, TIFF, ...); data: URLs accepted",
                              examples=[["iVBORw0KGgo..."]])
    labels: list[str] | None = Field(default=None, description="class names; with label_set, a subset of the set",
                                     examples=[["forest", "river", "dense residential area"]])
    label_set: str | None = Field(default=None, description="a named label set (see GET /v1/models)",
                                  examples=["eurosat"])
    top_k: int = Field(default=5, description="classes returned per image (at most the number of classes)")


#: Schema of the multipart form of ``POST /v1/classify`` (FastAPI cannot derive it for a two-media-type body).
CLASSIFY_FORM_SCHEMA: dict[str, Any] = {
    "title": "ClassifyForm",
    "type": "object",
    "required": ["images"],
    "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                   "description": "image files, one part per image"},
        "labels": {"type": "array", "items": {"type": "string"},
                   "description": "class names: repeat the field, or separate names with commas"},
        "label_set": {"type": "string", "description": "a named label set (see GET /v1/models)"},
        "top_k": {"type": "integer", "minimum": 1, "default": 5},
    },
}


class ImagePrediction(BaseModel):
    index: int = Field(description="position of the image in the request")
    filename: str | None = Field(default=None, description="upload file name (multipart only)")
    labels: list[str] = Field(description="top-k class names, best first")
    scores: list[float] = Field(description="their probabilities (softmax over all classes), same order")


class Timing(BaseModel):
    decode_ms: float = Field(description="decoding and preprocessing the images")
    queue_ms: float = Field(description="longest wait of an image for its forward pass")
    inference_ms: float = Field(description="longest forward pass the request's images were in")
    classify_ms: float = Field(description="class-text embeddings (cached after the first request) and scoring")
    total_ms: float = Field(description="the whole request, from its body being read to the response")
    batch_sizes: list[int] = Field(description="size of the forward batch each image was in")


class ClassifyResponse(BaseModel):
    model: str
    classes: list[str] = Field(description="every class the images were scored against")
    predictions: list[ImagePrediction] = Field(description="one per image, in request order")
    timing: Timing
