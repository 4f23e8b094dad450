"""``POST /v1/embed``: image and text embeddings in the model's shared space."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from geovl.api.errors import RETRY_AFTER_HEADER, error_doc
from geovl.api.parsing import parse_embed
from geovl.api.routes import ApiContext, failure_models
from geovl.api.schemas import EmbedResponse


def router(ctx: ApiContext) -> APIRouter:
    api = APIRouter()
    res = ctx.resources

    @api.post(
        "/v1/embed",
        response_model=EmbedResponse,
        dependencies=ctx.protected,
        tags=["embedding"],
        responses={
            **ctx.auth_docs,
            413: error_doc("too many images or texts, an image or the body too large"),
            415: error_doc("the body is neither JSON nor multipart/form-data"),
            422: error_doc("nothing to embed, a text too long, bad base64, or no image that can be decoded"),
            503: error_doc("the queue is full; retry after the Retry-After header's seconds",
                           headers=RETRY_AFTER_HEADER),
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/EmbedRequest"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/EmbedForm"}},
        }}},
    )
    async def embed(request: Request) -> EmbedResponse:
        """L2-normalised embeddings of images and/or texts, in the model's shared image-text space.

        Images are decoded and limited as for ``/v1/classify`` and share forward passes with it; one that cannot be
        decoded gets ``null`` and is listed in ``failures``. Send JSON (``images`` as base64 strings, ``texts`` as a
        list) or multipart/form-data (``images`` as file parts, ``texts`` repeated).
        """
        images, texts = await parse_embed(request, res)
        res.check_embed(len(images), texts)
        image_vectors: list[list[float] | None] = []
        text_vectors: list[list[float]] = []
        failures = []
        if images:
            decoded = await run_in_threadpool(res.decode, images)
            results = await asyncio.gather(*(asyncio.wrap_future(f) for f in res.submit(decoded.pixels)))
            aligned = res.align(len(images), decoded, [r.embedding for r in results])
            image_vectors = [None if v is None else v.astype(float).tolist() for v in aligned]
            failures = decoded.failures
            ctx.metrics.images_embedded.inc(len(results))
        if texts:
            text_vectors = (await run_in_threadpool(res.embed_texts, texts)).astype(float).tolist()
            ctx.metrics.texts_embedded.inc(len(texts))
        return EmbedResponse(model=res.model_name, dim=res.backbone.embed_dim, image_embeddings=image_vectors,
                             text_embeddings=text_vectors, failures=failure_models(failures))

    return api
