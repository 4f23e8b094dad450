"""Text-to-image generation in the serving resources: the generator, loaded once on first use, run one request at a
time within the server's limits.

Rules:

* **Loading.** The generator named by ``ServeConfig.generator`` loads on the first generation request, not at
  start-up. It shares the server's backbone (the text features) when it was trained on it and the backbone runs in
  fp32 or the server was given an explicit precision (the generator's own rule: text features in fp32 unless a
  precision is asked for, so that a seed gives the same image as ``geovl generate``); otherwise, or when sharing
  fails with a ``ValueError`` (trained on another backbone), it loads with its own backbone, on the same device,
  saying why in the log.
* **Unavailable.** ``ServeConfig.generator = None`` answers :class:`~geovl.serving.errors.NotFoundError`; a
  generator that cannot be loaded (weights not on this machine, an unknown name, a corrupt folder) answers
  :class:`~geovl.serving.errors.ModelUnavailableError` naming it and the reason, remembered: later requests get the
  same answer without another attempt (restart the server once the weights are installed).
* **Limits** (``ServeConfig``): ``max_generation_steps`` and ``max_generation_side`` (422 beyond them; one tile is
  always allowed), ``max_generation_images`` images per request (413), ``max_text_chars`` per prompt (422). Every
  field is checked (:func:`~geovl.tasks.generation.check_options`) before the generator loads; sizes that do not
  fit the generator's tile and patch are refused once it has loaded, with the pipeline's message.
* **Sizes**: ``width`` and ``height`` both -> that scene; one -> a square; neither -> one tile.
* **One at a time.** Generation is compute-bound and cannot share model calls across different prompts and settings,
  so requests run one after another; at most ``generation_queue_size`` wait, beyond that
  :class:`~geovl.serving.errors.OverloadedError` (HTTP 503 with ``Retry-After``).
* **Answers** are PNGs with their settings in text chunks (:func:`~geovl.tasks.generation.encode_png`): the same
  pixels as :class:`~geovl.tasks.generation.GenerationPipeline` gives for the same settings and seed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from geovl.io.jsonable import to_jsonable
from geovl.models.backbone import Backbone
from geovl.serving.config import ServeConfig
from geovl.serving.errors import (
    InvalidRequestError,
    ModelUnavailableError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
)

if TYPE_CHECKING:  # diffusers is imported on the first generation request, not when a server starts
    from geovl.models.diffusion import GenerationOutput, GeoDiffusionPipeline

__all__ = ["GeneratedImage", "Generation", "GenerationRequest", "GenerationService", "GenerationTiming"]

logger = logging.getLogger(__name__)


@dataclass
class GenerationRequest:
    """What one generation request asks for (``None``: the generator's default; see the module rules for sizes)."""

    prompt: str
    gsd: float | None = None
    steps: int | None = None
    guidance: float | None = None
    guidance_resolution: float | None = None
    seed: int = 0
    width: int | None = None
    height: int | None = None
    sampler: str = "ddpm"
    n: int = 1


@dataclass
class GeneratedImage:
    """One generated image, its PNG encoding (settings in text chunks) and those settings."""

    image: Image.Image
    png: bytes
    settings: dict[str, Any]


@dataclass
class GenerationTiming:
    """Milliseconds per stage of one generation request (see :class:`geovl.api.schemas.GenerateTiming`)."""

    queue_ms: float = 0.0
    inference_ms: float = 0.0
    encode_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class Generation:
    """A request's answer: the images (image ``k`` seeded ``seed + k``), the settings shared by all of them (those of
    image 0), the generator's name and the timing."""

    images: list[GeneratedImage]
    settings: dict[str, Any]
    model: str
    timing: GenerationTiming = field(default_factory=GenerationTiming)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class GenerationService:
    """The generator of one server (see the module docstring).

    Args:
        config: ``generator`` names the model; ``max_generation_*``, ``generation_queue_size`` and ``max_text_chars``
            limit requests.
        backbone: the server's loaded backbone, shared when the generator was trained on it.
    """

    def __init__(self, config: ServeConfig, backbone: Backbone) -> None:
        self.name = config.generator
        self.config = config
        self.backbone = backbone
        self.shares_backbone = False
        self._model: GeoDiffusionPipeline | None = None
        self._record: dict[str, Any] = {}
        self._error: ModelUnavailableError | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._pending = 0

    def __repr__(self) -> str:
        state = "loaded" if self._model is not None else "failed" if self._error is not None else "not loaded"
        return f"GenerationService(generator={self.name!r}, {state})"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def pending(self) -> int:
        """Generation requests running or waiting."""
        return self._pending

    # ---- the model
    def model(self) -> GeoDiffusionPipeline:
        """The generator, loaded on the first call (see the module docstring).

        Raises:
            NotFoundError: generation is disabled.
            ModelUnavailableError: the generator cannot be loaded (now or on an earlier call).
        """
        if self._model is not None:
            return self._model
        if self.name is None:
            raise NotFoundError("image generation is disabled on this server: start it with `--generator NAME` "
                                "(e.g. geovl-gen-small)")
        with self._load_lock:
            if self._model is None and self._error is None:
                self._model, self._error = self._try_load(self.name)
            if self._model is None:
                raise self._error or ModelUnavailableError(f"the generator {self.name!r} is not loaded")
            return self._model

    def _try_load(self, name: str) -> tuple[GeoDiffusionPipeline | None, ModelUnavailableError | None]:
        try:
            model = self._load(name)
        except (FileNotFoundError, KeyError, ValueError, ImportError, OSError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            logger.error("generator %r cannot be loaded: %s", name, reason)
            return None, ModelUnavailableError(f"the generator {name!r} cannot be loaded on this server: {reason}")
        self._record = to_jsonable(model.record())
        return model, None

    def _load(self, name: str) -> GeoDiffusionPipeline:
        import geovl.models.generator as generator

        device, precision = self.backbone.device, self.config.precision
        if precision != "auto" or self.backbone.precision == "fp32":
            try:
                model = generator.load_generator(name, backbone=self.backbone, device=device, precision=precision)
            except ValueError as exc:
                logger.warning("generator %r cannot share the served backbone %r (%s); loading it with its own "
                               "backbone", name, self.backbone.info.name, exc)
            else:
                self.shares_backbone = True
                logger.info("generator %r loaded, sharing the backbone %r", name, self.backbone.info.name)
                return model
        else:
            logger.info("generator %r: the served backbone runs in %s; loading the generator's own in fp32 for its "
                        "text features", name, self.backbone.precision)
        return generator.load_generator(name, device=device, precision=precision)

    def record(self) -> dict[str, Any]:
        """The loaded generator's identity (JSON-ready), or {} before it loads."""
        return dict(self._record)

    # ---- checks (before anything is loaded)
    def check(self, request: GenerationRequest) -> None:
        """Refuse a request outside the server's limits or with a bad field, naming it.

        Raises:
            InvalidRequestError: a bad field, too many steps, too large a side, too long a prompt.
            PayloadTooLargeError: more images than ``max_generation_images``.
        """
        from geovl.tasks.generation import check_options

        cfg = self.config
        if isinstance(request.prompt, str) and len(request.prompt) > cfg.max_text_chars:
            raise InvalidRequestError(f"the prompt has {len(request.prompt)} characters; the limit is "
                                      f"{cfg.max_text_chars}")
        if isinstance(request.n, int) and not isinstance(request.n, bool) and request.n > cfg.max_generation_images:
            raise PayloadTooLargeError(f"{request.n} images in one request; the limit is "
                                       f"{cfg.max_generation_images}: ask for fewer (n) or split the request")
        try:
            check_options(request.prompt, request.gsd, steps=request.steps, guidance=request.guidance,
                          guidance_resolution=request.guidance_resolution, seed=request.seed,
                          sampler=request.sampler, n=request.n, max_steps=cfg.max_generation_steps)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
        for name in ("width", "height"):
            side = getattr(request, name)
            if side is not None and (isinstance(side, bool) or not isinstance(side, int)
                                     or not 1 <= side <= cfg.max_generation_side):
                raise InvalidRequestError(f"{name} must be an integer number of pixels up to "
                                          f"{cfg.max_generation_side} (this server's limit), got {side!r}")

    # ---- one request
    def generate(self, request: GenerationRequest) -> Generation:
        """Check the request, load the generator (first call), wait for the previous requests and generate.

        Raises:
            InvalidRequestError / PayloadTooLargeError: see :meth:`check`; a size that does not fit the generator.
            NotFoundError / ModelUnavailableError: see :meth:`model`.
            OverloadedError: ``generation_queue_size`` requests are already waiting.
        """
        from geovl.tasks.generation import encode_png, image_settings

        started = time.monotonic()
        self.check(request)
        model = self.model()
        with self._count_lock:
            if self._pending > self.config.generation_queue_size:
                raise OverloadedError(f"the server is busy ({self._pending} generations running or waiting); retry "
                                      f"in {self.config.retry_after_s} s",
                                      headers={"Retry-After": str(self.config.retry_after_s)})
            self._pending += 1
        try:
            with self._run_lock:
                queued = time.monotonic()
                out = self._run(model, request)
                ran = time.monotonic()
        finally:
            with self._count_lock:
                self._pending -= 1
        images = []
        for k, image in enumerate(out.images):
            settings = image_settings(out, k)
            images.append(GeneratedImage(image, encode_png(image, settings), settings))
        done = time.monotonic()
        timing = GenerationTiming(queue_ms=_ms(queued - started), inference_ms=_ms(ran - queued),
                                  encode_ms=_ms(done - ran), total_ms=_ms(done - started))
        shared = {**images[0].settings, "n": request.n}
        return Generation(images=images, settings=shared, model=model.name, timing=timing)

    def _run(self, model: GeoDiffusionPipeline, request: GenerationRequest) -> GenerationOutput:
        from geovl.models.diffusion import MAX_SIDE
        from geovl.tasks.generation import GenerationPipeline, size_from

        max_side = max(self.config.max_generation_side, model.tile)
        try:
            pipe = GenerationPipeline(model, steps=request.steps, guidance=request.guidance,
                                      guidance_resolution=request.guidance_resolution, sampler=request.sampler,
                                      max_side=min(max_side, MAX_SIDE), max_steps=self.config.max_generation_steps)
            return pipe(request.prompt, request.gsd, seed=request.seed, size=size_from(request.width, request.height),
                        n=request.n)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
