"""``POST /v1/generate``: images from a prompt and a ground sample distance, as base64 PNGs in JSON, or one raw PNG
(``?format=png``, or ``Accept: image/png``), each carrying its settings in PNG text chunks (see
:mod:`geovl.serving.generation`)."""

from __future__ import annotations

import base64
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from geovl.api.errors import RETRY_AFTER_HEADER, error_doc
from geovl.api.routes import ApiContext
from geovl.api.schemas import GeneratedImageModel, GenerateRequest, GenerateResponse, GenerateTiming
from geovl.serving.errors import InvalidRequestError
from geovl.serving.generation import GenerationRequest

__all__ = ["router", "wants_png"]


def wants_png(response_format: str | None, accept: str) -> bool:
    """A raw PNG for ``format=png``, or, with no ``format``, for an ``Accept`` header that names ``image/png`` and not
    ``application/json``; JSON otherwise."""
    if response_format is not None:
        return response_format == "png"
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "image/png" in types and "application/json" not in types


def router(ctx: ApiContext) -> APIRouter:
    api = APIRouter()
    res = ctx.resources

    @api.post(
        "/v1/generate",
        response_model=GenerateResponse,
        dependencies=ctx.protected,
        tags=["generation"],
        responses={
            200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                  "description": "JSON with base64 PNGs; with format=png (or Accept: image/png) the PNG itself"},
            **ctx.auth_docs,
            404: error_doc("generation is disabled on this server (error 'not_found'), or its generator cannot be "
                           "loaded (error 'model_unavailable'; the detail says why)"),
            413: error_doc("more images (n) than the server allows, or the body too large"),
            422: error_doc("a bad field: empty prompt, gsd not positive, steps or size outside the limits, a size "
                           "that is not a multiple of the generator's patch, an unknown sampler (the detail names "
                           "it); format=png with n > 1"),
            503: error_doc("generations are queued up; retry after the Retry-After header's seconds",
                           headers=RETRY_AFTER_HEADER),
        },
    )
    async def generate(body: GenerateRequest, request: Request,
                       response_format: Literal["json", "png"] | None = Query(
                           None, alias="format", description="png: answer with the PNG itself (n = 1 only)")) -> Any:
        """Generate ``n`` images of ``prompt`` at ground sample distance ``gsd`` (metres per pixel; null: no
        resolution condition), image k seeded ``seed + k``: the same settings and seed give the same image as
        ``geovl generate``. ``width`` / ``height`` larger than one tile give a seamless tiled scene. Generations run
        one at a time; the generator loads on the first request."""
        png = wants_png(response_format, request.headers.get("accept", ""))
        if png and body.n != 1:
            raise InvalidRequestError(f"format=png answers with one image; ask for n=1 (got n={body.n}), or for JSON "
                                      "to get several")
        out = await run_in_threadpool(res.generate, GenerationRequest(**body.model_dump()))
        ctx.metrics.images_generated.inc(len(out.images))
        if png:
            first = out.images[0]
            return Response(first.png, media_type="image/png",
                            headers={"X-Geovl-Seed": str(first.settings["seed"])})
        timing = out.timing
        return GenerateResponse(
            model=out.model,
            model_record=res.generation.record(),
            settings=out.settings,
            images=[GeneratedImageModel(index=k, seed=item.settings["seed"], width=item.image.width,
                                        height=item.image.height, png=base64.b64encode(item.png).decode("ascii"))
                    for k, item in enumerate(out.images)],
            timing=GenerateTiming(queue_ms=timing.queue_ms, inference_ms=timing.inference_ms,
                                  encode_ms=timing.encode_ms, total_ms=timing.total_ms),
        )

    return api
