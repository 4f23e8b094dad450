"""``POST /v1/change-caption``: a change caption, a changed / unchanged verdict and a change heat map for one pair of
uploaded images, batched across requests (see :mod:`geovl.serving.change_captioning`)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from geovl.api.errors import RETRY_AFTER_HEADER, error_doc
from geovl.api.parsing import parse_change_caption
from geovl.api.routes import ApiContext
from geovl.api.schemas import ChangeCaptionResponse, ChangeCaptionTiming


def router(ctx: ApiContext) -> APIRouter:
    api = APIRouter()
    res = ctx.resources

    @api.post(
        "/v1/change-caption",
        response_model=ChangeCaptionResponse,
        dependencies=ctx.protected,
        tags=["captioning"],
        responses={
            **ctx.auth_docs,
            404: error_doc("change captioning is disabled on this server (error 'not_found'), or its change "
                           "captioner cannot be loaded (error 'model_unavailable'; the detail says why)"),
            413: error_doc("an image or the body too large"),
            415: error_doc("the body is neither JSON nor multipart/form-data"),
            422: error_doc("a missing date, an image that cannot be read, bad base64, a bad threshold or decoding "
                           "setting (the detail names it)"),
            503: error_doc("the queue is full; retry after the Retry-After header's seconds",
                           headers=RETRY_AFTER_HEADER),
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ChangeCaptionRequest"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ChangeCaptionForm"}},
        }}},
    )
    async def change_caption(request: Request) -> ChangeCaptionResponse:
        """What changed between two images of the same place: a caption, the changed / unchanged verdict with
        P(changed), and a heat map of where (per cell of the model's grid over the after image).

        Send multipart/form-data (``before`` and ``after`` as file parts) or JSON (``before`` and ``after`` as base64
        strings), with an optional ``threshold`` (default: the model's) and decoding fields (``method``,
        ``beam_size``, ``top_p``, ``seed``, ...). A pair judged unchanged gets the no-change sentence. The change
        captioner loads on the first request.
        """
        started = time.monotonic()
        body = await parse_change_caption(request, res)
        job = await run_in_threadpool(res.changes.prepare, body.before, body.after, decoding=body.decoding,
                                      threshold=body.threshold)
        submitted = time.monotonic()
        batched = await asyncio.wrap_future(res.changes.submit(job))
        out = res.changes.answer(job, batched, started=started, submitted=submitted)
        ctx.metrics.pairs_change_captioned.inc()
        timing = out.timing
        return ChangeCaptionResponse(
            model=out.model,
            model_record=res.changes.record(),
            caption=out.caption,
            changed=out.changed,
            probability=round(out.probability, 6),
            threshold=out.threshold,
            heatmap=[[round(float(v), 4) for v in row] for row in out.heatmap],
            grid=list(out.grid),
            decoding=out.decoding.to_dict(),
            timing=ChangeCaptionTiming(decode_ms=timing.decode_ms, queue_ms=timing.queue_ms,
                                       inference_ms=timing.inference_ms, total_ms=timing.total_ms,
                                       batch_size=timing.batch_size),
        )

    return api
