"""Scene-building toolkit shared by the class recipes: units, occupancy, and reusable features.

A :class:`SceneBuilder` wraps a :class:`~geovl.data.synthetic.layout.Layout` under construction. Recipes ask it
for things in metres (a 12 m wide road, a 10 m house); it converts with the ground sample distance, keeps an
occupancy grid so objects do not overlap water, roads or each other, and records captionable
:class:`~geovl.data.synthetic.layout.Feature` s with correct spatial words.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from geovl.data.synthetic import palette
from geovl.data.synthetic.geometry import (
    Point,
    blob,
    direction_phrase,
    line_points,
    rect_corners,
    region_word,
)
from geovl.data.synthetic.layout import Area, Feature, Layout, Obj, Paint, Shape
from geovl.data.synthetic.palette import RGB
from geovl.data.synthetic.render import draw_shape

#: Smallest crown / car size (px) that is drawn as an individual object; smaller ones would be a dot.
MIN_OBJECT_PX = 1.5


class SceneBuilder:
    """Mutable helper around a layout under construction (see module docstring).

    Args:
        layout: the empty layout to fill (size, gsd, season, rotation and sun already set).
        rng: the scene's random generator; every random choice of the recipe comes from it.
        mixture: multiplier (0 = none) on the probability of secondary elements (a river in a forest, ...).
    """

    def __init__(self, layout: Layout, rng: np.random.Generator, mixture: float = 1.0) -> None:
        self.layout = layout
        self.rng = rng
        self.mixture = mixture
        self.h, self.w = layout.height, layout.width
        self.gsd = layout.gsd
        self.cx, self.cy = self.w / 2.0, self.h / 2.0
        self.half_diag = math.hypot(self.w, self.h) / 2.0 + 2.0
        #: Occupied pixels: everything placed so far (approximate boxes for objects).
        self.occ = np.zeros((self.h, self.w), bool)
        #: Exactly rasterised blocking areas only (water, roads, ...), for tightly packed buildings.
        self.hard = np.zeros((self.h, self.w), bool)
        self._cos, self._sin = math.cos(layout.rotation), math.sin(layout.rotation)
        self._buffer: list[float] = []
        self._pos = 0

    # ------------------------------------------------------------------------------------------ units / randomness

    @property
    def season(self) -> str:
        return self.layout.season

    def px(self, metres: float) -> float:
        """Pixels spanned by ``metres`` on the ground."""
        return metres / self.gsd

    def extent_m(self) -> float:
        """Side of the tile on the ground, metres (the shorter side)."""
        return min(self.h, self.w) * self.gsd

    def random(self) -> float:
        """Uniform float in [0, 1), served from a buffer (scalar Generator calls dominate recipe time)."""
        if self._pos >= len(self._buffer):
            self._buffer = self.rng.random(256).tolist()
            self._pos = 0
        value = self._buffer[self._pos]
        self._pos += 1
        return float(value)

    def chance(self, p: float) -> bool:
        """Bernoulli draw for an optional secondary element, scaled by the mixture setting."""
        return self.random() < min(1.0, p * self.mixture)

    def coin(self, p: float) -> bool:
        """Plain Bernoulli draw (for variations of an element, not for optional secondary elements)."""
        return self.random() < p

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def integer(self, lo: int, hi: int) -> int:
        """Random integer in ``[lo, hi]`` (inclusive)."""
        return min(hi, lo + int(self.random() * (hi - lo + 1)))

    def choice(self, options: list[str] | tuple[str, ...], weights: list[float] | None = None) -> str:
        """One of ``options``, with relative ``weights`` (default uniform)."""
        if weights is None:
            return options[min(len(options) - 1, int(self.random() * len(options)))]
        r = self.random() * sum(weights)
        for option, weight in zip(options, weights, strict=True):
            r -= weight
            if r < 0:
                return option
        return options[-1]

    def colour(self, key: str, jitter: float = 6.0, season: str | None = None) -> RGB:
        """A colour from the palette range ``key`` for this scene's season (or ``season``)."""
        return palette.pick(self.random, key, season or self.season, jitter)

    def car_colour(self) -> RGB:
        return palette.pick_car(self.random)

    def local(self, u: float, v: float, angle: float | None = None) -> Point:
        """Pixel position of ``(u, v)`` px in a frame centred on the tile and rotated by ``angle``
        (default: the scene's layout rotation)."""
        if angle is None:
            c, s = self._cos, self._sin
        else:
            c, s = math.cos(angle), math.sin(angle)
        return (self.cx + c * u - s * v, self.cy + s * u + c * v)

    def local_rect(self, u0: float, v0: float, u1: float, v1: float) -> list[Point]:
        """Pixel polygon of the axis-aligned rectangle ``[u0, u1] x [v0, v1]`` of the rotated frame."""
        return [self.local(u0, v0), self.local(u1, v0), self.local(u1, v1), self.local(u0, v1)]

    # ------------------------------------------------------------------------------------------ elements

    def area(
        self, material: str, shape: Shape, colour_a: RGB, colour_b: RGB | None = None,
        params: dict[str, float] | None = None, block: bool = False,
    ) -> Area:
        """Add a ground area; with ``block`` it is marked occupied so later objects avoid it."""
        if colour_b is None:
            colour_b = palette.scale(colour_a, 0.88)
        a = Area(self.layout.new_uid(), material, shape, colour_a, colour_b, dict(params or {}))
        self.layout.areas.append(a)
        if block:
            self.block(shape)
        return a

    def full(self, material: str, key_a: str, key_b: str | None = None, params: dict[str, float] | None = None,
             ) -> Area:
        """Cover the whole tile with ``material`` coloured from palette ranges ``key_a`` / ``key_b``."""
        a = self.colour(key_a)
        b = self.colour(key_b) if key_b else palette.scale(a, self.uniform(0.8, 0.95))
        return self.area(material, Shape("full"), a, b, params)

    def paint(self, uid: int, shape: Shape, colour: RGB, opacity: float = 1.0) -> None:
        """Add paint / foam belonging to element ``uid``; lines thinner than a pixel get reduced opacity."""
        if shape.kind == "line" and shape.width < 1.0:
            opacity *= max(0.0, shape.width)
            shape = Shape("line", shape.points, 1.0)
        if opacity >= 0.05:
            self.layout.paints.append(Paint(uid, shape, colour, min(1.0, opacity)))

    def obj(
        self, kind: str, x: float, y: float, length: float, width: float, angle: float, height_m: float,
        colour: RGB, style: str = "", tag: str = "", block: bool = True,
    ) -> Obj:
        """Add a raised object (sizes in px, height in metres); ``block`` marks its box occupied."""
        o = Obj(self.layout.new_uid(), kind, x, y, length, width, angle, height_m, colour, style, tag)
        self.layout.objects.append(o)
        if block:
            self.block_box(x, y, max(length, width) / 2.0)
        return o

    def feature(self, kind: str, where: str = "", direction: str = "", count: int = 0, **extra: object) -> Feature:
        f = Feature(kind, where, direction, count, dict(extra))
        self.layout.features.append(f)
        return f

    # ------------------------------------------------------------------------------------------ occupancy

    def shape_mask(self, shape: Shape) -> np.ndarray:
        """Boolean ``(H, W)`` mask of ``shape``."""
        mask = Image.new("L", (self.w, self.h), 0)
        draw_shape(ImageDraw.Draw(mask), shape, 1)
        return np.asarray(mask, bool)

    def block(self, shape: Shape) -> None:
        """Mark the pixels of ``shape`` as occupied (also in the hard grid)."""
        mask = self.shape_mask(shape)
        self.occ |= mask
        self.hard |= mask

    def _box(self, x: float, y: float, r: float) -> tuple[int, int, int, int]:
        return (max(0, int(x - r)), max(0, int(y - r)), min(self.w, int(x + r) + 1), min(self.h, int(y + r) + 1))

    def block_box(self, x: float, y: float, r: float) -> None:
        """Mark the square of half-side ``r`` px around ``(x, y)`` occupied."""
        x0, y0, x1, y1 = self._box(x, y, r)
        if x0 < x1 and y0 < y1:
            self.occ[y0:y1, x0:x1] = True

    def is_free(self, x: float, y: float, r: float, grid: np.ndarray | None = None) -> bool:
        """Whether the square of half-side ``r`` px around ``(x, y)`` is unoccupied in ``grid`` (default the
        occupancy grid); outside the tile counts as free."""
        x0, y0, x1, y1 = self._box(x, y, r)
        if x0 >= x1 or y0 >= y1:
            return True
        return not bool((self.occ if grid is None else grid)[y0:y1, x0:x1].any())

    def inside(self, x: float, y: float, margin: float = 0.0) -> bool:
        """Whether ``(x, y)`` lies inside the tile shrunk by ``margin`` px."""
        return margin <= x < self.w - margin and margin <= y < self.h - margin

    def random_point(self, margin: float = 0.0) -> Point:
        """Uniform random pixel position at least ``margin`` px from the borders."""
        m = min(margin, self.w / 2 - 1, self.h / 2 - 1)
        return (self.uniform(m, self.w - m), self.uniform(m, self.h - m))

    # ------------------------------------------------------------------------------------------ linear features

    def line_where(self, angle: float, offset: float) -> str:
        """Region word for a line ``offset`` px from the centre, or ``"through"`` when it crosses the middle."""
        if abs(offset) < min(self.w, self.h) / 6.0:
            return "through"
        x = self.cx - math.sin(angle) * offset
        y = self.cy + math.cos(angle) * offset
        return region_word(x, y, self.w, self.h)

    def random_line(self, max_offset: float = 0.3) -> tuple[float, float]:
        """Random ``(angle, offset_px)`` for a straight feature crossing the tile."""
        angle = self.uniform(0.0, math.pi)
        offset = self.uniform(-max_offset, max_offset) * min(self.w, self.h)
        return angle, offset

    def dashed(self, uid: int, start: Point, end: Point, dash_m: float, gap_m: float, width_m: float,
               colour: RGB, opacity: float = 0.95) -> None:
        """Dashed marking from ``start`` to ``end`` (px); omitted when dashes would be under 2 px."""
        dash, gap = self.px(dash_m), self.px(gap_m)
        if dash < 2.0:
            return
        length = math.dist(start, end)
        ux, uy = (end[0] - start[0]) / length, (end[1] - start[1]) / length
        t = self.uniform(0, dash + gap)
        while t < length:
            t1 = min(length, t + dash)
            a = (start[0] + ux * t, start[1] + uy * t)
            b = (start[0] + ux * t1, start[1] + uy * t1)
            if self.inside(a[0], a[1], -dash) or self.inside(b[0], b[1], -dash):
                self.paint(uid, Shape("line", [a, b], self.px(width_m)), colour, opacity)
            t += dash + gap

    def add_road(
        self, angle: float | None = None, offset: float | None = None, width_m: float | None = None,
        kind: str = "road", material: str = "asphalt", markings: bool = True, cars: float = 0.0,
        tag: str = "",
    ) -> Feature:
        """Straight road across the tile (``kind`` "road", "highway", "track" or "street").

        ``cars`` is the expected number of cars per 100 m of lane. Highways get two carriageways with a
        median strip. Returns the feature, whose ``extra`` holds the geometry (angle, offset px, width px).
        """
        if angle is None or offset is None:
            a, o = self.random_line()
            angle = a if angle is None else angle
            offset = o if offset is None else offset
        if width_m is None:
            width_m = {"highway": self.uniform(26, 40), "track": self.uniform(3, 5)}.get(kind, self.uniform(7, 12))
        pts = line_points(self.cx, self.cy, angle, offset, self.half_diag + self.px(width_m))
        key = "soil" if material == "soil" else material
        road = self.area(material, Shape("line", pts, self.px(width_m)), self.colour(key), None, block=True)
        white = self.colour("marking/white")
        lanes: list[tuple[float, int]] = []  # (normal offset px, driving sign)
        if kind == "highway":
            lanes = self._highway_lanes(road.uid, angle, offset, self.px(width_m), markings, white)
        elif kind in ("road", "street"):
            half = self.px(width_m) / 2.0
            lanes = [(offset - half / 2.0, -1), (offset + half / 2.0, 1)]
            if markings:
                p = line_points(self.cx, self.cy, angle, offset, self.half_diag)
                self.dashed(road.uid, p[0], p[1], 3.0, 6.0, 0.15, white)
        n_cars = self._road_cars(angle, lanes, cars)
        where = self.line_where(angle, offset)
        return self.feature(
            kind, where=where, direction=direction_phrase(angle), angle=angle, offset=offset,
            width_px=self.px(width_m), cars=n_cars, tag=tag,
        )

    def _highway_lanes(self, uid: int, angle: float, offset: float, width: float, markings: bool, white: RGB,
                       ) -> list[tuple[float, int]]:
        """Paint a highway's median (and lane / edge markings) on road ``uid`` of ``width`` px; return its lanes
        as ``(normal offset px, driving sign)``."""
        lanes: list[tuple[float, int]] = []
        median = self.px(self.uniform(3, 8))
        side = (width - median) / 2.0
        med_pts = line_points(self.cx, self.cy, angle, offset, self.half_diag)
        self.paint(uid, Shape("line", med_pts, median), self.colour("grass"), 1.0)
        n_lanes = max(2, int(width / 2 / self.px(3.6)))
        lane_w = side / n_lanes
        for sign in (-1, 1):
            inner = median / 2.0
            for k in range(n_lanes):
                lanes.append((offset + sign * (inner + lane_w * (k + 0.5)), sign))
            if not markings:
                continue
            for k in range(1, n_lanes):
                p = line_points(self.cx, self.cy, angle, offset + sign * (inner + lane_w * k), self.half_diag)
                self.dashed(uid, p[0], p[1], 3.0, 9.0, 0.2, white)
            for edge in (inner + self.px(0.6), inner + side - self.px(0.6)):
                p = line_points(self.cx, self.cy, angle, offset + sign * edge, self.half_diag)
                self.paint(uid, Shape("line", p, self.px(0.2)), white, 0.9)
        return lanes

    def _road_cars(self, angle: float, lanes: list[tuple[float, int]], cars: float) -> int:
        """Place about ``cars`` cars per 100 m in each lane of a road at ``angle``; return how many were placed."""
        dx, dy = math.cos(angle), math.sin(angle)
        nx, ny = -dy, dx
        n_cars = 0
        car_len = self.px(self.uniform(4.2, 4.8))
        if cars <= 0 or car_len < MIN_OBJECT_PX or not lanes:
            return 0
        for lane_off, sign in lanes:
            length_m = 2 * self.half_diag * self.gsd
            taken: set[int] = set()
            for _ in range(int(self.rng.poisson(cars * length_m / 100.0))):
                t = self.uniform(-self.half_diag, self.half_diag)
                x = self.cx + nx * lane_off + dx * t
                y = self.cy + ny * lane_off + dy * t
                if not self.inside(x, y, car_len) or not self.free_slot(taken, t, car_len * 1.5):
                    continue
                heading = angle if sign > 0 else angle + math.pi
                self.obj("car", x, y, car_len, car_len * 0.42, heading, 1.5, self.car_colour(),
                         tag="road_car", block=False)
                n_cars += 1
        return n_cars

    @staticmethod
    def free_slot(taken: set[int], t: float, spacing: float) -> bool:
        """Claim the slot of position ``t`` (px along a lane, slots ``spacing`` px long) if it and its
        neighbours are free, so vehicles in a lane never overlap."""
        slot = math.floor(t / spacing)
        if slot in taken or slot - 1 in taken or slot + 1 in taken:
            return False
        taken.add(slot)
        return True

    def add_river(self, angle: float | None = None, offset: float | None = None, width_m: float | None = None,
                  ) -> Feature:
        """Meandering river with lighter banks crossing the tile; blocks its pixels."""
        a, o = self.random_line(0.22)
        angle = a if angle is None else angle
        offset = o if offset is None else offset
        if width_m is None:
            width_m = min(self.uniform(12, 90), 0.3 * self.extent_m())
            width_m = max(width_m, 2.5 * self.gsd)
        width = self.px(width_m)
        wavelength = self.uniform(2.5, 5.0) * max(width, 0.25 * min(self.w, self.h))
        meander = self.uniform(0.08, 0.22) * wavelength
        pts = line_points(self.cx, self.cy, angle, offset, self.half_diag + width, meander, wavelength,
                          self.uniform(0, 2 * math.pi), n=48)
        bank = self.px(self.uniform(2, 8))
        self.area("sand", Shape("line", pts, width + 2 * bank), self.colour("sand/wet"), None, block=True)
        water = self.area("water", Shape("line", pts, width), self.colour("water/river"), None, block=True)
        return self.feature("river", where=self.line_where(angle, offset), direction=direction_phrase(angle),
                            angle=angle, offset=offset, width_px=width, uid=water.uid)

    def add_lake(self, x: float | None = None, y: float | None = None, radius_px: float | None = None,
                 shore: bool = True) -> Feature:
        """Irregular lake (optionally with a sandy / muddy shore) at ``(x, y)``; blocks its pixels."""
        size = min(self.w, self.h)
        if radius_px is None:
            radius_px = self.uniform(0.18, 0.34) * size
        if x is None or y is None:
            x, y = self.random_point(radius_px * 0.6)
        rx = radius_px * self.uniform(0.8, 1.2)
        ry = radius_px * self.uniform(0.6, 1.0)
        ang = self.uniform(0, math.pi)
        outline = blob(self.rng, x, y, rx, ry, ang, roughness=0.3)
        if shore:
            grow = 1.0 + max(self.px(3.0), 2.0) / radius_px
            shore_pts = [(x + (px - x) * grow, y + (py - y) * grow) for px, py in outline]
            self.area("sand", Shape("polygon", shore_pts), self.colour("sand/wet"), None, block=True)
        water = self.area("water", Shape("polygon", outline), self.colour("water/lake"), None, block=True)
        return self.feature("lake", where=region_word(x, y, self.w, self.h), uid=water.uid,
                            radius_px=radius_px)

    # ------------------------------------------------------------------------------------------ objects

    def scatter_trees(
        self, n: int, radius_m: tuple[float, float] = (2.5, 5.5), region: Shape | None = None,
        margin_px: float = 0.0, key: str = "tree", tag: str = "tree", kind: str = "tree",
    ) -> int:
        """Place up to ``n`` trees (or shrubs) on free ground, inside ``region`` if given; returns how many."""
        if 2 * self.px(radius_m[0]) < MIN_OBJECT_PX or n <= 0:
            return 0
        mask = None if region is None else self.shape_mask(region)
        placed = 0
        for _ in range(n * 4):
            if placed >= n:
                break
            x, y = self.random_point(margin_px)
            if mask is not None and not mask[min(int(y), self.h - 1), min(int(x), self.w - 1)]:
                continue
            r = self.px(self.uniform(*radius_m))
            if not self.is_free(x, y, r * 0.8):
                continue
            height = self.uniform(6, 16) if kind == "tree" else self.uniform(0.5, 2.0)
            self.obj(kind, x, y, 2 * r, 2 * r, 0.0, height, self.colour(key, 10.0), tag=tag, block=False)
            self.block_box(x, y, r * 0.6)
            placed += 1
        return placed

    def house(self, x: float, y: float, length_m: float, width_m: float, angle: float, roof: str,
              height_m: float | None = None, style: str | None = None, tag: str = "house",
              clearance: float = 0.5) -> Obj | None:
        """Add a building if its footprint is free; ``roof`` is a palette key suffix ("red", "grey", ...).

        ``clearance`` is the half-side of the square checked for occupancy, as a fraction of the longer side
        (use less than 0.5 to pack buildings tightly along a street).
        """
        length, width = self.px(length_m), self.px(width_m)
        # The square of half-side 0.35 * width fits inside the footprint at any rotation.
        if not self.is_free(x, y, max(length, width) * clearance) or not self.is_free(
                x, y, 0.35 * min(length, width), self.hard):
            return None
        if style is None:
            style = self.choice(["gable", "hip", "flat"], [0.45, 0.3, 0.25])
        if height_m is None:
            height_m = self.uniform(5, 9)
        o = self.obj("building", x, y, length, width, angle, height_m, self.colour(f"roof/{roof}", 8.0),
                     style=style, tag=tag, block=False)
        self.block_box(x, y, max(length, width) * 0.5)
        return o

    def footprint(self, o: Obj) -> list[Point]:
        """Pixel polygon of a box-shaped object."""
        return rect_corners(o.x, o.y, o.length, o.width, o.angle)
