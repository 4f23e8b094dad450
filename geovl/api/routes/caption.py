"""``POST /v1/caption``: captions of uploaded images, batched across requests (see :mod:`geovl.serving.captioning`)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from geovl.api.errors import RETRY_AFTER_HEADER, error_doc
from geovl.api.parsing import parse_caption
from geovl.api.routes import ApiContext
from geovl.api.schemas import CaptionResponse, CaptionTiming, ImageCaptionModel


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def router(ctx: ApiContext) -> APIRouter:
    api = APIRouter()
    res = ctx.resources

    @api.post(
        "/v1/caption",
        response_model=CaptionResponse,
        dependencies=ctx.protected,
        tags=["captioning"],
        responses={
            **ctx.auth_docs,
            404: error_doc("captioning is disabled on this server (error 'not_found'), or its captioner cannot be "
                           "loaded (error 'model_unavailable'; the detail says why)"),
            413: error_doc("too many images, an image or the body too large"),
            415: error_doc("the body is neither JSON nor multipart/form-data"),
            422: error_doc("no images, bad base64, or a bad decoding setting (the detail names it)"),
            503: error_doc("the queue is full; retry after the Retry-After header's seconds",
                           headers=RETRY_AFTER_HEADER),
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/CaptionRequest"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/CaptionForm"}},
        }}},
    )
    async def caption(request: Request) -> CaptionResponse:
        """A caption for each image, decoded greedily, by beam search or by nucleus sampling.

        Send JSON (``images`` as base64 strings) or multipart/form-data (``images`` as file parts), with optional
        decoding fields (``method``, ``beam_size``, ``top_p``, ``seed``, ...). Each image gets a caption, or an
        ``error`` when it cannot be read; the others are still captioned. The captioner loads on the first request.
        """
        t0 = time.monotonic()
        body = await parse_caption(request, res)
        res.check_images(len(body.images))
        model = await run_in_threadpool(res.captioner)
        t_dec = time.monotonic()
        decoded = await run_in_threadpool(res.decode, body.images, transform=model.uint8_transform, allow_none=True)
        decode_s = time.monotonic() - t_dec
        submitted = time.monotonic()
        results = []
        if decoded.kept:
            futures = res.captions.submit(decoded.pixels, body.decoding)
            results = list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
        items = res.caption_items(body.images, decoded, [r.caption for r in results])
        ctx.metrics.images_captioned.inc(len(results))
        return CaptionResponse(
            model=model.name,
            model_record=res.captions.record(),
            decoding=body.decoding.to_dict(),
            captions=[ImageCaptionModel(index=c.index, filename=c.name, caption=c.caption, error=c.error)
                      for c in items],
            timing=CaptionTiming(
                decode_ms=_ms(decode_s),
                queue_ms=max((_ms(r.finished - submitted) - r.forward_ms for r in results), default=0.0),
                inference_ms=max((r.forward_ms for r in results), default=0.0),
                total_ms=_ms(time.monotonic() - t0),
                batch_sizes=[r.batch_size for r in results],
            ),
        )

    return api
