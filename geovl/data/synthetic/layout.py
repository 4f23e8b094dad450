"""The scene description that recipes build and the renderer draws.

A :class:`Layout` holds everything random about a tile (geometry, colours, texture seeds, illumination), so
rendering is a pure function of it. Change pairs exploit this: scene B is a copied layout with a few elements
added or removed, rendered again, and the change mask is where the element ids of A and B differ.
All coordinates are pixels (x right, y down); sizes of real things are converted from metres with ``gsd``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from geovl.data.synthetic.geometry import Point
from geovl.data.synthetic.palette import RGB

ShapeKind = Literal["full", "polygon", "line", "ellipse"]


@dataclass
class Shape:
    """A region to rasterise: the whole tile, a polygon, a thick polyline (``width`` px) or an ellipse.

    For ``"ellipse"``, ``points`` is the bounding box ``[(x0, y0), (x1, y1)]``.
    """

    kind: ShapeKind
    points: list[Point] = field(default_factory=list)
    width: float = 0.0


@dataclass
class Area:
    """Ground cover filled with a procedural material texture blended between ``colour_a`` and ``colour_b``."""

    uid: int
    material: str
    shape: Shape
    colour_a: RGB
    colour_b: RGB
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class Paint:
    """Flat paint or foam on the ground (lane lines, parking stalls, runway marks, surf), drawn over areas.

    ``opacity`` in (0, 1]; ``uid`` is that of the element it belongs to (e.g. the road).
    """

    uid: int
    shape: Shape
    colour: RGB
    opacity: float = 1.0


@dataclass
class Obj:
    """A discrete raised object: building, storage tank, tree, car, airplane, boat, umbrella, pool, shrub.

    ``length`` (along ``angle``, radians) and ``width`` are in pixels; ``height_m`` (metres) sets the shadow.
    ``style`` selects a variant (roof shape for buildings); ``tag`` groups objects for captions and changes.
    """

    uid: int
    kind: str
    x: float
    y: float
    length: float
    width: float
    angle: float
    height_m: float
    colour: RGB
    style: str = ""
    tag: str = ""


@dataclass
class Feature:
    """A captionable fact about the scene: a road, river, lake, a group of objects, ...

    ``where`` is a region word (see :func:`geovl.data.synthetic.geometry.region_word`) or ``"through"`` for a
    linear feature crossing the middle; ``direction`` describes how a linear feature crosses the image.
    """

    kind: str
    where: str = ""
    direction: str = ""
    count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for ``SyntheticScene.attributes``."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.where:
            out["where"] = self.where
        if self.direction:
            out["direction"] = self.direction
        if self.count:
            out["count"] = self.count
        out.update(self.extra)
        return out


@dataclass
class Radiometry:
    """Sensor and atmosphere: per-channel gain, haze (blend weight 0-1 towards ``haze_colour``), noise std (DN)
    and the seed of the noise."""

    gain: RGB = (1.0, 1.0, 1.0)
    haze: float = 0.0
    haze_colour: RGB = (170.0, 185.0, 205.0)
    noise_std: float = 2.0
    noise_seed: int = 0


@dataclass
class Layout:
    """Everything needed to render one tile. ``sun_azimuth`` is the image-plane direction towards the sun."""

    label: str
    height: int
    width: int
    gsd: float
    season: str
    rotation: float
    sun_azimuth: float
    sun_elevation: float
    texture_seed: int
    areas: list[Area] = field(default_factory=list)
    paints: list[Paint] = field(default_factory=list)
    objects: list[Obj] = field(default_factory=list)
    features: list[Feature] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    material_params: dict[str, dict[str, float]] = field(default_factory=dict)
    radiometry: Radiometry = field(default_factory=Radiometry)
    next_uid: int = 1

    def new_uid(self) -> int:
        """A fresh element id (0 means "nothing drawn")."""
        uid = self.next_uid
        self.next_uid += 1
        return uid

    def inside(self, x: float, y: float) -> bool:
        """Whether pixel position ``(x, y)`` lies in the tile."""
        return 0.0 <= x < self.width and 0.0 <= y < self.height

    def visible(self, kind: str | None = None, tag: str | None = None) -> list[Obj]:
        """Objects of ``kind`` (and ``tag``) whose centre lies inside the tile: what captions count."""
        return [
            o for o in self.objects
            if (kind is None or o.kind == kind) and (tag is None or o.tag == tag) and self.inside(o.x, o.y)
        ]

    def object_counts(self) -> dict[str, int]:
        """Number of visible objects per kind, sorted by kind."""
        counts: dict[str, int] = {}
        for o in self.visible():
            counts[o.kind] = counts.get(o.kind, 0) + 1
        return dict(sorted(counts.items()))

    def feature(self, kind: str) -> Feature | None:
        """The first feature of ``kind``, if any."""
        return next((f for f in self.features if f.kind == kind), None)

    def copy(self) -> Layout:
        """Deep copy (for building the second image of a change pair)."""
        return copy.deepcopy(self)
