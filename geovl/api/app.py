"""The FastAPI app of ``geovl serve``: versioned ``/v1`` endpoints over one :class:`~geovl.serving.resources.Resources`.

Routers (:mod:`geovl.api.routes`) only parse requests and shape responses; checks, decoding, batching and scoring
live in :mod:`geovl.serving`. Every error body is an :class:`~geovl.api.schemas.ErrorResponse`.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from geovl import __version__
from geovl.api.errors import AUTH_HEADER, UnauthorizedError, error_doc, install_error_handlers
from geovl.api.metrics import ApiMetrics, MetricsMiddleware
from geovl.api.routes import ApiContext
from geovl.api.routes import caption as caption_routes
from geovl.api.routes import change_caption as change_caption_routes
from geovl.api.routes import classify as classify_routes
from geovl.api.routes import embed as embed_routes
from geovl.api.routes import generate as generate_routes
from geovl.api.routes import search as search_routes
from geovl.api.routes import service as service_routes
from geovl.api.schemas import (
    CAPTION_FORM_SCHEMA,
    CHANGE_CAPTION_FORM_SCHEMA,
    CLASSIFY_FORM_SCHEMA,
    EMBED_FORM_SCHEMA,
    CaptionRequest,
    ChangeCaptionRequest,
    ClassifyRequest,
    EmbedRequest,
    ErrorResponse,
)
from geovl.models.backbone import Backbone
from geovl.serving.config import ServeConfig
from geovl.serving.errors import PayloadTooLargeError
from geovl.serving.resources import Resources

__all__ = ["BodySizeLimit", "create_app", "serve"]

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


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


def create_app(config: ServeConfig, *, backbone: Backbone | None = None,
               resources: Resources | None = None) -> FastAPI:
    """The HTTP API over ``resources`` (default: loaded here from ``config``, or over an already loaded
    ``backbone``). The batch worker starts with the app's lifespan and finishes queued images on shutdown."""
    res = resources or Resources(config, backbone)
    metrics = ApiMetrics(res.config.max_batch)
    res.on_batch = metrics.batch_size.observe
    res.on_reject = metrics.rejections.inc
    metrics.queue_depth.set_function(lambda: res.pending)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        res.start()
        try:
            yield
        finally:
            await run_in_threadpool(res.close)

    app = FastAPI(
        title="geovl API",
        version=__version__,
        description="Zero-shot classification, embedding, search and captioning of remote-sensing images, with the "
                    f"{res.model_name} model"
                    + (f" and the {res.config.captioner} captioner" if res.config.captioner else "") + "."
                    + (f" Text-to-image generation with {res.config.generator}." if res.config.generator else "")
                    + " Images from concurrent requests share forward passes.",
        lifespan=lifespan,
    )
    app.state.resources = res
    app.state.metrics = metrics
    body_limit = math.ceil(config.max_images_per_request * config.max_image_bytes * 4 / 3) + 1024 * 1024
    app.add_middleware(BodySizeLimit, max_bytes=body_limit)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"], max_age=600)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees every status, 413s included
    install_error_handlers(app)
    ctx = ApiContext(resources=res, metrics=metrics, **_auth(config.api_tokens))
    for routes in (service_routes, classify_routes, embed_routes, search_routes, caption_routes,
                   change_caption_routes, generate_routes):
        app.include_router(routes.router(ctx))
    complete_openapi(app)
    return app


def _auth(api_tokens: tuple[str, ...]) -> dict[str, Any]:
    """The bearer-token dependency (none without tokens) and its OpenAPI docs."""
    tokens = [t.encode() for t in api_tokens]
    if not tokens:
        return {"protected": [], "auth_docs": {}}
    bearer = HTTPBearer(auto_error=False, description="one of the tokens given to `geovl serve --token`")

    def check_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if credentials is None:
            raise UnauthorizedError("missing bearer token: send 'Authorization: Bearer <token>'",
                                    headers={"WWW-Authenticate": "Bearer"})
        given = credentials.credentials.encode()
        if not any(hmac.compare_digest(given, t) for t in tokens):  # constant time
            raise UnauthorizedError("invalid bearer token",
                                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    return {"protected": [Depends(check_token)],
            "auth_docs": {401: error_doc("missing or invalid bearer token", headers=AUTH_HEADER)}}


def complete_openapi(app: FastAPI) -> None:
    """Add the request-body schemas of ``POST /v1/classify``, ``/v1/embed``, ``/v1/caption`` and
    ``/v1/change-caption`` (declared by reference) to the components."""
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
            components["CaptionRequest"] = CaptionRequest.model_json_schema(
                ref_template="#/components/schemas/{model}")
            components["CaptionForm"] = json.loads(json.dumps(CAPTION_FORM_SCHEMA))
            components["ChangeCaptionRequest"] = ChangeCaptionRequest.model_json_schema(
                ref_template="#/components/schemas/{model}")
            components["ChangeCaptionForm"] = json.loads(json.dumps(CHANGE_CAPTION_FORM_SCHEMA))
            components.setdefault("ErrorResponse", ErrorResponse.model_json_schema())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def serve(config: ServeConfig, *, backbone: Backbone | None = None) -> None:
    """Load the model and serve the API with uvicorn until interrupted (binds ``config.host``, loopback by
    default)."""
    import uvicorn

    app = create_app(config, backbone=backbone)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
