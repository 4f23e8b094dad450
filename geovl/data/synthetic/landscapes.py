"""Recipes for natural and agricultural scenes: sea, lake, river, forest, farmland, beach, desert, meadow and
bare land, plus the background fills that other recipes reuse.

Each recipe fills a :class:`~geovl.data.synthetic.builder.SceneBuilder` with its primary land cover and, with
some probability, secondary elements (a road through the forest, boats on the lake, ...), recording the facts
that captions are written from in ``layout.facts`` and ``layout.features``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from geovl.data.synthetic import palette
from geovl.data.synthetic.builder import MIN_OBJECT_PX, SceneBuilder
from geovl.data.synthetic.geometry import Point, blob, line_points, region_word, side_word
from geovl.data.synthetic.layout import Shape

_CROPS: dict[str, tuple[list[str], list[float]]] = {
    "spring": (["green", "light_green", "brown", "dark_green"], [0.35, 0.3, 0.25, 0.1]),
    "summer": (["green", "yellow", "dark_green", "light_green", "brown"], [0.3, 0.3, 0.15, 0.15, 0.1]),
    "autumn": (["yellow", "brown", "green", "light_green"], [0.35, 0.35, 0.15, 0.15]),
    "winter": (["brown", "light_green", "green"], [0.6, 0.25, 0.15]),
}
CROP_WORDS = {"green": "green", "light_green": "light green", "dark_green": "dark green", "yellow": "yellow",
              "brown": "brown"}


# ---------------------------------------------------------------------------------------------- background fills


def fill_grass(b: SceneBuilder, shape: Shape | None = None) -> None:
    """Grassland over ``shape`` (default the whole tile), in two shades mixed in patches."""
    a = b.colour("grass")
    other = b.colour(b.choice(["grass", "shrub", "crop/light_green", "soil/dry"], [0.5, 0.2, 0.15, 0.15]))
    b.layout.material_params.setdefault("grass", {"patch_m": b.uniform(8.0, 40.0)})
    b.area("grass", shape or Shape("full"), a, palette.mix(a, other, b.uniform(0.4, 0.9)))


def fill_forest(b: SceneBuilder, shape: Shape | None = None) -> str:
    """Forest canopy over ``shape``; returns the forest type ("deciduous", "coniferous" or "mixed")."""
    kind = b.choice(["deciduous", "coniferous", "mixed"], [0.45, 0.25, 0.3])
    if b.season == "autumn" and kind == "deciduous":
        a, c = b.colour("forest", season="summer"), b.colour("forest")
    elif kind == "coniferous":
        a = b.colour("conifer")
        c = palette.scale(a, 1.25)
    elif kind == "mixed":
        a, c = b.colour("conifer"), b.colour("forest")
    else:
        a = b.colour("forest")
        c = palette.scale(a, b.uniform(1.1, 1.3))
    b.layout.material_params.setdefault("forest", {"crown_m": b.uniform(4.0, 8.0)})
    b.area("forest", shape or Shape("full"), a, c)
    b.layout.facts.setdefault("forest_type", kind)
    return kind


def fill_soil(b: SceneBuilder, shape: Shape | None = None, dry: bool | None = None) -> None:
    """Bare soil over ``shape``."""
    if dry is None:
        dry = b.coin(0.4)
    key = "soil/dry" if dry else "soil"
    b.area("soil", shape or Shape("full"), b.colour(key), b.colour(key))


def fill_fields(b: SceneBuilder) -> tuple[int, list[str]]:
    """Patchwork of crop parcels over the whole tile, aligned with the layout rotation.

    Returns the number of parcels whose centre is visible and their colour words, most common first.
    """
    fill_soil(b, dry=False)
    crops, weights = _CROPS.get(b.season, _CROPS["summer"])
    ext = b.half_diag
    counts: dict[str, int] = {}
    visible = 0
    # At very coarse resolution parcels would be a few pixels each (and tens of thousands of polygons);
    # bound their size in pixels to keep the cost bounded.
    min_px = max(6.0, min(b.w, b.h) / 40.0)
    v = -ext - b.uniform(0, b.px(60))
    while v < ext:
        strip = max(min_px, b.px(b.uniform(30, 150)))
        u = -ext - b.uniform(0, b.px(120))
        while u < ext:
            plen = max(min_px, b.px(b.uniform(50, 240)))
            track = max(b.px(b.uniform(2, 5)), 1.0)
            u0, u1, v0, v1 = u + track / 2, u + plen - track / 2, v + track / 2, v + strip - track / 2
            u += plen
            poly = b.local_rect(u0, v0, u1, v1)
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
            if max(xs) < 0 or min(xs) > b.w or max(ys) < 0 or min(ys) > b.h:
                continue
            crop = b.choice(crops, weights)
            along = b.layout.rotation + (0.0 if (u1 - u0) > (v1 - v0) else math.pi / 2) + b.uniform(-0.03, 0.03)
            if b.coin(0.25):
                along += math.pi / 2
            params = {
                "cos": -math.sin(along), "sin": math.cos(along), "period_m": b.uniform(1.5, 5.0),
                "amp": b.uniform(0.12, 0.28) if crop != "brown" else b.uniform(0.18, 0.35),
            }
            col = b.colour(f"crop/{crop}")
            b.area("field", Shape("polygon", poly), col, palette.scale(col, b.uniform(0.82, 0.95)), params)
            cx, cy = b.local((u0 + u1) / 2, (v0 + v1) / 2)
            if b.inside(cx, cy):
                if params["period_m"] / b.gsd >= 4.0:
                    b.layout.facts["stripes_visible"] = True
                visible += 1
                counts[CROP_WORDS[crop]] = counts.get(CROP_WORDS[crop], 0) + 1
        v += strip
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return visible, words


def fill_background(b: SceneBuilder, kind: str) -> None:
    """One of "meadow", "forest", "farmland" or "bare land" as background; recorded as facts["surroundings"]."""
    if kind == "forest":
        fill_forest(b)
    elif kind == "farmland":
        n, words = fill_fields(b)
        b.layout.facts["n_fields"] = n
        b.layout.facts["crop_colours"] = words
    elif kind == "bare land":
        fill_soil(b)
    else:
        fill_grass(b)
    b.layout.facts["surroundings"] = kind


def half_plane(b: SceneBuilder, pts: list[Point], angle: float, side: float) -> Shape:
    """Polygon covering everything on one side (``side`` = +1 along the normal, -1 against) of polyline
    ``pts`` running in direction ``angle``."""
    nx, ny = -math.sin(angle), math.cos(angle)
    far = 4 * b.half_diag * side
    return Shape("polygon", [*pts, (pts[-1][0] + nx * far, pts[-1][1] + ny * far),
                             (pts[0][0] + nx * far, pts[0][1] + ny * far)])


def add_boats(b: SceneBuilder, water: Shape, n: int, length_m: tuple[float, float] = (6.0, 30.0)) -> int:
    """Up to ``n`` boats with foam wakes on the water region ``water``; returns how many were placed."""
    if n <= 0 or b.px(length_m[0]) < 3.0:
        return 0
    mask = b.shape_mask(water)
    placed = 0
    positions: list[Point] = []
    for _ in range(n * 6):
        if placed >= n:
            break
        length = b.px(b.uniform(*length_m))
        x, y = b.random_point(length)
        if not mask[int(y), int(x)] or any(math.hypot(x - px, y - py) < length * 1.5 for px, py in positions):
            continue
        ang = b.uniform(0, 2 * math.pi)
        if b.coin(0.6):
            # V-shaped wake: two faint foam lines spreading behind the stern.
            back = length * b.uniform(2.0, 5.0)
            bx, by = x - math.cos(ang) * back, y - math.sin(ang) * back
            spread = back * 0.35
            for side in (-1.0, 1.0):
                tail = (bx - math.sin(ang) * spread * side, by + math.cos(ang) * spread * side)
                b.paint(0, Shape("line", [(x, y), tail], max(1.0, length * 0.12)), (225.0, 232.0, 235.0), 0.3)
            b.paint(0, Shape("line", [(x, y), (bx, by)], max(1.0, length * 0.25)), (225.0, 232.0, 235.0), 0.2)
        b.obj("boat", x, y, length, length * b.uniform(0.28, 0.4), ang, 2.0, b.colour("boat"), block=False)
        positions.append((x, y))
        placed += 1
    return placed


# ---------------------------------------------------------------------------------------------- recipes


def build_sea(b: SceneBuilder) -> None:
    """Open sea with waves; optionally a rocky or green coast on one side and boats."""
    calm = b.coin(0.4)
    b.layout.material_params["water"] = {
        "wave_m": b.uniform(5, 18), "wave_amp": b.uniform(0.01, 0.03) if calm else b.uniform(0.04, 0.08),
        "wave_angle": b.uniform(0, math.pi),
    }
    sea = b.full("water", "water/sea", "water/sea")
    b.layout.facts["calm"] = calm
    water_region = Shape("full")
    if b.chance(0.35):
        angle = b.uniform(0, 2 * math.pi)
        offset = b.uniform(0.28, 0.4) * min(b.w, b.h)
        pts = line_points(b.cx, b.cy, angle, offset, b.half_diag, b.px(b.uniform(5, 30)),
                          b.uniform(0.3, 0.8) * b.w, b.uniform(0, 6.3), n=40)
        land = half_plane(b, pts, angle, 1.0)
        kind = b.choice(["rock", "grass", "forest"], [0.4, 0.35, 0.25])
        if kind == "forest":
            fill_forest(b, land)
        elif kind == "grass":
            fill_grass(b, land)
        else:
            b.area("soil", land, b.colour("rock"), b.colour("rock"))
        b.block(land)
        b.paint(sea.uid, Shape("line", pts, max(1.0, b.px(2.0))), (226.0, 232.0, 234.0), 0.5)
        b.feature("coast", where=side_word(-math.sin(angle), math.cos(angle)), cover=kind)
        water_region = half_plane(b, pts, angle, -1.0)
    if b.chance(0.6):
        n = add_boats(b, water_region, b.integer(1, 6))
        if n:
            b.feature("boats", count=n)


def build_lake(b: SceneBuilder) -> None:
    """A lake surrounded by meadow, forest or fields; optionally shore trees, boats, a road or houses."""
    fill_background(b, b.choice(["meadow", "forest", "farmland"], [0.45, 0.35, 0.2]))
    size = min(b.w, b.h)
    x = b.cx + b.uniform(-0.15, 0.15) * size
    y = b.cy + b.uniform(-0.15, 0.15) * size
    lake = b.add_lake(x, y, b.uniform(0.26, 0.4) * size)
    radius = float(lake.extra["radius_px"])
    lake_shape = next(a.shape for a in b.layout.areas if a.uid == lake.extra["uid"])
    if b.chance(0.35):
        nb = add_boats(b, lake_shape, b.integer(1, 3), (4.0, 12.0))
        if nb:
            b.feature("boats", count=nb)
    if b.layout.facts["surroundings"] != "forest" and b.chance(0.5):
        ring = Shape("ellipse", [(x - radius * 1.6, y - radius * 1.6), (x + radius * 1.6, y + radius * 1.6)])
        n = b.scatter_trees(b.integer(8, 30), region=ring)
        if n:
            b.feature("trees", where="around", count=n)
    if b.chance(0.25):
        for _ in range(8):
            angle, offset = b.random_line(0.45)
            dist = abs((x - b.cx) * -math.sin(angle) + (y - b.cy) * math.cos(angle) - offset)
            if dist > radius * 1.5 + b.px(10):
                b.add_road(angle, offset, cars=0.5)
                break


def build_river(b: SceneBuilder) -> None:
    """A meandering river through forest, meadow or farmland; optionally a bridge and bank trees."""
    fill_background(b, b.choice(["forest", "meadow", "farmland"], [0.35, 0.3, 0.35]))
    river = b.add_river()
    if b.chance(0.3):
        angle = float(river.extra["angle"]) + math.pi / 2 + b.uniform(-0.35, 0.35)
        road = b.add_road(angle, b.uniform(-0.2, 0.2) * min(b.w, b.h), cars=0.6)
        b.feature("bridge", where=road.where)
    if b.layout.facts["surroundings"] != "forest" and b.chance(0.45):
        pts = line_points(b.cx, b.cy, float(river.extra["angle"]), float(river.extra["offset"]), b.half_diag)
        band = Shape("line", pts, float(river.extra["width_px"]) + 2 * b.px(b.uniform(25, 60)))
        n = b.scatter_trees(b.integer(10, 40), region=band)
        if n:
            b.feature("trees", where="along", count=n)


def build_forest(b: SceneBuilder) -> None:
    """Dense forest canopy; optionally a river, a road or track, a clearing or a lake."""
    fill_forest(b)
    if b.chance(0.2):
        b.add_river(width_m=b.uniform(8, 30))
    if b.chance(0.3):
        kind = b.choice(["road", "track"], [0.5, 0.5])
        b.add_road(kind=kind, material="asphalt" if kind == "road" else "soil", markings=False, cars=0.3)
    if b.chance(0.25):
        size = min(b.w, b.h)
        x, y = b.random_point(0.2 * size)
        pts = blob(b.rng, x, y, b.uniform(0.1, 0.22) * size, b.uniform(0.08, 0.18) * size, b.uniform(0, 3.1))
        fill_grass(b, Shape("polygon", pts))
        b.block(Shape("polygon", pts))
        b.feature("clearing", where=region_word(x, y, b.w, b.h))
    elif b.chance(0.12):
        b.add_lake(radius_px=b.uniform(0.12, 0.22) * min(b.w, b.h))


def build_farmland(b: SceneBuilder) -> None:
    """Patchwork of crop fields; optionally a road, a river, farm buildings or tree lines."""
    n, words = fill_fields(b)
    b.layout.facts["n_fields"] = n
    b.layout.facts["crop_colours"] = words
    if b.chance(0.12):
        b.add_river(width_m=b.uniform(8, 25))
    if b.chance(0.45):
        angle = b.layout.rotation + (0 if b.coin(0.5) else math.pi / 2)
        b.add_road(angle, b.uniform(-0.3, 0.3) * min(b.w, b.h), kind=b.choice(["road", "track"]),
                   cars=0.3)
    if b.chance(0.3):
        x, y = b.random_point(b.px(20))
        placed = 0
        roof = b.choice(["red", "grey", "brown"])
        for _ in range(b.integer(1, 4)):
            hx, hy = x + b.px(b.uniform(-25, 25)), y + b.px(b.uniform(-25, 25))
            if b.house(hx, hy, b.uniform(10, 24), b.uniform(8, 14), b.layout.rotation, roof, tag="farm"):
                placed += 1
        if placed:
            b.feature("farmhouses", where=region_word(x, y, b.w, b.h), count=placed)
    if b.chance(0.3):
        n_trees = b.scatter_trees(b.integer(4, 20), radius_m=(2.5, 5.0))
        if n_trees:
            b.feature("trees", count=n_trees)


def build_beach(b: SceneBuilder) -> None:
    """Sand between land and sea with breaking waves; optionally umbrellas, boats, a road and buildings."""
    angle = b.uniform(0, 2 * math.pi)
    offset = b.uniform(-0.12, 0.12) * min(b.w, b.h)
    wavelength, phase, meander = b.uniform(0.6, 1.5) * b.w, b.uniform(0, 6.3), b.uniform(0.01, 0.05) * b.w

    def shore(extra_px: float) -> list[Point]:
        return line_points(b.cx, b.cy, angle, offset + extra_px, b.half_diag + 10, meander, wavelength, phase,
                           n=40)

    land = b.choice(["meadow", "forest", "bare land"], [0.5, 0.3, 0.2])
    fill_background(b, land)
    sand_w = b.px(b.uniform(25, 70))
    b.area("sand", half_plane(b, shore(-sand_w), angle, 1.0), b.colour("sand"), None, block=True)
    b.area("sand", half_plane(b, shore(-b.px(b.uniform(2, 6))), angle, 1.0), b.colour("sand/wet"), None)
    b.layout.material_params["water"] = {
        "wave_m": b.uniform(6, 14), "wave_amp": b.uniform(0.02, 0.05), "wave_angle": angle + math.pi / 2,
    }
    shallow = b.area("water", half_plane(b, shore(0.0), angle, 1.0), b.colour("water/shallow"), None,
                     block=True)
    b.area("water", half_plane(b, shore(b.px(b.uniform(15, 50))), angle, 1.0), b.colour("water/sea"),
           b.colour("water/sea"))
    _breakers(b, shallow.uid, shore)
    nx, ny = -math.sin(angle), math.cos(angle)
    b.feature("sea", where=side_word(nx, ny))
    b.feature("sand", where=side_word(-nx, -ny) if abs(offset) < 0.06 * b.w else "center")
    b.layout.facts["surroundings"] = land
    sand_region = Shape("polygon", [*shore(-sand_w * 0.9), *reversed(shore(-b.px(4.0)))])
    if b.chance(0.4) and b.px(2.0) >= MIN_OBJECT_PX:
        n = b.scatter_trees(b.integer(5, 40), (0.9, 1.4), sand_region, key=b.choice(
            ["umbrella/red", "umbrella/blue", "umbrella/yellow"]), tag="umbrella", kind="umbrella")
        if n:
            b.feature("umbrellas", count=n)
    if b.chance(0.3):
        deep = half_plane(b, shore(b.px(30)), angle, 1.0)
        n = add_boats(b, deep, b.integer(1, 3))
        if n:
            b.feature("boats", count=n)
    if b.chance(0.35):
        road_off = offset - sand_w - b.px(b.uniform(12, 30))
        road = b.add_road(angle, road_off, cars=0.8)
        if road.where != "through":
            b.layout.facts["road_along_beach"] = True
    if land != "forest" and b.chance(0.35):
        _beach_hotels(b, angle, offset - sand_w)


def _breakers(b: SceneBuilder, uid: int, shore: Callable[[float], list[Point]]) -> None:
    """Foam lines of breaking waves on the shallow water ``uid`` along ``shore(distance px)``."""
    foam = (232.0, 236.0, 236.0)
    spacing = b.px(b.uniform(6, 15))
    for k in range(b.integer(2, 4)):
        width = max(0.8, b.px(b.uniform(0.8, 2.5)))
        line = shore(b.px(0.5) + k * spacing)
        if k == 0:
            b.paint(uid, Shape("line", line, width * 2.0), foam, 0.45)
            b.paint(uid, Shape("line", line, width), foam, 0.8)
            continue
        # Breakers further out are broken into irregular, soft crests.
        i = 0
        while i < len(line) - 1:
            j = min(len(line), i + b.integer(2, 7))
            if b.coin(0.7):
                b.paint(uid, Shape("line", line[i:j], width * 2.5), foam, 0.2)
                b.paint(uid, Shape("line", line[i:j], width * 0.8), foam, 0.5 - 0.1 * k)
            i = j + b.integer(0, 2)


def _beach_hotels(b: SceneBuilder, angle: float, land_edge: float) -> None:
    """Up to 12 flat-roofed hotels on the land side of a beach whose sand ends ``land_edge`` px from the centre."""
    nx, ny = -math.sin(angle), math.cos(angle)
    n = 0
    for _ in range(12):
        d = land_edge - b.px(b.uniform(45, 90))
        t = b.uniform(-0.5, 0.5) * b.w
        x, y = b.cx + math.cos(angle) * t + nx * d, b.cy + math.sin(angle) * t + ny * d
        if b.inside(x, y) and b.house(x, y, b.uniform(15, 40), b.uniform(12, 25), angle,
                                      b.choice(["white", "red", "grey"]), tag="hotel", style="flat"):
            n += 1
    if n:
        b.feature("buildings", count=n, where=side_word(-nx, -ny))


def build_desert(b: SceneBuilder) -> None:
    """Sand dunes; optionally shrubs, rocks or a road."""
    b.layout.material_params["dunes"] = {"dune_m": b.uniform(25, 140), "dune_angle": b.uniform(0, math.pi),
                                         "ripple_m": b.uniform(0.8, 2.5)}
    b.full("dunes", "desert", "desert")
    b.layout.facts["dune_px"] = b.px(b.layout.material_params["dunes"]["dune_m"])
    if b.chance(0.2):
        x, y = b.random_point(0.2 * b.w)
        pts = blob(b.rng, x, y, b.uniform(0.08, 0.2) * b.w, b.uniform(0.06, 0.15) * b.w, b.uniform(0, 3.1))
        b.area("soil", Shape("polygon", pts), b.colour("rock"), b.colour("rock"), block=True)
        b.feature("rocks", where=region_word(x, y, b.w, b.h))
    if b.chance(0.3):
        n = b.scatter_trees(b.integer(5, 40), (0.8, 2.0), key="shrub", tag="shrub", kind="shrub")
        if n:
            b.feature("shrubs", count=n)
    if b.chance(0.15):
        b.add_road(markings=False, cars=0.1)


def build_meadow(b: SceneBuilder) -> None:
    """Grassland; optionally scattered trees, shrubs, a path or a small pond."""
    fill_grass(b)
    if b.chance(0.2):
        size = min(b.w, b.h)
        x, y = b.random_point(0.25 * size)
        pts = blob(b.rng, x, y, b.uniform(0.1, 0.3) * size, b.uniform(0.1, 0.25) * size, b.uniform(0, 3.1))
        fill_grass(b, Shape("polygon", pts))
    if b.chance(0.3):
        angle, offset = b.random_line()
        pts = line_points(b.cx, b.cy, angle, offset, b.half_diag, b.uniform(0.03, 0.1) * b.w, b.uniform(0.5, 1.2)
                          * b.w, b.uniform(0, 6.3), n=32)
        b.area("soil", Shape("line", pts, max(1.0, b.px(b.uniform(1.5, 3.5)))), b.colour("soil/dry"), None,
               block=True)
        b.feature("path", where=b.line_where(angle, offset))
    if b.chance(0.15):
        b.add_lake(radius_px=b.uniform(0.07, 0.14) * min(b.w, b.h), shore=False)
        b.layout.features[-1].kind = "pond"
    if b.chance(0.5):
        n = b.scatter_trees(b.integer(2, 25))
        if n:
            b.feature("trees", count=n)
    if b.chance(0.25):
        n = b.scatter_trees(b.integer(5, 30), (0.7, 1.6), key="shrub", tag="shrub", kind="shrub")
        if n:
            b.feature("shrubs", count=n)


def build_bare_land(b: SceneBuilder) -> None:
    """Bare soil; optionally vehicle tracks, grass patches, a road or a few small buildings."""
    fill_soil(b)
    if b.chance(0.4):
        size = min(b.w, b.h)
        for _ in range(b.integer(1, 3)):
            x, y = b.random_point()
            pts = blob(b.rng, x, y, b.uniform(0.05, 0.15) * size, b.uniform(0.05, 0.12) * size,
                       b.uniform(0, 3.1))
            c = palette.mix(b.colour("grass"), b.colour("soil"), 0.4)
            b.area("grass", Shape("polygon", pts), c, None)
        b.feature("grass patches")
    if b.chance(0.5) and b.px(0.4) >= 0.3:
        track = palette.scale(b.layout.areas[0].colour_a, 0.8)
        for _ in range(b.integer(2, 7)):
            angle, offset = b.random_line(0.45)
            pts = line_points(b.cx, b.cy, angle, offset, b.half_diag, b.uniform(0.02, 0.15) * b.w,
                              b.uniform(0.4, 1.5) * b.w, b.uniform(0, 6.3), n=24)
            b.paint(0, Shape("line", pts, b.px(b.uniform(0.4, 2.5))), track, 0.5)
        b.feature("tracks")
    if b.chance(0.3):
        b.add_road(cars=0.2)
    if b.chance(0.2):
        n = 0
        roof = b.choice(["grey", "white", "blue"])
        x, y = b.random_point(b.px(30))
        for _ in range(b.integer(1, 3)):
            hx, hy = x + b.px(b.uniform(-30, 30)), y + b.px(b.uniform(-30, 30))
            if b.inside(hx, hy) and b.house(hx, hy, b.uniform(8, 20), b.uniform(6, 12), b.uniform(0, 3.1), roof,
                                            style="flat", tag="shed"):
                n += 1
        if n:
            b.feature("buildings", where=region_word(x, y, b.w, b.h), count=n)
