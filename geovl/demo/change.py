"""The demo's Change tab, without Gradio: describe an uploaded pair (caption, verdict, heat map) and draw the change
heat map over the after image. Pure functions of data and the shared resources, so they are tested without a
browser.

Rules:

* the heat map is drawn as it is, not rescaled: its values are change probabilities in [0, 1], so an unchanged
  pair stays cool;
* it is upsampled from the model's grid with bilinear interpolation onto the part of the after image the model sees
  (its centre square for ``resize_mode="shortest"``, :func:`geovl.tasks.explain.model_view_box`), coloured with a
  matplotlib colormap and blended per pixel with weight ``alpha * heat``: where the heat is 0 the after image shows
  unchanged;
* the overlay has the after image's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geovl.demo.search import encode_upload
from geovl.serving.errors import InvalidImageError, InvalidRequestError, ServiceError
from geovl.serving.resources import ImageInput, Resources

__all__ = ["ChangeView", "change_status", "describe_change", "heat_overlay"]

#: Threshold shown on the slider until the change captioner has loaded and told its own.
DEFAULT_THRESHOLD = 0.5


def heat_overlay(image: Image.Image, heatmap: np.ndarray, *, box: Sequence[float] | None = None,
                 alpha: float = 0.6, cmap: str = "turbo") -> Image.Image:
    """Draw a change heat map over ``image`` (see the module docstring).

    Args:
        image: the after image.
        heatmap: (h, w) change probabilities (clipped to [0, 1]).
        box: (left, top, right, bottom) pixels of ``image`` the grid covers; default: the whole image.
        alpha: blending weight of the colour where the heat is 1, in [0, 1].
        cmap: a matplotlib colormap name.

    Returns:
        An RGB image of ``image``'s size.

    Raises:
        ValueError: a heat map that is not a non-empty finite (h, w) array, a bad ``alpha`` or colormap.
    """
    from geovl.tasks.change_captioning.geo import heatmap_overlay

    values = np.asarray(heatmap, dtype=np.float32)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"heatmap must be a non-empty (h, w) array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("heatmap holds NaN or infinite values")
    return heatmap_overlay(image.convert("RGB"), values, alpha=alpha, box=box, cmap=cmap)


@dataclass
class ChangeView:
    """An uploaded pair's description, as the Change tab shows it."""

    caption: str
    changed: bool
    probability: float
    threshold: float
    heatmap: np.ndarray
    overlay: Image.Image
    model: str

    @property
    def verdict(self) -> str:
        """One Markdown line: the verdict, P(changed) against the threshold, and the model."""
        word, sign = ("changed", "≥") if self.changed else ("unchanged", "<")
        return (f"**{word}** · P(changed) {self.probability:.2f} {sign} threshold {self.threshold:.2f} · "
                f"model `{self.model}`")


def describe_change(resources: Resources, before: Any, after: Any, *, threshold: float | None = None) -> ChangeView:
    """Describe one uploaded pair (:meth:`Resources.change_caption`) and draw its heat map over the after image.

    ``before`` and ``after`` are paths, arrays, PIL images or encoded bytes; ``threshold`` None takes the model's.

    Raises:
        InvalidRequestError: a date not uploaded, a bad threshold.
        InvalidImageError: a date that is not a readable image (the message names it).
        NotFoundError / ModelUnavailableError: no change captioner on this server, or it cannot be loaded.
    """
    missing = [date for date, image in (("before", before), ("after", after)) if image is None]
    if missing:
        raise InvalidRequestError(f"upload the {' and the '.join(missing)} image{'s' if len(missing) > 1 else ''} "
                                  "of the pair")
    data = encode_upload(after)
    out = resources.change_caption(ImageInput(encode_upload(before), "before"), ImageInput(data, "after"),
                                   threshold=threshold)
    picture = _load(after if isinstance(after, (str, Path)) else data)
    backbone = getattr(resources.change_captioner(), "backbone", None)
    box = None
    if backbone is not None:
        from geovl.tasks.explain import model_view_box

        box = model_view_box(picture.size, backbone.preprocess)
    return ChangeView(caption=out.caption, changed=out.changed, probability=out.probability, threshold=out.threshold,
                      heatmap=out.heatmap, overlay=heat_overlay(picture, out.heatmap, box=box), model=out.model)


def _load(source: Any) -> Image.Image:
    from geovl.io.images import ImageReadError
    from geovl.io.loading import load_image

    try:
        return load_image(source)
    except (ImageReadError, ValueError, OSError) as exc:
        raise InvalidImageError(f"the after image cannot be read: {exc}") from exc


def change_status(resources: Resources) -> tuple[float | None, str]:
    """Load the change captioner (first call) for the tab: ``(its threshold, a Markdown line naming it)``, or
    ``(None, why it cannot be used)``, never an error."""
    try:
        model = resources.change_captioner()
    except ServiceError as exc:
        return None, f"**The change captioner is not available**: {exc.message}"
    return model.threshold, f"model `{model.name}` · calibrated threshold {model.threshold:.2f}"
