"""Single-tile generation: plan a layout from ``(seed, index)``, write its captions, render it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geovl.data.synthetic.builder import SceneBuilder
from geovl.data.synthetic.captions import scene_captions
from geovl.data.synthetic.classes import CLASSES, RECIPES
from geovl.data.synthetic.config import SceneConfig, tile_rng
from geovl.data.synthetic.layout import Layout, Radiometry
from geovl.data.synthetic.render import render
from geovl.io.jsonable import to_jsonable

_DEFAULT_CONFIG = SceneConfig()


@dataclass
class SyntheticScene:
    """One generated tile.

    Attributes:
        image: uint8 ``(H, W, 3)`` RGB array.
        label: class name (one of :data:`~geovl.data.synthetic.CLASSES`).
        captions: ``config.captions_per_image`` distinct captions describing the drawn content.
        attributes: JSON-serialisable facts: ``class``, ``gsd`` (m/px), ``season``, ``size`` ([H, W]),
            ``rotation_deg``, ``sun_azimuth_deg``, ``sun_elevation_deg``, ``objects`` (visible count per object
            kind: building, car, tree, airplane, tank, boat, ...), ``object_size_px`` (mean length in px per
            kind), ``features`` (captioned elements with ``kind``, ``where``, ``direction``, ``count``) and
            class-specific facts (``n_fields``, ``crop_colours``, ``roof_colours``, ``surroundings``, ...).
        gsd: ground sample distance, metres per pixel.
    """

    image: np.ndarray
    label: str
    captions: list[str]
    attributes: dict[str, Any] = field(default_factory=dict)
    gsd: float = 0.0


@dataclass
class ScenePlan:
    """Everything about a tile except its pixels (cheap); :meth:`render` draws them."""

    layout: Layout
    captions: list[str]
    attributes: dict[str, Any]

    def render(self) -> SyntheticScene:
        image, _ = render(self.layout)
        return SyntheticScene(image, self.layout.label, list(self.captions), dict(self.attributes),
                              self.layout.gsd)


def build_layout(rng: np.random.Generator, config: SceneConfig, label: str) -> SceneBuilder:
    """Sample the global parameters of a tile and run the class recipe ``label``.

    Returns the builder, whose ``layout`` is the finished scene and whose occupancy grid later edits (change
    pairs) can reuse.
    """
    if label not in RECIPES:
        raise ValueError(f"unknown class {label!r}; choose from {CLASSES}")
    h, w = config.shape
    gsd = config.sample_gsd(rng)
    season = config.seasons[int(rng.integers(len(config.seasons)))]
    layout = Layout(
        label=label, height=h, width=w, gsd=gsd, season=season,
        rotation=float(rng.uniform(0, 2 * math.pi)) if config.rotate else 0.0,
        sun_azimuth=float(rng.uniform(0, 2 * math.pi)),
        sun_elevation=math.radians(float(rng.uniform(30, 65))),
        texture_seed=int(rng.integers(2**62)),
    )
    brightness = float(rng.uniform(0.88, 1.12))
    tint = rng.uniform(-0.04, 0.04, 3)
    layout.radiometry = Radiometry(
        gain=(brightness * (1 + float(tint[0])), brightness * (1 + float(tint[1])), brightness * (1 + float(tint[2]))),
        haze=float(rng.uniform(0.0, 0.12)),
        noise_std=float(rng.uniform(1.2, 3.0)) * config.noise,
        noise_seed=int(rng.integers(2**62)),
    )
    builder = SceneBuilder(layout, rng, config.mixture)
    RECIPES[label](builder)
    return builder


def _rounded(value: Any) -> Any:
    """Plain JSON data with every float rounded to 3 decimals (attributes are facts, not measurements)."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def describe(layout: Layout) -> dict[str, Any]:
    """The ``attributes`` dict of a layout (see :class:`SyntheticScene`)."""
    sizes: dict[str, list[float]] = {}
    for o in layout.visible():
        sizes.setdefault(o.kind, []).append(o.length)
    features = []
    for f in layout.features:
        d = f.to_dict()
        for key in ("uid", "angle", "offset", "tag"):
            d.pop(key, None)
        features.append(d)
    attrs: dict[str, Any] = {
        "class": layout.label,
        "gsd": layout.gsd,
        "season": layout.season,
        "size": [layout.height, layout.width],
        "rotation_deg": math.degrees(layout.rotation),
        "sun_azimuth_deg": math.degrees(layout.sun_azimuth),
        "sun_elevation_deg": math.degrees(layout.sun_elevation),
        "objects": layout.object_counts(),
        "object_size_px": {k: sum(v) / len(v) for k, v in sorted(sizes.items())},
        "features": features,
    }
    for key, value in layout.facts.items():
        attrs.setdefault(key, value)
    out: dict[str, Any] = _rounded(to_jsonable(attrs))
    return out


def plan_scene(seed: int, index: int, config: SceneConfig | None = None, label: str | None = None) -> ScenePlan:
    """Layout, captions and attributes of tile ``index`` of dataset ``seed`` without rendering pixels."""
    config = config or _DEFAULT_CONFIG
    if label is None:
        rng = tile_rng(seed, index, "scene")
        label = config.sample_class(rng)
    else:
        if label not in RECIPES:
            raise ValueError(f"unknown class {label!r}; choose from {CLASSES}")
        rng = tile_rng(seed, index, "scene", label)
    layout = build_layout(rng, config, label).layout
    captions = scene_captions(layout, tile_rng(seed, index, "captions", label), config.captions_per_image)
    return ScenePlan(layout, captions, describe(layout))


def generate_scene(seed: int, index: int, config: SceneConfig | None = None, label: str | None = None,
                   ) -> SyntheticScene:
    """Generate tile ``index`` of the synthetic dataset ``seed``.

    The result depends only on ``(seed, index, config, label)``: the same arguments give byte-identical
    images and identical captions on every run and machine (same numpy / Pillow), and tile ``i`` does not depend
    on how many tiles were generated before. With ``label`` the class is forced (and the tile differs from the
    unforced tile ``index``).

    Args:
        seed: dataset seed, >= 0.
        index: tile index, >= 0.
        config: what to generate (default :class:`SceneConfig()`: 256 px, 0.3-2 m/px, all classes).
        label: force this class instead of sampling one.

    Returns:
        a :class:`SyntheticScene` with a uint8 ``(H, W, 3)`` image.
    """
    return plan_scene(seed, index, config, label).render()
