"""``POST /v1/search``: text, image or vector queries over the index the server was started with."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from geovl.api.errors import RETRY_AFTER_HEADER, error_doc
from geovl.api.parsing import decode_base64_images
from geovl.api.routes import ApiContext
from geovl.api.schemas import SearchHit, SearchRequest, SearchResponse
from geovl.io.jsonable import to_jsonable
from geovl.serving.errors import InvalidRequestError
from geovl.serving.resources import Resources


def router(ctx: ApiContext) -> APIRouter:
    api = APIRouter()
    res = ctx.resources

    @api.post(
        "/v1/search",
        response_model=SearchResponse,
        dependencies=ctx.protected,
        tags=["search"],
        responses={
            **ctx.auth_docs,
            404: error_doc("the server was started without an index (geovl serve --index DIR)"),
            413: error_doc("the image or the body too large"),
            422: error_doc("not exactly one of text/image/vector, bad k, bad filters, a bad image or vector"),
            503: error_doc("the queue is full; retry after the Retry-After header's seconds",
                           headers=RETRY_AFTER_HEADER),
        },
    )
    async def search(body: SearchRequest) -> SearchResponse:
        """The ``k`` images of the index nearest to a text, image or vector query, with metadata / footprint /
        time filters. Only when the server was started with ``--index``."""
        searcher = res.require_searcher()
        res.check_top_k(body.k, "k")
        filters = res.parse_filters(bbox=body.bbox, start=body.start, end=body.end, where=body.where)
        query = await _query(body, res)
        hits = await run_in_threadpool(res.search, query, body.k, filters)
        ctx.metrics.searches.inc()
        return SearchResponse(model=res.model_name, count=len(searcher),
                              hits=[SearchHit(**to_jsonable(h.to_dict())) for h in hits])

    return api


async def _query(body: SearchRequest, res: Resources) -> np.ndarray:
    given = [name for name in ("text", "image", "vector") if getattr(body, name) is not None]
    if len(given) != 1:
        raise InvalidRequestError(f"send exactly one of text, image or vector (got {given or 'none'})")
    if body.text is not None:
        res.check_text(body.text, "text")
        return (await run_in_threadpool(res.embed_texts, [body.text]))[0]
    if body.image is not None:
        images = decode_base64_images([body.image], res, where="image")
        decoded = await run_in_threadpool(res.decode, images)
        (result,) = await asyncio.gather(*(asyncio.wrap_future(f) for f in res.submit(decoded.pixels)))
        return result.embedding
    return res.check_vector(body.vector or [])
