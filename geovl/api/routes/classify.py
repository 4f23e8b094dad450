"""``POST /v1/classify``: zero-shot classification of uploaded images, batched across requests."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from geovl.api.errors import RETRY_AFTER_HEADER, error_doc
from geovl.api.parsing import parse_classify
from geovl.api.routes import ApiContext, failure_models
from geovl.api.schemas import ClassifyResponse, ImagePrediction, Timing


def router(ctx: ApiContext) -> APIRouter:
    api = APIRouter()
    res = ctx.resources

    @api.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        dependencies=ctx.protected,
        tags=["classification"],
        responses={
            **ctx.auth_docs,
            413: error_doc("too many images, an image or the body too large"),
            415: error_doc("the body is neither JSON nor multipart/form-data"),
            422: error_doc("bad fields (labels, label_set, top_k, threshold), bad base64, or no image that can be "
                           "decoded"),
            503: error_doc("the queue is full; retry after the Retry-After header's seconds",
                           headers=RETRY_AFTER_HEADER),
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
        repeated or comma-separated). Images that cannot be decoded are listed in ``failures``; the others are
        classified.
        """
        t0 = time.monotonic()
        body = await parse_classify(request, res)
        res.check_request(len(body.images), body.top_k, body.threshold)
        multi_label = body.threshold is not None
        t_cls = time.monotonic()
        clf = await run_in_threadpool(res.classifier, body.labels, body.label_set, multi_label=multi_label)
        class_s = time.monotonic() - t_cls
        t_dec = time.monotonic()
        decoded = await run_in_threadpool(res.decode, body.images)
        decode_s = time.monotonic() - t_dec
        submitted = time.monotonic()
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in res.submit(decoded.pixels)))
        predictions, timing = res.predict(clf, results, body.top_k, submitted, body.threshold)
        ctx.metrics.images_classified.inc(len(predictions))
        return ClassifyResponse(
            model=res.model_name,
            classes=list(clf.classes),
            multi_label=multi_label,
            threshold=body.threshold,
            predictions=[ImagePrediction(index=i, filename=body.images[i].name, labels=p.labels, scores=p.scores)
                         for i, p in zip(decoded.kept, predictions, strict=True)],
            failures=failure_models(decoded.failures),
            timing=Timing(decode_ms=round(decode_s * 1000, 3), queue_ms=timing.queue_ms,
                          inference_ms=timing.inference_ms,
                          classify_ms=round(timing.classify_ms + class_s * 1000, 3),
                          total_ms=round((time.monotonic() - t0) * 1000, 3), batch_sizes=timing.batch_sizes),
        )

    return api
