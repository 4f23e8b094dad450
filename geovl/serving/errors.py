"""Domain errors of the serving resources: what a request got wrong, independent of the transport.

The HTTP API maps each to a status code (:mod:`geovl.api.errors`); the demo shows its message in the page. ``code`` is a
stable machine-readable name; ``headers`` carries hints such as ``Retry-After``.
"""

from __future__ import annotations

__all__ = [
    "InvalidImageError",
    "InvalidRequestError",
    "ModelUnavailableError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "ServiceError",
]


class ServiceError(Exception):
    """A request the resources refuse; ``code`` is a stable machine-readable name."""

    code = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class NotFoundError(ServiceError):
    """Something the request needs is not loaded (e.g. no index to search)."""

    code = "not_found"


class ModelUnavailableError(NotFoundError):
    """A model the request needs (e.g. the captioner) cannot be loaded on this server: its weights are missing or
    unreadable. The message says which model and why."""

    code = "model_unavailable"


class PayloadTooLargeError(ServiceError):
    """Too many images or texts, or an image too large."""

    code = "payload_too_large"


class InvalidRequestError(ServiceError):
    """A bad field: labels, label set, top_k, threshold, text length, query."""

    code = "invalid_request"


class InvalidImageError(ServiceError):
    """An image that cannot be decoded (every image of the request, for the batch calls)."""

    code = "invalid_image"


class OverloadedError(ServiceError):
    """The micro-batcher's queue is full; retry after ``headers["Retry-After"]`` seconds."""

    code = "overloaded"
