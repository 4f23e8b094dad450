"""Captioning in the serving resources: the captioner, loaded once on first use, and its own micro-batcher.

Rules:

* **Loading.** The captioner named by ``ServeConfig.captioner`` loads on the first caption request, not at start-up
  (a server that never captions never pays for it). It shares the server's backbone when it was trained on it:
  :func:`~geovl.models.captioner.load_captioner` is called with the loaded backbone, and a ``ValueError`` (trained
  on another backbone), or a one-token test caption that fails with one (the decoder does not fit the backbone's
  features), loads it with its own backbone instead, on the same device and precision, saying why in the log.
* **Unavailable.** ``ServeConfig.captioner = None`` answers :class:`~geovl.serving.errors.NotFoundError`; a
  captioner that cannot be loaded (weights not on this machine, an unknown name, a corrupt folder, a missing
  optional package) answers :class:`~geovl.serving.errors.ModelUnavailableError` naming it and the reason. The
  failure is remembered: later requests get the same answer without another attempt (restart the server once the
  weights are installed).
* **Batching.** Images of concurrent requests share captioner calls when their decoding settings are equal.
  Nucleus-sampled images are captioned one at a time, so a request with a ``seed`` gets the same captions whatever
  else is queued.
* **Decoding settings** come from request fields through :func:`decoding_config` (``None``: the
  :class:`~geovl.models.decoding.DecodingConfig` default); a bad value is an
  :class:`~geovl.serving.errors.InvalidRequestError` with ``DecodingConfig``'s own message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, get_type_hints

import torch

from geovl.io.jsonable import to_jsonable
from geovl.models.backbone import Backbone
from geovl.models.captioner import CaptionModel
from geovl.models.decoding import DecodingConfig
from geovl.serving.batching import MicroBatcher, QueueFullError
from geovl.serving.config import ServeConfig
from geovl.serving.errors import InvalidRequestError, ModelUnavailableError, NotFoundError, OverloadedError

__all__ = ["MAX_SEED", "BatchedCaption", "CaptionJob", "CaptionService", "ImageCaption", "decoding_config"]

logger = logging.getLogger(__name__)

#: Largest sampling seed accepted (torch generators take 64-bit seeds).
MAX_SEED = 2**63 - 1
#: The integer and the real-number fields of :class:`DecodingConfig` (from its annotations).
_INTEGER_FIELDS = frozenset(name for name, hint in get_type_hints(DecodingConfig).items() if hint is int)
_NUMBER_FIELDS = frozenset(name for name, hint in get_type_hints(DecodingConfig).items() if hint is float)


@dataclass
class ImageCaption:
    """One input image of a caption request: its caption, or why it has none (``error``)."""

    index: int
    name: str | None
    caption: str | None = None
    error: str | None = None


@dataclass
class CaptionJob:
    """One image queued for captioning: its uint8 pixels and the request's decoding settings."""

    pixels: torch.Tensor
    decoding: DecodingConfig


@dataclass
class BatchedCaption:
    """What the caption batcher gives back per image: its caption and the captioner call it was in."""

    caption: str
    batch_size: int
    forward_ms: float
    finished: float  # time.monotonic() when the captioner call ended


#: Upper bounds a server puts on one request's decoding work (batch runs have no such bound).
MAX_SERVED_BEAMS = 8
MAX_SERVED_LENGTH = 64


def decoding_config(options: Mapping[str, Any] | None = None) -> DecodingConfig:
    """:class:`DecodingConfig` from request fields; ``None`` values keep the default. A whole float (``3.0``, as
    sliders send) is taken for an integer field.

    Raises:
        InvalidRequestError: an unknown field, a boolean where a number belongs, a fraction where an integer
            belongs, a seed outside 0..2**63-1, more than :data:`MAX_SERVED_BEAMS` beams or
            :data:`MAX_SERVED_LENGTH` words, or a value ``DecodingConfig`` refuses (its message).
    """
    given = {k: v for k, v in (options or {}).items() if v is not None}
    flags = sorted(k for k, v in given.items() if isinstance(v, bool))
    if flags:
        raise InvalidRequestError(f"decoding option(s) {', '.join(flags)} must be numbers, not booleans")
    for name in _INTEGER_FIELDS & set(given):
        value = given[name]
        if isinstance(value, float) and value.is_integer():
            given[name] = value = int(value)
        if not isinstance(value, int):
            raise InvalidRequestError(f"{name} must be an integer, got {value!r}")
    for name in _NUMBER_FIELDS & set(given):
        if not isinstance(given[name], (int, float)):
            raise InvalidRequestError(f"{name} must be a number, got {given[name]!r}")
    seed = given.get("seed")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InvalidRequestError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    try:
        config = DecodingConfig.from_dict(given)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(str(exc)) from exc
    if config.beam_size > MAX_SERVED_BEAMS or config.max_length > MAX_SERVED_LENGTH:
        raise InvalidRequestError(f"a server decodes with at most {MAX_SERVED_BEAMS} beams and {MAX_SERVED_LENGTH} "
                                  f"words (the cost of a request grows with both); got beam_size "
                                  f"{config.beam_size}, max_length {config.max_length}")
    return config


def _group_key(job: CaptionJob, position: int) -> tuple[Any, ...]:
    key = tuple(sorted(job.decoding.to_dict().items()))
    return (key, position) if job.decoding.method == "nucleus" else key


class CaptionService:
    """The captioner of one server and its batcher (see the module docstring).

    Args:
        config: ``captioner`` names the model; the batching settings are the server's.
        backbone: the server's loaded backbone, shared when the captioner was trained on it.
        on_batch: called with the size of each captioner call.
        on_reject: called when the queue is full.
    """

    def __init__(self, config: ServeConfig, backbone: Backbone, *, on_batch: Callable[[int], None] | None = None,
                 on_reject: Callable[[], None] | None = None) -> None:
        self.name = config.captioner
        self.backbone = backbone
        self.retry_after_s = config.retry_after_s
        self.batcher: MicroBatcher[CaptionJob, BatchedCaption] = MicroBatcher(
            self._caption_batch, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
            queue_size=config.queue_size, name="geovl-caption-batcher",
        )
        self.on_batch = on_batch
        self.on_reject = on_reject
        self.shares_backbone = False
        self._model: CaptionModel | None = None
        self._record: dict[str, Any] = {}
        self._error: ModelUnavailableError | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "loaded" if self._model is not None else "failed" if self._error is not None else "not loaded"
        return f"CaptionService(captioner={self.name!r}, {state})"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def close(self) -> None:
        """Finish the queued images and stop the batch worker."""
        self.batcher.close()

    # ---- the model
    def model(self) -> CaptionModel:
        """The captioner, loaded on the first call (see the module docstring).

        Raises:
            NotFoundError: captioning is disabled.
            ModelUnavailableError: the captioner cannot be loaded (now or on an earlier call).
        """
        if self._model is not None:
            return self._model
        if self.name is None:
            raise NotFoundError("captioning is disabled on this server: start it with `--captioner NAME` "
                                "(e.g. geovl-caption-small)")
        with self._lock:
            if self._model is None and self._error is None:
                self._model, self._error = self._try_load(self.name)
            if self._model is None:
                raise self._error or ModelUnavailableError(f"the captioner {self.name!r} is not loaded")
            return self._model

    def _try_load(self, name: str) -> tuple[CaptionModel | None, ModelUnavailableError | None]:
        try:
            model = self._load(name)
        except (FileNotFoundError, KeyError, ValueError, ImportError, OSError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            logger.error("captioner %r cannot be loaded: %s", name, reason)
            return None, ModelUnavailableError(f"the captioner {name!r} cannot be loaded on this server: {reason}")
        self._record = to_jsonable(model.record())
        return model, None

    def record(self) -> dict[str, Any]:
        """The loaded captioner's identity (:meth:`CaptionModel.record`, JSON-ready), or {} before it loads."""
        return dict(self._record)

    def _load(self, name: str) -> CaptionModel:
        from geovl.models.captioner import load_captioner

        device, precision = self.backbone.device, self.backbone.precision
        try:
            model = load_captioner(name, backbone=self.backbone, device=device, precision=precision)
            if getattr(model, "backbone", None) is self.backbone:
                _test_caption(model)
                self.shares_backbone = True
        except ValueError as exc:
            logger.warning("captioner %r cannot share the served backbone %r (%s); loading it with its own backbone",
                           name, self.backbone.info.name, exc)
            return load_captioner(name, device=device, precision=precision)
        logger.info("captioner %r loaded%s", name,
                    f", sharing the backbone {self.backbone.info.name!r}" if self.shares_backbone else "")
        return model

    # ---- batching
    def submit(self, pixels: Sequence[torch.Tensor], decoding: DecodingConfig) -> list[Future[BatchedCaption]]:
        """Queue decoded images (made by the captioner's ``uint8_transform``); one future per image.

        Raises:
            OverloadedError: the queue is full (retry after ``Retry-After`` seconds).
        """
        try:
            return self.batcher.submit([CaptionJob(p, decoding) for p in pixels])
        except QueueFullError as exc:
            if self.on_reject is not None:
                self.on_reject()
            raise OverloadedError(f"the server is busy ({exc}); retry in {self.retry_after_s} s",
                                  headers={"Retry-After": str(self.retry_after_s)}) from exc

    def _caption_batch(self, jobs: list[CaptionJob]) -> list[BatchedCaption]:
        model = self.model()
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(_group_key(job, i), []).append(i)
        out: dict[int, BatchedCaption] = {}
        for positions in groups.values():
            start = time.monotonic()
            pixels = torch.stack([jobs[i].pixels for i in positions])
            captions = model.caption_pixels(pixels, jobs[positions[0]].decoding)
            end = time.monotonic()
            if len(captions) != len(positions):
                raise RuntimeError(f"the captioner returned {len(captions)} captions for {len(positions)} images")
            if self.on_batch is not None:
                self.on_batch(len(positions))
            for i, caption in zip(positions, captions, strict=True):
                out[i] = BatchedCaption(caption, len(positions), round((end - start) * 1000.0, 3), end)
        return [out[i] for i in range(len(jobs))]


def _test_caption(model: CaptionModel) -> None:
    """One token of a blank image's caption: a decoder that does not fit the backbone's features raises
    ``ValueError`` here rather than on the first request."""
    from PIL import Image

    pixels = model.uint8_transform(Image.new("RGB", (64, 64)))[None]
    model.caption_pixels(pixels, DecodingConfig(method="greedy", max_length=1, min_length=0, no_repeat_ngram_size=0))
