"""The typed resource behind the HTTP API: one backbone, one micro-batcher and a cache of class embeddings.

HTTP handlers stay a few lines each: they parse the request, then call :class:`ClassificationService`. Errors are
:class:`ServiceError` subclasses that carry their HTTP status, so the same checks serve the Python API and the
server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from geovl.api.batching import MicroBatcher, QueueFullError
from geovl.api.config import ServeConfig
from geovl.io.geotiff import load_any_image
from geovl.vlm.backbone import Backbone
from geovl.vlm.classify import Prediction, ZeroShotClassifier, check_threshold, resolve_classes
from geovl.vlm.labelsets import LABEL_SETS
from geovl.vlm.zeroshot import RS_TEMPLATES

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses; ``status`` is the HTTP status, ``code`` a stable machine-readable name."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class UnauthorizedError(ServiceError):
    status, code = 401, "unauthorized"


class NotFoundError(ServiceError):
    status, code = 404, "not_found"


class PayloadTooLargeError(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaTypeError(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidRequestError(ServiceError):
    status, code = 422, "invalid_request"


class InvalidImageError(ServiceError):
    status, code = 422, "invalid_image"


class OverloadedError(ServiceError):
    status, code = 503, "overloaded"


@dataclass
class ImageInput:
    """One encoded image of a request. ``name`` is the upload file name, if any."""

    data: bytes
    name: str | None = None


@dataclass
class EmbedResult:
    """What the batcher gives back per image: its (D,) embedding and the forward pass it was in."""

    embedding: np.ndarray
    batch_size: int
    forward_ms: float
    finished: float  # time.monotonic() when the forward pass ended


@dataclass
class ServiceTiming:
    """Milliseconds spent per stage of one request (see :class:`geovl.api.schemas.Timing`)."""

    decode_ms: float = 0.0
    queue_ms: float = 0.0
    inference_ms: float = 0.0
    classify_ms: float = 0.0
    total_ms: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


@dataclass
class ClassifyResult:
    """``predictions`` are top-k softmax probabilities, or, when ``threshold`` is set (multi-label), the classes
    whose independent per-class score (:meth:`ZeroShotClassifier.scores`) is at least ``threshold``."""

    classes: list[str]
    predictions: list[Prediction]
    timing: ServiceTiming
    threshold: float | None = None

    @property
    def multi_label(self) -> bool:
        return self.threshold is not None


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class ClassificationService:
    """Zero-shot classification for many concurrent callers.

    Args:
        config: limits and batching settings (``config.model`` etc. are used only when ``backbone`` is None).
        backbone: an already loaded model; by default ``config.model`` is loaded.

    Images are decoded in the caller's thread (:meth:`decode`), embedded in shared forward passes by one worker
    thread (:meth:`submit`), and scored against class embeddings cached per (classes, prompts, templates).
    """

    def __init__(self, config: ServeConfig, backbone: Backbone | None = None) -> None:
        if backbone is None:
            from geovl.vlm import load_backbone

            backbone = load_backbone(config.model, device=config.device, precision=config.precision)
        self.config = config
        self.backbone = backbone
        self.templates: tuple[str, ...] = tuple(RS_TEMPLATES)
        self.batcher: MicroBatcher[torch.Tensor, EmbedResult] = MicroBatcher(
            self._embed_batch, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
            queue_size=config.queue_size, name="geovl-serve-batcher",
        )
        self._classifiers: OrderedDict[tuple[tuple[str, ...], ...], ZeroShotClassifier] = OrderedDict()
        self._classifier_lock = threading.Lock()
        #: Hooks for metrics: called with each forward pass's batch size, and on each 503 (queue full).
        self.on_batch: Callable[[int], None] | None = None
        self.on_reject: Callable[[], None] | None = None

    @property
    def model_name(self) -> str:
        return self.backbone.info.name

    def start(self) -> None:
        self.batcher.start()

    @property
    def ready(self) -> bool:
        """The model is loaded and the batch worker accepts images."""
        return self.backbone is not None and self.batcher.running

    def close(self) -> None:
        """Finish the queued images and stop the batch worker."""
        self.batcher.close()

    # ---- checks
    def check_request(self, n_images: int, top_k: int, threshold: float | None = None) -> None:
        """Refuse empty or oversized image lists (413), a bad ``top_k`` or ``threshold`` (422) before anything is
        decoded."""
        if n_images == 0:
            raise InvalidRequestError("no images: send at least one image")
        if n_images > self.config.max_images_per_request:
            raise PayloadTooLargeError(f"{n_images} images in one request; the limit is "
                                       f"{self.config.max_images_per_request}: split the request")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= self.config.max_top_k:
            raise InvalidRequestError(f"top_k must be an integer from 1 to {self.config.max_top_k}, got {top_k!r}")
        self.check_threshold(threshold)

    @staticmethod
    def check_threshold(threshold: float | None) -> None:
        """422 unless ``threshold`` is None (top-k mode) or a number in the open interval (0, 1) (NaN and booleans
        are refused)."""
        if threshold is None:
            return
        try:
            check_threshold(threshold)  # the classifier's own rule
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc

    def check_embed(self, n_images: int, texts: Sequence[str]) -> None:
        """Refuse an empty request (422), too many images or texts (413) and too long texts (422)."""
        if n_images == 0 and len(texts) == 0:
            raise InvalidRequestError("nothing to embed: send images, texts, or both")
        if n_images > self.config.max_images_per_request:
            raise PayloadTooLargeError(f"{n_images} images in one request; the limit is "
                                       f"{self.config.max_images_per_request}: split the request")
        if len(texts) > self.config.max_texts:
            raise PayloadTooLargeError(f"{len(texts)} texts in one request; the limit is {self.config.max_texts}: "
                                       "split the request")
        for i, text in enumerate(texts):
            self.check_text(text, f"texts[{i}]")

    def check_text(self, text: str, where: str) -> None:
        """422 for a text longer than ``max_text_chars``."""
        if len(text) > self.config.max_text_chars:
            raise InvalidRequestError(f"{where} has {len(text)} characters; the limit is "
                                      f"{self.config.max_text_chars}")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 L2-normalised text embeddings (one text forward at a time, as for class embeddings)."""
        with self._classifier_lock:
            return self.backbone.encode_texts(list(texts))

    def check_image_size(self, size: int, index: int, name: str | None = None) -> None:
        """413 when an encoded image is larger than ``max_image_bytes``."""
        if size > self.config.max_image_bytes:
            raise PayloadTooLargeError(f"{_image_name(index, name)} is {size} bytes; the limit is "
                                       f"{self.config.max_image_bytes} bytes per image")

    # ---- class embeddings
    def classifier(self, labels: Sequence[str] | None, label_set: str | None, *,
                   multi_label: bool = False) -> ZeroShotClassifier:
        """The classifier for these labels / label set, built once per (classes, prompts, templates) and cached.

        With ``multi_label``, what :meth:`ZeroShotClassifier.scores` needs besides (the background-prompt embeddings
        of models without a logit bias) is computed here too, under the same lock, so scoring never runs a text
        forward.

        Raises:
            InvalidRequestError: too many labels, or what :func:`geovl.vlm.classify.resolve_classes` refuses.
        """
        if labels is not None and len(labels) > self.config.max_labels:
            raise InvalidRequestError(f"{len(labels)} labels; the limit is {self.config.max_labels}")
        if labels is not None and len(labels) == 0 and label_set is not None:
            labels = None  # an empty list next to a label set means "the whole set"
        try:
            classes, prompts = resolve_classes(labels, label_set)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
        key = (tuple(classes), tuple(prompts), self.templates)
        # One lock: concurrent first requests for the same classes embed the prompts once, and text forwards do
        # not pile up on the model.
        with self._classifier_lock:
            clf = self._classifiers.get(key)
            if clf is not None:
                self._classifiers.move_to_end(key)
            else:
                try:
                    clf = ZeroShotClassifier(self.backbone, labels, label_set=label_set, templates=self.templates)
                except ValueError as exc:
                    raise InvalidRequestError(str(exc)) from exc
                self._classifiers[key] = clf
                while len(self._classifiers) > self.config.classifier_cache_size:
                    self._classifiers.popitem(last=False)
            if multi_label and not clf.has_logit_bias:
                clf.background_embeddings()  # computed once per classifier
            return clf

    @property
    def cached_classifiers(self) -> int:
        return len(self._classifiers)

    # ---- images
    def decode(self, images: Sequence[ImageInput]) -> list[torch.Tensor]:
        """(3, S, S) float32 model inputs, one per image, as :meth:`Backbone.preprocess_image` makes them.

        Raises:
            InvalidImageError: an image that cannot be decoded; the message names it and says why.
        """
        pixels = []
        for i, image in enumerate(images):
            self.check_image_size(len(image.data), i, image.name)
            try:
                # Always bytes: a string from a request must never be read as a server-side path.
                pil = load_any_image(bytes(image.data), max_pixels=self.config.max_image_pixels)
                pixels.append(self.backbone.transform(pil))
            except (ValueError, OSError) as exc:
                raise InvalidImageError(f"{_image_name(i, image.name)}: {_reason(exc)}") from exc
        return pixels

    def submit(self, pixels: Sequence[torch.Tensor]) -> list[Future[EmbedResult]]:
        """Queue preprocessed images for embedding; one future per image.

        Raises:
            OverloadedError: the queue is full (HTTP 503 with ``Retry-After``).
        """
        try:
            return self.batcher.submit(list(pixels))
        except QueueFullError as exc:
            if self.on_reject is not None:
                self.on_reject()
            raise OverloadedError(f"the server is busy ({exc}); retry in {self.config.retry_after_s} s",
                                  headers={"Retry-After": str(self.config.retry_after_s)}) from exc

    def _embed_batch(self, pixels: list[torch.Tensor]) -> list[EmbedResult]:
        start = time.monotonic()
        emb = self.backbone.embed_pixels(torch.stack(pixels)).cpu().numpy()
        end = time.monotonic()
        if self.on_batch is not None:
            self.on_batch(len(pixels))
        return [EmbedResult(row, len(pixels), _ms(end - start), end) for row in emb]

    def predict(
        self, classifier: ZeroShotClassifier, results: Sequence[EmbedResult], top_k: int, submitted: float,
        threshold: float | None = None,
    ) -> tuple[list[Prediction], ServiceTiming]:
        """Score embedded images; ``submitted`` is the ``time.monotonic()`` at which they were queued.

        Without ``threshold``: the top-k softmax probabilities (:meth:`ZeroShotClassifier.classify_embeddings`).
        With it (multi-label): every class whose per-class score is >= ``threshold``, best first
        (:meth:`ZeroShotClassifier.multi_label_embeddings`), cut to at most ``top_k``.
        """
        start = time.monotonic()
        embeddings = np.stack([r.embedding for r in results])
        if threshold is None:
            predictions = classifier.classify_embeddings(embeddings, top_k=top_k)
        else:
            self.check_threshold(threshold)
            predictions = [Prediction(labels=p.labels[:top_k], scores=p.scores[:top_k])
                           for p in classifier.multi_label_embeddings(embeddings, threshold=threshold)]
        timing = ServiceTiming(
            queue_ms=max(_ms(r.finished - submitted) - r.forward_ms for r in results),
            inference_ms=max(r.forward_ms for r in results),
            classify_ms=_ms(time.monotonic() - start),
            batch_sizes=[r.batch_size for r in results],
        )
        return predictions, timing

    # ---- the whole request, for Python callers
    def classify(
        self,
        images: Sequence[ImageInput],
        *,
        labels: Sequence[str] | None = None,
        label_set: str | None = None,
        top_k: int = 5,
        threshold: float | None = None,
    ) -> ClassifyResult:
        """Check, decode, embed (through the batcher) and score ``images``, blocking until done.

        ``threshold`` (in (0, 1)) switches to multi-label scoring: per image, the classes whose independent
        per-class score is at least ``threshold``, best first, at most ``top_k`` (see :meth:`predict`).
        """
        t0 = time.monotonic()
        self.check_request(len(images), top_k, threshold)
        t_cls = time.monotonic()
        clf = self.classifier(labels, label_set, multi_label=threshold is not None)
        class_s = time.monotonic() - t_cls
        t_dec = time.monotonic()
        pixels = self.decode(images)
        decode_s = time.monotonic() - t_dec
        submitted = time.monotonic()
        results = [f.result() for f in self.submit(pixels)]
        predictions, timing = self.predict(clf, results, top_k, submitted, threshold)
        timing.decode_ms = _ms(decode_s)
        timing.classify_ms = round(timing.classify_ms + _ms(class_s), 3)
        timing.total_ms = _ms(time.monotonic() - t0)
        return ClassifyResult(classes=list(clf.classes), predictions=predictions, timing=timing, threshold=threshold)

    def label_sets(self) -> dict[str, list[str]]:
        """Named label sets a request can use, with their class names."""
        return {name: list(table) for name, table in LABEL_SETS.items()}


def _image_name(index: int, name: str | None) -> str:
    return f"images[{index}]" + (f" ({name!r})" if name else "")


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)  # ImageReadError keeps the reason apart from its "<bytes>: " prefix
    return str(reason) if reason else str(exc)
