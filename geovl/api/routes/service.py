"""Service endpoints: health, readiness, Prometheus metrics and the loaded model."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from geovl import __version__
from geovl.api.errors import RETRY_AFTER_HEADER, error_doc, error_response
from geovl.api.routes import ApiContext
from geovl.api.schemas import HealthResponse, LabelSetDescription, ModelDescription, ModelsResponse, ReadyResponse


def router(ctx: ApiContext) -> APIRouter:
    api = APIRouter()
    res = ctx.resources

    @api.get("/v1/health", response_model=HealthResponse, tags=["service"])
    async def health() -> HealthResponse:
        """Liveness and queue length (see ``/v1/ready`` for readiness). Needs no token."""
        return HealthResponse(model=res.model_name, queued_images=res.pending, version=__version__)

    @api.get("/v1/ready", response_model=ReadyResponse, tags=["service"],
             responses={503: error_doc("not ready yet (or shutting down)", headers=RETRY_AFTER_HEADER)})
    async def ready() -> ReadyResponse | JSONResponse:
        """Readiness: 200 once the model is loaded and the batch worker runs, 503 otherwise. Needs no token."""
        if not res.ready:
            return error_response(503, "not_ready", "the model is loading or the server is shutting down",
                                  {"Retry-After": str(res.config.retry_after_s)})
        return ReadyResponse(model=res.model_name, index=res.searcher is not None)

    @api.get("/metrics", dependencies=ctx.protected, tags=["service"], response_class=Response,
             responses={**ctx.auth_docs, 200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def prometheus_metrics() -> Response:
        """Prometheus metrics (text exposition format): requests, latency, images, batch sizes, queue, 503s."""
        return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)

    @api.get("/v1/models", response_model=ModelsResponse, dependencies=ctx.protected, responses=ctx.auth_docs,
             tags=["classification"])
    async def models() -> ModelsResponse:
        """The loaded model, its embedding dimension, and the named label sets."""
        bb = res.backbone
        return ModelsResponse(
            models=[ModelDescription(name=bb.info.name, architecture=bb.info.architecture, dim=bb.embed_dim,
                                     image_size=bb.image_size, device=str(bb.device), precision=bb.precision)],
            label_sets=[LabelSetDescription(name=n, classes=c) for n, c in res.label_sets().items()],
            templates=list(res.templates),
        )

    return api
