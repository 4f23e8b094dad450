"""The serving resources: one backbone, one micro-batcher, a cache of class embeddings, an optional searcher, and a
captioner, a change captioner and a generator loaded on first use (:mod:`geovl.serving.captioning`,
:mod:`geovl.serving.change_captioning`, :mod:`geovl.serving.generation`), shared by the HTTP API and the demo.

Callers stay a few lines each: they parse their input, then call :class:`Resources`. Checks raise the domain errors
of :mod:`geovl.serving.errors`, which each front end maps to its own form (an HTTP status, a message in the page).
Images are decoded by the one decode mapper of :mod:`geovl.tasks.embedding`; in a batch, an image that cannot be
decoded is reported in ``failures`` and the others are still served (for captions: an error in its place, even
when no image of the request can be decoded).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from geovl.data.labelsets import LABEL_SETS
from geovl.data.sources import Record
from geovl.models.backbone import Backbone
from geovl.serving.batching import MicroBatcher, QueueFullError
from geovl.serving.captioning import CaptionService, ImageCaption, decoding_config
from geovl.serving.change_captioning import ChangeCaption, ChangeCaptionService
from geovl.serving.config import ServeConfig
from geovl.serving.errors import (
    InvalidImageError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
)
from geovl.serving.generation import Generation, GenerationRequest, GenerationService
from geovl.tasks.embedding import DecodeMapper
from geovl.tasks.zeroshot.classifier import Prediction, ZeroShotClassifier, check_threshold, resolve_classes
from geovl.tasks.zeroshot.prompts import RS_TEMPLATES

if TYPE_CHECKING:
    from geovl.index.filters import Filters
    from geovl.index.search import Hit, Searcher
    from geovl.models.captioner import CaptionModel
    from geovl.models.change_captioner import ChangeCaptionModel
    from geovl.models.decoding import DecodingConfig

__all__ = ["BatchedEmbedding", "ClassifyResult", "DecodedImages", "EmbedOutput", "ImageCaption", "ImageFailure",
           "ImageInput", "Resources", "ServiceTiming"]

logger = logging.getLogger(__name__)


@dataclass
class ImageInput:
    """One encoded image of a request. ``name`` is the upload file name, if any."""

    data: bytes
    name: str | None = None


@dataclass
class ImageFailure:
    """An image of a batch that could not be decoded: its position, upload name and the reason."""

    index: int
    name: str | None
    error: str


@dataclass
class DecodedImages:
    """Model inputs of the readable images of a batch: ``pixels[i]`` is input ``kept[i]``."""

    pixels: list[torch.Tensor]
    kept: list[int]
    failures: list[ImageFailure] = field(default_factory=list)


@dataclass
class BatchedEmbedding:
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
    """``predictions[i]`` is for input image ``kept[i]``: top-k softmax probabilities, or, when ``threshold`` is set
    (multi-label), the classes whose independent per-class score (:meth:`ZeroShotClassifier.scores`) is at least
    ``threshold``. ``failures`` lists the images that could not be decoded."""

    classes: list[str]
    predictions: list[Prediction]
    kept: list[int]
    timing: ServiceTiming
    threshold: float | None = None
    failures: list[ImageFailure] = field(default_factory=list)

    @property
    def multi_label(self) -> bool:
        return self.threshold is not None


@dataclass
class EmbedOutput:
    """Image embeddings (``None`` for an image that could not be decoded, listed in ``failures``) and text
    embeddings, each in input order."""

    images: list[np.ndarray | None]
    texts: np.ndarray | None
    failures: list[ImageFailure] = field(default_factory=list)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class Resources:
    """Everything a front end needs, loaded once: the backbone, the micro-batcher, class embeddings, the searcher.

    Args:
        config: model, limits and batching settings (``config.model`` etc. are used only when ``backbone`` is
            None; ``config.index`` loads a :class:`~geovl.index.search.Searcher` unless ``searcher`` is given).
        backbone: an already loaded model.
        searcher: an already open searcher over an index built with the same model.

    Images are decoded in the caller's thread (:meth:`decode`), embedded in shared forward passes by one worker
    thread (:meth:`submit`), and scored against class embeddings cached per (classes, prompts, templates). Use it as a
    context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(self, config: ServeConfig, backbone: Backbone | None = None, *,
                 searcher: Searcher | None = None) -> None:
        if backbone is None:
            from geovl.models import load_backbone

            backbone = load_backbone(config.model, device=config.device, precision=config.precision)
        self.config = config
        self.backbone = backbone
        self.templates: tuple[str, ...] = tuple(RS_TEMPLATES)
        if searcher is None and config.index:
            from geovl.index.search import Searcher

            searcher = Searcher(config.index, backbone=backbone)
        self.searcher = searcher
        self.batcher: MicroBatcher[torch.Tensor, BatchedEmbedding] = MicroBatcher(
            self._embed_batch, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
            queue_size=config.queue_size, name="geovl-serve-batcher",
        )
        self._classifiers: OrderedDict[tuple[tuple[str, ...], ...], ZeroShotClassifier] = OrderedDict()
        self._text_lock = threading.Lock()
        #: Hooks for metrics: called with each forward pass's batch size, and on each rejection (queue full).
        self.on_batch: Callable[[int], None] | None = None
        self.on_reject: Callable[[], None] | None = None
        #: The captioner (loaded on first use) and its batcher; see :mod:`geovl.serving.captioning`.
        self.captions = CaptionService(config, backbone, on_batch=self._batch_done, on_reject=self._rejected)
        #: The change captioner (loaded on first use) and its batcher; see :mod:`geovl.serving.change_captioning`.
        self.changes = ChangeCaptionService(config, backbone, self.decode, on_batch=self._batch_done,
                                            on_reject=self._rejected)
        #: The generator (loaded on first use), run one request at a time; see :mod:`geovl.serving.generation`.
        self.generation = GenerationService(config, backbone)

    def __repr__(self) -> str:
        return f"Resources(model={self.model_name!r}, index={self.searcher is not None})"

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
        """Finish the queued images and stop the batch workers."""
        self.batcher.close()
        self.captions.close()
        self.changes.close()

    def _batch_done(self, size: int) -> None:
        if self.on_batch is not None:
            self.on_batch(size)

    def _rejected(self) -> None:
        if self.on_reject is not None:
            self.on_reject()

    def __enter__(self) -> Resources:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- checks
    def check_images(self, n_images: int) -> None:
        """Refuse an empty image list (422) or more than ``max_images_per_request`` (413)."""
        if n_images == 0:
            raise InvalidRequestError("no images: send at least one image")
        if n_images > self.config.max_images_per_request:
            raise PayloadTooLargeError(f"{n_images} images in one request; the limit is "
                                       f"{self.config.max_images_per_request}: split the request")

    def check_request(self, n_images: int, top_k: int, threshold: float | None = None) -> None:
        """Refuse empty or oversized image lists, a bad ``top_k`` or ``threshold`` before anything is decoded."""
        self.check_images(n_images)
        self.check_top_k(top_k)
        self.check_threshold(threshold)

    def check_top_k(self, top_k: int, name: str = "top_k") -> None:
        """``top_k`` must be an integer from 1 to ``max_top_k``."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= self.config.max_top_k:
            raise InvalidRequestError(f"{name} must be an integer from 1 to {self.config.max_top_k}, got {top_k!r}")

    @staticmethod
    def check_threshold(threshold: float | None) -> None:
        """Refuse a ``threshold`` that is not None (top-k mode) or a number in the open interval (0, 1) (NaN and
        booleans are refused), by the classifier's own rule."""
        if threshold is None:
            return
        try:
            check_threshold(threshold)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc

    def check_embed(self, n_images: int, texts: Sequence[str]) -> None:
        """Refuse an empty request, too many images or texts and too long texts."""
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
        """Refuse a text longer than ``max_text_chars``."""
        if len(text) > self.config.max_text_chars:
            raise InvalidRequestError(f"{where} has {len(text)} characters; the limit is "
                                      f"{self.config.max_text_chars}")

    def check_image_size(self, size: int, index: int, name: str | None = None) -> None:
        """Refuse an encoded image larger than ``max_image_bytes``."""
        if size > self.config.max_image_bytes:
            raise PayloadTooLargeError(f"{_image_name(index, name)} is {size} bytes; the limit is "
                                       f"{self.config.max_image_bytes} bytes per image")

    # ---- texts and class embeddings
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 L2-normalised text embeddings (one text forward at a time, as for class embeddings)."""
        with self._text_lock:
            return self.backbone.encode_texts(list(texts))

    def classifier(self, labels: Sequence[str] | None, label_set: str | None, *,
                   multi_label: bool = False) -> ZeroShotClassifier:
        """The classifier for these labels / label set, built once per (classes, prompts, templates) and cached.

        With ``multi_label``, what :meth:`ZeroShotClassifier.scores` needs besides (the background-prompt embeddings
        of models without a logit bias) is computed here too, under the same lock, so scoring never runs a text
        forward.

        Raises:
            InvalidRequestError: too many labels, or what :func:`~geovl.tasks.zeroshot.classifier.resolve_classes`
                refuses.
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
        with self._text_lock:
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

    def label_sets(self) -> dict[str, list[str]]:
        """Named label sets a request can use, with their class names."""
        return {name: list(table) for name, table in LABEL_SETS.items()}

    # ---- images
    def decode(self, images: Sequence[ImageInput], *, transform: Callable[[Any], torch.Tensor] | None = None,
               allow_none: bool = False) -> DecodedImages:
        """(3, S, S) uint8 model inputs of the readable images, through the decode mapper of
        :mod:`geovl.tasks.embedding` with ``transform`` (default: the backbone's ``uint8_transform``); the others
        are listed in ``failures`` with the reason.

        Raises:
            PayloadTooLargeError: an image over ``max_image_bytes``.
            InvalidImageError: no image could be decoded (unless ``allow_none``); the message names each and says
                why.
        """
        for i, image in enumerate(images):
            self.check_image_size(len(image.data), i, image.name)
        # Always bytes: a string from a request must never be read as a server-side path.
        records = [Record(bytes(image.data)) for image in images]
        mapper = DecodeMapper(records, transform or self.backbone.uint8_transform, [],
                              max_pixels=self.config.max_image_pixels)
        decoded = DecodedImages(pixels=[], kept=[])
        for i, image in enumerate(images):
            _, pixels, _, error = mapper[i]
            if pixels is None:
                reason = (error or "unreadable").removeprefix("<bytes>: ")
                decoded.failures.append(ImageFailure(i, image.name, reason))
            else:
                decoded.pixels.append(pixels)
                decoded.kept.append(i)
        if not decoded.kept and not allow_none:
            raise InvalidImageError("; ".join(f"{_image_name(f.index, f.name)}: {f.error}" for f in decoded.failures))
        return decoded

    def submit(self, pixels: Sequence[torch.Tensor]) -> list[Future[BatchedEmbedding]]:
        """Queue preprocessed images for embedding; one future per image.

        Raises:
            OverloadedError: the queue is full (retry after ``Retry-After`` seconds).
        """
        try:
            return self.batcher.submit(list(pixels))
        except QueueFullError as exc:
            if self.on_reject is not None:
                self.on_reject()
            raise OverloadedError(f"the server is busy ({exc}); retry in {self.config.retry_after_s} s",
                                  headers={"Retry-After": str(self.config.retry_after_s)}) from exc

    def _embed_batch(self, pixels: list[torch.Tensor]) -> list[BatchedEmbedding]:
        start = time.monotonic()
        emb = self.backbone.embed_pixels(torch.stack(pixels)).cpu().numpy()
        end = time.monotonic()
        if self.on_batch is not None:
            self.on_batch(len(pixels))
        return [BatchedEmbedding(row, len(pixels), _ms(end - start), end) for row in emb]

    def predict(
        self, classifier: ZeroShotClassifier, results: Sequence[BatchedEmbedding], top_k: int, submitted: float,
        threshold: float | None = None,
    ) -> tuple[list[Prediction], ServiceTiming]:
        """Score embedded images (:meth:`ZeroShotClassifier.predict`); ``submitted`` is the ``time.monotonic()`` at
        which they were queued."""
        start = time.monotonic()
        self.check_threshold(threshold)
        embeddings = np.stack([r.embedding for r in results])
        predictions = classifier.predict(embeddings, top_k=top_k, threshold=threshold)
        timing = ServiceTiming(
            queue_ms=max(_ms(r.finished - submitted) - r.forward_ms for r in results),
            inference_ms=max(r.forward_ms for r in results),
            classify_ms=_ms(time.monotonic() - start),
            batch_sizes=[r.batch_size for r in results],
        )
        return predictions, timing

    # ---- whole requests, for Python callers and the demo
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
        per-class score is at least ``threshold``, best first, at most ``top_k``.
        """
        t0 = time.monotonic()
        self.check_request(len(images), top_k, threshold)
        t_cls = time.monotonic()
        clf = self.classifier(labels, label_set, multi_label=threshold is not None)
        class_s = time.monotonic() - t_cls
        t_dec = time.monotonic()
        decoded = self.decode(images)
        decode_s = time.monotonic() - t_dec
        submitted = time.monotonic()
        results = [f.result() for f in self.submit(decoded.pixels)]
        predictions, timing = self.predict(clf, results, top_k, submitted, threshold)
        timing.decode_ms = _ms(decode_s)
        timing.classify_ms = round(timing.classify_ms + _ms(class_s), 3)
        timing.total_ms = _ms(time.monotonic() - t0)
        return ClassifyResult(classes=list(clf.classes), predictions=predictions, kept=decoded.kept, timing=timing,
                              threshold=threshold, failures=decoded.failures)

    def embed(self, images: Sequence[ImageInput] = (), texts: Sequence[str] = ()) -> EmbedOutput:
        """L2-normalised embeddings of images (through the batcher) and texts, blocking until done."""
        self.check_embed(len(images), texts)
        vectors: list[np.ndarray | None] = []
        failures: list[ImageFailure] = []
        if images:
            decoded = self.decode(images)
            results = [f.result() for f in self.submit(decoded.pixels)]
            vectors = self.align(len(images), decoded, [r.embedding for r in results])
            failures = decoded.failures
        text_vectors = self.embed_texts(texts) if texts else None
        return EmbedOutput(images=vectors, texts=text_vectors, failures=failures)

    @staticmethod
    def align(n: int, decoded: DecodedImages, rows: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """Per-input list of the embedded ``rows``, ``None`` where an image could not be decoded."""
        out: list[np.ndarray | None] = [None] * n
        for i, row in zip(decoded.kept, rows, strict=True):
            out[i] = row
        return out

    # ---- captions
    def captioner(self) -> CaptionModel:
        """The captioner, loaded on first use, sharing the backbone when it can (:mod:`geovl.serving.captioning`).

        Raises:
            NotFoundError: captioning is disabled (``ServeConfig.captioner`` is None).
            ModelUnavailableError: the captioner cannot be loaded; the message says why.
        """
        return self.captions.model()

    @staticmethod
    def decoding(options: dict[str, Any] | None = None) -> DecodingConfig:
        """Decoding settings from request fields (``None``: the default), or :class:`InvalidRequestError`."""
        return decoding_config(options)

    @property
    def pending(self) -> int:
        """Images waiting in every queue (embedding / classification, captioning and change captioning: a pair
        counts once)."""
        return self.batcher.pending + self.captions.batcher.pending + self.changes.batcher.pending

    def caption(self, images: Sequence[ImageInput], decoding: DecodingConfig | None = None) -> list[ImageCaption]:
        """Check, decode and caption ``images`` (through the caption batcher), blocking until done: one
        :class:`ImageCaption` per input, in order, with a caption or the reason the image could not be read.

        Raises:
            InvalidRequestError / PayloadTooLargeError: no images, too many, or one too large.
            NotFoundError / ModelUnavailableError: see :meth:`captioner`.
            OverloadedError: the caption queue is full.
        """
        self.check_images(len(images))
        for i, image in enumerate(images):  # before the captioner loads
            self.check_image_size(len(image.data), i, image.name)
        settings = decoding if decoding is not None else decoding_config()
        model = self.captioner()
        decoded = self.decode(images, transform=model.uint8_transform, allow_none=True)
        results = [f.result() for f in self.captions.submit(decoded.pixels, settings)] if decoded.kept else []
        return self.caption_items(images, decoded, [r.caption for r in results])

    @staticmethod
    def caption_items(images: Sequence[ImageInput], decoded: DecodedImages,
                      captions: Sequence[str]) -> list[ImageCaption]:
        """Per-input :class:`ImageCaption`: ``captions[i]`` belongs to input ``decoded.kept[i]``; a failure carries
        its reason."""
        out = [ImageCaption(i, image.name) for i, image in enumerate(images)]
        for i, caption in zip(decoded.kept, captions, strict=True):
            out[i].caption = caption
        for failure in decoded.failures:
            out[failure.index].error = failure.error
        return out

    # ---- change captions
    def change_captioner(self) -> ChangeCaptionModel:
        """The change captioner, loaded on first use, sharing the backbone when it can
        (:mod:`geovl.serving.change_captioning`).

        Raises:
            NotFoundError: change captioning is disabled (``ServeConfig.change_captioner`` is None).
            ModelUnavailableError: the change captioner cannot be loaded; the message says why.
        """
        return self.changes.model()

    def change_caption(self, before: ImageInput, after: ImageInput, *, threshold: float | None = None,
                       decoding: DecodingConfig | None = None) -> ChangeCaption:
        """Check, decode and describe one pair (through the change batcher), blocking until done
        (:meth:`ChangeCaptionService.describe`; ``threshold`` None: the model's)."""
        return self.changes.describe(before, after, decoding=decoding, threshold=threshold)

    # ---- generation
    def generate(self, request: GenerationRequest) -> Generation:
        """Check the request, load the generator (first call) and generate, blocking until done
        (:meth:`GenerationService.generate`)."""
        return self.generation.generate(request)

    # ---- search
    def require_searcher(self) -> Searcher:
        """The loaded searcher, or :class:`NotFoundError` naming how to load one."""
        if self.searcher is None:
            raise NotFoundError("no index is loaded: start the server with `geovl serve --index DIR` to search")
        return self.searcher

    def check_vector(self, vector: Sequence[float]) -> np.ndarray:
        """A query vector of the index's dimension, finite and non-zero."""
        dim = self.require_searcher().dim
        arr = np.asarray(vector, np.float32)
        if arr.shape != (dim,):
            raise InvalidRequestError(f"vector has {arr.size} dimensions; the index has {dim}")
        norm = float(np.linalg.norm(arr))
        if not np.isfinite(norm) or norm == 0:
            raise InvalidRequestError("vector is zero or not finite; it cannot be compared by cosine similarity")
        return arr

    def parse_filters(self, *, bbox: Any = None, start: Any = None, end: Any = None, where: Any = None) -> Filters:
        """:class:`~geovl.index.filters.Filters` from request fields, or :class:`InvalidRequestError`."""
        from geovl.index.filters import Filters

        try:
            return Filters.parse(bbox=bbox, start=start, end=end, where=where)
        except (ValueError, TypeError) as exc:
            raise InvalidRequestError(str(exc)) from exc

    def search(self, query: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]:
        """The ``k`` nearest images of the index to a query embedding, with their metadata."""
        searcher = self.require_searcher()
        self.check_top_k(k, "k")
        try:
            return searcher.search(query, k, filters)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidRequestError(str(exc)) from exc


def _image_name(index: int, name: str | None) -> str:
    return f"images[{index}]" + (f" ({name!r})" if name else "")
