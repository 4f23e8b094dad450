"""Change captioning in the serving resources: the change captioner, loaded once on first use, and its own
micro-batcher of image pairs.

Rules:

* **Loading.** The change captioner named by ``ServeConfig.change_captioner`` loads on the first change-caption
  request, not at start-up. It shares the server's backbone when it was trained on it:
  :func:`~geovl.models.change_captioner.load_change_captioner` is called with the loaded backbone, and a
  ``ValueError`` (trained on another backbone), or a one-word test caption of a blank pair that fails with one (the
  network does not fit the backbone's features), loads it with its own backbone instead, on the same device and
  precision, saying why in the log.
* **Unavailable.** ``ServeConfig.change_captioner = None`` answers :class:`~geovl.serving.errors.NotFoundError`; a
  change captioner that cannot be loaded (weights not on this machine, an unknown name, a corrupt folder) answers
  :class:`~geovl.serving.errors.ModelUnavailableError` naming it and the reason, remembered: later requests get the
  same answer without another attempt (restart the server once the weights are installed).
* **A request** is one pair: a ``before`` and an ``after`` image of the same place. A missing date, a date over
  ``max_image_bytes`` and a date that cannot be decoded are refused, each naming the date; both dates are decoded
  by the model's ``uint8_transform`` (the same for both).
* **Threshold**: P(changed) at or above which the pair is called changed; ``None`` takes the model's calibrated
  one; anything else must pass :func:`~geovl.models.change_captioner.check_threshold` (a number in [0, 1]).
* **Decoding settings** come from request fields through :func:`~geovl.serving.captioning.decoding_config`, with
  the same server limits as captions.
* **Batching.** Pairs of concurrent requests share model calls when their decoding settings and thresholds are
  equal; nucleus-sampled pairs are described one at a time, so a request with a ``seed`` gets the same caption
  whatever else is queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from geovl.io.jsonable import to_jsonable
from geovl.models.backbone import Backbone
from geovl.models.change_captioner import ChangeCaptionModel, ChangeResult, check_threshold
from geovl.models.decoding import DecodingConfig
from geovl.serving.batching import MicroBatcher, QueueFullError
from geovl.serving.captioning import decoding_config
from geovl.serving.config import ServeConfig
from geovl.serving.errors import (
    InvalidImageError,
    InvalidRequestError,
    ModelUnavailableError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
)

if TYPE_CHECKING:
    from geovl.serving.resources import DecodedImages, ImageInput

__all__ = ["DATES", "BatchedChange", "ChangeCaption", "ChangeCaptionService", "ChangeJob", "ChangeTiming"]

logger = logging.getLogger(__name__)

#: The two images of a pair, in order: the request fields and the names errors use.
DATES = ("before", "after")

#: ``decode(images, transform=..., allow_none=True)``: :meth:`geovl.serving.resources.Resources.decode`.
Decoder = Callable[..., "DecodedImages"]


@dataclass
class ChangeJob:
    """One pair queued for description: both dates' uint8 pixels, the decoding settings and the threshold."""

    before: torch.Tensor
    after: torch.Tensor
    decoding: DecodingConfig
    threshold: float
    decode_ms: float = 0.0


@dataclass
class BatchedChange:
    """What the change batcher gives back per pair: its result and the model call it was in."""

    result: ChangeResult
    batch_size: int
    forward_ms: float
    finished: float  # time.monotonic() when the model call ended


@dataclass
class ChangeTiming:
    """Milliseconds per stage of one change-caption request (see :class:`geovl.api.schemas.ChangeCaptionTiming`)."""

    decode_ms: float = 0.0
    queue_ms: float = 0.0
    inference_ms: float = 0.0
    total_ms: float = 0.0
    batch_size: int = 0


@dataclass
class ChangeCaption:
    """One pair's answer: the caption, the verdict, P(changed), the threshold it was judged against, the (h, w) heat
    map over the after image, the decoding settings, the model's name and the timing."""

    caption: str
    changed: bool
    probability: float
    threshold: float
    heatmap: np.ndarray
    decoding: DecodingConfig
    model: str
    timing: ChangeTiming = field(default_factory=ChangeTiming)

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of :attr:`heatmap`."""
        h, w = self.heatmap.shape
        return int(h), int(w)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _group_key(job: ChangeJob, position: int) -> tuple[Any, ...]:
    key = (tuple(sorted(job.decoding.to_dict().items())), job.threshold)
    return (key, position) if job.decoding.method == "nucleus" else key


class ChangeCaptionService:
    """The change captioner of one server and its batcher (see the module docstring).

    Args:
        config: ``change_captioner`` names the model; the batching settings and image limits are the server's.
        backbone: the server's loaded backbone, shared when the change captioner was trained on it.
        decode: the server's image decoder (:meth:`geovl.serving.resources.Resources.decode`).
        on_batch: called with the size of each model call.
        on_reject: called when the queue is full.
    """

    def __init__(self, config: ServeConfig, backbone: Backbone, decode: Decoder, *,
                 on_batch: Callable[[int], None] | None = None, on_reject: Callable[[], None] | None = None) -> None:
        self.name = config.change_captioner
        self.config = config
        self.backbone = backbone
        self.decode = decode
        self.batcher: MicroBatcher[ChangeJob, BatchedChange] = MicroBatcher(
            self._describe_batch, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
            queue_size=config.queue_size, name="geovl-change-batcher",
        )
        self.on_batch = on_batch
        self.on_reject = on_reject
        self.shares_backbone = False
        self._model: ChangeCaptionModel | None = None
        self._record: dict[str, Any] = {}
        self._error: ModelUnavailableError | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "loaded" if self._model is not None else "failed" if self._error is not None else "not loaded"
        return f"ChangeCaptionService(change_captioner={self.name!r}, {state})"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def close(self) -> None:
        """Finish the queued pairs and stop the batch worker."""
        self.batcher.close()

    # ---- the model
    def model(self) -> ChangeCaptionModel:
        """The change captioner, loaded on the first call (see the module docstring).

        Raises:
            NotFoundError: change captioning is disabled.
            ModelUnavailableError: the change captioner cannot be loaded (now or on an earlier call).
        """
        if self._model is not None:
            return self._model
        if self.name is None:
            raise NotFoundError("change captioning is disabled on this server: start it with `--change-captioner "
                                "NAME` (e.g. geovl-change-small)")
        with self._lock:
            if self._model is None and self._error is None:
                self._model, self._error = self._try_load(self.name)
            if self._model is None:
                raise self._error or ModelUnavailableError(f"the change captioner {self.name!r} is not loaded")
            return self._model

    def _try_load(self, name: str) -> tuple[ChangeCaptionModel | None, ModelUnavailableError | None]:
        try:
            model = self._load(name)
        except (FileNotFoundError, KeyError, ValueError, ImportError, OSError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            logger.error("change captioner %r cannot be loaded: %s", name, reason)
            return None, ModelUnavailableError(f"the change captioner {name!r} cannot be loaded on this server: "
                                               f"{reason}")
        self._record = to_jsonable(model.record())
        return model, None

    def _load(self, name: str) -> ChangeCaptionModel:
        import geovl.models.change_captioner as change_captioner

        device, precision = self.backbone.device, self.backbone.precision
        try:
            model = change_captioner.load_change_captioner(name, backbone=self.backbone, device=device,
                                                           precision=precision)
            if getattr(model, "backbone", None) is self.backbone:
                _test_pair(model)
                self.shares_backbone = True
        except ValueError as exc:
            logger.warning("change captioner %r cannot share the served backbone %r (%s); loading it with its own "
                           "backbone", name, self.backbone.info.name, exc)
            return change_captioner.load_change_captioner(name, device=device, precision=precision)
        logger.info("change captioner %r loaded%s", name,
                    f", sharing the backbone {self.backbone.info.name!r}" if self.shares_backbone else "")
        return model

    def record(self) -> dict[str, Any]:
        """The loaded change captioner's identity (JSON-ready), or {} before it loads."""
        return dict(self._record)

    # ---- checks (before anything is decoded or loaded)
    @staticmethod
    def check_threshold(threshold: Any) -> float | None:
        """``None`` (the model's threshold) or a number in [0, 1]; anything else is an
        :class:`InvalidRequestError` with :func:`~geovl.models.change_captioner.check_threshold`'s message."""
        if threshold is None:
            return None
        try:
            return check_threshold(threshold)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc

    @staticmethod
    def check_dates(given: Sequence[str]) -> None:
        """Refuse a pair that lacks a date, naming it."""
        missing = [date for date in DATES if date not in given]
        if missing:
            raise InvalidRequestError(f"the {' and '.join(missing)} image{'s are' if len(missing) > 1 else ' is'} "
                                      "missing: send both dates of the pair, 'before' and 'after'")

    def check_image_size(self, size: int, date: str) -> None:
        """Refuse an encoded image larger than ``max_image_bytes``, naming its date."""
        if size > self.config.max_image_bytes:
            raise PayloadTooLargeError(f"the {date} image is {size} bytes; the limit is "
                                       f"{self.config.max_image_bytes} bytes per image")

    # ---- one pair
    def prepare(self, before: ImageInput, after: ImageInput, *, decoding: DecodingConfig | None = None,
                threshold: float | None = None) -> ChangeJob:
        """Check the pair, load the model (first call) and decode both dates into a job for :meth:`submit`.

        Raises:
            InvalidRequestError / PayloadTooLargeError: a bad threshold, a date too large.
            NotFoundError / ModelUnavailableError: see :meth:`model`.
            InvalidImageError: a date cannot be decoded (the message names it and says why).
        """
        given = self.check_threshold(threshold)
        for date, image in zip(DATES, (before, after), strict=True):
            self.check_image_size(len(image.data), date)
        settings = decoding if decoding is not None else decoding_config()
        model = self.model()
        start = time.monotonic()
        decoded = self.decode([before, after], transform=model.uint8_transform, allow_none=True)
        if decoded.failures:
            raise InvalidImageError("; ".join(f"the {DATES[f.index]} image cannot be read: {f.error}"
                                              for f in decoded.failures))
        return ChangeJob(decoded.pixels[0], decoded.pixels[1], settings,
                         model.threshold if given is None else given, _ms(time.monotonic() - start))

    def submit(self, job: ChangeJob) -> Future[BatchedChange]:
        """Queue a prepared pair; its future gives the result.

        Raises:
            OverloadedError: the queue is full (retry after ``Retry-After`` seconds).
        """
        try:
            (future,) = self.batcher.submit([job])
        except QueueFullError as exc:
            if self.on_reject is not None:
                self.on_reject()
            raise OverloadedError(f"the server is busy ({exc}); retry in {self.config.retry_after_s} s",
                                  headers={"Retry-After": str(self.config.retry_after_s)}) from exc
        return future

    def answer(self, job: ChangeJob, batched: BatchedChange, *, started: float, submitted: float) -> ChangeCaption:
        """The request's :class:`ChangeCaption`; ``started`` and ``submitted`` are the ``time.monotonic()`` of the
        request's start and of :meth:`submit`."""
        result = batched.result
        timing = ChangeTiming(decode_ms=job.decode_ms,
                              queue_ms=max(0.0, round(_ms(batched.finished - submitted) - batched.forward_ms, 3)),
                              inference_ms=batched.forward_ms, total_ms=_ms(time.monotonic() - started),
                              batch_size=batched.batch_size)
        return ChangeCaption(caption=result.caption, changed=result.changed, probability=result.probability,
                             threshold=job.threshold, heatmap=result.heatmap, decoding=job.decoding,
                             model=self.model().name, timing=timing)

    def describe(self, before: ImageInput, after: ImageInput, *, decoding: DecodingConfig | None = None,
                 threshold: float | None = None) -> ChangeCaption:
        """Check, decode and describe one pair (through the batcher), blocking until done (see :meth:`prepare` and
        :meth:`submit` for the errors)."""
        started = time.monotonic()
        job = self.prepare(before, after, decoding=decoding, threshold=threshold)
        submitted = time.monotonic()
        batched = self.submit(job).result()
        return self.answer(job, batched, started=started, submitted=submitted)

    # ---- batching
    def _describe_batch(self, jobs: list[ChangeJob]) -> list[BatchedChange]:
        model = self.model()
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(_group_key(job, i), []).append(i)
        out: dict[int, BatchedChange] = {}
        for positions in groups.values():
            first = jobs[positions[0]]
            start = time.monotonic()
            results = model.describe_pixels(torch.stack([jobs[i].before for i in positions]),
                                            torch.stack([jobs[i].after for i in positions]), first.decoding,
                                            threshold=first.threshold)
            end = time.monotonic()
            if len(results) != len(positions):
                raise RuntimeError(f"the change captioner returned {len(results)} results for {len(positions)} pairs")
            if self.on_batch is not None:
                self.on_batch(len(positions))
            for i, result in zip(positions, results, strict=True):
                out[i] = BatchedChange(result, len(positions), _ms(end - start), end)
        return [out[i] for i in range(len(jobs))]


def _test_pair(model: ChangeCaptionModel) -> None:
    """One word of a blank pair's caption (threshold 0: always decoded): a network that does not fit the backbone's
    features raises ``ValueError`` here rather than on the first request."""
    from PIL import Image

    pixels = model.uint8_transform(Image.new("RGB", (64, 64)))[None]
    model.describe_pixels(pixels, pixels, DecodingConfig(method="greedy", max_length=1, min_length=0,
                                                         no_repeat_ngram_size=0), threshold=0.0)
