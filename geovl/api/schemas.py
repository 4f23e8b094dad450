"""Request and response bodies of the HTTP API (pydantic models; FastAPI builds the OpenAPI schema from them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from geovl.models.decoding import DecodingConfig
from geovl.serving.captioning import MAX_SEED, MAX_SERVED_BEAMS, MAX_SERVED_LENGTH


class ErrorResponse(BaseModel):
    """Every error the API returns (4xx and 5xx) has this body."""

    error: str = Field(description="machine-readable code, e.g. 'unauthorized', 'image_too_large', 'overloaded'",
                       examples=["invalid_image"])
    detail: str = Field(description="what went wrong and what to do about it",
                        examples=["images[1] ('b.png'): not an image"])


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    model: str = Field(description="name of the loaded model")
    queued_images: int = Field(
        description="images waiting for a forward pass (embedding, classification, captioning and change "
                    "captioning, where a pair counts once)")
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


# ---------------------------------------------------------------- captioning

_DECODING = DecodingConfig()
_DECODING_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "method": ("greedy (the most likely word each step), beam (beam search) or nucleus (top-p sampling)",
               {"type": "string", "enum": ["greedy", "beam", "nucleus"]}),
    "beam_size": (f"beams per image (beam), 1..{MAX_SERVED_BEAMS}",
                  {"type": "integer", "minimum": 1, "maximum": MAX_SERVED_BEAMS}),
    "length_penalty": ("exponent of the length normalisation of finished beams (beam; 0: none, > 0 favours "
                       "longer captions)", {"type": "number"}),
    "top_p": ("nucleus mass in (0, 1] (nucleus)", {"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
    "temperature": ("softmax temperature, > 0 (nucleus)", {"type": "number", "exclusiveMinimum": 0}),
    "max_length": (f"most words per caption, 1..{MAX_SERVED_LENGTH} (the captioner may allow fewer)",
                   {"type": "integer", "minimum": 1, "maximum": MAX_SERVED_LENGTH}),
    "min_length": ("fewest words before the caption may end, 0..max_length", {"type": "integer", "minimum": 0}),
    "no_repeat_ngram_size": ("never repeat an n-gram of this many words (0: off)", {"type": "integer", "minimum": 0}),
    "repetition_penalty": ("penalty on words already used, >= 1 (1: off)", {"type": "number", "minimum": 1}),
    "seed": ("sampling seed (nucleus): the same seed gives the same captions",
             {"type": "integer", "minimum": 0, "maximum": MAX_SEED}),
}


def _decoding_doc(name: str) -> str:
    return f"{_DECODING_FIELDS[name][0]} (default: {getattr(_DECODING, name)})"


class DecodingFields(BaseModel):
    """The decoding settings of a caption or change-caption request (each optional: left out, the server's
    default)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    method: Literal["greedy", "beam", "nucleus"] | None = Field(default=None, description=_decoding_doc("method"))
    beam_size: int | None = Field(default=None, description=_decoding_doc("beam_size"))
    length_penalty: float | None = Field(default=None, description=_decoding_doc("length_penalty"))
    top_p: float | None = Field(default=None, description=_decoding_doc("top_p"))
    temperature: float | None = Field(default=None, description=_decoding_doc("temperature"))
    max_length: int | None = Field(default=None, description=_decoding_doc("max_length"))
    min_length: int | None = Field(default=None, description=_decoding_doc("min_length"))
    no_repeat_ngram_size: int | None = Field(default=None, description=_decoding_doc("no_repeat_ngram_size"))
    repetition_penalty: float | None = Field(default=None, description=_decoding_doc("repetition_penalty"))
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description=_decoding_doc("seed"))

    @field_validator("beam_size", "max_length", "min_length", "no_repeat_ngram_size", "seed", "length_penalty",
                     "top_p", "temperature", "repetition_penalty", mode="before")
    @classmethod
    def _number_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be a number, not a boolean ({value!r})")
        return value

    def decoding_options(self) -> dict[str, Any]:
        """The decoding fields the request set."""
        return {name: getattr(self, name) for name in DECODING_OPTIONS if getattr(self, name) is not None}


class CaptionRequest(DecodingFields):
    """JSON form of ``POST /v1/caption``: images, and decoding settings (each optional: left out, the server's
    default); the multipart form has the same fields with file uploads as images."""

    images: list[str] = Field(description="base64-encoded image files (JPEG, PNG, TIFF, ...); data: URLs accepted",
                              examples=[["iVBORw0KGgo..."]])


#: The decoding fields of a caption request (JSON and multipart), in the order of :class:`DecodingConfig`.
DECODING_OPTIONS: tuple[str, ...] = tuple(_DECODING_FIELDS)

#: Schema of the multipart form of ``POST /v1/caption``.
CAPTION_FORM_SCHEMA: dict[str, Any] = {
    "title": "CaptionForm",
    "type": "object",
    "required": ["images"],
    "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                   "description": "image files, one part per image"},
        **{name: {**schema, "description": _decoding_doc(name), "default": getattr(_DECODING, name)}
           for name, (_, schema) in _DECODING_FIELDS.items()},
    },
}


class ImageCaptionModel(BaseModel):
    index: int = Field(description="position of the image in the request")
    filename: str | None = Field(default=None, description="upload file name (multipart only)")
    caption: str | None = Field(description="the caption; null when the image could not be read (see error)",
                                examples=["Many buildings and some green trees are in a dense residential area."])
    error: str | None = Field(default=None, description="why the image could not be read (null when captioned)")


class CaptionTiming(BaseModel):
    decode_ms: float = Field(description="decoding and preprocessing the images")
    queue_ms: float = Field(description="longest wait of an image for its captioner call")
    inference_ms: float = Field(description="longest captioner call the request's images were in")
    total_ms: float = Field(description="the whole request, loading the captioner on the first one included")
    batch_sizes: list[int] = Field(description="size of the captioner call each captioned image was in")


class CaptionResponse(BaseModel):
    model: str = Field(description="the captioner's name")
    model_record: dict[str, Any] = Field(description="the captioner's identity: name, family, checkpoint sha256 and, "
                                                     "for geovl captioners, the backbone it runs on")
    decoding: dict[str, Any] = Field(description="the decoding settings used (those that matter for the method)")
    captions: list[ImageCaptionModel] = Field(description="one per image, in request order: a caption, or the error "
                                                          "that kept the image from being read (the request still "
                                                          "succeeds, even when no image could be read)")
    timing: CaptionTiming


# ---------------------------------------------------------------- change captioning

CHANGE_THRESHOLD_DESCRIPTION = ("P(changed) at or above which the pair is called changed, a number in [0, 1] "
                                "(default: the change captioner's calibrated threshold)")


class ChangeCaptionRequest(DecodingFields):
    """JSON form of ``POST /v1/change-caption``: one pair (``before`` and ``after``, base64), an optional threshold and
    decoding settings; the multipart form has the same fields with the two dates as file uploads."""

    before: str = Field(description="the earlier image, a base64-encoded image file; data: URLs accepted",
                        examples=["iVBORw0KGgo..."])
    after: str = Field(description="the later image of the same place, base64-encoded", examples=["iVBORw0KGgo..."])
    threshold: float | None = Field(default=None, description=CHANGE_THRESHOLD_DESCRIPTION, examples=[0.5])

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be a number, not a boolean ({value!r})")
        return value


#: Schema of the multipart form of ``POST /v1/change-caption``.
CHANGE_CAPTION_FORM_SCHEMA: dict[str, Any] = {
    "title": "ChangeCaptionForm",
    "type": "object",
    "required": ["before", "after"],
    "properties": {
        "before": {"type": "string", "format": "binary", "description": "the earlier image file"},
        "after": {"type": "string", "format": "binary", "description": "the later image file of the same place"},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1, "description": CHANGE_THRESHOLD_DESCRIPTION},
        **{name: {**schema, "description": _decoding_doc(name), "default": getattr(_DECODING, name)}
           for name, (_, schema) in _DECODING_FIELDS.items()},
    },
}


class ChangeCaptionTiming(BaseModel):
    decode_ms: float = Field(description="decoding and preprocessing both images")
    queue_ms: float = Field(description="wait of the pair for its model call")
    inference_ms: float = Field(description="the model call the pair was in")
    total_ms: float = Field(description="the whole request, loading the change captioner on the first one included")
    batch_size: int = Field(description="pairs in that model call")


class ChangeCaptionResponse(BaseModel):
    model: str = Field(description="the change captioner's name")
    model_record: dict[str, Any] = Field(description="the change captioner's identity: name, checkpoint sha256, "
                                                     "threshold and the backbone it runs on")
    caption: str = Field(description="what changed; the no-change sentence when the pair is judged unchanged",
                         examples=["some houses are built at the top left ."])
    changed: bool = Field(description="the verdict: probability >= threshold")
    probability: float = Field(description="P(changed) from the change head")
    threshold: float = Field(description="the threshold the pair was judged against")
    heatmap: list[list[float]] = Field(description="per-cell change probabilities over the after image: grid[0] "
                                                   "rows of grid[1] values, top row first")
    grid: list[int] = Field(description="[h, w] of the heat map")
    decoding: dict[str, Any] = Field(description="the decoding settings used (those that matter for the method)")
    timing: ChangeCaptionTiming


# ---------------------------------------------------------------- generation

GENERATE_SAMPLERS = ("ddim", "ddpm", "euler")  # geovl.models.diffusion.SAMPLERS (tests/api checks they agree)


class GenerateRequest(BaseModel):
    """Body of ``POST /v1/generate``: a prompt, an optional ground sample distance and the sampler settings (each
    optional: left out, the generator's default)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(description="what to draw", examples=["a river through farmland"])
    gsd: float | None = Field(default=None, examples=[10.0],
                              description="ground sample distance wanted, metres per pixel (mapped to the nearest "
                                          "web-map zoom level, 0.5 m .. 128 m); null: no resolution condition")
    steps: int | None = Field(default=None, examples=[50],
                              description="sampler steps (default: the generator's; at most the server's limit)")
    guidance: float | None = Field(default=None, examples=[4.0],
                                   description="text guidance weight in [0, 50] (1: none; default: the generator's)")
    guidance_resolution: float | None = Field(default=None,
                                              description="resolution guidance weight in [0, 50] (default: guidance)")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="image k of the request is seeded seed + k")
    width: int | None = Field(default=None, examples=[64],
                              description="pixels; larger than one tile gives a seamless tiled scene. Only width or "
                                          "height: a square; neither: one tile")
    height: int | None = Field(default=None, examples=[64], description="pixels (see width)")
    sampler: str = Field(default="ddpm", description=f"one of {', '.join(GENERATE_SAMPLERS)}")
    n: int = Field(default=1, description="images to generate (at most the server's limit)")

    @field_validator("gsd", "steps", "guidance", "guidance_resolution", "seed", "width", "height", "n",
                     mode="before")
    @classmethod
    def _number_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be a number, not a boolean ({value!r})")
        return value


class GeneratedImageModel(BaseModel):
    index: int = Field(description="position in the request's images")
    seed: int = Field(description="this image's own seed (seed + index)")
    width: int
    height: int
    png: str = Field(description="the image as a base64-encoded PNG, with its settings in PNG text chunks")


class GenerateTiming(BaseModel):
    queue_ms: float = Field(description="wait for earlier generations (loading the generator on the first request "
                                        "included)")
    inference_ms: float = Field(description="sampling")
    encode_ms: float = Field(description="PNG encoding")
    total_ms: float = Field(description="the whole request")


class GenerateResponse(BaseModel):
    model: str = Field(description="the generator's name")
    model_record: dict[str, Any] = Field(description="the generator's identity: name, backbone, tile and patch")
    settings: dict[str, Any] = Field(description="the settings of image 0 (prompt, gsd, level, level_gsd, seed, "
                                                 "steps, guidance, guidance_resolution, sampler, width, height, "
                                                 "model, ...) and n; image k differs only in its seed")
    images: list[GeneratedImageModel]
    timing: GenerateTiming
