"""The demo's Generate tab, without Gradio: a prompt, a ground sample distance and sampler settings to an image and
its settings, over the shared resources (:meth:`geovl.serving.resources.Resources.generate`), so they are tested
without a browser.

Rules:

* the GSD slider is in powers of two (``2 ** x`` metres per pixel, x from -1 to 7: 0.5 m .. 128 m, one stop per
  zoom level), since the generator's resolution condition is a zoom level; a checkbox drops the condition;
* the page's values (floats from sliders, an empty seed box) become the request's integers here; a bad value is the
  same :class:`~geovl.serving.errors.ServiceError` the HTTP API answers with;
* the image shown is the one ``geovl generate`` writes for the same settings and seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from geovl.serving.errors import InvalidRequestError, ServiceError
from geovl.serving.generation import GenerationRequest
from geovl.serving.resources import Resources

__all__ = ["DEFAULT_GUIDANCE", "DEFAULT_STEPS", "EXAMPLE_PROMPTS", "GSD_EXPONENTS", "SAMPLER_CHOICES",
           "GenerateView", "generate_image",
           "generate_status", "gsd_caption", "slider_gsd"]

#: Prompts a first-time user can click.
EXAMPLE_PROMPTS = (
    "a river through farmland",
    "a dense residential area",
    "a forest",
    "an airport with planes on the runway",
    "a beach next to the sea",
    "a highway interchange",
    "a harbour with boats",
    "industrial buildings with large roofs",
)
#: The GSD slider's range and default: ``2 ** x`` metres per pixel (0.5 m .. 128 m; default 8 m).
GSD_EXPONENTS = (-1, 7, 3)
#: The sampler menu: :data:`geovl.models.diffusion.SAMPLERS`, spelled out so that building the page does not import
#: diffusers (``tests/demo`` checks the two agree).
SAMPLER_CHOICES = ("ddim", "ddpm", "euler")
#: Steps and guidance shown until the generator has loaded and told its own defaults.
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 4.0


def slider_gsd(exponent: float, no_condition: bool = False) -> float | None:
    """Metres per pixel of a slider position (``2 ** exponent``), or None with ``no_condition``."""
    return None if no_condition else float(2.0 ** float(exponent))


def gsd_caption(exponent: float, no_condition: bool = False) -> str:
    """One Markdown line naming the slider's GSD and its zoom level."""
    gsd = slider_gsd(exponent, no_condition)
    if gsd is None:
        return "**no resolution condition**: the generator chooses the scale"
    from geovl.models.diffusion_conditioning import gsd_level

    return f"**{gsd:g} m per pixel** · web-map zoom level {gsd_level(gsd)}"


@dataclass
class GenerateView:
    """A generated image and the settings that reproduce it, as the Generate tab shows them."""

    image: Image.Image
    settings: dict[str, Any]
    model: str

    @property
    def summary(self) -> str:
        """One Markdown line: size, seed, steps, sampler, seconds and the model."""
        s = self.settings
        return (f"{s['width']}x{s['height']} px · seed {s['seed']} · {s['steps']} {s['sampler']} steps · "
                f"model `{self.model}`")


def _integer(value: Any, name: str, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    number = float(value)
    if not number.is_integer():
        raise InvalidRequestError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def generate_image(resources: Resources, prompt: str, *, log2_gsd: float = GSD_EXPONENTS[2],
                   no_gsd: bool = False, steps: float | None = None, guidance: float | None = None,
                   guidance_resolution: float | None = None, seed: float | None = 0, width: float | None = None,
                   height: float | None = None, sampler: str = "ddpm") -> GenerateView:
    """Generate one image (:meth:`Resources.generate`) from the tab's values.

    Raises:
        InvalidRequestError / PayloadTooLargeError: a bad value (the message names it).
        NotFoundError / ModelUnavailableError: no generator on this server, or it cannot be loaded.
    """
    request = GenerationRequest(
        prompt=(prompt or "").strip(), gsd=slider_gsd(log2_gsd, no_gsd), steps=_integer(steps, "steps"),
        guidance=None if guidance is None else float(guidance),
        guidance_resolution=None if guidance_resolution is None else float(guidance_resolution),
        seed=_integer(seed, "seed", 0) or 0, width=_integer(width, "width"), height=_integer(height, "height"),
        sampler=sampler,
    )
    out = resources.generate(request)
    item = out.images[0]
    return GenerateView(image=item.image, settings=item.settings, model=out.model)


def generate_status(resources: Resources) -> tuple[dict[str, Any] | None, str]:
    """Load the generator (first call) for the tab: ``({"steps", "guidance", "tile"} defaults, a Markdown line
    naming it)``, or ``(None, why it cannot be used)``, never an error."""
    try:
        model = resources.generation.model()
    except ServiceError as exc:
        return None, f"**The generator is not available**: {exc.message}"
    defaults = {"steps": int(model.config.default_steps), "guidance": float(model.config.default_guidance),
                "tile": model.tile}
    return defaults, (f"model `{model.name}` · {model.tile} px tiles (larger sizes are seamless tiled scenes) · "
                      f"defaults: {defaults['steps']} steps, guidance {defaults['guidance']:g}")
