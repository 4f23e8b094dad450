"""A small typed client for the ``geovl serve`` HTTP API (uses httpx)."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

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
class ModelReply:
    name: str
    architecture: str
    dim: int
    image_size: int
    device: str
    precision: str


@dataclass
class ModelsInfo:
    models: list[ModelReply]
    label_sets: dict[str, list[str]]
    templates: list[str]


@dataclass
class PredictionReply:
    """Top-k classes of one image: ``labels`` best first, ``scores`` their softmax probabilities; multi-label
    (a ``threshold`` was given): the classes whose independent per-class score is at least the threshold, best
    first, and those per-class scores (they need not sum to 1)."""

    index: int
    filename: str | None
    labels: list[str]
    scores: list[float]


@dataclass
class ClassifyReply:
    """``multi_label`` tells which mode answered: top-k softmax (False) or per-class scores >= ``threshold``.
    ``predictions`` are for the decodable images (each carries its ``index``); ``failures`` lists the others
    (``{"index", "filename", "error"}``)."""

    model: str
    classes: list[str]
    predictions: list[PredictionReply]
    timing: dict[str, Any]
    multi_label: bool = False
    threshold: float | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EmbedReply:
    """L2-normalised embeddings: ``image_embeddings`` (N_images, D) and ``text_embeddings`` (N_texts, D) as
    float32 arrays (shape (0, D) when none were asked). An image that could not be decoded has a row of NaN and is
    listed in ``failures`` (``{"index", "filename", "error"}``)."""

    model: str
    dim: int
    image_embeddings: np.ndarray
    text_embeddings: np.ndarray
    failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CaptionItemReply:
    """One image of a caption request: its ``caption``, or ``error`` (why it could not be read) and no caption."""

    index: int
    filename: str | None
    caption: str | None
    error: str | None = None


@dataclass
class CaptionReply:
    """``captions`` has one item per image, in request order; ``model_record`` is the captioner's identity and
    ``decoding`` the settings it decoded with (those that matter for the method)."""

    model: str
    model_record: dict[str, Any]
    decoding: dict[str, Any]
    captions: list[CaptionItemReply]
    timing: dict[str, Any]

    @property
    def texts(self) -> list[str | None]:
        """The captions alone, in request order (``None`` for an image that could not be read)."""
        return [c.caption for c in self.captions]


@dataclass
class ChangeCaptionReply:
    """One pair's description: the ``caption`` (the no-change sentence when unchanged), the verdict ``changed``
    (``probability >= threshold``), P(changed), the ``threshold`` used, and ``heatmap``, a float32 (h, w) array of
    per-cell change probabilities over the after image (``grid`` = (h, w)); ``model_record`` is the change
    captioner's identity and ``decoding`` the settings its caption was decoded with."""

    model: str
    model_record: dict[str, Any]
    caption: str
    changed: bool
    probability: float
    threshold: float
    heatmap: np.ndarray
    grid: tuple[int, int]
    decoding: dict[str, Any]
    timing: dict[str, Any]


@dataclass
class GeneratedImageReply:
    """One generated image: the PIL ``image``, its ``png`` bytes (settings in PNG text chunks) and its own ``seed``."""

    index: int
    seed: int
    image: Image.Image
    png: bytes


@dataclass
class GenerateReply:
    """``images`` in request order (image k seeded ``settings["seed"] + k``); ``settings`` are image 0's (prompt,
    gsd, level, steps, guidance, guidance_resolution, sampler, width, height, ...) and ``n``; ``model_record`` is the
    generator's identity."""

    model: str
    model_record: dict[str, Any]
    settings: dict[str, Any]
    images: list[GeneratedImageReply]
    timing: dict[str, Any]

    def save(self, path: str | os.PathLike[str], index: int = 0) -> Path:
        """Write image ``index``'s PNG (with its settings) to ``path``."""
        from geovl.io.fs import atomic_write_bytes

        return atomic_write_bytes(path, self.images[index].png)


class GeovlClient:
    """Client for a ``geovl serve`` server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        token: bearer token, when the server was started with ``--token``.
        timeout: seconds per request.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        httpx = require("httpx", extra=None, feature="the geovl HTTP client")
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
            models=[ModelReply(**m) for m in data["models"]],
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
        threshold: float | None = None,
    ) -> ClassifyReply:
        """``POST /v1/classify``: the top-k classes of each image (file paths or encoded bytes).

        With ``threshold`` (in (0, 1)), multi-label: per image, every class whose independent per-class score is at
        least ``threshold``, best first, at most ``top_k`` of them (possibly none).

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
        if threshold is not None:
            payload["threshold"] = threshold
        data = self._check(self._http.post("/v1/classify", json=payload))
        return ClassifyReply(
            model=data["model"],
            classes=list(data["classes"]),
            predictions=[PredictionReply(**p) for p in data["predictions"]],
            timing=dict(data["timing"]),
            multi_label=bool(data.get("multi_label", False)),
            threshold=data.get("threshold"),
            failures=list(data.get("failures", [])),
        )

    def embed(self, images: Sequence[ClientImage] = (), texts: Sequence[str] = ()) -> EmbedReply:
        """``POST /v1/embed``: L2-normalised embeddings of images (file paths or encoded bytes) and/or texts.

        Raises:
            GeovlAPIError: the server refused the request.
            ValueError: ``images`` or ``texts`` is a single item instead of a list, or both are empty.
        """
        if isinstance(images, (str, bytes, os.PathLike)) or isinstance(texts, str):
            raise ValueError("pass lists of images and texts, not a single item")
        if not images and not texts:
            raise ValueError("nothing to embed: pass images, texts, or both")
        payload = {"images": [base64.b64encode(_read(img)).decode("ascii") for img in images],
                   "texts": list(texts)}
        data = self._check(self._http.post("/v1/embed", json=payload))
        dim = int(data["dim"])
        return EmbedReply(
            model=data["model"], dim=dim,
            image_embeddings=np.asarray([[np.nan] * dim if v is None else v for v in data["image_embeddings"]],
                                        np.float32).reshape(-1, dim),
            text_embeddings=np.asarray(data["text_embeddings"], np.float32).reshape(-1, dim),
            failures=list(data.get("failures", [])),
        )

    def caption(self, images: Sequence[ClientImage], **decoding: Any) -> CaptionReply:
        """``POST /v1/caption``: a caption per image (file paths or encoded bytes).

        ``decoding`` takes the fields of :class:`geovl.models.decoding.DecodingConfig`: ``method`` (``"greedy"``,
        ``"beam"`` or ``"nucleus"``), ``beam_size``, ``length_penalty``, ``top_p``, ``temperature``, ``max_length``,
        ``min_length``, ``no_repeat_ngram_size``, ``repetition_penalty``, ``seed``; one left out (or ``None``)
        takes the server's default.

        Raises:
            GeovlAPIError: the server refused the request (a bad decoding field is a 422 naming it; captioning
                disabled or its model missing is a 404).
            ValueError: ``images`` is a single path or bytes object instead of a list.
        """
        if isinstance(images, (str, bytes, os.PathLike)):
            raise ValueError("pass a list of images, not a single path or bytes object")
        payload: dict[str, Any] = {"images": [base64.b64encode(_read(img)).decode("ascii") for img in images]}
        payload.update({name: value for name, value in decoding.items() if value is not None})
        data = self._check(self._http.post("/v1/caption", json=payload))
        return CaptionReply(
            model=data["model"],
            model_record=dict(data["model_record"]),
            decoding=dict(data["decoding"]),
            captions=[CaptionItemReply(**c) for c in data["captions"]],
            timing=dict(data["timing"]),
        )

    def change_caption(self, before: ClientImage, after: ClientImage, *, threshold: float | None = None,
                       **decoding: Any) -> ChangeCaptionReply:
        """``POST /v1/change-caption``: what changed between two images of the same place (file paths or encoded
        bytes), the changed / unchanged verdict and the change heat map.

        ``threshold`` (in [0, 1]) overrides the model's calibrated one; ``decoding`` takes the fields of
        :class:`geovl.models.decoding.DecodingConfig`, as for :meth:`caption`; one left out (or ``None``) takes the
        server's default.

        Raises:
            GeovlAPIError: the server refused the request (an unreadable date, a bad threshold or decoding field is a
                422 naming it; change captioning disabled or its model missing is a 404).
        """
        payload: dict[str, Any] = {"before": base64.b64encode(_read(before)).decode("ascii"),
                                   "after": base64.b64encode(_read(after)).decode("ascii")}
        if threshold is not None:
            payload["threshold"] = threshold
        payload.update({name: value for name, value in decoding.items() if value is not None})
        data = self._check(self._http.post("/v1/change-caption", json=payload))
        h, w = (int(n) for n in data["grid"])
        return ChangeCaptionReply(
            model=data["model"],
            model_record=dict(data["model_record"]),
            caption=data["caption"],
            changed=bool(data["changed"]),
            probability=float(data["probability"]),
            threshold=float(data["threshold"]),
            heatmap=np.asarray(data["heatmap"], np.float32).reshape(h, w),
            grid=(h, w),
            decoding=dict(data["decoding"]),
            timing=dict(data["timing"]),
        )

    def generate(self, prompt: str, *, gsd: float | None = None, steps: int | None = None,
                 guidance: float | None = None, guidance_resolution: float | None = None, seed: int = 0,
                 width: int | None = None, height: int | None = None, sampler: str | None = None,
                 n: int = 1) -> GenerateReply:
        """``POST /v1/generate``: ``n`` images of ``prompt`` at ``gsd`` metres per pixel (None: no resolution
        condition), image k seeded ``seed + k``; ``width`` / ``height`` larger than one tile give a tiled scene. A
        setting left out (or ``None``) takes the generator's default.

        Raises:
            GeovlAPIError: the server refused the request (a bad field or a limit is a 422 naming it, too many images
                a 413; generation disabled or its model missing is a 404).
        """
        payload: dict[str, Any] = {"prompt": prompt, "gsd": gsd, "seed": seed, "n": n}
        optional = {"steps": steps, "guidance": guidance, "guidance_resolution": guidance_resolution, "width": width,
                    "height": height, "sampler": sampler}
        payload.update({name: value for name, value in optional.items() if value is not None})
        data = self._check(self._http.post("/v1/generate", json=payload))
        images = []
        for item in data["images"]:
            png = base64.b64decode(item["png"])
            with Image.open(io.BytesIO(png)) as picture:
                picture.load()
                images.append(GeneratedImageReply(int(item["index"]), int(item["seed"]), picture.copy(), png))
        return GenerateReply(model=data["model"], model_record=dict(data["model_record"]),
                             settings=dict(data["settings"]), images=images, timing=dict(data["timing"]))

    def search(
        self,
        *,
        text: str | None = None,
        image: ClientImage | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        k: int = 10,
        bbox: Sequence[float] | str | None = None,
        start: str | None = None,
        end: str | None = None,
        where: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """``POST /v1/search`` (servers started with ``--index``): hits as dicts with ``id``, ``score``, ``rank``
        and ``metadata``, best first. Pass exactly one of ``text``, ``image`` (path or bytes) or ``vector``."""
        payload: dict[str, Any] = {"k": k, "where": list(where)}
        if text is not None:
            payload["text"] = text
        if image is not None:
            payload["image"] = base64.b64encode(_read(image)).decode("ascii")
        if vector is not None:
            payload["vector"] = [float(x) for x in np.asarray(vector, np.float64).reshape(-1)]
        if bbox is not None:
            payload["bbox"] = bbox if isinstance(bbox, str) else [float(x) for x in bbox]
        if start is not None:
            payload["start"] = start
        if end is not None:
            payload["end"] = end
        hits: list[dict[str, Any]] = self._check(self._http.post("/v1/search", json=payload))["hits"]
        return hits


def _read(image: ClientImage) -> bytes:
    if isinstance(image, bytes):
        return image
    return Path(image).read_bytes()
