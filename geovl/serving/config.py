"""Settings of the HTTP API server, as one typed dataclass (``geovl serve`` flags map onto it one to one)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Environment variable read for bearer tokens when ``geovl serve`` gets no ``--token`` (comma-separated).
TOKENS_ENV = "GEOVL_API_TOKENS"


def tokens_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Bearer tokens from ``GEOVL_API_TOKENS`` (comma-separated; blanks around commas ignored).

    Prefer it to ``--token``: command-line arguments are visible to every user in the process list (``ps``).
    """
    raw = (os.environ if environ is None else environ).get(TOKENS_ENV, "")
    return tuple(t.strip() for t in raw.split(",") if t.strip())

#: The generator's own limits, :data:`geovl.models.diffusion.MAX_STEPS` and ``MAX_SIDE`` (spelled out: importing them
#: would load torch; ``tests/serving`` checks the two agree).
GENERATION_MAX_STEPS = 1000
GENERATION_MAX_SIDE = 1024


@dataclass
class ServeConfig:
    """What ``geovl serve`` loads and how it limits requests.

    Attributes:
        model: backbone to load (registry name, ``random:<arch>``, or a checkpoint path).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        max_batch: most images embedded in one forward pass.
        max_wait_ms: how long the batcher waits for more images before running a partial batch (milliseconds).
        queue_size: most images waiting for a forward pass; beyond it requests get HTTP 503.
        max_image_bytes: largest encoded image accepted (bytes); larger gives HTTP 413.
        max_image_pixels: largest decoded image accepted (width x height); larger gives HTTP 422.
        max_images_per_request: most images in one request; more gives HTTP 413.
        max_labels: most class labels in one request; more gives HTTP 422.
        max_texts: most texts in one ``POST /v1/embed`` request; more gives HTTP 413.
        max_text_chars: longest text accepted by ``/v1/embed`` and ``/v1/search`` (characters); longer gives 422.
        max_top_k: largest ``top_k`` accepted.
        classifier_cache_size: class-embedding sets kept in memory (least recently used are dropped).
        api_tokens: accepted bearer tokens; empty means no authentication (see :func:`tokens_from_env`).
        cors_origins: origins allowed by CORS (e.g. ``https://app.example.org``, or ``*``); empty (the default)
            adds no CORS middleware, so browsers on other origins cannot call the API.
        index: a geovl index folder served by ``POST /v1/search``; None: no search endpoint (HTTP 404).
        captioner: the captioner of ``POST /v1/caption`` (registry name, captioner folder or BLIP hub id), loaded
            on first use and sharing the loaded backbone when it was trained on it; None (or ``"none"``) disables
            captioning (HTTP 404).
        change_captioner: the change captioner of ``POST /v1/change-caption`` (registry name or change-captioner
            folder), loaded on first use and sharing the loaded backbone when it was trained on it; None (or
            ``"none"``) disables change captioning (HTTP 404).
        generator: the text-to-image generator of ``POST /v1/generate`` (registry name or generator folder), loaded
            on first use and sharing the loaded backbone when it was trained on it; None (or ``"none"``) disables
            generation (HTTP 404).
        max_generation_steps: most sampler steps one generation request may ask for; more gives HTTP 422.
        max_generation_side: largest width or height (pixels) one generation request may ask for; larger gives 422
            (one tile of the generator is always allowed).
        max_generation_images: most images one generation request may ask for (``n``); more gives HTTP 413.
        generation_queue_size: most generation requests waiting while one runs (generations run one at a time);
            beyond it requests get HTTP 503.
        host: interface to bind. Loopback by default; pass ``0.0.0.0`` deliberately to expose the server.
        port: TCP port.
        retry_after_s: the ``Retry-After`` value sent with HTTP 503 (seconds).
    """

    model: str = "geovl-rs-small"  # geovl.models.DEFAULT_MODEL, spelled out: importing it would load torch for --help
    device: str = "auto"
    precision: str = "auto"
    max_batch: int = 32
    max_wait_ms: float = 10.0
    queue_size: int = 256
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 8192 * 8192
    max_images_per_request: int = 64
    max_labels: int = 256
    max_texts: int = 256
    max_text_chars: int = 2000
    max_top_k: int = 100
    classifier_cache_size: int = 32
    api_tokens: tuple[str, ...] = field(default_factory=tuple)
    cors_origins: list[str] = field(default_factory=list)
    index: str | None = None
    captioner: str | None = "geovl-caption-small"  # the bundled captioner; loaded (and checked) on first use
    change_captioner: str | None = "geovl-change-small"  # geovl.models.DEFAULT_CHANGE_CAPTIONER; loaded on first use
    generator: str | None = "geovl-gen-small"  # geovl.models.DEFAULT_GENERATOR; loaded on first use
    max_generation_steps: int = 200
    max_generation_side: int = 512
    max_generation_images: int = 4
    generation_queue_size: int = 8
    host: str = "127.0.0.1"
    port: int = 8000
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        self.api_tokens = tuple(self.api_tokens)
        if self.captioner is not None and self.captioner.strip().lower() in ("", "none"):
            self.captioner = None
        if self.change_captioner is not None and self.change_captioner.strip().lower() in ("", "none"):
            self.change_captioner = None
        if self.generator is not None and self.generator.strip().lower() in ("", "none"):
            self.generator = None
        self.cors_origins = [str(o).rstrip("/") for o in self.cors_origins]
        if any(not o for o in self.cors_origins):
            raise ValueError("CORS origins must be non-empty (e.g. https://app.example.org, or *)")
        positive = ("max_batch", "queue_size", "max_image_bytes", "max_image_pixels", "max_images_per_request",
                    "max_labels", "max_texts", "max_text_chars", "max_top_k", "classifier_cache_size", "retry_after_s",
                    "max_generation_steps", "max_generation_side", "max_generation_images", "generation_queue_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ServeConfig.{name} must be a positive integer, got {value!r}")
        if self.queue_size < self.max_images_per_request:
            raise ValueError(f"ServeConfig.queue_size ({self.queue_size}) must be at least max_images_per_request "
                             f"({self.max_images_per_request}), or a full-size request could never be queued")
        limits = {"max_generation_steps": GENERATION_MAX_STEPS, "max_generation_side": GENERATION_MAX_SIDE}
        for name, most in limits.items():
            if getattr(self, name) > most:
                raise ValueError(f"ServeConfig.{name} must be at most {most} (the generator's own limit), got "
                                 f"{getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"ServeConfig.max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"ServeConfig.port must be in 0..65535, got {self.port}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"ServeConfig.precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        bad = [t for t in self.api_tokens if not t or any(c.isspace() for c in t)]
        if bad:
            raise ValueError("API tokens must be non-empty and contain no whitespace")
