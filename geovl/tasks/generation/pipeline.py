"""Text (and a ground sample distance) to images: the generator with a task's settings and limits.

The CLI (``geovl generate``), the HTTP API (``POST /v1/generate``) and the demo's Generate tab all generate through
:class:`GenerationPipeline`.

Rules:

* **Settings** (steps, text and resolution guidance, sampler) are fixed per pipeline; ``None`` takes the model's
  default (``model.config.default_steps`` / ``default_guidance``; resolution guidance defaults to the text guidance).
* **Seeds**: image ``k`` of a call starts from ``seed + k`` (``n`` images of one prompt: ``seed .. seed + n - 1``),
  so image ``k`` of a call equals a one-image call with seed ``seed + k``.
* **Checks** that need no model (:func:`check_options`: prompt, GSD, steps, guidance, seed, sampler, image count)
  run before anything is loaded or sampled; sizes are checked against the model's tile and patch and the
  pipeline's ``max_side``. Every bad input is a ``ValueError`` that names it.
* **Sizes** larger than one tile give a seamless tiled scene; :meth:`GenerationPipeline.extend` outpaints around an
  image, keeping its pixels unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from PIL import Image

from geovl import __version__
from geovl.models.diffusion import MAX_SIDE, MAX_STEPS, SAMPLERS, GenerationOutput, GeoDiffusionPipeline
from geovl.models.diffusion_conditioning import gsd_level

__all__ = ["MAX_SEED", "GenerationPipeline", "check_options", "image_settings", "parse_size", "size_from"]

#: Largest seed accepted (the generator seeds torch generators with ``seed + k`` and small offsets).
MAX_SEED = 2**63 - 1
#: Guidance weights accepted (the model's own range).
MAX_GUIDANCE = 50.0


def _check_number(value: Any, name: str, low: float, high: float, *, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not (integer or math.isfinite(value)) or not low <= value <= high:
        bounds = f"{low:g}..{high:g}" if integer else f"[{low:g}, {high:g}]"
        raise ValueError(f"{name} must be {kind} in {bounds}, got {value!r}")


def check_options(prompts: str | Sequence[str], gsd: float | None = None, *, steps: int | None = None,
                  guidance: float | None = None, guidance_resolution: float | None = None, seed: int = 0,
                  sampler: str = "ddpm", n: int = 1, max_steps: int = MAX_STEPS, max_images: int | None = None) -> None:
    """Check what can be checked without the model; ``ValueError`` naming the first bad input.

    ``None`` settings (the model's defaults) pass; ``max_steps`` and ``max_images`` are a caller's tighter limits.
    """
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts or any(not isinstance(p, str) or not p.strip() for p in texts):
        raise ValueError("the prompt is empty: describe the image to generate, e.g. 'a river through farmland'")
    if gsd is not None:
        if isinstance(gsd, bool) or not isinstance(gsd, (int, float)):
            raise ValueError(f"gsd must be a number of metres per pixel (or None for no resolution condition), "
                             f"got {gsd!r}")
        gsd_level(gsd)  # positive and finite
    if steps is not None:
        _check_number(steps, "steps", 1, min(max_steps, MAX_STEPS), integer=True)
    for name, weight in (("guidance", guidance), ("guidance_resolution", guidance_resolution)):
        if weight is not None:
            _check_number(weight, name, 0.0, MAX_GUIDANCE)
    _check_number(seed, "seed", 0, MAX_SEED, integer=True)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    limit = max_images if max_images is not None else MAX_SEED
    _check_number(n, "the number of images (n)", 1, limit, integer=True)
    if len(texts) * n > limit:
        raise ValueError(f"{len(texts) * n} images asked for; the limit is {limit}")


def parse_size(size: int | tuple[int, int] | None, default: int) -> tuple[int, int]:
    """``(width, height)`` from ``size`` (one side, ``(width, height)``, or None for ``default`` square)."""
    if size is None:
        return default, default
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(s, int) and not isinstance(s, bool) for s in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be an integer or (width, height) in pixels, got {size!r}")


def size_from(width: int | None, height: int | None) -> int | tuple[int, int] | None:
    """A ``size`` from optional sides: both given -> ``(width, height)``; one -> a square of it; none -> None (one
    tile)."""
    if width is None and height is None:
        return None
    if width is None or height is None:
        return width if height is None else height
    return width, height


def image_settings(out: GenerationOutput, index: int = 0) -> dict[str, Any]:
    """The settings that reproduce image ``index`` of ``out`` (JSON-ready; what PNG files and responses carry).

    ``level`` is the zoom level the GSD mapped to (0: no resolution condition) and ``level_gsd`` its metres per
    pixel; ``seed`` is the image's own seed (``out.seed + index``)."""
    if not 0 <= index < len(out.prompts):
        raise ValueError(f"image index {index} is out of range: the output has {len(out.prompts)} images")
    model = out.model or {}
    return {
        "prompt": out.prompts[index],
        "gsd": out.gsd,
        "level": out.level,
        "level_gsd": out.settings()["level_gsd"],
        "seed": out.seed + index,
        "steps": out.steps,
        "guidance": out.guidance,
        "guidance_resolution": out.guidance_resolution,
        "sampler": out.sampler,
        "width": out.width,
        "height": out.height,
        "model": model.get("name"),
        "backbone": model.get("backbone"),
        "software": f"geovl {__version__}",
    }


class GenerationPipeline:
    """Prompts (and a GSD) to images with fixed sampler settings.

    Args:
        model: a generator (``geovl.models.load_generator("geovl-gen-small")``).
        steps: sampler steps (None: the model's default).
        guidance: text guidance weight (None: the model's default).
        guidance_resolution: resolution guidance weight (None: ``guidance``).
        sampler: ``ddim``, ``ddpm`` or ``euler``.
        max_side: largest width or height accepted, in pixels.
        max_steps: most sampler steps accepted.
        batch_size: tile windows denoised per UNet call for scenes larger than one tile.

    Example::

        pipe = GenerationPipeline(load_generator(), steps=50, guidance=4)
        out = pipe("a river through farmland", gsd=10, seed=0, size=(256, 128))
        out.images[0].save("river.png")
    """

    def __init__(self, model: GeoDiffusionPipeline, *, steps: int | None = None, guidance: float | None = None,
                 guidance_resolution: float | None = None, sampler: str = "ddpm", max_side: int = MAX_SIDE,
                 max_steps: int = MAX_STEPS, batch_size: int = 8) -> None:
        _check_number(max_side, "max_side", model.tile, MAX_SIDE, integer=True)
        _check_number(max_steps, "max_steps", 1, MAX_STEPS, integer=True)
        _check_number(batch_size, "batch_size", 1, 4096, integer=True)
        check_options("-", steps=steps, guidance=guidance, guidance_resolution=guidance_resolution, sampler=sampler,
                      max_steps=max_steps)
        self.model = model
        self.steps = steps
        self.guidance = guidance
        self.guidance_resolution = guidance_resolution
        self.sampler = sampler
        self.max_side = max_side
        self.max_steps = max_steps
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return (f"GenerationPipeline({self.model.name or 'generator'!r}, steps={self.steps}, "
                f"guidance={self.guidance}, guidance_resolution={self.guidance_resolution}, sampler={self.sampler!r}, "
                f"max_side={self.max_side})")

    @property
    def tile(self) -> int:
        """Side in pixels of one generated tile (the default size)."""
        return self.model.tile

    def check_size(self, width: int, height: int) -> None:
        """``ValueError`` unless ``width`` x ``height`` is within one tile .. ``max_side`` and a multiple of the
        model's patch."""
        patch = int(self.model.config.patch)
        for name, side in (("width", width), ("height", height)):
            if isinstance(side, bool) or not isinstance(side, int):
                raise ValueError(f"{name} must be an integer number of pixels, got {side!r}")
            if not self.tile <= side <= self.max_side:
                raise ValueError(f"{name} must be {self.tile}..{self.max_side} px (one tile to the largest side "
                                 f"allowed), got {side}")
            if side % patch:
                raise ValueError(f"{name} must be a multiple of {patch} px, got {side}")

    def _options(self) -> dict[str, Any]:
        return {"steps": self.steps, "guidance": self.guidance, "guidance_resolution": self.guidance_resolution,
                "sampler": self.sampler, "batch_size": self.batch_size}

    def __call__(self, prompt: str | Sequence[str], gsd: float | None = None, *, seed: int = 0,
                 size: int | tuple[int, int] | None = None, n: int = 1) -> GenerationOutput:
        """``n`` images per prompt (prompt ``p``'s images are consecutive), image ``k`` seeded ``seed + k``.

        Args:
            prompt: a text or a list of texts.
            gsd: metres per pixel wanted (mapped to the nearest zoom level); None: no resolution condition.
            seed: the first image's seed.
            size: one side or ``(width, height)`` in pixels (default: one tile); larger than a tile gives a seamless
                tiled scene.
            n: images per prompt.

        Raises:
            ValueError: an empty prompt, a bad GSD, seed, count or size (the message names it).
        """
        check_options(prompt, gsd, seed=seed, n=n, max_steps=self.max_steps, **self._options_for_check())
        width, height = parse_size(size, self.tile)
        self.check_size(width, height)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        texts = [p for p in prompts for _ in range(n)]
        return self.model(texts, gsd, seed=seed, size=(width, height), **self._options())

    def extend(self, image: Image.Image, prompt: str, gsd: float | None = None, *, width: int, height: int,
               offset: tuple[int, int] | None = None, seed: int = 0) -> GenerationOutput:
        """Outpaint: a ``width`` x ``height`` scene that contains ``image`` unchanged at ``offset`` (x, y; default
        centred) and continues it with the same prompt and resolution.

        Raises:
            ValueError: as for :meth:`__call__`, or an image larger than the scene, or sides / offset that are not
                multiples of the model's patch.
        """
        if not isinstance(prompt, str):
            raise ValueError("extend takes one prompt (a text)")
        check_options(prompt, gsd, seed=seed, max_steps=self.max_steps, **self._options_for_check())
        self.check_size(width, height)
        options = self._options()
        return self.model.extend(image, prompt, gsd, width=width, height=height, offset=offset, seed=seed, **options)

    def _options_for_check(self) -> dict[str, Any]:
        options = self._options()
        options.pop("batch_size")
        return options
