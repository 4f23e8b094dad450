"""The FastAPI app of ``geovl serve``: versioned ``/v1`` endpoints over one :class:`ClassificationService`.

Handlers only parse requests and shape responses; checks, decoding, batching and scoring live in
:mod:`geovl.api.service`. Every error body is an :class:`~geovl.api.schemas.ErrorResponse`. Needs the ``api``
extra; ``geovl serve`` checks for it first and names the extra when it is missing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from geovl import __version__
from geovl._optional import require
from geovl.api.config import ServeConfig
from geovl.api.schemas import (
    CLASSIFY_FORM_SCHEMA,
    EMBED_FORM_SCHEMA,
    ClassifyRequest,
    ClassifyResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    HealthResponse,
    ImagePrediction,
    LabelSetDescription,
    ModelDescription,
    ModelsResponse,
    ReadyResponse,
    SearchHit,
    SearchRequest,
    SearchResponse,
    Timing,
)
from geovl.api.service import (
    ClassificationService,
    ImageInput,
    InvalidImageError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from geovl.vlm.backbone import Backbone

if TYPE_CHECKING:
    from geovl.index.search import Searcher

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


def _error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=code, detail=detail).model_dump(), status_code=status, headers=headers)


def _doc(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description, **extra}


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_AUTH_HEADER = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` fails with :class:`PayloadTooLargeError` (HTTP 413)
    as soon as it is known (from ``Content-Length``) or received, so a huge upload is never held in memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        received = 0
        limit = self.max_bytes

        async def limited_receive() -> Any:
            nonlocal received
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise PayloadTooLargeError(f"the request body is {int(declared)} bytes; the limit is {limit} bytes")
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


def create_app(config: ServeConfig, *, backbone: Backbone | None = None) -> FastAPI:
    """The HTTP API over ``config.model`` (or an already loaded ``backbone``), loaded once here.

    The batch worker starts with the app's lifespan and finishes queued images on shutdown.
    """
    require("prometheus_client", extra="api", feature="geovl serve metrics")
    from geovl.api.metrics import ApiMetrics, MetricsMiddleware

    service = ClassificationService(config, backbone)
    metrics = ApiMetrics(config.max_batch)
    service.on_batch = metrics.batch_size.observe
    service.on_reject = metrics.rejections.inc
    metrics.queue_depth.set_function(lambda: service.batcher.pending)
    searcher = _load_searcher(config.index, service.backbone) if config.index else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.close)

    app = FastAPI(
        title="geovl zero-shot classification API",
        version=__version__,
        description="Classify remote-sensing images into any classes named in plain language (zero-shot), "
                    f"with the {service.model_name} model. Images from concurrent requests share forward passes.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.state.searcher = searcher
    body_limit = math.ceil(config.max_images_per_request * config.max_image_bytes * 4 / 3) + 1024 * 1024
    app.add_middleware(BodySizeLimit, max_bytes=body_limit)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"], max_age=600)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees every status, 413s included
    _install_error_handlers(app)

    bearer = HTTPBearer(auto_error=False, description="one of the tokens given to `geovl serve --token`")
    tokens = [t.encode() for t in config.api_tokens]

    def check_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if credentials is None:
            raise UnauthorizedError("missing bearer token: send 'Authorization: Bearer <token>'",
                                    headers={"WWW-Authenticate": "Bearer"})
        given = credentials.credentials.encode()
        if not any(hmac.compare_digest(given, t) for t in tokens):  # constant time
            raise UnauthorizedError("invalid bearer token",
                                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    protected = [Depends(check_token)] if tokens else []
    auth_docs: dict[int | str, dict[str, Any]] = (
        {401: _doc("missing or invalid bearer token", headers=_AUTH_HEADER)} if tokens else {}
    )

    @app.get("/v1/health", response_model=HealthResponse, tags=["service"])
    async def health() -> HealthResponse:
        """Liveness and queue length (see ``/v1/ready`` for readiness). Needs no token."""
        return HealthResponse(model=service.model_name, queued_images=service.batcher.pending, version=__version__)

    @app.get("/v1/ready", response_model=ReadyResponse, tags=["service"],
             responses={503: _doc("not ready yet (or shutting down)", headers=_RETRY_AFTER)})
    async def ready() -> ReadyResponse | JSONResponse:
        """Readiness: 200 once the model is loaded and the batch worker runs, 503 otherwise. Needs no token."""
        if not service.ready:
            return _error_response(503, "not_ready", "the model is loading or the server is shutting down",
                                   {"Retry-After": str(config.retry_after_s)})
        return ReadyResponse(model=service.model_name, index=searcher is not None)

    @app.get("/metrics", dependencies=protected, tags=["service"], response_class=Response,
             responses={**auth_docs, 200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def prometheus_metrics() -> Response:
        """Prometheus metrics (text exposition format): requests, latency, images, batch sizes, queue, 503s."""
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models", response_model=ModelsResponse, dependencies=protected, responses=auth_docs,
             tags=["classification"])
    async def models() -> ModelsResponse:
        """The loaded model, its embedding dimension, and the named label sets."""
        bb = service.backbone
        return ModelsResponse(
            models=[ModelDescription(name=bb.info.name, architecture=bb.info.architecture, dim=bb.embed_dim,
                                     image_size=bb.image_size, device=str(bb.device), precision=bb.precision)],
            label_sets=[LabelSetDescription(name=n, classes=c) for n, c in service.label_sets().items()],
            templates=list(service.templates),
        )

    @app.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        dependencies=protected,
        tags=["classification"],
        responses={
            **auth_docs,
            413: _doc("too many images, an image or the body too large"),
            415: _doc("the body is neither JSON nor multipart/form-data"),
            422: _doc("bad fields (labels, label_set, top_k, threshold), bad base64, or an image that cannot be "
                      "decoded"),
            503: _doc("the queue is full; retry after the Retry-After header's seconds", headers=_RETRY_AFTER),
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ClassifyRequest"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ClassifyForm"}},
        }}},
    )
    async def classify(request: Request) -> ClassifyResponse:
        """Zero-shot classify images into ``labels`` (or a ``label_set``): the top-k classes per image, or, with
        ``threshold``, every class whose independent per-class score reaches it (multi-label; at most ``top_k``).

        Send JSON (``images`` as base64 strings) or multipart/form-data (``images`` as file parts; ``labels``
        repeated or comma-separated).
        """
        t0 = time.monotonic()
        body = await _parse_classify(request, service)
        service.check_request(len(body.images), body.top_k, body.threshold)
        multi_label = body.threshold is not None
        t_cls = time.monotonic()
        clf = await run_in_threadpool(service.classifier, body.labels, body.label_set, multi_label=multi_label)
        class_s = time.monotonic() - t_cls
        t_dec = time.monotonic()
        pixels = await run_in_threadpool(service.decode, body.images)
        decode_s = time.monotonic() - t_dec
        submitted = time.monotonic()
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in service.submit(pixels)))
        predictions, timing = service.predict(clf, results, body.top_k, submitted, body.threshold)
        metrics.images_classified.inc(len(predictions))
        return ClassifyResponse(
            model=service.model_name,
            classes=list(clf.classes),
            multi_label=multi_label,
            threshold=body.threshold,
            predictions=[ImagePrediction(index=i, filename=img.name, labels=p.labels, scores=p.scores)
                         for i, (img, p) in enumerate(zip(body.images, predictions, strict=True))],
            timing=Timing(decode_ms=round(decode_s * 1000, 3), queue_ms=timing.queue_ms,
                          inference_ms=timing.inference_ms,
                          classify_ms=round(timing.classify_ms + class_s * 1000, 3),
                          total_ms=round((time.monotonic() - t0) * 1000, 3), batch_sizes=timing.batch_sizes),
        )

    @app.post(
        "/v1/embed",
        response_model=EmbedResponse,
        dependencies=protected,
        tags=["embedding"],
        responses={
            **auth_docs,
            413: _doc("too many images or texts, an image or the body too large"),
            415: _doc("the body is neither JSON nor multipart/form-data"),
            422: _doc("nothing to embed, a text too long, bad base64, or an image that cannot be decoded"),
            503: _doc("the queue is full; retry after the Retry-After header's seconds", headers=_RETRY_AFTER),
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/EmbedRequest"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/EmbedForm"}},
        }}},
    )
    async def embed(request: Request) -> EmbedResponse:
        """L2-normalised embeddings of images and/or texts, in the model's shared image-text space.

        Images are decoded and limited as for ``/v1/classify`` and share forward passes with it. Send JSON
        (``images`` as base64 strings, ``texts`` as a list) or multipart/form-data (``images`` as file parts,
        ``texts`` repeated).
        """
        images, texts = await _parse_embed(request, service)
        service.check_embed(len(images), texts)
        image_vectors: list[list[float]] = []
        text_vectors: list[list[float]] = []
        if images:
            pixels = await run_in_threadpool(service.decode, images)
            results = await asyncio.gather(*(asyncio.wrap_future(f) for f in service.submit(pixels)))
            image_vectors = [r.embedding.astype(float).tolist() for r in results]
            metrics.images_embedded.inc(len(results))
        if texts:
            text_vectors = (await run_in_threadpool(service.embed_texts, texts)).astype(float).tolist()
            metrics.texts_embedded.inc(len(texts))
        return EmbedResponse(model=service.model_name, dim=service.backbone.embed_dim,
                             image_embeddings=image_vectors, text_embeddings=text_vectors)

    @app.post(
        "/v1/search",
        response_model=SearchResponse,
        dependencies=protected,
        tags=["search"],
        responses={
            **auth_docs,
            404: _doc("the server was started without an index (geovl serve --index DIR)"),
            413: _doc("the image or the body too large"),
            422: _doc("not exactly one of text/image/vector, bad k, bad filters, a bad image or vector"),
            503: _doc("the queue is full; retry after the Retry-After header's seconds", headers=_RETRY_AFTER),
        },
    )
    async def search(body: SearchRequest) -> SearchResponse:
        """The ``k`` images of the index nearest to a text, image or vector query, with metadata / footprint /
        time filters. Only when the server was started with ``--index``."""
        if searcher is None:
            raise NotFoundError("no index is loaded: start the server with `geovl serve --index DIR` to search")
        from geovl.index.filters import Filters

        if not 1 <= body.k <= config.max_top_k:
            raise InvalidRequestError(f"k must be an integer from 1 to {config.max_top_k}, got {body.k!r}")
        try:
            filters = Filters.parse(bbox=body.bbox, start=body.start, end=body.end, where=body.where)
        except (ValueError, TypeError) as exc:
            raise InvalidRequestError(str(exc)) from exc
        query = await _search_query(body, service, searcher.dim)
        try:
            hits = await run_in_threadpool(searcher.search, query, body.k, filters)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidRequestError(str(exc)) from exc
        metrics.searches.inc()
        return SearchResponse(model=service.model_name, count=len(searcher),
                              hits=[SearchHit(**_json_safe(h.to_dict())) for h in hits])

    _complete_openapi(app)
    return app


def _load_searcher(index_dir: str, backbone: Backbone) -> Searcher:
    require("faiss", extra="index", feature="geovl serve --index")
    from geovl.index.search import Searcher

    return Searcher(index_dir, backbone=backbone)


async def _search_query(body: SearchRequest, service: ClassificationService, dim: int) -> np.ndarray:
    given = [name for name in ("text", "image", "vector") if getattr(body, name) is not None]
    if len(given) != 1:
        raise InvalidRequestError(f"send exactly one of text, image or vector (got {given or 'none'})")
    if body.text is not None:
        service.check_text(body.text, "text")
        return (await run_in_threadpool(service.embed_texts, [body.text]))[0]
    if body.image is not None:
        images = _decode_base64_images([body.image], service, where="image")
        pixels = await run_in_threadpool(service.decode, images)
        (result,) = await asyncio.gather(*(asyncio.wrap_future(f) for f in service.submit(pixels)))
        return result.embedding
    vector = np.asarray(body.vector, np.float32)
    if vector.shape != (dim,):
        raise InvalidRequestError(f"vector has {vector.size} dimensions; the index has {dim}")
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise InvalidRequestError("vector is zero or not finite; it cannot be compared by cosine similarity")
    return vector


def _json_safe(value: Any) -> Any:
    """Non-finite floats (which JSON cannot carry) as null, recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


async def _parse_embed(request: Request, service: ClassificationService) -> tuple[list[ImageInput], list[str]]:
    cfg = service.config
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            req = EmbedRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise InvalidRequestError(_validation_message(exc.errors())) from exc
        service.check_embed(len(req.images), req.texts)
        return _decode_base64_images(req.images, service), list(req.texts)
    if content_type != "multipart/form-data":
        raise UnsupportedMediaTypeError(f"content type {content_type or '(none)'!r} is not supported: send "
                                        "application/json with base64 images, or multipart/form-data")
    try:
        async with request.form(max_files=cfg.max_images_per_request, max_fields=cfg.max_texts + 8) as form:
            unknown = sorted(set(form.keys()) - {"images", "texts"})
            if unknown:
                raise InvalidRequestError(f"unknown form fields {unknown}; expected images, texts")
            parts = form.getlist("images")
            texts = form.getlist("texts")
            if any(not isinstance(t, str) for t in texts):
                raise InvalidRequestError("texts must be text fields, not files")
            str_texts = [t for t in texts if isinstance(t, str)]
            service.check_embed(len(parts), str_texts)
            return await _read_image_parts(parts, service), str_texts
    except StarletteHTTPException as exc:
        raise _form_error(exc, cfg.max_images_per_request) from exc


@dataclass
class _ParsedClassify:
    images: list[ImageInput]
    labels: list[str] | None
    label_set: str | None
    top_k: int
    threshold: float | None = None


async def _parse_classify(request: Request, service: ClassificationService) -> _ParsedClassify:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return _parse_json(await request.body(), service)
    if content_type == "multipart/form-data":
        return await _parse_multipart(request, service)
    raise UnsupportedMediaTypeError(f"content type {content_type or '(none)'!r} is not supported: send "
                                    "application/json with base64 images, or multipart/form-data with image files")


def _parse_json(raw: bytes, service: ClassificationService) -> _ParsedClassify:
    try:
        req = ClassifyRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidRequestError(_validation_message(exc.errors())) from exc
    service.check_request(len(req.images), req.top_k, req.threshold)
    return _ParsedClassify(_decode_base64_images(req.images, service), req.labels, req.label_set, req.top_k,
                           req.threshold)


def _decode_base64_images(texts: list[str], service: ClassificationService,
                          where: str = "images") -> list[ImageInput]:
    images = []
    for i, text in enumerate(texts):
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]  # data:image/png;base64,....
        # Check the size before decoding: base64 carries 3 bytes per 4 characters.
        service.check_image_size(len(text) * 3 // 4 - text[-2:].count("="), i)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidImageError(f"{where}[{i}] is not valid base64 ({exc})") from exc
        images.append(ImageInput(data))
    return images


async def _parse_multipart(request: Request, service: ClassificationService) -> _ParsedClassify:
    cfg = service.config
    try:
        # The context manager closes the spooled upload files however the request ends.
        async with request.form(max_files=cfg.max_images_per_request, max_fields=cfg.max_labels + 8) as form:
            return await _read_form(form, service)
    except StarletteHTTPException as exc:  # starlette's own limits and malformed bodies
        raise _form_error(exc, cfg.max_images_per_request) from exc


def _form_error(exc: StarletteHTTPException, max_images: int) -> ServiceError:
    if "files" in str(exc.detail).lower():
        return PayloadTooLargeError(f"more than {max_images} images in one request; split the request")
    return InvalidRequestError(f"bad multipart body: {exc.detail}")


async def _read_form(form: FormData, service: ClassificationService) -> _ParsedClassify:
    unknown = sorted(set(form.keys()) - {"images", "labels", "label_set", "top_k", "threshold"})
    if unknown:
        raise InvalidRequestError(f"unknown form fields {unknown}; expected images, labels, label_set, top_k, "
                                  "threshold")
    parts = form.getlist("images")
    top_k = _form_int(form.get("top_k"), "top_k", default=5)
    threshold = _form_threshold(form.get("threshold"))
    service.check_request(len(parts), top_k, threshold)
    images = await _read_image_parts(parts, service)
    label_fields = [v for v in form.getlist("labels") if isinstance(v, str)]
    labels = [s.strip() for v in label_fields for s in v.split(",") if s.strip()] if label_fields else None
    label_set = form.get("label_set")
    if label_set is not None and not isinstance(label_set, str):
        raise InvalidRequestError("label_set must be a text field")
    return _ParsedClassify(images, labels, label_set or None, top_k, threshold)


async def _read_image_parts(parts: list[Any], service: ClassificationService) -> list[ImageInput]:
    images = []
    for i, part in enumerate(parts):
        if not isinstance(part, UploadFile):
            raise InvalidRequestError(f"images[{i}] must be a file part (curl: -F images=@tile.png)")
        data = await part.read(service.config.max_image_bytes + 1)  # one byte more than allowed tells "too large"
        service.check_image_size(max(len(data), part.size or 0), i, part.filename)
        images.append(ImageInput(data, part.filename))
    return images


def _form_int(value: object, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise InvalidRequestError(f"{name} must be an integer, got {value!r}")


def _form_threshold(value: object) -> float | None:
    """The multipart ``threshold``: absent or empty means None (top-k mode); the range is checked by
    :meth:`ClassificationService.check_threshold`."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    shown = value if isinstance(value, str) else "a file"
    raise InvalidRequestError(f"threshold must be a number in the open interval (0, 1), got {shown!r}")


def _validation_message(errors: Any) -> str:
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(422, "invalid_request", _validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


def _complete_openapi(app: FastAPI) -> None:
    """Add the request-body schemas of ``POST /v1/classify`` and ``/v1/embed`` (declared by reference) to the
    components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["ClassifyRequest"] = ClassifyRequest.model_json_schema(
                ref_template="#/components/schemas/{model}")
            components["ClassifyForm"] = json.loads(json.dumps(CLASSIFY_FORM_SCHEMA))
            components["EmbedRequest"] = EmbedRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components["EmbedForm"] = json.loads(json.dumps(EMBED_FORM_SCHEMA))
            components.setdefault("ErrorResponse", ErrorResponse.model_json_schema())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def serve(config: ServeConfig, *, backbone: Backbone | None = None) -> None:
    """Load the model and serve the API with uvicorn until interrupted (binds ``config.host``, loopback by
    default)."""
    uvicorn = require("uvicorn", extra="api", feature="geovl serve")
    app = create_app(config, backbone=backbone)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
