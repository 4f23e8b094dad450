"""HTTP errors: the serving layer's domain errors mapped to status codes, and the one JSON error body."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from geovl.api.schemas import ErrorResponse
from geovl.serving.errors import (
    InvalidImageError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    ServiceError,
)

__all__ = ["HTTP_STATUS", "UnauthorizedError", "UnsupportedMediaTypeError", "error_doc", "error_response",
           "install_error_handlers", "validation_message"]


class UnauthorizedError(ServiceError):
    """A missing or invalid bearer token (HTTP only)."""

    code = "unauthorized"


class UnsupportedMediaTypeError(ServiceError):
    """A request body that is neither JSON nor multipart/form-data (HTTP only)."""

    code = "unsupported_media_type"


#: The status code of each error; subclasses not listed get their nearest listed base's, else 400.
HTTP_STATUS: dict[type[ServiceError], int] = {
    UnauthorizedError: 401,
    NotFoundError: 404,
    PayloadTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    InvalidRequestError: 422,
    InvalidImageError: 422,
    OverloadedError: 503,
}

RETRY_AFTER_HEADER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
AUTH_HEADER = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}


def status_of(exc: ServiceError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 400


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=code, detail=detail).model_dump(), status_code=status, headers=headers)


def error_doc(description: str, **extra: Any) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry with the error body."""
    return {"model": ErrorResponse, "description": description, **extra}


def validation_message(errors: Any) -> str:
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request body"


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, as an :class:`~geovl.api.schemas.ErrorResponse`."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(status_of(exc), exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))
