"""Request and response bodies of the HTTP API (pydantic models; FastAPI builds the OpenAPI schema from them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model: str = Field(description="name of the loaded model")
    index: bool = Field(description="whether POST /v1/search has an index loaded")


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


THRESHOLD_DESCRIPTION = (
    "multi-label mode: return, per image, every class whose independent per-class score (not a softmax over the "
    "classes) is >= threshold, best first, at most top_k of them (possibly none). A number in the open interval "
    "(0, 1); leave it out for the top-k softmax probabilities")


class ClassifyRequest(BaseModel):
    """JSON form of ``POST /v1/classify``; the multipart form has the same fields with file uploads as images."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(description="base64-encoded image files (JPEG, PNG, TIFF, ...); data: URLs accepted",
                              examples=[["iVBORw0KGgo..."]])
    labels: list[str] | None = Field(default=None, description="class names; with label_set, a subset of the set",
                                     examples=[["forest", "river", "dense residential area"]])
    label_set: str | None = Field(default=None, description="a named label set (see GET /v1/models)",
                                  examples=["eurosat"])
    top_k: int = Field(default=5, description="classes returned per image (at most the number of classes; "
                                              "with threshold, at most this many of the classes that pass it)")
    threshold: float | None = Field(
        default=None, gt=0, lt=1, examples=[0.3],
        description=THRESHOLD_DESCRIPTION)

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"threshold must be a number in the open interval (0, 1), not a boolean ({value!r})")
        return value


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
        "threshold": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                      "description": THRESHOLD_DESCRIPTION},
    },
}


class ImagePrediction(BaseModel):
    index: int = Field(description="position of the image in the request")
    filename: str | None = Field(default=None, description="upload file name (multipart only)")
    labels: list[str] = Field(description="top-k class names, best first; multi-label (threshold given): the classes "
                                          "scoring >= threshold, best first, at most top_k (possibly none)")
    scores: list[float] = Field(description="their probabilities (softmax over all classes), same order; multi-label: "
                                            "independent per-class scores in (0, 1), which need not sum to 1")


class ImageFailureModel(BaseModel):
    index: int = Field(description="position of the image in the request")
    filename: str | None = Field(default=None, description="upload file name (multipart only)")
    error: str = Field(description="why it could not be decoded", examples=["not a recognised image format"])


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
    multi_label: bool = Field(description="true when the request gave a threshold: labels are every "
                                          "class at or above it and scores are per-class scores")
    threshold: float | None = Field(default=None, description="the request's threshold (null: top-k softmax)")
    predictions: list[ImagePrediction] = Field(description="one per decodable image, in request order (see index)")
    failures: list[ImageFailureModel] = Field(default_factory=list, description="images that could not be decoded "
                                              "(the others are still classified; all failing is a 422)")
    timing: Timing


class EmbedRequest(BaseModel):
    """JSON form of ``POST /v1/embed``: images, texts, or both (at least one item)."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(default_factory=list, description="base64-encoded image files; data: URLs accepted")
    texts: list[str] = Field(default_factory=list, description="texts to embed", examples=[["a harbour with boats"]])


#: Schema of the multipart form of ``POST /v1/embed``.
EMBED_FORM_SCHEMA: dict[str, Any] = {
    "title": "EmbedForm",
    "type": "object",
    "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                   "description": "image files, one part per image"},
        "texts": {"type": "array", "items": {"type": "string"}, "description": "texts, one field per text"},
    },
}


class EmbedResponse(BaseModel):
    model: str
    dim: int = Field(description="embedding dimension D")
    image_embeddings: list[list[float] | None] = Field(description="one L2-normalised D-vector per image, in order; "
                                                                   "null for an image listed in failures")
    text_embeddings: list[list[float]] = Field(description="one L2-normalised D-vector per text, in order")
    failures: list[ImageFailureModel] = Field(default_factory=list, description="images that could not be decoded")


class SearchRequest(BaseModel):
    """``POST /v1/search``: exactly one of ``text``, ``image`` or ``vector``, plus optional filters."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, description="a text query", examples=["a harbour with ships"])
    image: str | None = Field(default=None, description="a base64-encoded image file (data: URLs accepted)")
    vector: list[float] | None = Field(default=None, description="a query embedding of the index's dimension")
    k: int = Field(default=10, description="number of hits (at most the server's max_top_k)")
    bbox: list[float] | str | None = Field(
        default=None, description="footprint filter: [west, south, east, north] in degrees, or 'w,s,e,n'",
        examples=[[5.0, 45.0, 11.0, 48.0]])
    start: str | None = Field(default=None, description="acquired on or after (ISO date or datetime)",
                              examples=["2020-01-01"])
    end: str | None = Field(default=None, description="acquired on or before (ISO date or datetime)")
    where: list[str] = Field(default_factory=list, description="metadata conditions, as for `geovl search --where`",
                             examples=[["sensor=S2", "cloud<=20"]])


class SearchHit(BaseModel):
    id: int = Field(description="the vector's id in the index")
    score: float = Field(description="cosine similarity to the query")
    rank: int = Field(description="0-based position in the results")
    metadata: dict[str, Any] = Field(description="the row's metadata: times as ISO strings, geometry (WKB) as hex, "
                                                 "missing values as null")


class SearchResponse(BaseModel):
    model: str
    count: int = Field(description="searchable vectors in the index")
    hits: list[SearchHit] = Field(description="best first")
