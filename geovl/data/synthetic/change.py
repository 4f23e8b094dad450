"""Bi-temporal change pairs (LEVIR-CC style): scene A, scene B = A with one edit, a change mask and captions.

B is a copy of A's layout with elements added or removed (new elements get new ids, kept ones keep theirs),
rendered under slightly different illumination with fresh sensor noise. The change mask is where the top-most
element id differs between A and B, so it covers exactly the edited footprints; "none" pairs differ only
radiometrically and have an empty mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from geovl.data.synthetic import palette
from geovl.data.synthetic.builder import SceneBuilder
from geovl.data.synthetic.change_captions import ChangeInfo, change_captions
from geovl.data.synthetic.config import CHANGE_TYPES, SceneConfig, tile_rng
from geovl.data.synthetic.geometry import blob, direction_phrase, line_points, rect_corners, region_word, side_word
from geovl.data.synthetic.layout import Area, Layout, Radiometry, Shape
from geovl.data.synthetic.render import draw_shape, render, render_ids
from geovl.data.synthetic.scene import build_layout

#: Base classes each change type is drawn on (the last one always admits the change).
CHANGE_BASES: dict[str, tuple[str, ...]] = {
    "none": ("sparse_residential", "dense_residential", "bare_land", "meadow", "farmland", "forest", "industrial",
             "lake", "highway", "river"),
    "buildings_built": ("meadow", "farmland", "sparse_residential", "bare_land"),
    "buildings_removed": ("sparse_residential", "industrial", "dense_residential"),
    "road_built": ("meadow", "farmland", "forest", "desert", "bare_land"),
    "trees_removed": ("meadow", "sparse_residential", "forest"),
    "water_changed": ("meadow", "farmland", "bare_land", "lake"),
}

_GROUND = {"bare_land": "bare land", "meadow": "grassland", "farmland": "farmland", "forest": "forest",
           "desert": "desert", "sparse_residential": "empty land", "lake": "land"}
_ATTEMPTS = 6
_DEFAULT_CONFIG = SceneConfig()


@dataclass
class SyntheticChangePair:
    """A bi-temporal pair.

    Attributes:
        image_a, image_b: uint8 ``(H, W, 3)`` RGB arrays (earlier, later).
        mask: uint8 ``(H, W)``, 1 where the scene content changed, else 0 (all 0 for ``"none"``).
        change_type: one of :data:`~geovl.data.synthetic.CHANGE_TYPES`.
        captions: ``config.captions_per_image`` distinct LEVIR-CC-style change captions.
        label: class of the underlying scene.
        attributes: JSON-serialisable facts (``change``, ``changeflag``, ``class``, ``gsd``, ``season``,
            ``count``, ``where``, ``variant``, ``changed_pixels``, ...).
        gsd: ground sample distance, metres per pixel.
    """

    image_a: np.ndarray
    image_b: np.ndarray
    mask: np.ndarray
    change_type: str
    captions: list[str]
    label: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    gsd: float = 0.0


# ---------------------------------------------------------------------------------------------- helpers


def _area_mask(layout: Layout, select: Callable[[Area], bool]) -> np.ndarray:
    """Pixels whose top-most area satisfies ``select``."""
    img = Image.new("L", (layout.width, layout.height), 0)
    draw = ImageDraw.Draw(img)
    for a in layout.areas:
        draw_shape(draw, a.shape, 1 if select(a) else 0)
    return np.asarray(img, bool)


def _hard_mask(layout: Layout) -> np.ndarray:
    """Water and building footprints: where a new road must not go."""
    mask = _area_mask(layout, lambda a: a.material == "water")
    img = Image.new("L", (layout.width, layout.height), 0)
    draw = ImageDraw.Draw(img)
    for o in layout.objects:
        if o.kind in ("building", "tank", "pool"):
            draw.polygon(rect_corners(o.x, o.y, o.length, o.width, o.angle), fill=1)
    return mask | np.asarray(img, bool)


def _scaled(points: list[tuple[float, float]], factor: float) -> list[tuple[float, float]]:
    cx = sum(p[0] for p in points) / len(points)
    cy = sum(p[1] for p in points) / len(points)
    return [(cx + (x - cx) * factor, cy + (y - cy) * factor) for x, y in points]


def _centroid_word(b: SceneBuilder, xs: list[float], ys: list[float]) -> str:
    return region_word(sum(xs) / len(xs), sum(ys) / len(ys), b.w, b.h)


# ---------------------------------------------------------------------------------------------- edits


def _build_houses(b: SceneBuilder, base: str) -> ChangeInfo | None:
    size = min(b.w, b.h)
    radius = min(max(b.px(b.uniform(25, 70)), b.px(15)), 0.3 * size)
    for _ in range(40):
        x, y = b.random_point(radius * 0.5)
        if b.is_free(x, y, radius * 0.7):
            break
    else:
        return None
    rot = b.layout.rotation
    c, s = math.cos(rot), math.sin(rot)
    with_road = b.coin(0.3)
    if with_road:
        pts = [(x - c * radius * 1.2, y - s * radius * 1.2), (x + c * radius * 1.2, y + s * radius * 1.2)]
        b.area("asphalt", Shape("line", pts, max(1.5, b.px(b.uniform(6, 9)))), b.colour("asphalt"), None,
               block=True)
    lm, wm = b.uniform(9, 16), b.uniform(8, 12)
    sx, sy = b.px(lm + b.uniform(3, 10)), b.px(wm + b.uniform(6, 12))
    roof = b.choice(["red", "grey", "blue", "white", "brown"])
    style = b.choice(["gable", "hip", "flat"])
    xs: list[float] = []
    ys: list[float] = []
    ni, nj = int(radius / sx) + 1, int(radius / sy) + 1
    for i in range(-ni, ni + 1):
        for j in range(-nj, nj + 1):
            u, v = i * sx, j * sy + (sy / 2 if with_road else 0.0)
            if math.hypot(u, v) > radius or b.coin(0.15):
                continue
            hx, hy = x + c * u - s * v, y + s * u + c * v
            if b.inside(hx, hy) and b.house(hx, hy, lm, wm, rot, roof, style=style, tag="new", clearance=0.45):
                xs.append(hx)
                ys.append(hy)
    if not xs:
        return None
    along = base == "sparse_residential" or any(
        f.kind in ("road", "street", "track") and abs(
            (x - b.cx) * -math.sin(float(f.extra["angle"])) + (y - b.cy) * math.cos(float(f.extra["angle"]))
            - float(f.extra["offset"])) < radius + float(f.extra["width_px"])
        for f in b.layout.features if "angle" in f.extra)
    return ChangeInfo(count=len(xs), where=_centroid_word(b, xs, ys), ground=_GROUND.get(base, "land"),
                      extra={"along_road": along, "with_road": with_road})


def _remove_buildings(b: SceneBuilder, base: str) -> ChangeInfo | None:
    visible = b.layout.visible("building")
    if not visible:
        return None
    anchor = visible[b.integer(0, len(visible) - 1)]
    radius = b.px(b.uniform(20, 80))
    group = sorted((o for o in visible if math.hypot(o.x - anchor.x, o.y - anchor.y) <= radius),
                   key=lambda o: math.hypot(o.x - anchor.x, o.y - anchor.y))[: b.integer(1, 12)]
    gone = {o.uid for o in group}
    b.layout.objects = [o for o in b.layout.objects if o.uid not in gone]
    for o in group:
        debris = palette.mix(b.colour("soil"), b.colour("concrete"), b.uniform(0, 0.5))
        b.area("soil", Shape("polygon", rect_corners(o.x, o.y, o.length * 1.08, o.width * 1.08, o.angle)), debris)
    return ChangeInfo(count=len(group), where=_centroid_word(b, [o.x for o in group], [o.y for o in group]),
                      ground=_GROUND.get(base, "land"),
                      extra={"noun": "building" if base in ("industrial", "dense_residential") else "house"})


def _build_road(b: SceneBuilder, base: str) -> ChangeInfo | None:
    hard = _hard_mask(b.layout)
    for _ in range(30):
        angle, offset = b.random_line(0.35)
        width = max(1.5, b.px(b.uniform(7, 14)))
        pts = line_points(b.cx, b.cy, angle, offset, b.half_diag + width)
        extended = b.coin(0.3)
        if extended:
            t = b.uniform(-0.1, 0.2) * min(b.w, b.h)
            mid = (b.cx - math.sin(angle) * offset + math.cos(angle) * t,
                   b.cy + math.cos(angle) * offset + math.sin(angle) * t)
            pts = [pts[0], mid]
        road = Shape("line", pts, width)
        m = b.shape_mask(road)
        if int(np.count_nonzero(m & hard)) > 0.01 * int(np.count_nonzero(m)):
            continue
        area = b.area("asphalt", road, b.colour("asphalt"), None, block=True)
        b.layout.objects = [o for o in b.layout.objects
                            if not (o.kind in ("tree", "shrub") and b.inside(o.x, o.y) and m[int(o.y), int(o.x)])]
        b.dashed(area.uid, pts[0], pts[1], 3.0, 6.0, 0.15, b.colour("marking/white"))
        info = ChangeInfo(where=b.line_where(angle, offset), direction=direction_phrase(angle),
                          ground=_GROUND.get(base, "land"), variant="extended" if extended else "new")
        if extended:
            info.extra["from"] = side_word(-math.cos(angle), -math.sin(angle))
            info.where = region_word((pts[0][0] + pts[1][0]) / 2, (pts[0][1] + pts[1][1]) / 2, b.w, b.h) \
                if info.where == "through" else info.where
        return info
    return None


def _remove_trees(b: SceneBuilder, base: str) -> ChangeInfo | None:
    forest = _area_mask(b.layout, lambda a: a.material == "forest")
    size = min(b.w, b.h)
    if int(np.count_nonzero(forest)) > 0.3 * b.w * b.h:
        for _ in range(30):
            x, y = b.random_point(0.15 * size)
            if forest[int(y), int(x)]:
                break
        else:
            return None
        pts = blob(b.rng, x, y, b.uniform(0.12, 0.28) * size, b.uniform(0.1, 0.22) * size, b.uniform(0, 3.1))
        b.area("soil", Shape("polygon", pts), b.colour("soil"), b.colour("soil/dry"))
        return ChangeInfo(where=region_word(x, y, b.w, b.h), variant="forest", ground="forest")
    trees = b.layout.visible("tree")
    if not trees:
        return None
    anchor = trees[b.integer(0, len(trees) - 1)]
    radius = b.px(b.uniform(15, 60))
    group = sorted((o for o in trees if math.hypot(o.x - anchor.x, o.y - anchor.y) <= radius),
                   key=lambda o: math.hypot(o.x - anchor.x, o.y - anchor.y))[: b.integer(1, 15)]
    gone = {o.uid for o in group}
    b.layout.objects = [o for o in b.layout.objects if o.uid not in gone]
    return ChangeInfo(count=len(group), where=_centroid_word(b, [o.x for o in group], [o.y for o in group]),
                      variant="trees", ground=_GROUND.get(base, "land"))


def _change_water(b: SceneBuilder, base: str) -> ChangeInfo | None:
    layout = b.layout
    lake = layout.feature("lake") or layout.feature("pond")
    ground = _GROUND.get(base, "land")
    if lake is None:
        size = min(b.w, b.h)
        r = b.uniform(0.08, 0.16) * size
        for _ in range(30):
            x, y = b.random_point(r)
            if b.is_free(x, y, r * 1.1):
                b.add_lake(x, y, r, shore=False)
                return ChangeInfo(where=region_word(x, y, b.w, b.h), variant="appear", ground=ground)
        return None
    index = next(i for i, a in enumerate(layout.areas) if a.uid == lake.extra["uid"])
    water = layout.areas[index]
    shore = layout.areas[index - 1] if index > 0 and layout.areas[index - 1].material == "sand" else None
    points = list(water.shape.points)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    where = _centroid_word(b, xs, ys)
    layout.objects = [o for o in layout.objects if o.kind != "boat"]
    variant = b.choice(["shrink", "expand", "disappear"], [0.35, 0.3, 0.35])
    if variant == "shrink":
        mud = Area(layout.new_uid(), "soil", Shape("polygon", points), b.colour("sand/wet"), b.colour("soil"))
        layout.areas.insert(index, mud)
        water.shape = Shape("polygon", _scaled(points, b.uniform(0.45, 0.75)))
    elif variant == "expand":
        factor = b.uniform(1.2, 1.45)
        water.shape = Shape("polygon", _scaled(points, factor))
        if shore is not None:
            shore.shape = Shape("polygon", _scaled(list(shore.shape.points), factor))
        flooded = b.shape_mask(water.shape)
        layout.objects = [o for o in layout.objects
                          if not (layout.inside(o.x, o.y) and flooded[int(o.y), int(o.x)])]
    else:
        outline = shore.shape if shore is not None else water.shape
        filled = Area(layout.new_uid(), "soil", Shape("polygon", list(outline.points)), b.colour("soil"),
                      b.colour("soil/dry"))
        layout.areas.insert(index + 1, filled)
    return ChangeInfo(where=where, variant=variant, ground=ground, extra={"water": lake.kind})


_EDITS: dict[str, Callable[[SceneBuilder, str], ChangeInfo | None]] = {
    "buildings_built": _build_houses,
    "buildings_removed": _remove_buildings,
    "road_built": _build_road,
    "trees_removed": _remove_trees,
    "water_changed": _change_water,
}


# ---------------------------------------------------------------------------------------------- entry


def _later(layout: Layout, rng: np.random.Generator) -> None:
    """Second acquisition: slightly different sun, illumination, haze and fresh sensor noise."""
    r = layout.radiometry
    brightness = float(rng.uniform(0.92, 1.08))
    tint = rng.uniform(-0.03, 0.03, 3)
    layout.radiometry = Radiometry(
        gain=(r.gain[0] * brightness * (1 + float(tint[0])), r.gain[1] * brightness * (1 + float(tint[1])),
              r.gain[2] * brightness * (1 + float(tint[2]))),
        haze=float(np.clip(r.haze + rng.uniform(-0.04, 0.04), 0.0, 0.2)),
        haze_colour=r.haze_colour,
        noise_std=r.noise_std,
        noise_seed=int(rng.integers(2**62)),
    )
    layout.sun_azimuth += float(rng.uniform(-0.15, 0.15))
    layout.sun_elevation = float(np.clip(layout.sun_elevation + rng.uniform(-0.06, 0.06), 0.45, 1.2))


@dataclass
class ChangePlan:
    """A change pair before rendering: both layouts, the mask, captions and attributes (cheap)."""

    layout_a: Layout
    layout_b: Layout
    mask: np.ndarray
    change_type: str
    captions: list[str]
    attributes: dict[str, Any]

    def render(self) -> SyntheticChangePair:
        image_a, _ = render(self.layout_a)
        image_b, _ = render(self.layout_b)
        return SyntheticChangePair(image_a, image_b, self.mask, self.change_type, list(self.captions),
                                   self.layout_a.label, dict(self.attributes), self.layout_a.gsd)


def plan_change_pair(seed: int, index: int, config: SceneConfig | None = None, change: str | None = None,
                     ) -> ChangePlan:
    """Everything about change pair ``index`` except its pixels (see :func:`generate_change_pair`)."""
    config = config or _DEFAULT_CONFIG
    if change is None:
        change = config.sample_change(tile_rng(seed, index, "change"))
    elif change not in CHANGE_TYPES:
        raise ValueError(f"unknown change type {change!r}; choose from {CHANGE_TYPES}")
    bases = CHANGE_BASES[change]
    allowed = tuple(c for c in bases if c in config.class_names) or bases
    h, w = config.shape
    min_pixels = max(6, int(0.0005 * h * w))
    for attempt in range(_ATTEMPTS):
        rng = tile_rng(seed, index, "change", change, attempt)
        # The last attempts fall back to the base class that always admits the change.
        base = allowed[int(rng.integers(len(allowed)))] if attempt < _ATTEMPTS - 2 else bases[-1]
        builder = build_layout(rng, config, base)
        layout_a = builder.layout
        layout_b = layout_a.copy()
        b = SceneBuilder(layout_b, rng, config.mixture)
        b.occ = builder.occ.copy()
        b.hard = builder.hard.copy()
        info = ChangeInfo() if change == "none" else _EDITS[change](b, base)
        if info is None:
            continue
        _later(layout_b, rng)
        mask = (render_ids(layout_a) != render_ids(layout_b)).astype(np.uint8)
        changed = int(np.count_nonzero(mask))
        if change != "none" and changed < min_pixels:
            continue
        captions = change_captions(change, info, tile_rng(seed, index, "change-captions"),
                                   config.captions_per_image)
        attributes: dict[str, Any] = {
            "change": change, "changeflag": int(change != "none"), "class": base, "gsd": layout_a.gsd,
            "season": layout_a.season, "size": [h, w], "changed_pixels": changed,
        }
        if change != "none":
            attributes.update({"count": info.count, "where": info.where, "variant": info.variant})
            attributes.update({k: v for k, v in info.extra.items() if isinstance(v, (bool, int, float, str))})
        return ChangePlan(layout_a, layout_b, mask, change, captions, attributes)
    raise RuntimeError(
        f"could not make a visible {change!r} change for seed={seed}, index={index} after {_ATTEMPTS} attempts; "
        "try a larger tile size or a finer gsd"
    )


def generate_change_pair(seed: int, index: int, config: SceneConfig | None = None, change: str | None = None,
                         ) -> SyntheticChangePair:
    """Generate change pair ``index`` of the synthetic change dataset ``seed``.

    Deterministic like :func:`~geovl.data.synthetic.generate_scene`. The base scene class is drawn from
    :data:`CHANGE_BASES` for the change type (restricted to ``config.classes`` where they overlap).

    Args:
        seed: dataset seed, >= 0.
        index: pair index, >= 0.
        config: size, gsd, seasons, change types (default :class:`SceneConfig()`).
        change: force this change type (one of :data:`CHANGE_TYPES`); default: drawn from the config.

    Returns:
        a :class:`SyntheticChangePair` whose mask is uint8 ``(H, W)`` in {0, 1}.
    """
    return plan_change_pair(seed, index, config, change).render()
