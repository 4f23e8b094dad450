"""Prometheus metrics of the HTTP API (``GET /metrics``), in a registry of their own per app.

A per-app :class:`prometheus_client.CollectorRegistry` (not the process-wide default) lets several apps live in
one process (tests, several servers) without "duplicated timeseries" errors.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]

#: Latency buckets (seconds): from a cached health check to a large batch on CPU.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ApiMetrics:
    """The server's counters, histograms and gauges, registered in :attr:`registry`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("geovl_http_requests", "HTTP requests by endpoint (route template), method and status",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("geovl_http_request_duration_seconds", "HTTP request latency by endpoint",
                                 ["endpoint", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.images_classified = Counter("geovl_images_classified", "images classified", registry=r)
        self.images_embedded = Counter("geovl_images_embedded", "images embedded by POST /v1/embed", registry=r)
        self.texts_embedded = Counter("geovl_texts_embedded", "texts embedded by POST /v1/embed", registry=r)
        self.images_captioned = Counter("geovl_images_captioned", "images captioned by POST /v1/caption", registry=r)
        self.pairs_change_captioned = Counter("geovl_pairs_change_captioned",
                                              "image pairs described by POST /v1/change-caption", registry=r)
        self.searches = Counter("geovl_searches", "searches answered by POST /v1/search", registry=r)
        edges = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, max_batch})
        self.batch_size = Histogram("geovl_forward_batch_size", "images per forward pass of the micro-batcher",
                                    buckets=[e for e in edges if e <= max_batch], registry=r)
        self.queue_depth = Gauge("geovl_queue_depth", "images waiting for a forward pass", registry=r)
        self.rejections = Counter("geovl_overload_rejections", "requests refused with HTTP 503 (queue full)",
                                  registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: counts every HTTP request by route template (``unmatched`` for unknown paths, so that
    random URLs cannot grow the label set), method and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(endpoint, method, str(status)).inc()
            self.metrics.latency.labels(endpoint, method).observe(time.perf_counter() - start)
