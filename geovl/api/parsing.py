"""Request parsing of the HTTP API: JSON bodies with base64 images, or multipart/form-data with file parts.

Sizes and counts are checked before anything is decoded; errors are the domain errors of :mod:`geovl.serving.errors`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from geovl.api.errors import UnsupportedMediaTypeError, validation_message
from geovl.api.schemas import DECODING_OPTIONS, CaptionRequest, ChangeCaptionRequest, ClassifyRequest, EmbedRequest
from geovl.models.decoding import DecodingConfig
from geovl.serving.change_captioning import DATES
from geovl.serving.errors import InvalidImageError, InvalidRequestError, PayloadTooLargeError, ServiceError
from geovl.serving.resources import ImageInput, Resources

__all__ = ["ParsedCaption", "ParsedChangeCaption", "ParsedClassify", "decode_base64", "decode_base64_images",
           "parse_caption", "parse_change_caption", "parse_classify", "parse_embed"]

M = TypeVar("M", bound=BaseModel)


def _body_kind(request: Request) -> str:
    """``"json"`` or ``"multipart"``; any other content type is a 415."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return "json"
    if content_type == "multipart/form-data":
        return "multipart"
    raise UnsupportedMediaTypeError(f"content type {content_type or '(none)'!r} is not supported: send "
                                    "application/json with base64 images, or multipart/form-data with image files")


def _validated(model: type[M], raw: bytes) -> M:
    """A JSON body as ``model``, or a 422 naming the bad fields."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidRequestError(validation_message(exc.errors())) from exc



async def parse_embed(request: Request, resources: Resources) -> tuple[list[ImageInput], list[str]]:
    cfg = resources.config
    if _body_kind(request) == "json":
        req = _validated(EmbedRequest, await request.body())
        resources.check_embed(len(req.images), req.texts)
        return decode_base64_images(req.images, resources), list(req.texts)
    try:
        async with request.form(max_files=cfg.max_images_per_request, max_fields=cfg.max_texts + 8) as form:
            unknown = sorted(set(form.keys()) - {"images", "texts"})
            if unknown:
                raise InvalidRequestError(f"unknown form fields {unknown}; expected images, texts")
            parts = form.getlist("images")
            texts = form.getlist("texts")
            if any(not isinstance(t, str) for t in texts):
                raise InvalidRequestError("texts must be text fields, not files")
            str_texts = [t for t in texts if isinstance(t, str)]
            resources.check_embed(len(parts), str_texts)
            return await _read_image_parts(parts, resources), str_texts
    except StarletteHTTPException as exc:
        raise _form_error(exc, cfg.max_images_per_request) from exc


@dataclass
class ParsedCaption:
    images: list[ImageInput]
    decoding: DecodingConfig


async def parse_caption(request: Request, resources: Resources) -> ParsedCaption:
    """``POST /v1/caption``: JSON with base64 images, or multipart/form-data with image files; decoding fields are
    checked (:meth:`Resources.decoding`) before any image is decoded."""
    cfg = resources.config
    if _body_kind(request) == "json":
        req = _validated(CaptionRequest, await request.body())
        resources.check_images(len(req.images))
        decoding = resources.decoding(req.decoding_options())
        return ParsedCaption(decode_base64_images(req.images, resources), decoding)
    try:
        async with request.form(max_files=cfg.max_images_per_request,
                                max_fields=len(DECODING_OPTIONS) + 8) as form:
            unknown = sorted(set(form.keys()) - {"images", *DECODING_OPTIONS})
            if unknown:
                raise InvalidRequestError(f"unknown form fields {unknown}; expected images, "
                                          f"{', '.join(DECODING_OPTIONS)}")
            parts = form.getlist("images")
            resources.check_images(len(parts))
            decoding = resources.decoding({name: _form_value(form.get(name), name) for name in DECODING_OPTIONS})
            return ParsedCaption(await _read_image_parts(parts, resources), decoding)
    except StarletteHTTPException as exc:
        raise _form_error(exc, cfg.max_images_per_request) from exc


@dataclass
class ParsedChangeCaption:
    before: ImageInput
    after: ImageInput
    threshold: float | None
    decoding: DecodingConfig


async def parse_change_caption(request: Request, resources: Resources) -> ParsedChangeCaption:
    """``POST /v1/change-caption``: JSON with the two dates base64-encoded, or multipart/form-data with the two dates
    as files; a missing date, the threshold and the decoding fields are checked before any image is decoded."""
    changes = resources.changes
    if _body_kind(request) == "json":
        try:
            req = ChangeCaptionRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            errors = exc.errors()
            changes.check_dates([d for d in DATES if not any(e["type"] == "missing" and tuple(e["loc"]) == (d,)
                                                             for e in errors)])
            raise InvalidRequestError(validation_message(errors)) from exc
        threshold = changes.check_threshold(req.threshold)
        decoding = resources.decoding(req.decoding_options())
        before, after = (ImageInput(decode_base64(text, date, functools.partial(changes.check_image_size, date=date)))
                         for date, text in zip(DATES, (req.before, req.after), strict=True))
        return ParsedChangeCaption(before, after, threshold, decoding)
    fields = {*DATES, "threshold", *DECODING_OPTIONS}
    try:
        async with request.form(max_files=len(DATES), max_fields=len(fields) + 8) as form:
            unknown = sorted(set(form.keys()) - fields)
            if unknown:
                raise InvalidRequestError(f"unknown form fields {unknown}; expected {', '.join(sorted(fields))}")
            changes.check_dates([d for d in DATES if form.getlist(d)])
            threshold = changes.check_threshold(_form_value(form.get("threshold"), "threshold"))
            decoding = resources.decoding({name: _form_value(form.get(name), name) for name in DECODING_OPTIONS})
            images = [await _read_date(form.getlist(date), date, resources) for date in DATES]
            return ParsedChangeCaption(images[0], images[1], threshold, decoding)
    except StarletteHTTPException as exc:
        if "files" in str(exc.detail).lower():
            raise InvalidRequestError("send two image files, 'before' and 'after' (one pair per request)") from exc
        raise InvalidRequestError(f"bad multipart body: {exc.detail}") from exc


async def _read_date(parts: list[Any], date: str, resources: Resources) -> ImageInput:
    """The one file part of a date (``-F before=@2019.png``), its size checked."""
    if len(parts) != 1 or not isinstance(parts[0], UploadFile):
        raise InvalidRequestError(f"{date} must be one image file part (curl: -F {date}=@tile.png)")
    part = parts[0]
    data = await part.read(resources.config.max_image_bytes + 1)  # one byte more than allowed tells "too large"
    resources.changes.check_image_size(max(len(data), part.size or 0), date)
    return ImageInput(data, part.filename or date)


def _form_value(value: object, name: str) -> str | int | float | None:
    """A multipart decoding field: absent or empty is None (the default), ``method`` stays text, numbers are parsed
    (their ranges are checked by :class:`DecodingConfig`)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a text field, not a file")
    text = value.strip()
    if name == "method":
        return text
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise InvalidRequestError(f"{name} must be a number, got {value!r}")
    return number


@dataclass
class ParsedClassify:
    images: list[ImageInput]
    labels: list[str] | None
    label_set: str | None
    top_k: int
    threshold: float | None = None


async def parse_classify(request: Request, resources: Resources) -> ParsedClassify:
    if _body_kind(request) == "json":
        return _parse_json(await request.body(), resources)
    return await _parse_multipart(request, resources)


def _parse_json(raw: bytes, resources: Resources) -> ParsedClassify:
    req = _validated(ClassifyRequest, raw)
    resources.check_request(len(req.images), req.top_k, req.threshold)
    return ParsedClassify(decode_base64_images(req.images, resources), req.labels, req.label_set, req.top_k,
                           req.threshold)


def decode_base64_images(texts: list[str], resources: Resources,
                          where: str = "images") -> list[ImageInput]:
    return [ImageInput(decode_base64(text, f"{where}[{i}]", functools.partial(resources.check_image_size, index=i)))
            for i, text in enumerate(texts)]


def decode_base64(text: str, name: str, check_size: Callable[[int], None]) -> bytes:
    """One base64 image (a data: URL too); ``check_size`` sees its decoded size before it is decoded."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]  # data:image/png;base64,....
    # Check the size before decoding: base64 carries 3 bytes per 4 characters.
    check_size(len(text) * 3 // 4 - text[-2:].count("="))
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageError(f"{name} is not valid base64 ({exc})") from exc


async def _parse_multipart(request: Request, resources: Resources) -> ParsedClassify:
    cfg = resources.config
    try:
        # The context manager closes the spooled upload files however the request ends.
        async with request.form(max_files=cfg.max_images_per_request, max_fields=cfg.max_labels + 8) as form:
            return await _read_form(form, resources)
    except StarletteHTTPException as exc:  # starlette's own limits and malformed bodies
        raise _form_error(exc, cfg.max_images_per_request) from exc


def _form_error(exc: StarletteHTTPException, max_images: int) -> ServiceError:
    if "files" in str(exc.detail).lower():
        return PayloadTooLargeError(f"more than {max_images} images in one request; split the request")
    return InvalidRequestError(f"bad multipart body: {exc.detail}")


async def _read_form(form: FormData, resources: Resources) -> ParsedClassify:
    unknown = sorted(set(form.keys()) - {"images", "labels", "label_set", "top_k", "threshold"})
    if unknown:
        raise InvalidRequestError(f"unknown form fields {unknown}; expected images, labels, label_set, top_k, "
                                  "threshold")
    parts = form.getlist("images")
    top_k = _form_int(form.get("top_k"), "top_k", default=5)
    threshold = _form_threshold(form.get("threshold"))
    resources.check_request(len(parts), top_k, threshold)
    images = await _read_image_parts(parts, resources)
    label_fields = [v for v in form.getlist("labels") if isinstance(v, str)]
    labels = [s.strip() for v in label_fields for s in v.split(",") if s.strip()] if label_fields else None
    label_set = form.get("label_set")
    if label_set is not None and not isinstance(label_set, str):
        raise InvalidRequestError("label_set must be a text field")
    return ParsedClassify(images, labels, label_set or None, top_k, threshold)


async def _read_image_parts(parts: list[Any], resources: Resources) -> list[ImageInput]:
    images = []
    for i, part in enumerate(parts):
        if not isinstance(part, UploadFile):
            raise InvalidRequestError(f"images[{i}] must be a file part (curl: -F images=@tile.png)")
        data = await part.read(resources.config.max_image_bytes + 1)  # one byte more than allowed tells "too large"
        resources.check_image_size(max(len(data), part.size or 0), i, part.filename)
        images.append(ImageInput(data, part.filename))
    return images


def _form_int(value: object, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise InvalidRequestError(f"{name} must be an integer, got {value!r}")


def _form_threshold(value: object) -> float | None:
    """The multipart ``threshold``: absent or empty means None (top-k mode); the range is checked by
    :meth:`~geovl.serving.resources.Resources.check_threshold`."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    shown = value if isinstance(value, str) else "a file"
    raise InvalidRequestError(f"threshold must be a number in the open interval (0, 1), got {shown!r}")
