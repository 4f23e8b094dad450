"""A small typed client for the ``geovl serve`` HTTP API (uses httpx)."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from geovl._optional import require

ClientImage = str | os.PathLike[str] | bytes
"""A local image file path, or the encoded bytes of an image file."""


class GeovlAPIError(RuntimeError):
    """The server answered with an error. ``status`` is the HTTP status, ``code`` the API's error code."""

    def __init__(self, status: int, code: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


@dataclass
class Health:
    status: str
    model: str
    queued_images: int
    version: str


@dataclass
class ModelDescription:
    name: str
    architecture: str
    dim: int
    image_size: int
    device: str
    precision: str


@dataclass
class ModelsInfo:
    models: list[ModelDescription]
    label_sets: dict[str, list[str]]
    templates: list[str]


@dataclass
class ImagePrediction:
    """Top-k classes of one image: ``labels`` best first, ``scores`` their softmax probabilities."""

    index: int
    filename: str | None
    labels: list[str]
    scores: list[float]


@dataclass
class ClassifyResult:
    model: str
    classes: list[str]
    predictions: list[ImagePrediction]
    timing: dict[str, Any]


class GeovlClient:
    """Client for a ``geovl serve`` server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        token: bearer token, when the server was started with ``--token``.
        timeout: seconds per request.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        httpx = require("httpx", extra="api", feature="the geovl HTTP client")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GeovlClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _check(self, response: Any) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                body = response.json()
                code, detail = str(body.get("error", "error")), str(body.get("detail", response.text))
            except ValueError:
                code, detail = "error", response.text
            retry = response.headers.get("Retry-After")
            raise GeovlAPIError(response.status_code, code, detail,
                                float(retry) if retry and retry.replace(".", "", 1).isdigit() else None)
        data: dict[str, Any] = response.json()
        return data

    def health(self) -> Health:
        """``GET /v1/health``."""
        return Health(**self._check(self._http.get("/v1/health")))

    def models(self) -> ModelsInfo:
        """``GET /v1/models``: the loaded model and the named label sets."""
        data = self._check(self._http.get("/v1/models"))
        return ModelsInfo(
            models=[ModelDescription(**m) for m in data["models"]],
            label_sets={s["name"]: list(s["classes"]) for s in data["label_sets"]},
            templates=list(data["templates"]),
        )

    def classify(
        self,
        images: Sequence[ClientImage],
        *,
        labels: Sequence[str] | None = None,
        label_set: str | None = None,
        top_k: int = 5,
    ) -> ClassifyResult:
        """``POST /v1/classify``: the top-k classes of each image (file paths or encoded bytes).

        Raises:
            GeovlAPIError: the server refused the request (its ``status``, ``code`` and ``detail``).
            ValueError: ``images`` is a single path or bytes object instead of a list.
        """
        if isinstance(images, (str, bytes, os.PathLike)):
            raise ValueError("pass a list of images, not a single path or bytes object")
        payload: dict[str, Any] = {
            "images": [base64.b64encode(_read(img)).decode("ascii") for img in images],
            "top_k": top_k,
        }
        if labels is not None:
            payload["labels"] = list(labels)
        if label_set is not None:
            payload["label_set"] = label_set
        data = self._check(self._http.post("/v1/classify", json=payload))
        return ClassifyResult(
            model=data["model"],
            classes=list(data["classes"]),
            predictions=[ImagePrediction(**p) for p in data["predictions"]],
            timing=dict(data["timing"]),
        )


def _read(image: ClientImage) -> bytes:
    if isinstance(image, bytes):
        return image
    return Path(image).read_bytes()
