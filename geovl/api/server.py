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
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    HealthResponse,
    ImagePrediction,
    LabelSetDescription,
    ModelDescription,
    ModelsResponse,
    Timing,
)
from geovl.api.service import (
    ClassificationService,
    ImageInput,
    InvalidImageError,
    InvalidRequestError,
    PayloadTooLargeError,
    ServiceError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from geovl.vlm.backbone import Backbone

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
    service = ClassificationService(config, backbone)

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
    body_limit = math.ceil(config.max_images_per_request * config.max_image_bytes * 4 / 3) + 1024 * 1024
    app.add_middleware(BodySizeLimit, max_bytes=body_limit)
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
        """Liveness and queue length. Needs no token."""
        return HealthResponse(model=service.model_name, queued_images=service.batcher.pending, version=__version__)

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
            422: _doc("bad fields (labels, label_set, top_k), bad base64, or an image that cannot be decoded"),
            503: _doc("the queue is full; retry after the Retry-After header's seconds", headers=_RETRY_AFTER),
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ClassifyRequest"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ClassifyForm"}},
        }}},
    )
    async def classify(request: Request) -> ClassifyResponse:
        """Zero-shot classify images into ``labels`` (or a ``label_set``): the top-k classes per image.

        Send JSON (``images`` as base64 strings) or multipart/form-data (``images`` as file parts; ``labels``
        repeated or comma-separated).
        """
        t0 = time.monotonic()
        body = await _parse_classify(request, service)
        service.check_request(len(body.images), body.top_k)
        t_cls = time.monotonic()
        clf = await run_in_threadpool(service.classifier, body.labels, body.label_set)
        class_s = time.monotonic() - t_cls
        t_dec = time.monotonic()
        pixels = await run_in_threadpool(service.decode, body.images)
        decode_s = time.monotonic() - t_dec
        submitted = time.monotonic()
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in service.submit(pixels)))
        predictions, timing = service.predict(clf, results, body.top_k, submitted)
        return ClassifyResponse(
            model=service.model_name,
            classes=list(clf.classes),
            predictions=[ImagePrediction(index=i, filename=img.name, labels=p.labels, scores=p.scores)
                         for i, (img, p) in enumerate(zip(body.images, predictions, strict=True))],
            timing=Timing(decode_ms=round(decode_s * 1000, 3), queue_ms=timing.queue_ms,
                          inference_ms=timing.inference_ms,
                          classify_ms=round(timing.classify_ms + class_s * 1000, 3),
                          total_ms=round((time.monotonic() - t0) * 1000, 3), batch_sizes=timing.batch_sizes),
        )

    _complete_openapi(app)
    return app


@dataclass
class _ParsedClassify:
    images: list[ImageInput]
    labels: list[str] | None
    label_set: str | None
    top_k: int


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
    service.check_request(len(req.images), req.top_k)
    images = []
    for i, text in enumerate(req.images):
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]  # data:image/png;base64,....
        # Check the size before decoding: base64 carries 3 bytes per 4 characters.
        service.check_image_size(len(text) * 3 // 4 - text[-2:].count("="), i)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidImageError(f"images[{i}] is not valid base64 ({exc})") from exc
        images.append(ImageInput(data))
    return _ParsedClassify(images, req.labels, req.label_set, req.top_k)


async def _parse_multipart(request: Request, service: ClassificationService) -> _ParsedClassify:
    cfg = service.config
    try:
        # The context manager closes the spooled upload files however the request ends.
        async with request.form(max_files=cfg.max_images_per_request, max_fields=cfg.max_labels + 8) as form:
            return await _read_form(form, service)
    except StarletteHTTPException as exc:  # starlette's own limits and malformed bodies
        if "files" in str(exc.detail).lower():
            raise PayloadTooLargeError(f"more than {cfg.max_images_per_request} images in one request; "
                                       "split the request") from exc
        raise InvalidRequestError(f"bad multipart body: {exc.detail}") from exc


async def _read_form(form: FormData, service: ClassificationService) -> _ParsedClassify:
    cfg = service.config
    unknown = sorted(set(form.keys()) - {"images", "labels", "label_set", "top_k"})
    if unknown:
        raise InvalidRequestError(f"unknown form fields {unknown}; expected images, labels, label_set, top_k")
    parts = form.getlist("images")
    top_k = _form_int(form.get("top_k"), "top_k", default=5)
    service.check_request(len(parts), top_k)
    images = []
    for i, part in enumerate(parts):
        if not isinstance(part, UploadFile):
            raise InvalidRequestError(f"images[{i}] must be a file part (curl: -F images=@tile.png)")
        data = await part.read(cfg.max_image_bytes + 1)  # one byte more than allowed tells "too large"
        service.check_image_size(max(len(data), part.size or 0), i, part.filename)
        images.append(ImageInput(data, part.filename))
    label_fields = [v for v in form.getlist("labels") if isinstance(v, str)]
    labels = [s.strip() for v in label_fields for s in v.split(",") if s.strip()] if label_fields else None
    label_set = form.get("label_set")
    if label_set is not None and not isinstance(label_set, str):
        raise InvalidRequestError("label_set must be a text field")
    return _ParsedClassify(images, labels, label_set or None, top_k)


def _form_int(value: object, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise InvalidRequestError(f"{name} must be an integer, got {value!r}")


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
    """Add the two request-body schemas of ``POST /v1/classify`` (declared by reference) to the components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["ClassifyRequest"] = ClassifyRequest.model_json_schema(
                ref_template="#/components/schemas/{model}")
            components["ClassifyForm"] = json.loads(json.dumps(CLASSIFY_FORM_SCHEMA))
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
